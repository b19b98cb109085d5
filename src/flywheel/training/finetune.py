"""The `finetune` training mode: the backbone and a linear head trained together on images.

    FLYWHEEL_TRAIN_MODE=finetune  (or TrainConfig(mode="finetune"))

When labels grow, a head on frozen embeddings stops improving; fine-tuning the backbone
(on the GPU, DDP under torchrun or the cluster's TrainJob, through the same Lightning
`fit` as every run) goes further. The labelled items' images (from the catalogue) are
preprocessed exactly as `flywheel.features.embedding` does and trained on at
`lr * FINETUNE_LR_SCALE` (a pretrained backbone wants small steps).

What comes out is served like any head: the fine-tuned backbone is saved as a weights
file (`<backbone cache>/finetuned/<digest>.safetensors`, also logged on the run), which
makes it a new representation (its own weights digest); every catalogue item is embedded
with it into Feast under that id; the registered model is the fine-tuned head on those
vectors, recording the new backbone weights. The holdout is scored on the same items, so
promotion compares it with the champion like any other model.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flywheel.errors import InputError

FINETUNE_LR_SCALE = 0.1


class FinetuneClassifier(nn.Module):
    """Preprocessed images (flat `[b, 3*s*s]` or `[b, 3, s, s]`) -> backbone -> head."""

    def __init__(self, backbone: nn.Module, head: nn.Module, side: int):
        super().__init__()
        self.backbone, self.head, self.side = backbone, head, side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.view(-1, 3, self.side, self.side)
        out = self.backbone(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state.mean(dim=1)
        return self.head(pooled.reshape(len(x), -1))


def image_frame(frame, settings):
    """The frame with `images`: each item's preprocessed image, flat float32."""
    from flywheel.features.embedding import backbone_for, preprocess
    from flywheel.labelling.collection import read_catalogue

    backbone = backbone_for(settings)
    paths = dict(
        zip(*(read_catalogue(settings)[c] for c in ("item_id", "image_path")), strict=True)
    )
    missing = [i for i in frame["item_id"].astype(str) if i not in paths]
    if missing:
        raise InputError(f"finetune: {len(missing)} item(s) not in the catalogue: {missing[:5]}")
    side = backbone.spec.image_size
    out = frame.copy()
    out["images"] = [
        preprocess(paths[str(i)], side, backbone.mean, backbone.std).reshape(-1)
        for i in frame["item_id"]
    ]
    return out, backbone


def build(backbone, n_classes: int) -> FinetuneClassifier:
    head = nn.Sequential(nn.LayerNorm(backbone.dim), nn.Linear(backbone.dim, n_classes))
    model = copy.deepcopy(backbone.model).cpu().float().train()
    classifier = FinetuneClassifier(model, head, backbone.spec.image_size)
    _freeze_unused(classifier)
    return classifier


def _freeze_unused(model: nn.Module) -> None:
    """Weights the classification forward never uses (e.g. DINOv2's mask token) get no
    gradient: DDP refuses parameters that take no part in the loss."""
    side = model.side
    model.eval()  # no batch-norm statistics updated by the probe
    model(torch.zeros(2, 3, side, side)).sum().backward()
    model.train()
    for param in model.parameters():
        if param.grad is None:
            param.requires_grad_(False)
    model.zero_grad(set_to_none=True)


def publish(settings, model: FinetuneClassifier) -> tuple[object, Path, dict]:
    """Save the fine-tuned backbone, embed the catalogue with it (new representation id,
    built into Feast) and return (settings naming it, weights path, representation info)."""
    from safetensors.torch import save_file

    from flywheel.features import build_features
    from flywheel.features.embedding import backbone_for, cache_dir, weights_digest

    backbone = model.backbone.float().cpu().eval()
    digest = weights_digest(backbone)
    path = cache_dir(settings) / "finetuned" / f"{digest[:16]}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        state = {k: v.detach().contiguous() for k, v in backbone.state_dict().items()}
        save_file(state, str(path))
    tuned = settings.model_copy(
        update={"backbone_weights": str(path), "representation": "embedding"}
    )
    built = build_features(tuned)  # the new vectors, under the new representation id
    loaded = backbone_for(tuned)
    info = {
        "representation": built.representation_id,
        "backbone": tuned.backbone,
        "weights_digest": loaded.digest,
        "backbone_weights": str(path),
        "backbone_image_size": tuned.backbone_image_size,
        "train_mode": "finetune",
    }
    return tuned, path, info


def head_splits(splits, tuned, rep: str):
    """The same items and labels, with the fine-tuned backbone's stored vectors as x."""
    from flywheel.features.vectors import online_embeddings
    from flywheel.training.data import Split, Splits

    def part(split):
        if not len(split):
            return Split(torch.zeros(0, 1), split.y, [])
        x = online_embeddings(split.item_ids, tuned, rep)
        return Split(torch.from_numpy(np.ascontiguousarray(x)), split.y, split.item_ids)

    return Splits(part(splits.train), part(splits.val), part(splits.holdout), splits.classes)


def finetune_config(config):
    return replace(config, lr=config.lr * FINETUNE_LR_SCALE, arch="linear")
