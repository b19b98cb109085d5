"""The demo annotator: answers from the known digit labels, for unattended demos and tests.

It is a real Label Studio user, `demo-annotator@flywheel.local` ("Demo Annotator
(automatic)"), so its work is told apart from people's in the UI and in every export. It
annotates through the same endpoint the labelling UI posts to
(`POST /api/tasks/<id>/annotations/`), with `completed_by` set to itself. A task it has
already answered is left alone, so re-running a turn adds nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterable

from flywheel.errors import InputError
from flywheel.labelling import client as lsc
from flywheel.labelling.collection import read_answers
from flywheel.settings import Settings

DEMO_EMAIL = "demo-annotator@flywheel.local"
DEMO_USERNAME = "demo-annotator"


def choice_result(label: str) -> list[dict]:
    """A Label Studio `result` choosing `label` for the image."""
    return [
        {
            "from_name": lsc.FROM_NAME,
            "to_name": lsc.TO_NAME,
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]


def ensure_demo_user(settings: Settings, ls=None) -> int:
    """The demo annotator's user id (made once)."""
    ls = ls or lsc.client(settings)
    for user in lsc._call("list users", settings, ls.users.list):
        if user.email == DEMO_EMAIL:
            return user.id
    user = lsc._call(
        "create the demo annotator",
        settings,
        ls.users.create,
        username=DEMO_USERNAME,
        email=DEMO_EMAIL,
        first_name="Demo",
        last_name="Annotator (automatic)",
    )
    return user.id


class DemoAnnotator:
    """Labels tasks from the demo answer key, as the `demo-annotator` user."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.ls = lsc.client(settings)
        self.user_id = ensure_demo_user(settings, self.ls)
        self.answers = read_answers(settings)

    def label(self, item_ids: Iterable[str], progress=None) -> int:
        """Annotate each item's task with its true label; returns how many were created."""
        item_ids = [str(i) for i in item_ids]
        unknown = [i for i in item_ids if i not in self.answers]
        if unknown:
            raise InputError(
                f"the demo answer key has no label for {', '.join(unknown[:5])}"
                f"{' ...' if len(unknown) > 5 else ''}"
            )
        tasks = lsc.tasks_by_item(lsc.project_tasks(self.settings, ls=self.ls))
        missing = [i for i in item_ids if i not in tasks]
        if missing:
            raise InputError(
                f"no Label Studio task for {', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''}; "
                "run `flywheel collection init`"
            )
        created = 0
        for item_id in item_ids:
            task = tasks[item_id]
            if not any(
                _by(a) == self.user_id and not a.get("was_cancelled")
                for a in task.get("annotations", [])
            ):
                lsc._call(
                    f"annotate task {task['id']}",
                    self.settings,
                    self.ls.annotations.create,
                    task["id"],
                    result=choice_result(self.answers[item_id]),
                    completed_by=self.user_id,
                    lead_time=0.0,
                )
                created += 1
            if progress:
                progress()
        return created


def _by(annotation: dict) -> int | None:
    who = annotation.get("completed_by")
    return who.get("id") if isinstance(who, dict) else who
