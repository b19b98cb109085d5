"""After the demo, a person finds work waiting: the last turn's picks unlabelled in the
"flywheel queue" tab, most uncertain first, each with the champion's guess and score.

Real Label Studio and MLflow (the session stack); a small collection and two direct turns.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from flywheel.labelling import client as lsc
from flywheel.labelling import predictions_of
from flywheel.labelling.predictions import _labelled
from flywheel.loop.demo import run_demo

N_ITEMS, K = 150, 10


@pytest.fixture(scope="module")
def demo(stack):
    settings = stack.model_copy(
        update={
            "home": stack.items_dir / "demo-queue-home",  # LS serves files under items only
            "label_studio_project": "demo-queue",
            "label_studio_token": SecretStr(stack.ls_token),
            "model_name": "demo-queue-model",
            "mlflow_experiment": "demo-queue",
            "labels_per_turn": K,
        }
    )
    history = run_demo(settings, turns=2, engine="direct", seed_labels=30, limit=N_ITEMS)
    return settings, history


def test_demo_leaves_the_last_picks_queued_for_a_person(demo):
    settings, history = demo
    first, last = history[0]["selected"], history[-1]["selected"]
    assert len(last) == K and len(first) == K
    tasks = lsc.tasks_by_item(lsc.project_tasks(settings))
    assert all(_labelled(tasks[i]) for i in first)  # the demo annotator did turn 1's picks
    champion = history[-1]["champion_version"]
    for rank, item in enumerate(last):
        task = tasks[item]
        assert not _labelled(task), f"{item} was labelled: it should wait for a person"
        assert task["data"]["priority"] == K - rank  # the queue tab sorts on this
        guesses = predictions_of(settings, item)
        assert f"{settings.model_name}-v{champion}" in [g["model_version"] for g in guesses]
        assert all(0 < g["score"] <= 1 for g in guesses)
    # the tab exists, lists unlabelled tasks by priority and keeps the guess columns in view
    ls = lsc.client(settings)
    project = lsc.get_project(settings, ls)
    [view] = [v for v in ls.views.list(project=project.id) if v.data["title"] == lsc.QUEUE_VIEW]
    assert view.data["ordering"] == ["-tasks:data.priority"]
    hidden = view.data["hiddenColumns"]["explore"]
    assert "tasks:predictions_score" not in hidden and "tasks:predictions_results" not in hidden
