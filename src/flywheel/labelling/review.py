"""Review tags: items a person should look at again, shown in a Data Manager tab of their own.

Monitoring marks tasks for review without touching their annotations: drift monitoring
("drift review": the served items least like the training set) and the approval gate
("flip review": the items whose predicted label a challenger would change). Each is one
task data field (`data.<field>` = the run's tag, `data.<field>_score` = how strongly the
item was picked) and one Data Manager tab (`title`) that lists the tasks that carry the
field, highest score first. Tagging again with a new tag re-tags; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from flywheel.errors import InputError
from flywheel.labelling import client as lsc
from flywheel.settings import Settings


def ensure_review_view(settings: Settings, project, field: str, title: str, ls=None) -> None:
    """A Data Manager tab `title`: tasks whose `data.<field>` is set, highest score first."""
    ls = ls or lsc.client(settings)
    views = lsc._call("list views", settings, ls.views.list, project=project.id)
    if any((v.data or {}).get("title") == title for v in views):
        return
    data = {
        "title": title,
        "ordering": [f"-tasks:data.{field}_score"],
        "filters": {
            "conjunction": "and",
            "items": [
                {
                    "filter": f"filter:tasks:data.{field}",
                    "operator": "empty",
                    "type": "String",
                    "value": False,
                }
            ],
        },
    }
    lsc._call(f"add the {title!r} view", settings, ls.views.create, project=project.id, data=data)


def tag_for_review(
    settings: Settings,
    item_ids: Sequence[str],
    field: str,
    tag: str,
    title: str,
    scores: Sequence[float] | None = None,
) -> int:
    """Set `data.<field>=tag` (and `data.<field>_score`) on the items' tasks and make sure
    the tab `title` exists. Returns how many tasks changed. Unknown items: InputError."""
    item_ids = [str(i) for i in item_ids]
    scores = (
        list(scores)
        if scores is not None
        else [float(len(item_ids) - n) for n in range(len(item_ids))]
    )
    ls = lsc.client(settings)
    project = lsc.get_project(settings, ls)
    ensure_review_view(settings, project, field, title, ls)
    tasks = lsc.tasks_by_item(lsc.project_tasks(settings, project, ls))
    missing = [i for i in item_ids if i not in tasks]
    if missing:
        raise InputError(
            f"{len(missing)} items have no Label Studio task in project "
            f"{settings.label_studio_project!r}: {', '.join(missing[:5])}"
        )
    updates = []
    for item_id, score in zip(item_ids, scores, strict=True):
        task = tasks[item_id]
        wanted = {field: tag, f"{field}_score": round(float(score), 6)}
        if all(task["data"].get(k) == v for k, v in wanted.items()):
            continue
        updates.append((task["id"], {**task["data"], **wanted}))

    def update(task_id, data):
        lsc._call(f"tag task {task_id}", settings, ls.tasks.update, str(task_id), data=data)

    with ThreadPoolExecutor(max_workers=4) as pool:  # one PATCH per task, a few at a time
        list(pool.map(lambda u: update(*u), updates))
    return len(updates)


def tagged(settings: Settings, field: str) -> dict[str, str]:
    """item id -> tag, for the tasks that carry `data.<field>`."""
    tasks = lsc.tasks_by_item(lsc.project_tasks(settings))
    return {i: t["data"][field] for i, t in tasks.items() if t["data"].get(field)}
