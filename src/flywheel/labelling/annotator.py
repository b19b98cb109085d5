"""The demo annotator: answers from the known digit labels, for unattended demos and tests.

It is a real Label Studio user, `demo-annotator@flywheel.local` ("Demo Annotator
(automatic)"), so its work is told apart from people's in the UI and in every export. It
annotates through the same endpoint the labelling UI posts to
(`POST /api/tasks/<id>/annotations/`), with `completed_by` set to itself. A task it has
already answered is left alone, so re-running a turn adds nothing twice.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable

from flywheel.errors import InputError
from flywheel.labelling import client as lsc
from flywheel.labelling.collection import read_answers
from flywheel.settings import Settings

DEMO_EMAIL = "demo-annotator@flywheel.local"
DEMO_USERNAME = "demo-annotator"
NOISE_FILE = "demo-noise.json"


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


def noisy_label(item_id: str, label: str, classes: list[str], rate: float) -> str:
    """The label the demo annotator gives: the true one, or with probability `rate` (decided
    by the item id, so the same item always gets the same answer) a wrong one on purpose."""
    rng = random.Random(f"demo-noise:{item_id}")
    if rate <= 0 or rng.random() >= rate:
        return label
    return rng.choice([c for c in classes if c != label])


def injected_errors(settings: Settings) -> dict[str, str]:
    """{item_id: wrong label} the demo annotator gave on purpose (FLYWHEEL_DEMO_NOISE_RATE)."""
    path = settings.data_dir / NOISE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


class DemoAnnotator:
    """Labels tasks from the demo answer key, as the `demo-annotator` user; with
    `noise_rate` > 0 some labels are wrong on purpose (recorded in `<data>/demo-noise.json`)."""

    def __init__(self, settings: Settings, noise_rate: float | None = None):
        self.settings = settings
        self.ls = lsc.client(settings)
        self.user_id = ensure_demo_user(settings, self.ls)
        self.answers = read_answers(settings)
        self.noise_rate = settings.demo_noise_rate if noise_rate is None else noise_rate

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
        injected = injected_errors(self.settings)
        for item_id in item_ids:
            task = tasks[item_id]
            if not any(
                _by(a) == self.user_id and not a.get("was_cancelled")
                for a in task.get("annotations", [])
            ):
                label = noisy_label(
                    item_id, self.answers[item_id], self.settings.label_classes, self.noise_rate
                )
                if label != self.answers[item_id]:
                    injected[item_id] = label
                    _write_injected(self.settings, injected)
                lsc._call(
                    f"annotate task {task['id']}",
                    self.settings,
                    self.ls.annotations.create,
                    task["id"],
                    result=choice_result(label),
                    completed_by=self.user_id,
                    lead_time=0.0,
                )
                created += 1
            if progress:
                progress()
        return created


def _write_injected(settings: Settings, injected: dict[str, str]) -> None:
    path = settings.data_dir / NOISE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(injected, indent=1, sort_keys=True) + "\n")


def _by(annotation: dict) -> int | None:
    who = annotation.get("completed_by")
    return who.get("id") if isinstance(who, dict) else who
