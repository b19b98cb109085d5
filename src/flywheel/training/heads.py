"""Which training mode a frame gets, and what a model trained on it records.

- `head` (the default when the frame carries `embedding` vectors, i.e. with
  FLYWHEEL_REPRESENTATION=embedding): a linear probe or a small MLP (`HEADS`) trained on
  one backbone's vectors; seconds on a CPU.
- `finetune`: the backbone and a head trained together on the items' images
  (flywheel.training.finetune); served as a head on the fine-tuned backbone's vectors.
- `scratch`: today's models (`ARCHS`) trained from random initialisation on `pixels`.

FLYWHEEL_TRAIN_MODE (or `TrainConfig.mode`) forces one. A head starts from the champion's
head when that is a head of the same arch on the same representation and classes
(`warm_start`; the run's param `warm_start_from` names the version, or `none`).

A model trained on embeddings records the representation id, the backbone, its weights
digest and how to rebuild the backbone (weights spec, input side) as run params, run tags
and model metadata, so the servers fetch and compute the same vectors for it, and a
champion on another representation is re-scored on its own vectors of the same holdout
items.
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


def warm_start(head, settings, info: dict, arch: str, classes: list[str]) -> str | None:
    """Start `head` from the champion's weights where it fits: a head of the same arch on
    the same representation and classes. Returns the champion version used, or None."""
    import mlflow

    from flywheel.registry.representation import champion_representation

    try:
        version, meta = champion_representation(settings)
        fits = (
            version is not None
            and meta.get("train_mode") == "head"
            and meta.get("representation") == info.get("representation")
            and meta.get("arch") == arch
            and meta.get("classes") == classes
        )
        if not fits:
            return None
        mlflow.set_registry_uri(settings.tracking_uri)
        champion = mlflow.pytorch.load_model(f"models:/{settings.model_name}/{version}")
        prefix = "classifier."
        state = {
            k[len(prefix) :]: v for k, v in champion.state_dict().items() if k.startswith(prefix)
        }
        head.load_state_dict(state, strict=True)
        return version
    except Exception:  # noqa: BLE001 - no registry, other layout: start from scratch
        return None
