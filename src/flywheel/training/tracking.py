"""MLflow logging for training runs (rank 0 only; mlflow is imported lazily).

A run records: params (the config, data sizes, classes, world size, precision), tags (label
snapshot id, feature service, git commit), per-epoch metrics (`EpochMetrics` callback),
system metrics (mlflow's sampler, 1 s), holdout accuracy and the champion's accuracy on
the same holdout, a confusion-matrix PNG, and the model (`Probabilities`, pt2 format with
a signature, an input example, explicit pip requirements and the class names as metadata),
registered under `settings.model_name` with the alias `challenger` and stamped with its
provenance (run, snapshot, digest: flywheel.registry.trusted), the only models served; then
the label snapshot as the run's dataset input, `dataset_card.md` and `model_card.md`
(flywheel.cards) and the card's summary as the version's description (`log_cards`).

`check_tracking` asks the server's /health first, so a tracking server that is down stops a
run before any training starts.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import urllib.request
from contextlib import contextmanager

import lightning as L
import numpy as np

from flywheel.errors import ServiceError


def check_tracking(uri: str, timeout: float = 5.0) -> None:
    """Raise ServiceError unless the MLflow tracking server at `uri` answers."""
    if not uri.startswith(("http://", "https://")):
        return  # a local file/sqlite store: nothing to reach
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status == 200:
                return
            problem = f"HTTP {resp.status}"
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        problem = str(getattr(exc, "reason", exc))
    raise ServiceError(
        f"the MLflow tracking server at {uri} is not answering ({problem}); start it with "
        "`flywheel up mlflow` or point FLYWHEEL_MLFLOW_TRACKING_URI at a running one "
        "(nothing was trained)"
    )


def git_commit() -> str:
    """The commit of the code that trains (FLYWHEEL_GIT_COMMIT in images without .git)."""
    if os.environ.get("FLYWHEEL_GIT_COMMIT"):
        return os.environ["FLYWHEEL_GIT_COMMIT"]
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def run_label(version, n_labels: int) -> str:
    """A training run's name: the turn (the model version it registers) and its labels."""
    return f"turn-{version}-{n_labels}-labels" if version else f"train-{n_labels}-labels"


def log_snapshot_input(frame, snapshot_id: str, name: str = "label-snapshot") -> None:
    """The label snapshot as the active run's dataset input (item ids, labels, agreement)."""
    import mlflow

    keep = [c for c in ("item_id", "label", "annotator", "n_annotators", "agreement") if c in frame]
    data = frame[keep].reset_index(drop=True) if keep else frame
    dataset = mlflow.data.from_pandas(data, name=f"{name}-{snapshot_id or 'none'}")
    mlflow.log_input(dataset, context="training")


def setup(settings) -> None:
    import mlflow

    from flywheel.registry import configure_client

    configure_client(settings)  # time-outs and retries on purpose: a dead server fails fast
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    mlflow.set_experiment(settings.mlflow_experiment)
    # a model-training experiment: the MLflow UI opens on its runs, not the GenAI overview
    mlflow.set_experiment_tag(EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow.set_system_metrics_sampling_interval(1)
    mlflow.set_system_metrics_samples_before_logging(1)


@contextmanager
def run(
    settings,
    run_name: str,
    params: dict,
    tags: dict,
    nested: bool = False,
    run_id: str | None = None,
):
    """An active MLflow run with params and tags logged; yields the run id."""
    import mlflow

    commit = git_commit()
    with mlflow.start_run(
        run_name=None if run_id else run_name,
        run_id=run_id,
        nested=nested,
        log_system_metrics=not nested and run_id is None,
    ) as active:
        if tags or not run_id:
            mlflow.set_tags({**tags, "git_commit": commit, "mlflow.source.git.commit": commit})
        if params:
            mlflow.log_params({k: _short(v) for k, v in params.items()})
        yield active.info.run_id


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


class EpochMetrics(L.Callback):
    """Logs train_loss / val_loss / val_accuracy per epoch to one run (global rank 0)."""

    NAMES = ("train_loss", "val_loss", "val_accuracy")

    def __init__(self, run_id: str, tracking_uri: str):
        self.run_id, self.tracking_uri = run_id, tracking_uri

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(name, float(trainer.callback_metrics[name]), now, trainer.current_epoch)
            for name in self.NAMES
            if name in trainer.callback_metrics
        ]
        if metrics:
            MlflowClient(self.tracking_uri).log_batch(self.run_id, metrics=metrics)


def confusion_figure(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]):
    """A matplotlib figure of the holdout confusion matrix (rows: true, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(classes)
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (y_true, y_pred), 1)
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * k, 1.0 + 0.5 * k), dpi=100)
    ax.imshow(cm, cmap="Blues")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if cm[i, j] > cm.max() / 2 else "black",
                )
    ax.set_xticks(range(k), classes)
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = float(np.trace(cm)) / max(1, cm.sum())
    ax.set_title(f"holdout: {cm.sum()} items, accuracy {acc:.3f}")
    fig.tight_layout()
    return fig


def pip_requirements() -> list[str]:
    """Explicit requirements: inferred ones pin local builds (`torch==2.13.0+cpu`)."""
    import mlflow
    import torch

    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"mlflow=={mlflow.__version__}",
        f"numpy=={np.__version__}",
    ]


def log_model(
    model, example: np.ndarray, classes: list[str], metadata: dict, registered_name: str | None
):
    """Log the probability model in the active run; register it when a name is given."""
    import mlflow

    info = mlflow.pytorch.log_model(
        model,
        name="model",
        input_example=example,
        pip_requirements=pip_requirements(),
        metadata={"classes": classes, **metadata},
        registered_model_name=registered_name,
        serialization_format="pt2",  # never pickle: see flywheel.registry.trusted
    )
    if registered_name and info.registered_model_version is not None:
        from flywheel.registry.trusted import stamp
        from flywheel.settings import load

        stamp(
            load(mlflow_tracking_uri=mlflow.get_registry_uri(), model_name=registered_name),
            str(info.registered_model_version),
            info.run_id,
            str(metadata.get("snapshot_id") or "none"),
        )
    return info


def champion_accuracy(
    settings,
    x,
    y,
    classes: list[str],
    item_ids: list[str] | None = None,
    representation: str = "pixels",
) -> tuple[float | None, str | None]:
    """The current champion's accuracy on (x, y), and its version; (None, None) if none.

    A champion trained on another representation than `representation` (the metadata its
    training recorded) is scored on its own vectors of the same items (`item_ids`, from
    the online store); (None, version) when those are not there."""
    import mlflow
    import torch
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(settings.tracking_uri)
    try:
        version = client.get_model_version_by_alias(settings.model_name, "champion")
    except MlflowException:
        return None, None
    uri = f"models:/{settings.model_name}/{version.version}"
    info = mlflow.models.get_model_info(uri)
    meta = info.metadata or {}
    if meta.get("classes") != classes:
        return None, version.version
    theirs = meta.get("representation", "pixels")
    if theirs != representation:
        x = _features_of(settings, theirs, item_ids)
        if x is None:
            return None, version.version
    from flywheel.registry.trusted import UntrustedModel, load_trusted

    try:
        trusted = load_trusted(settings, version.version)
    except UntrustedModel as exc:  # never run a model we did not write; train on
        logging.getLogger("flywheel.training").error(
            "not scoring champion version %s: %s", version.version, exc
        )
        return None, version.version
    model = trusted.module
    with torch.no_grad():
        pred = model(x).argmax(dim=1)
    return float((pred == y).float().mean()), version.version


def snapshot_for_card(settings, splits, snapshot_id: str | None):
    """The label snapshot behind a run: its parquet when this machine has it, else the
    labelled items of the splits (no annotators or dates then)."""
    import pandas as pd

    path = settings.snapshot_dir / f"{snapshot_id}.parquet" if snapshot_id else None
    if path is not None and path.exists():
        return pd.read_parquet(path), str(path)
    rows = [
        (i, splits.classes[int(y)])
        for part in (splits.train, splits.val, splits.holdout)
        for i, y in zip(part.item_ids, part.y.tolist(), strict=True)
    ]
    frame = pd.DataFrame(rows, columns=["item_id", "label"])
    frame["annotator"] = "unknown"
    frame["annotated_at"] = pd.NaT
    frame["snapshot_id"] = snapshot_id or "none"
    return frame, f"snapshot:{snapshot_id or 'none'}"


def log_cards(settings, config, splits, pred, fitted, run_id: str, version: str | None):
    """In the active run (the snapshot is its dataset input already): the dataset and model
    cards as artifacts, and the card's summary as the registered version's description. The
    model is registered already: a card that cannot be written is logged (tag
    `model_card_error`) and does not fail the run."""
    import logging

    import mlflow

    try:
        return _log_cards(settings, config, splits, pred, fitted, run_id, version)
    except Exception as exc:  # noqa: BLE001 - governance must not lose a trained model
        logging.getLogger("flywheel.training").exception("writing the model card failed")
        mlflow.set_tag("model_card_error", f"{type(exc).__name__}: {exc}"[:500])
        return None


def _log_cards(settings, config, splits, pred, fitted, run_id: str, version: str | None) -> str:
    import mlflow
    from mlflow import MlflowClient

    from flywheel import cards

    snapshot, source = snapshot_for_card(settings, splits, config.snapshot_id)
    catalogue = cards.read_catalogue_or_none(settings)
    mlflow.log_text(cards.dataset_card(snapshot, catalogue, splits.classes), "dataset_card.md")
    facts = cards.ModelFacts(
        model_name=settings.model_name,
        version=version,
        run_id=run_id,
        classes=splits.classes,
        representation=f"{settings.representation} ({settings.image_size}x{settings.image_size}"
        f", feature service {config.feature_service})",
        architecture=str(getattr(config, "backbone", None) or config.arch),
        training_mode=str(getattr(config, "training_mode", None) or "trained from scratch"),
        hardware=f"{cards.hardware()}, accelerator {fitted.accelerator}",
        precision=fitted.precision,
        world_size=fitted.world_size,
        intended_use=settings.model_intended_use,
        limitations=settings.model_limitations,
        extra={"epochs": fitted.epochs, "git commit": git_commit()},
    )
    hold = splits.holdout
    card = cards.model_card(
        facts, snapshot, hold.item_ids, hold.y.numpy(), np.asarray(pred), catalogue
    )
    mlflow.log_text(card, "model_card.md")
    if version:
        summary = card.split("## Summary\n\n", 1)[1].split("\n\n## ", 1)[0]
        client = MlflowClient(settings.tracking_uri)
        client.update_model_version(settings.model_name, version, description=summary)
    return card


def _features_of(settings, representation: str, item_ids):
    """The online vectors of `representation` for the items, or None when not all there."""
    import torch

    from flywheel.features.retrieval import UnknownItemsError
    from flywheel.features.vectors import vectors_for

    if not item_ids:
        return None
    try:
        return torch.from_numpy(vectors_for(item_ids, settings, representation))
    except UnknownItemsError:
        return None
