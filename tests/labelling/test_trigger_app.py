"""The trigger app in-process (no Label Studio): the hook, idempotence, bad bodies, restart."""

import time

from fastapi.testclient import TestClient

from flywheel.labelling.trigger import create_app, load_action


def webhook(i, action="ANNOTATION_CREATED", **extra):
    return {
        "action": action,
        "annotation": {"id": i, "task": 100 + i, **extra},
        "project": {"id": 1},
    }


def wait_done(client, n):
    deadline = time.monotonic() + 10
    while True:
        status = client.get("/status").json()
        if sum(t["status"] == "done" for t in status["turns"]) >= n:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def test_hook_called_once_per_n_labels(settings):
    settings = settings.model_copy(update={"trigger_min_labels": 3})
    calls = []
    app = create_app(settings, action=lambda s, ids: calls.append(sorted(ids)), poll=False)
    with TestClient(app) as client:
        assert client.get("/health").json() == {"ok": True}
        for i in (1, 2):
            assert client.post("/webhook", json=webhook(i)).json()["turn_fired"] is None
        assert client.post("/webhook", json=webhook(2, "ANNOTATION_UPDATED")).json() == {
            "new": 0,
            "turn_fired": None,
        }
        assert client.post("/webhook", json=webhook(4, was_cancelled=True)).json() == {
            "ignored": "cancelled annotation"
        }
        assert client.post("/webhook", json={"action": "PROJECT_UPDATED"}).json() == {
            "ignored": "PROJECT_UPDATED"
        }
        assert client.post("/webhook", json=webhook(3)).json()["turn_fired"] == 1
        wait_done(client, 1)
        assert calls == [[1, 2, 3]]
        for i in (5, 6):
            client.post("/webhook", json=webhook(i))
        status = client.get("/status").json()
        assert status["waiting"] == 2 and status["turns_fired"] == 1 and calls == [[1, 2, 3]]

    # a new process on the same ledger keeps counting from where it was
    with TestClient(
        create_app(settings, action=lambda s, ids: calls.append(sorted(ids)), poll=False)
    ) as client:
        assert client.get("/status").json()["recorded"] == 5
        client.post("/webhook", json=webhook(7))
        wait_done(client, 2)
    assert calls == [[1, 2, 3], [5, 6, 7]]


def test_bad_bodies_change_nothing(settings):
    with TestClient(create_app(settings, action=lambda s, ids: None, poll=False)) as client:
        bad = [
            b"{",
            b"[]",
            b'{"action": "ANNOTATION_CREATED"}',
            b'{"action": "ANNOTATION_CREATED", "annotation": {"id": "seven"}}',
            b'{"annotation": {"id": 1}}',
        ]
        for body in bad:
            resp = client.post(
                "/webhook", content=body, headers={"Content-Type": "application/json"}
            )
            assert resp.status_code in (400, 422), body
            assert resp.json()["error"]
        assert client.get("/status").json()["recorded"] == 0


def test_failing_hook_is_recorded_and_the_trigger_stays_up(settings):
    settings = settings.model_copy(update={"trigger_min_labels": 1})

    def boom(s, ids):
        raise RuntimeError("pipeline submit failed")

    with TestClient(create_app(settings, action=boom, poll=False)) as client:
        client.post("/webhook", json=webhook(1))
        deadline = time.monotonic() + 10
        while (turns := client.get("/status").json()["turns"])[0]["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert turns[0]["status"] == "failed" and "pipeline submit failed" in turns[0]["error"]
        assert client.get("/health").status_code == 200


def test_poll_without_label_studio_reports_it(settings):
    with TestClient(create_app(settings, action=lambda s, ids: None, poll=False)) as client:
        result = client.post("/poll").json()
        assert result["ok"] is False and "Label Studio" in result["error"]


def test_action_setting_is_checked():
    import pytest

    from flywheel.errors import SettingsError

    assert callable(load_action("flywheel.labelling.trigger:log_turn"))
    with pytest.raises(SettingsError, match="FLYWHEEL_TRIGGER_ACTION"):
        load_action("flywheel.nowhere:go")
    with pytest.raises(SettingsError, match="module:function"):
        load_action("flywheel.labelling.trigger")
