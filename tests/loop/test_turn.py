"""One turn of the loop end to end, as the local Kubeflow pipeline, against real services:
Label Studio and MLflow (the session stack), the Feast embedded stores, the real training.

Small settings so it runs in minutes: 200 demo cards, the holdout (~20 %) and a 40-item seed
set labelled by the demo annotator, 20 items selected per turn.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from flywheel import services
from flywheel.labelling import DemoAnnotator, init_demo, predictions_of
from flywheel.labelling import client as lsc
from flywheel.loop.turn import run_turn
from flywheel.registry import versions
from flywheel.splits import is_holdout
from pipelines.run import PipelineFailed

N_ITEMS, SEED, K = 200, 40, 20


@pytest.fixture(scope="module")
def loop(stack):
    """A project, model and home of their own, under the stack's Label Studio file root."""
    settings = stack.model_copy(
        update={
            "home": stack.items_dir / "loop-home",  # LS serves files under items only
            "label_studio_project": "loop-e2e",
            "label_studio_token": SecretStr(stack.ls_token),
            "model_name": "loop-e2e-model",
            "mlflow_experiment": "loop-e2e",
            "labels_per_turn": K,
        }
    )
    init_demo(settings, limit=N_ITEMS)
    items = [f"digits-{i:04d}" for i in range(N_ITEMS)]
    holdout = [i for i in items if is_holdout(i, settings.holdout_fraction)]
    seed = [i for i in items if i not in holdout][:SEED]
    DemoAnnotator(settings).label(holdout + seed)
    return settings


def _n_holdout(settings) -> int:
    return sum(is_holdout(f"digits-{i:04d}", settings.holdout_fraction) for i in range(N_ITEMS))


def _tasks(settings):
    return lsc.tasks_by_item(lsc.project_tasks(settings))


def test_one_turn_end_to_end(loop):
    report = run_turn(loop, engine="kfp")
    assert report.n_labels == _n_holdout(loop) + SEED
    assert report.model_version == "1" and report.champion_version == "1"
    assert report.promoted  # no champion yet: the first model becomes champion
    assert 0.3 < report.challenger_accuracy <= 1.0  # 40 training labels, ten classes
    for step in (
        "export_labels",
        "build_features",
        "train",
        "evaluate",
        "register",
        "select_for_labelling",
        "deploy",  # promoted: the deploy branch ran (no model server here: a no-op)
    ):
        assert step in report.steps
    # the uncertain items are queued first, with the champion's guess attached
    assert len(report.selected) == K
    tasks = _tasks(loop)
    for rank, item in enumerate(report.selected):
        task = tasks[item]
        assert not is_holdout(item, loop.holdout_fraction)
        assert task["data"]["priority"] == K - rank
        guesses = predictions_of(loop, item)
        assert [g["model_version"] for g in guesses] == ["loop-e2e-model-v1"]
        assert 0 < guesses[0]["score"] <= 1
    [v1] = versions(loop)
    assert "champion" in v1.aliases


def test_second_identical_run_is_served_from_cache(loop):
    before = len(versions(loop))
    tasks_before = len(_tasks(loop))
    report = run_turn(loop, engine="kfp")
    assert "train" not in report.steps  # the train task was a cache hit
    assert "build_features" not in report.steps
    assert report.model_version == "1"
    assert len(versions(loop)) == before  # nothing registered twice
    assert len(_tasks(loop)) == tasks_before


def test_failed_step_then_rerun_after_recovery(loop, stack):
    """The tracking server stops mid-run: the run fails naming the cause; after recovery a
    rerun completes with one new version and no duplicate tasks or predictions."""
    DemoAnnotator(loop).label(_unlabelled_selected(loop))  # new labels: a new snapshot
    before = len(versions(loop))
    tasks_before = len(_tasks(loop))
    services.down(stack, ["mlflow"])  # the stack's supervisor runs the server
    try:
        with pytest.raises(PipelineFailed) as info:
            run_turn(loop, engine="kfp")
        assert "train" in str(info.value)
    finally:
        services.up(stack, ["mlflow"])
    report = run_turn(loop, engine="kfp")
    after = versions(loop)
    assert len(after) == before + 1 and report.model_version == after[-1].version
    assert len(_tasks(loop)) == tasks_before
    for item in report.selected:
        versions_seen = [g["model_version"] for g in predictions_of(loop, item)]
        assert len(versions_seen) == len(set(versions_seen))  # no duplicate predictions


def _unlabelled_selected(settings):
    import json

    from flywheel.loop.turn import selection_path

    return json.loads(selection_path(settings).read_text())["item_ids"]


def test_trigger_action_runs_a_turn_and_skips_while_one_runs(loop):
    """What the trigger service calls: a real turn in a child process; nothing while a turn
    (here: this test holding the loop lock) is already running."""
    from flywheel.loop.lock import Busy, loop_lock
    from flywheel.loop.trigger_action import run_turn_now

    DemoAnnotator(loop).label(_unlabelled_selected(loop))
    before = len(versions(loop))
    with loop_lock(loop), pytest.raises(Busy):  # `loop run --no-wait` exits 75: re-arm
        run_turn_now(loop, [1, 2, 3])
    assert len(versions(loop)) == before
    assert "already running" in (loop.log_dir / "loop.log").read_text()
    run_turn_now(loop, [1, 2, 3])
    assert len(versions(loop)) == before + 1


def test_model_card_of_a_demo_turn(loop):
    """The turn's registered version carries a model card with every section, its summary as
    the version's description, the snapshot as the run's dataset input; the snapshot has its
    dataset card."""
    import mlflow
    from mlflow import MlflowClient

    from flywheel.cards import DATASET_SECTIONS, MODEL_SECTIONS
    from flywheel.registry import RegistryError

    try:
        first = versions(loop)[0]
    except (RegistryError, IndexError):  # run alone: make the turn first
        run_turn(loop, engine="direct")
        first = versions(loop)[0]
    client = MlflowClient(loop.tracking_uri)
    mlflow.set_tracking_uri(loop.tracking_uri)  # earlier tests may have pointed it elsewhere
    card = mlflow.artifacts.load_text(f"runs:/{first.run_id}/model_card.md")
    for section in MODEL_SECTIONS:
        assert f"\n## {section}\n" in card, section
    assert card.startswith(f"# Model card: {loop.model_name} version {first.version}")
    assert "@" not in card  # annotators are counted, never named by e-mail
    assert "annotator-" in card and "| digits |" in card  # annotators; the collection
    assert "holdout items" in card and "true \\ predicted" in card
    assert loop.model_intended_use in card and loop.model_limitations in card
    mv = client.get_model_version(loop.model_name, first.version)
    assert "holdout accuracy" in mv.description and "model_card.md" in mv.description
    run = client.get_run(first.run_id)
    [dataset_input] = run.inputs.dataset_inputs
    snapshot_id = run.data.tags["snapshot_id"]
    assert dataset_input.dataset.name == f"label-snapshot-{snapshot_id}"
    dataset_card = (loop.snapshot_dir / f"{snapshot_id}.md").read_text()
    for section in DATASET_SECTIONS:
        assert f"\n## {section}\n" in dataset_card, section
    logged = mlflow.artifacts.load_text(f"runs:/{first.run_id}/dataset_card.md")
    assert logged.splitlines()[0] == dataset_card.splitlines()[0]
