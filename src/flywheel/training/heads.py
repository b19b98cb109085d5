"""Which training mode a frame gets, and what a model trained on it records.

- `head` (the default when the frame carries `embedding` vectors, i.e. with
  FLYWHEEL_REPRESENTATION=embedding): a linear probe or a small MLP (`HEADS`) trained on
  one backbone's vectors; seconds on a CPU.
- `finetune`: the backbone and a head trained together on the items' images
  (flywheel.training.finetune); served as a head on the fine-tuned backbone's vectors.
- `scratch`: today's models (`ARCHS`) trained from random initialisation on `pixels`.

FLYWHEEL_TRAIN_MODE (or `TrainConfig.mode`) forces one. A model trained on embeddings
records the representation id, the backbone, its weights digest and how to rebuild the
backbone (weights spec, input side) as run params, run tags and model metadata, so the
servers fetch and compute the same vectors for it, and a champion on another representation
is re-scored on its own vectors of the same holdout items.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from flywheel.errors import InputError
from flywheel.training.model import HEADS


def head_setup(frame, settings, config):
    """(config with mode and arch settled, vector column, vector length d, representation
    info to record) for a training frame."""
    columns = set(getattr(frame, "columns", ()))
    has_embedding = "embedding" in columns
    mode = config.mode or (settings.train_mode if settings.train_mode != "auto" else None)
    mode = mode or ("head" if has_embedding else "scratch")
    if mode == "head":
        if not has_embedding:
            raise InputError(
                "train mode head needs embedding vectors: set FLYWHEEL_REPRESENTATION="
                "embedding and run `flywheel features build`"
            )
        reps = sorted(set(frame["representation"].astype(str))) if len(frame) else []
        if len(reps) > 1:
            raise InputError(
                f"the training frame mixes vectors of {len(reps)} representations "
                f"({', '.join(reps)}): build it from one backbone"
            )
        d = int(np.size(frame["embedding"].iloc[0])) if len(frame) else 0
        first = frame.iloc[0] if len(frame) else {}
        info = {
            "representation": reps[0] if reps else "none",
            "backbone": str(first.get("backbone", settings.backbone)),
            "weights_digest": str(first.get("weights_digest", "unknown")),
            "backbone_weights": settings.backbone_weights,
            "backbone_image_size": settings.backbone_image_size,
            "train_mode": "head",
        }
        arch = config.arch if config.arch in HEADS else "linear"
        config = replace(config, mode="head", arch=arch, feature_service="item_embedding")
        return config, "embedding", d, info
    if mode == "finetune":
        from flywheel.training.finetune import finetune_config

        config = finetune_config(replace(config, mode="finetune", feature_service="item_embedding"))
        info = {
            "train_mode": "finetune",
            "base_backbone": settings.backbone,
            "base_backbone_weights": settings.backbone_weights,
        }
        return config, "images", 0, info  # d: set from the backbone (training.finetune)
    if mode != "scratch":
        raise InputError(f"unknown train mode {mode!r}; choose head, finetune or scratch")
    if config.arch in HEADS:
        raise InputError(f"{config.arch!r} is a head for embeddings; use train mode head")
    rep = settings.representation if settings.representation != "embedding" else "pixels"
    d = settings.image_size**2 * config.in_channels
    return (
        replace(config, mode="scratch"),
        "pixels",
        d,
        {
            "representation": rep,
            "train_mode": "scratch",
        },
    )
