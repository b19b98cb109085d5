"""The model's guesses in Label Studio, and the queue of items to label next.

- `upload_predictions(settings, item_ids, probabilities, model_version)` attaches the
  model's top class to each item's task as a Label Studio prediction (`model_version`,
  `score` = the top class probability) and makes that version the project's pre-annotation
  source, so annotators see the guess. A task that already has a prediction of this
  `model_version` is skipped: re-running a turn adds nothing twice.
- `queue_for_labelling(settings, item_ids)` puts the chosen items first for annotators: it
  sets the task field `data.priority` (highest for the first item) and `data.queued_for`
  (a tag, e.g. the model version); the project's Data Manager tab "flywheel queue" lists
  unlabelled tasks ordered by that priority ("Label tasks as displayed").
- `unlabelled_items(settings)` is the pool the acquisition functions score: items whose
  task has no usable annotation (the export's rules), sorted by item id.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from flywheel.errors import InputError
from flywheel.labelling import client as lsc
from flywheel.labelling.export import _choice
from flywheel.settings import Settings


def _check_items(tasks: dict, item_ids: Sequence[str]) -> None:
    missing = [i for i in item_ids if i not in tasks]
    if missing:
        raise InputError(
            f"no Label Studio task for item {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}"
        )


def upload_predictions(
    settings: Settings, item_ids: Sequence[str], probabilities, model_version: str
) -> int:
    """Attach the model's guess to each item's task; returns how many were added."""
    from label_studio_sdk import PredictionRequest

    item_ids = [str(i) for i in item_ids]
    p = np.asarray(probabilities, dtype=np.float64)
    classes = settings.label_classes
    if p.ndim != 2 or p.shape != (len(item_ids), len(classes)):
        raise InputError(
            f"probabilities must have shape [{len(item_ids)} items, "
            f"{len(classes)} classes], got {p.shape}"
        )
    if not model_version:
        raise InputError("model_version must not be empty")
    ls = lsc.client(settings)
    project = lsc.get_project(settings, ls)
    tasks = lsc.tasks_by_item(lsc.project_tasks(settings, project, ls))
    _check_items(tasks, item_ids)
    existing = lsc.project_predictions(settings, project, ls)
    new = []
    for item_id, row in zip(item_ids, p, strict=True):
        task = tasks[item_id]
        if any(pr["model_version"] == model_version for pr in existing.get(task["id"], [])):
            continue
        top = int(row.argmax())
        new.append(
            PredictionRequest(
                task=task["id"],
                model_version=model_version,
                score=float(row[top]),
                result=[
                    {
                        "from_name": lsc.FROM_NAME,
                        "to_name": lsc.TO_NAME,
                        "type": "choices",
                        "value": {"choices": [classes[top]]},
                    }
                ],
            )
        )
    for start in range(0, len(new), 1000):
        lsc._call(
            "import predictions",
            settings,
            ls.projects.import_predictions,
            project.id,
            request=new[start : start + 1000],
        )
    if new or item_ids:
        lsc._call(
            "set the project's model version",
            settings,
            ls.projects.update,
            project.id,
            model_version=model_version,
            show_collab_predictions=True,
        )
    return len(new)


def queue_for_labelling(settings: Settings, item_ids: Sequence[str], tag: str = "next") -> int:
    """Make these items come first for annotators (first item highest); returns how many
    tasks changed. Items already labelled are left as they are."""
    item_ids = [str(i) for i in item_ids]
    ls = lsc.client(settings)
    project = lsc.get_project(settings, ls)
    lsc.ensure_queue_view(settings, project, ls)
    tasks = lsc.tasks_by_item(lsc.project_tasks(settings, project, ls))
    _check_items(tasks, item_ids)
    updates = []
    for rank, item_id in enumerate(item_ids):
        task = tasks[item_id]
        if _labelled(task):
            continue
        data = dict(task["data"])
        wanted = {"priority": len(item_ids) - rank, "queued_for": tag}
        if all(data.get(k) == v for k, v in wanted.items()):
            continue
        data.update(wanted)
        updates.append((task["id"], data))

    def update(task_id, data):
        lsc._call(f"queue task {task_id}", settings, ls.tasks.update, str(task_id), data=data)

    # One PATCH per task (Label Studio has no bulk update of task data): a few at a time.
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda u: update(*u), updates))
    return len(updates)


def _labelled(task: dict) -> bool:
    return any(
        not a.get("was_cancelled") and _choice(a) is not None for a in task.get("annotations") or []
    )


def unlabelled_items(settings: Settings) -> list[str]:
    """Item ids whose task has no usable annotation, sorted."""
    tasks = lsc.project_tasks(settings)
    return sorted(lsc.item_id_of(t) for t in tasks if not _labelled(t))


def predictions_of(settings: Settings, item_id: str) -> list[dict]:
    """The predictions on an item's task (model_version, score, result), oldest first."""
    ls = lsc.client(settings)
    project = lsc.get_project(settings, ls)
    tasks = lsc.tasks_by_item(lsc.project_tasks(settings, project, ls))
    _check_items(tasks, [item_id])
    found = lsc.project_predictions(settings, project, ls).get(tasks[item_id]["id"], [])
    return sorted(found, key=lambda p: p["id"])
