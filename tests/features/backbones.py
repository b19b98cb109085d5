"""Tiny vision backbones that the tests write themselves (no machine here downloads weights).

A ResNet of two basic stages (32 and 64 channels) on 32-pixel inputs: ~75k weights, the
same code path (transformers AutoModel, pooled output) as `facebook/dinov2-small` or
`microsoft/resnet-50`. Its random features already separate the digits well enough for a
linear head to learn (about 0.65 holdout accuracy from 150 labels; a random tiny ViT's
CLS token does not).
"""

from __future__ import annotations

from pathlib import Path

SIDE = 32


def tiny_config(width: int = 32):
    from transformers import ResNetConfig

    return ResNetConfig(
        embedding_size=16,
        hidden_sizes=[width, 64],
        depths=[1, 1],
        layer_type="basic",
        downsample_in_first_stage=False,
    )


def tiny_model(seed: int):
    import torch
    from transformers import AutoModel

    torch.manual_seed(seed)
    return AutoModel.from_config(tiny_config()).eval()


def config_dir(root: Path) -> Path:
    """A model directory with only config.json (the architecture, no weights)."""
    folder = root / "tiny-resnet"
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
