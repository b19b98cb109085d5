"""Export: the project's annotations as a versioned label snapshot (parquet).

`export_labels(settings) -> Snapshot` reads every task with its annotations (one Label
Studio JSON export) and keeps one label per task by these rules:

- cancelled (skipped) annotations and annotations with no choice are ignored;
- of the remaining annotations on a task, the **latest wins** (by `updated_at`, then by
  annotation id): a person correcting a label, or a reviewer overruling the demo annotator,
  takes effect; majority voting is not used because tasks are labelled once
  (`maximum_annotations=1`) unless someone deliberately relabels;
- tasks with no remaining annotation are not in the snapshot (they are unlabelled);
- a bad row, a label outside `settings.label_classes` (e.g. the labelling config was edited)
  or a task without `data.item_id`, is quarantined: left out of the snapshot, counted
  (`stats["quarantined"]`) and listed with its reason in
  `settings.snapshot_dir/quarantine/<snapshot_id>.json`. The export fails loudly (an
  InputError naming the first bad task) only when the labelled share drops: when more than
  `FLYWHEEL_EXPORT_MAX_BAD_SHARE` of the labelled tasks are bad;
- an empty project (or one with no labels yet) gives an empty snapshot, which is still a
  valid, versioned snapshot.

Columns: item_id, label, annotator (e-mail), annotated_at (UTC), task_id, snapshot_id; rows
sorted by item_id. The snapshot id is a content hash of those rows, so the same annotations
always give the same id and file, and a pipeline run keyed on it can be cached and
reproduced. The file is `snapshot_uri(settings, id)`: `<home>/data/snapshots/<id>.parquet` on
the dev box, `<state_uri>/snapshots/<id>.parquet` (the object store) in cluster mode, so a
step in another pod reads the same snapshot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from flywheel import objectstore
from flywheel.errors import InputError
from flywheel.labelling import client as lsc
from flywheel.settings import Settings

COLUMNS = ["item_id", "label", "annotator", "annotated_at", "task_id", "snapshot_id"]


@dataclass
class Snapshot:
    snapshot_id: str
    path: Path | str  # a local Path, or an s3:// URI in cluster mode (see snapshot_uri)
    frame: object  # pandas.DataFrame with COLUMNS
    stats: dict = field(default_factory=dict)


def _choice(annotation: dict) -> str | None:
    """The single choice of an annotation's result, or None when it chose nothing."""
    for region in annotation.get("result") or []:
        if region.get("type") == "choices" and region.get("from_name") == lsc.FROM_NAME:
            choices = (region.get("value") or {}).get("choices") or []
            if choices:
                return str(choices[0])
    return None


def resolve(
    tasks: list[dict],
    classes: list[str],
    user_email=lambda u: str(u),
    max_bad_share: float = 0.0,
    quarantine: list[dict] | None = None,
):
    """Apply the rules above to exported tasks; returns (rows, stats).

    Bad rows go to `quarantine` (a list the caller passes, one dict per bad task with its
    reason); more than `max_bad_share` of the labelled tasks bad raises InputError."""
    allowed = set(classes)
    rows = []
    quarantine = [] if quarantine is None else quarantine
    stats = {"tasks": len(tasks), "labelled": 0, "unlabelled": 0, "cancelled": 0, "overruled": 0}
    for task in tasks:
        live = []
        for a in task.get("annotations") or []:
            if a.get("was_cancelled"):
                stats["cancelled"] += 1
            elif _choice(a) is not None:
                live.append(a)
        if not live:
            stats["unlabelled"] += 1
            continue
        winner = max(
            live, key=lambda a: (a.get("updated_at") or a.get("created_at") or "", a.get("id") or 0)
        )
        stats["overruled"] += len(live) - 1
        label = _choice(winner)
        try:
            item_id = lsc.item_id_of(task)
        except InputError as exc:
            quarantine.append({"task_id": task.get("id"), "label": label, "reason": str(exc)})
            continue
        if label not in allowed:
            quarantine.append(
                {
                    "task_id": task.get("id"),
                    "item_id": item_id,
                    "label": label,
                    "reason": f"task {task['id']} (item {item_id}) is labelled {label!r}, "
                    f"which is not one of the classes {classes}; fix the annotation in "
                    "Label Studio or FLYWHEEL_LABEL_CLASSES",
                }
            )
            continue
        rows.append(
            {
                "item_id": item_id,
                "label": label,
                "annotator": user_email(winner.get("completed_by")),
                "annotated_at": winner.get("updated_at") or winner.get("created_at"),
                "task_id": int(task["id"]),
            }
        )
        stats["labelled"] += 1
    stats["quarantined"] = len(quarantine)
    labelled = stats["labelled"] + len(quarantine)
    if quarantine and len(quarantine) > max_bad_share * labelled:
        raise InputError(
            f"{len(quarantine)} of {labelled} labelled tasks are bad (more than "
            f"FLYWHEEL_EXPORT_MAX_BAD_SHARE={max_bad_share:g}); the first: "
            f"{quarantine[0]['reason']}"
        )
    return rows, stats


def snapshot_frame(rows: list[dict]):
    """Rows -> the snapshot DataFrame with its content-hash id."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=COLUMNS[:-1])
    frame["annotated_at"] = pd.to_datetime(frame["annotated_at"], utc=True, format="ISO8601")
    frame["annotated_at"] = frame["annotated_at"].astype("datetime64[ns, UTC]")
    frame["task_id"] = frame["task_id"].astype("int64")
    for col in ("item_id", "label", "annotator"):
        frame[col] = frame[col].astype(str)
    frame = frame.sort_values("item_id", kind="stable").reset_index(drop=True)
    digest = hashlib.sha256()
    for r in frame.itertuples(index=False):
        digest.update(
            f"{r.item_id}\t{r.label}\t{r.annotator}\t{r.annotated_at.isoformat()}"
            f"\t{r.task_id}\n".encode()
        )
    snapshot_id = digest.hexdigest()[:16]
    frame["snapshot_id"] = snapshot_id
    return frame, snapshot_id


def export_labels(settings: Settings) -> Snapshot:
    """Export the project's labels as a snapshot (see the rules in the module docstring)."""
    ls = lsc.client(settings)
    tasks = lsc.project_tasks(settings, ls=ls)
    bad: list[dict] = []
    rows, stats = resolve(
        tasks,
        settings.label_classes,
        lambda u: lsc.user_email(settings, u),
        settings.export_max_bad_share,
        bad,
    )
    frame, snapshot_id = snapshot_frame(rows)
    if bad:
        _write_quarantine(settings, snapshot_id, bad)
    uri = write_snapshot(settings, frame, snapshot_id)
    from flywheel.cards import write_dataset_card

    write_dataset_card(settings, frame)  # <snapshot_id>.md beside the local parquet
    return Snapshot(snapshot_id, objectstore.location(uri), frame, stats)


def write_snapshot(settings: Settings, frame, snapshot_id: str) -> str:
    """Store a snapshot frame under its id; returns its URI. Same id = same content, so an
    existing one is never rewritten."""
    uri = snapshot_uri(settings, snapshot_id)
    if not objectstore.exists(settings, uri):
        objectstore.write_parquet(settings, frame, uri)
    return uri


def snapshot_uri(settings: Settings, snapshot_id: str) -> str:
    """Where the snapshot with this id lives (a local path or an s3:// URI)."""
    return objectstore.state_uri(settings, "snapshots", f"{snapshot_id}.parquet")


def _write_quarantine(settings: Settings, snapshot_id: str, bad: list[dict]) -> Path:
    import json

    folder = settings.snapshot_dir / "quarantine"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{snapshot_id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(bad, indent=1, default=str))
    tmp.replace(path)
    return path


def read_snapshot(settings: Settings, snapshot_id: str):
    """A snapshot written earlier, by id."""
    uri = snapshot_uri(settings, snapshot_id)
    if not objectstore.exists(settings, uri):
        raise InputError(
            f"no label snapshot {snapshot_id!r} at {uri}; run `flywheel labels export`"
        )
    return objectstore.read_parquet(settings, uri)
