"""Dataset cards and model cards: what a model was trained on, in a form people read.

Dataset card (`dataset_card`): one per label snapshot, written beside it as
`<snapshot_dir>/<snapshot_id>.md` by `write_dataset_card` (the export calls it) and logged
with each training run as `dataset_card.md`. Sections: Snapshot, Labels per class, Labels
per collection, Annotators (pseudonymous ids with counts: never e-mails), Date range,
Rights.

Model card (`model_card`): one per registered version, logged as the run's artifact
`model_card.md`; its first lines (`summary`) become the version's description in the
registry. Sections: Summary, Training data (the dataset card's facts), Evaluation on the
fixed holdout (overall, per class, per collection), Confusion matrix, Model
(representation, backbone/architecture, training mode), Training (hardware, precision,
processes), Intended use, Limitations, Rights.

Everything is computed from plain inputs (frames and arrays), so the functions are pure;
the catalogue columns used are `item_id`, `collection` and, where the catalogue has it,
`rights` (a rights statement per item, e.g. a rightsstatements.org URI).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

DATASET_SECTIONS = (
    "Snapshot",
    "Labels per class",
    "Labels per collection",
    "Annotators",
    "Date range",
    "Rights",
)
MODEL_SECTIONS = (
    "Summary",
    "Training data",
    "Evaluation on the holdout",
    "Per class",
    "Per collection",
    "Confusion matrix",
    "Model",
    "Training",
    "Intended use",
    "Limitations",
    "Rights",
)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pseudonym(annotator: str) -> str:
    """A stable short id for an annotator: the card counts people, it does not name them."""
    return "annotator-" + hashlib.sha256(annotator.encode()).hexdigest()[:8]


def with_catalogue(snapshot, catalogue):
    """The snapshot rows with their item's `collection` and `rights` (unknown: '-')."""
    frame = snapshot.copy()
    cols = [c for c in ("collection", "rights") if catalogue is not None and c in catalogue]
    if cols:
        frame = frame.merge(
            catalogue.drop_duplicates("item_id")[["item_id", *cols]], on="item_id", how="left"
        )
    for col in ("collection", "rights"):
        if col not in frame:
            frame[col] = None
        frame[col] = frame[col].fillna("-").astype(str)
    return frame


def _rights(frame) -> str:
    known = frame[frame["rights"] != "-"]
    if known.empty:
        return "No rights statements are recorded in the catalogue for these items."
    counts = known["rights"].value_counts().sort_index()
    rows = [[r, int(n)] for r, n in counts.items()]
    missing = len(frame) - len(known)
    note = f"\n\n{missing} items have no rights statement in the catalogue." if missing else ""
    return _table(["rights statement", "items"], rows) + note


def dataset_card(snapshot, catalogue=None, classes: list[str] | None = None) -> str:
    """Markdown card of a label snapshot (item_id, label, annotator, annotated_at, ...)."""
    frame = with_catalogue(snapshot, catalogue)
    snapshot_id = (
        str(frame["snapshot_id"].iloc[0]) if "snapshot_id" in frame and len(frame) else "-"
    )
    classes = classes or sorted(frame["label"].unique().tolist())
    per_class = frame["label"].value_counts()
    per_coll = frame.groupby("collection")["label"].value_counts().unstack(fill_value=0)
    annotators = frame["annotator"].map(pseudonym).value_counts().sort_index()
    times = frame["annotated_at"] if "annotated_at" in frame else None
    first = times.min() if times is not None and len(frame) else None
    last = times.max() if times is not None and len(frame) else None
    parts = [
        f"# Dataset card: label snapshot `{snapshot_id}`",
        "## Snapshot",
        f"- id: `{snapshot_id}` (a content hash: the same labels give the same id)\n"
        f"- labelled items: {len(frame)}\n- classes: {len(classes)}\n"
        f"- collections: {frame['collection'].nunique()}",
        "## Labels per class",
        _table(["class", "items"], [[c, int(per_class.get(c, 0))] for c in classes]),
        "## Labels per collection",
        _table(
            ["collection", "items", *classes],
            [
                [coll, int(row.sum()), *[int(row.get(c, 0)) for c in classes]]
                for coll, row in per_coll.iterrows()
            ],
        ),
        "## Annotators",
        f"{len(annotators)} annotators (pseudonymous ids; e-mails are not recorded here).\n\n"
        + _table(["annotator", "labels"], [[a, int(n)] for a, n in annotators.items()]),
        "## Date range",
        f"- first label: {first}\n- last label: {last}",
        "## Rights",
        _rights(frame),
    ]
    return "\n\n".join(parts) + "\n"


@dataclass
class ModelFacts:
    """What the model card says about the model and its training, beside the data."""

    model_name: str
    version: str | None
    run_id: str | None
    classes: list[str]
    representation: str
    architecture: str
    training_mode: str
    hardware: str
    precision: str
    world_size: int
    intended_use: str
    limitations: str
    extra: dict = field(default_factory=dict)


def _accuracy(y, p) -> str:
    return f"{float(np.mean(y == p)):.4f}" if len(y) else "-"


def model_card(
    facts: ModelFacts,
    snapshot,
    holdout_ids: list[str],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    catalogue=None,
) -> str:
    """Markdown model card. `y_true`/`y_pred` are class indices of the holdout items."""
    import pandas as pd

    classes = facts.classes
    frame = with_catalogue(snapshot, catalogue)
    hold = with_catalogue(
        pd.DataFrame({"item_id": list(holdout_ids), "y": y_true, "p": y_pred, "label": "-"}),
        catalogue,
    )
    overall = _accuracy(hold["y"].to_numpy(), hold["p"].to_numpy())
    per_class = []
    for k, c in enumerate(classes):
        sel = hold[hold["y"] == k]
        tp = int(((hold["y"] == k) & (hold["p"] == k)).sum())
        predicted = int((hold["p"] == k).sum())
        precision = f"{tp / predicted:.3f}" if predicted else "-"
        recall = f"{tp / len(sel):.3f}" if len(sel) else "-"
        per_class.append([c, len(sel), recall, precision])
    per_coll = [
        [coll, len(g), _accuracy(g["y"].to_numpy(), g["p"].to_numpy())]
        for coll, g in hold.groupby("collection")
    ]
    k = len(classes)
    cm = np.zeros((k, k), dtype=int)
    if len(hold):
        np.add.at(cm, (hold["y"].to_numpy(), hold["p"].to_numpy()), 1)
    data_card = dataset_card(snapshot, catalogue, classes)
    data_body = data_card.split("\n\n", 1)[1].replace("## ", "### ")
    snapshot_id = (
        str(frame["snapshot_id"].iloc[0]) if "snapshot_id" in frame and len(frame) else "-"
    )
    extra = "".join(f"\n- {key}: {value}" for key, value in facts.extra.items())
    parts = [
        f"# Model card: {facts.model_name} version {facts.version or '-'}",
        "## Summary",
        summary(facts, snapshot_id, len(frame), overall, len(hold)),
        "## Training data",
        data_body.strip(),
        "## Evaluation on the holdout",
        f"Fixed holdout (items chosen by a hash of their id, never trained on): "
        f"{len(hold)} items, accuracy {overall}.",
        "## Per class",
        _table(["class", "holdout items", "recall", "precision"], per_class),
        "## Per collection",
        _table(["collection", "holdout items", "accuracy"], per_coll),
        "## Confusion matrix",
        "Rows: true class; columns: predicted class.\n\n"
        + _table(
            ["true \\ predicted", *classes], [[c, *cm[i].tolist()] for i, c in enumerate(classes)]
        ),
        "## Model",
        f"- representation: {facts.representation}\n- architecture / backbone: "
        f"{facts.architecture}\n- training mode: {facts.training_mode}\n"
        f"- classes: {', '.join(classes)}",
        "## Training",
        f"- hardware: {facts.hardware}\n- precision: {facts.precision}\n"
        f"- processes (world size): {facts.world_size}\n- MLflow run: {facts.run_id or '-'}"
        + extra,
        "## Intended use",
        facts.intended_use,
        "## Limitations",
        facts.limitations,
        "## Rights",
        _rights(frame),
    ]
    return "\n\n".join(parts) + "\n"


def summary(facts: ModelFacts, snapshot_id: str, n_labels: int, accuracy: str, n_hold: int) -> str:
    """The few lines that also become the registered version's description."""
    return (
        f"{facts.architecture} on {facts.representation}, trained on label snapshot "
        f"`{snapshot_id}` ({n_labels} labels, {len(facts.classes)} classes); holdout "
        f"accuracy {accuracy} on {n_hold} items; {facts.training_mode}, {facts.hardware}. "
        f"Intended use: {facts.intended_use} Full card: artifact `model_card.md` of run "
        f"{facts.run_id or '-'}."
    )


def hardware() -> str:
    """The accelerator that trained, in words."""
    import os
    import platform

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


def write_dataset_card(settings, snapshot_frame) -> str:
    """Write `<snapshot_dir>/<snapshot_id>.md` (idempotent) and return the card."""
    catalogue = read_catalogue_or_none(settings)
    card = dataset_card(snapshot_frame, catalogue, list(settings.label_classes))
    if len(snapshot_frame) and "snapshot_id" in snapshot_frame:
        path = settings.snapshot_dir / f"{snapshot_frame['snapshot_id'].iloc[0]}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(card)
    return card


def read_catalogue_or_none(settings):
    """The catalogue if there is one (a training frame may come from elsewhere)."""
    import pandas as pd

    path = settings.catalogue_path
    return pd.read_parquet(path) if path.exists() else None
