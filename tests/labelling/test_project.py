"""Labelling against a real Label Studio (the session `stack`): collection init, export round
trip, predictions, the queue, the demo annotator, the trigger service, and a restart.

Each test module uses its own Label Studio project names, so other tests sharing the stack
are not disturbed; the images live under the stack's data dir (Label Studio's document root).
"""

import time

import httpx
import numpy as np
import pytest
from pydantic import SecretStr

from flywheel import services
from flywheel.errors import InputError
from flywheel.labelling import (
    DEMO_EMAIL,
    DemoAnnotator,
    export_labels,
    init_demo,
    predictions_of,
    queue_for_labelling,
    read_catalogue,
    select_for_labelling,
    unlabelled_items,
    upload_predictions,
)
from flywheel.labelling import client as lsc
from flywheel.labelling.annotator import choice_result
from flywheel.labelling.collection import register_tasks
from flywheel.labelling.trigger import TOKEN_HEADER
from tests.conftest import free_port, make_settings

N_ITEMS = 30


@pytest.fixture(scope="module")
def project(stack):
    """A 30-digit demo project of its own on the shared Label Studio."""
    settings = stack.model_copy(
        update={"label_studio_project": "labelling-tests", "trigger_port": free_port()}
    )
    init_demo(settings, limit=N_ITEMS)
    return settings


def _tasks(settings):
    return lsc.tasks_by_item(lsc.project_tasks(settings))


def test_collection_init_is_idempotent(project):
    before = _tasks(project)
    assert sorted(before) == [f"digits-{i:04d}" for i in range(N_ITEMS)]
    rows = init_demo(project, limit=N_ITEMS)
    after = _tasks(project)
    assert {k: t["id"] for k, t in after.items()} == {k: t["id"] for k, t in before.items()}
    assert len(read_catalogue(project)) >= N_ITEMS and len(rows) == N_ITEMS
    ls = lsc.client(project)
    p = lsc.get_project(project, ls)
    assert len(ls.import_storage.local.list(project=p.id)) == 1
    assert len(ls.webhooks.list(project=str(p.id))) == 1
    assert sum(v.data["title"] == lsc.QUEUE_VIEW for v in ls.views.list(project=p.id)) == 1
    # Label Studio serves the card from local-files storage (with the token)
    task = after["digits-0007"]
    resp = httpx.get(
        project.label_studio_base_url + task["data"]["image"],
        headers={"Authorization": f"Token {project.ls_token}"},
    )
    assert resp.status_code == 200 and resp.content[:4] == b"\x89PNG"


def test_export_round_trip(project):
    ls = lsc.client(project)
    tasks = _tasks(project)
    annotator = DemoAnnotator(project)
    assert annotator.label(["digits-0000", "digits-0001", "digits-0002"]) == 3
    assert annotator.label(["digits-0000"]) == 0  # idempotent
    # a person overrules the demo annotator on digits-0001 (latest wins)
    ls.annotations.create(tasks["digits-0001"]["id"], result=choice_result("7"))
    # a person skips digits-0003: not a label
    ls.annotations.create(tasks["digits-0003"]["id"], result=[], was_cancelled=True)

    snap = export_labels(project)
    got = snap.frame.set_index("item_id")
    assert list(got.index) == ["digits-0000", "digits-0001", "digits-0002"]
    assert got.label.to_dict() == {"digits-0000": "0", "digits-0001": "7", "digits-0002": "2"}
    assert got.at["digits-0000", "annotator"] == DEMO_EMAIL
    assert got.at["digits-0001", "annotator"] == project.label_studio_username
    assert got.at["digits-0002", "task_id"] == tasks["digits-0002"]["id"]
    assert (snap.frame.snapshot_id == snap.snapshot_id).all()
    assert snap.stats["cancelled"] == 1 and snap.stats["overruled"] == 1
    assert snap.path.exists() and snap.path.name == f"{snap.snapshot_id}.parquet"
    assert export_labels(project).snapshot_id == snap.snapshot_id  # same labels, same id

    # a label outside the classes stops the export, naming the task
    bad = ls.annotations.create(tasks["digits-0004"]["id"], result=choice_result("cat"))
    try:
        with pytest.raises(
            InputError,
            match=rf"task {tasks['digits-0004']['id']} "
            r"\(item digits-0004\) is labelled 'cat'",
        ):
            export_labels(project)
    finally:
        ls.annotations.delete(bad.id)
    assert export_labels(project).snapshot_id == snap.snapshot_id


def test_empty_project_exports_an_empty_snapshot(stack):
    empty = stack.model_copy(
        update={"label_studio_project": "labelling-empty", "trigger_port": free_port()}
    )
    lsc.ensure_project(empty)
    snap = export_labels(empty)
    assert len(snap.frame) == 0 and snap.stats["tasks"] == 0


def test_missing_project_is_a_clear_error(stack):
    nowhere = stack.model_copy(update={"label_studio_project": "no-such-project"})
    with pytest.raises(InputError, match="no project 'no-such-project'.*collection init"):
        export_labels(nowhere)


def test_predictions_selection_and_queue(project):
    pool = unlabelled_items(project)
    assert "digits-0000" not in pool and "digits-0003" in pool  # skipped = still unlabelled
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=len(pool))
    assert upload_predictions(project, pool, probs, "model-v1") == len(pool)
    assert upload_predictions(project, pool, probs, "model-v1") == 0  # idempotent
    shown = predictions_of(project, pool[0])
    assert [(p["model_version"], p["score"]) for p in shown] == [
        ("model-v1", pytest.approx(probs[0].max()))
    ]
    assert shown[0]["result"][0]["value"]["choices"] == [str(int(probs[0].argmax()))]
    ls = lsc.client(project)
    assert ls.projects.get(lsc.get_project(project, ls).id).model_version == "model-v1"

    chosen = select_for_labelling(probs, pool, 5, "margin")
    assert queue_for_labelling(project, chosen, tag="model-v1") == 5
    assert queue_for_labelling(project, chosen, tag="model-v1") == 0
    tasks = _tasks(project)
    assert [tasks[i]["data"]["priority"] for i in chosen] == [5, 4, 3, 2, 1]
    assert {tasks[i]["data"]["queued_for"] for i in chosen} == {"model-v1"}
    # the queue tab lists these first
    view = next(
        v
        for v in ls.views.list(project=lsc.get_project(project, ls).id)
        if v.data["title"] == lsc.QUEUE_VIEW
    )
    listed = [t.data["item_id"] for t in ls.tasks.list(view=view.id, page_size=10)]
    assert listed[:5] == chosen and "digits-0000" not in listed

    with pytest.raises(InputError, match="shape"):
        upload_predictions(project, pool, probs[:, :3], "model-v2")
    with pytest.raises(InputError, match="no Label Studio task for item nope"):
        upload_predictions(project, ["nope"], probs[:1], "model-v2")


# --- the trigger service -------------------------------------------------------------------


def _status(settings):
    return httpx.get(settings.url(settings.trigger_port) + "/status").json()


def _wait(settings, predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        status = _status(settings)
        if predicate(status):
            return status
        assert time.monotonic() < deadline, f"trigger status never matched: {status}"
        time.sleep(0.2)


def test_trigger_fires_once_after_n_labels(project, tmp_path):
    # its own project (a clean slate) on the same items; its own supervisord home
    own = project.model_copy(update={"label_studio_project": "labelling-trigger"})
    register_tasks(own, read_catalogue(project).head(12))
    trig = make_settings(
        tmp_path / "trigger-home",
        label_studio_port=project.label_studio_port,
        label_studio_token=SecretStr(project.ls_token),
        trigger_port=project.trigger_port,
        label_studio_project="labelling-trigger",
        trigger_min_labels=3,
        trigger_poll_s=0,
        trigger_action="flywheel.labelling.trigger:log_turn",  # count, start no turn
        trigger_token=SecretStr(own.webhook_token),  # the secret the webhook was made with
    )
    url = trig.url(trig.trigger_port)
    token = {TOKEN_HEADER: own.webhook_token}
    annotator = DemoAnnotator(own)
    try:
        services.up(trig, ["trigger"])
        assert _status(trig)["recorded"] == 0

        annotator.label(["digits-0000", "digits-0001"])  # webhooks deliver these
        s = _wait(trig, lambda s: s["recorded"] == 2)
        assert s["turns_fired"] == 0 and s["by_source"] == {"webhook": 2}

        # malformed bodies: 4xx with a JSON error, nothing recorded
        for body in (
            b"not json",
            b'{"action": 5}',
            b'{"action": "ANNOTATION_CREATED", "annotation": {"id": "x"}}',
            b'{"action": "ANNOTATION_CREATED"}',
        ):
            resp = httpx.post(
                url + "/webhook",
                content=body,
                headers={"Content-Type": "application/json", **token},
            )
            assert 400 <= resp.status_code < 500 and "error" in resp.json()
        # a repeated webhook for a recorded annotation changes nothing
        first_id = min(a["id"] for t in lsc.project_tasks(own) for a in t["annotations"])
        hook = {"action": "ANNOTATION_UPDATED", "annotation": {"id": first_id}}
        assert httpx.post(url + "/webhook", json=hook, headers=token).json() == {"pending": 0}
        # a forged one without the secret is refused; an id Label Studio does not have is
        # never counted, even with the secret
        assert httpx.post(url + "/webhook", json=hook).status_code == 401
        forged = {"action": "ANNOTATION_CREATED", "annotation": {"id": 10**9, "task": 1}}
        assert httpx.post(url + "/webhook", json=forged, headers=token).json() == {"pending": 1}
        s = _wait(trig, lambda s: s["unconfirmed"] == 1 and s["pending"] == 0)
        assert s["recorded"] == 2 and s["turns_fired"] == 0

        annotator.label(["digits-0002"])  # the third label starts one turn
        s = _wait(trig, lambda s: s["turns_fired"] == 1 and s["turns"][0]["status"] == "done")
        assert s["turns"][0]["labels"] == 3 and s["waiting"] == 0

        annotator.label(["digits-0003", "digits-0004"])
        s = _wait(trig, lambda s: s["recorded"] == 5)
        assert s["turns_fired"] == 1 and s["waiting"] == 2

        # the trigger is down: the webhook is lost, the poll at the next start finds it
        services.down(trig, ["trigger"])
        annotator.label(["digits-0005"])
        polling = trig.model_copy(update={"trigger_poll_s": 0.5})
        services.up(polling, ["trigger"])
        s = _wait(polling, lambda s: s["recorded"] == 6 and s["turns_fired"] == 2)
        assert s["by_source"] == {"webhook": 5, "poll": 1}  # the restart kept the ledger
        assert s["turns"][0]["labels"] == 3
    finally:
        services.down(trig)


def test_cli_export(project):
    from tests.labelling.test_cli import run

    out = run(project, "labels", "export", FLYWHEEL_LABEL_STUDIO_PROJECT="labelling-tests")
    assert out.returncode == 0, out.stderr
    assert f"snapshot {export_labels(project).snapshot_id}" in out.stdout


# --- Label Studio restart (keep last: it restarts the shared server) -------------------------


def test_restart_of_label_studio_loses_no_annotation(project, stack):
    before = export_labels(project)
    assert len(before.frame) >= 3
    services.down(stack, ["label-studio"])
    services.up(stack, ["label-studio"])
    after = export_labels(project)
    assert after.snapshot_id == before.snapshot_id
    assert (after.frame == before.frame).all().all()
