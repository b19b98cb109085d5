"""Tiny vision backbones that the tests write themselves (no machine here downloads weights).

A DINOv2 of 32 hidden units, one layer, 8-pixel patches on 32-pixel inputs: ~20k weights,
the same code path as `facebook/dinov2-small`.
"""

from __future__ import annotations

from pathlib import Path

SIDE = 32


def tiny_config():
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=SIDE,
        patch_size=8,
    )


def tiny_model(seed: int):
    import torch
    from transformers import AutoModel

    torch.manual_seed(seed)
    return AutoModel.from_config(tiny_config()).eval()


def config_dir(root: Path) -> Path:
    """A model directory with only config.json (the architecture, no weights)."""
    folder = root / "tiny-dinov2"
    tiny_config().save_pretrained(folder)
    return folder


def weights_file(root: Path, seed: int, name: str = "tiny.safetensors") -> tuple[Path, object]:
    """A safetensors weights file of a tiny model; returns (path, model)."""
    from safetensors.torch import save_file

    model = tiny_model(seed)
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model


def embedding_overrides(root: Path, seed: int | None = None) -> dict:
    """Settings for the embedding representation on a tiny backbone: random init
    (`seed=None`) or the weights file of `seed`."""
    weights = "none" if seed is None else str(weights_file(root, seed, f"w{seed}.safetensors")[0])
    return {
        "representation": "embedding",
        "backbone": str(config_dir(root)),
        "backbone_weights": weights,
        "backbone_image_size": SIDE,
    }
