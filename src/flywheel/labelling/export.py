"""Export: the project's annotations as a versioned label snapshot (parquet).

`export_labels(settings) -> Snapshot` reads every task with its annotations (one Label
Studio JSON export) and keeps one label per task by these rules:

- cancelled (skipped) annotations and annotations with no choice are ignored;
- of the remaining annotations on a task, the **latest wins** (by `updated_at`, then by
  annotation id): a person correcting a label, or a reviewer overruling the demo annotator,
  takes effect (policy `latest`, the default: tasks are labelled once unless someone
  deliberately relabels). With several annotators per task (`FLYWHEEL_LABEL_OVERLAP`),
  `FLYWHEEL_LABEL_RESOLUTION=majority` or `review` settles disagreements instead, and a
  contested item goes to review (left out of the snapshot);
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
The snapshot also has n_annotators and agreement (the share of annotators who chose the label;
see `flywheel.labelling.agreement` for overlap and the `FLYWHEEL_LABEL_RESOLUTION` policy),
outside the id's hash; the project's agreement numbers go to `<snapshot_id>.agreement.json`.
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
# per-item agreement (flywheel.labelling.agreement), after COLUMNS; not part of the id
AGREEMENT_COLUMNS = ["n_annotators", "agreement"]


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
    policy: str = "latest",
    max_bad_share: float = 0.0,
    quarantine: list[dict] | None = None,
):
    """Apply the rules above to exported tasks; returns (rows, stats).

    With several annotators on a task, `policy` (flywheel.labelling.agreement) settles
    disagreements; stats["agreement"] holds the agreement numbers. Bad rows go to
    `quarantine` (a list the caller passes, one dict per bad task with its reason); more
    than `max_bad_share` of the labelled tasks bad raises InputError."""
    from flywheel.labelling import agreement as agr

    agr.check_policy(policy)
    allowed = set(classes)
    rows = []
    quarantine = [] if quarantine is None else quarantine
    stats = {"tasks": len(tasks), "labelled": 0, "unlabelled": 0, "cancelled": 0, "overruled": 0}
    votes_by_item, resolved = {}, {}
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
        try:
            item_id = lsc.item_id_of(task)
        except InputError as exc:
            quarantine.append(
                {"task_id": task.get("id"), "label": _choice(live[-1]), "reason": str(exc)}
            )
            continue
        n_live = len(live)
        votes = agr.votes_of(live, lambda a: user_email(a.get("completed_by")))
        votes_by_item[item_id] = votes
        if policy != "latest" and len(votes) > 1:
            resolved[item_id] = agr.resolve_votes(votes, policy)
            if resolved[item_id] is None:
                continue  # goes to review: not trained on
            live = [a for a in live if _choice(a) == resolved[item_id]]
        winner = max(
            live, key=lambda a: (a.get("updated_at") or a.get("created_at") or "", a.get("id") or 0)
        )
        stats["overruled"] += n_live - 1
        label = _choice(winner)
        resolved[item_id] = label
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
                "n_annotators": len(votes),
                "agreement": agr.item_agreement(votes, label),
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
    stats["agreement"] = agr.summary(votes_by_item, resolved)
    stats["in_review"] = len(stats["agreement"]["in_review"])
    return rows, stats


def snapshot_frame(rows: list[dict]):
    """Rows -> the snapshot DataFrame with its content-hash id."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=COLUMNS[:-1] + AGREEMENT_COLUMNS)
    frame["n_annotators"] = frame["n_annotators"].fillna(1).astype("int64")
    frame["agreement"] = frame["agreement"].fillna(1.0).astype("float64")
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
    frame = frame[COLUMNS + AGREEMENT_COLUMNS]
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
        settings.label_resolution,
        settings.export_max_bad_share,
        bad,
    )
    frame, snapshot_id = snapshot_frame(rows)
    frame.attrs["agreement"] = stats["agreement"]  # for the dataset card
    if bad:
        _write_quarantine(settings, snapshot_id, bad)
    uri = write_snapshot(settings, frame, snapshot_id)
    _write_cards(settings, frame, uri, stats["agreement"])
    return Snapshot(snapshot_id, objectstore.location(uri), frame, stats)


def _write_cards(settings: Settings, frame, uri: str, agreement: dict) -> None:
    """The dataset card (`<id>.md`) and the agreement numbers (`<id>.agreement.json`) beside
    the snapshot: on this disk locally, in the object store in cluster mode (never on a
    pod's own disk)."""
    import json

    from flywheel.cards import dataset_card, read_catalogue_or_none, write_dataset_card

    if not objectstore.is_remote(uri):
        write_dataset_card(settings, frame)
        write_quality(Path(uri), agreement)
        return
    base = uri[: -len(".parquet")]
    card = dataset_card(frame, read_catalogue_or_none(settings), list(settings.label_classes))
    objectstore.write_bytes(settings, f"{base}.md", card.encode())
    quality = json.dumps(agreement, indent=1, sort_keys=True) + "\n"
    objectstore.write_bytes(settings, f"{base}.agreement.json", quality.encode())


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


def quality_path(snapshot_path: Path) -> Path:
    """`<snapshot_id>.agreement.json` beside the snapshot: its agreement numbers."""
    return snapshot_path.with_suffix(".agreement.json")


def write_quality(snapshot_path: Path, agreement: dict) -> Path:
    import json

    path = quality_path(snapshot_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(agreement, indent=1, sort_keys=True) + "\n")
    return path


def read_snapshot(settings: Settings, snapshot_id: str):
    """A snapshot written earlier, by id."""
    uri = snapshot_uri(settings, snapshot_id)
    if not objectstore.exists(settings, uri):
        raise InputError(
            f"no label snapshot {snapshot_id!r} at {uri}; run `flywheel labels export`"
        )
    return objectstore.read_parquet(settings, uri)
