"""The trigger app in-process, without Label Studio: authentication and bounds of the webhook,
the ledger's turns (fire, busy, failure, interruption), the poll rate limit.

Webhook ids are counted only once Label Studio confirms them (tests/labelling/
test_trigger_confirm.py, with the real server); here turns are fed through the ledger's
`record`, the path both confirmed webhooks and polls take."""

import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from flywheel.labelling.trigger import MAX_ID, TOKEN_HEADER, Trigger, create_app, load_action
from flywheel.loop.lock import Busy


def webhook(i, action="ANNOTATION_CREATED", **extra):
    return {
        "action": action,
        "annotation": {"id": i, "task": 100 + i, **extra},
        "project": {"id": 1},
    }


def auth(settings) -> dict:
    return {TOKEN_HEADER: settings.webhook_token}


def wait_turns(trigger, n, status=("done", "failed", "busy")):
    deadline = time.monotonic() + 20
    while True:
        state = trigger.ledger.status()
        if sum(t["status"] in status for t in state["turns"]) >= n:
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.05)


def test_webhook_needs_the_secret_header(settings):
    with TestClient(create_app(settings, action=lambda s, ids: None, poll=False)) as client:
        assert client.post("/webhook", json=webhook(1)).status_code == 401
        wrong = {TOKEN_HEADER: "x" * len(settings.webhook_token)}
        resp = client.post("/webhook", json=webhook(1), headers=wrong)
        assert resp.status_code == 401 and TOKEN_HEADER in resp.json()["error"]
        resp = client.post("/webhook", json=webhook(1), headers=auth(settings))
        assert resp.status_code == 200 and resp.json() == {"pending": 1}
        assert client.post("/webhook", json=webhook(1), headers=auth(settings)).json() == {
            "pending": 0  # a repeated hook changes nothing
        }
        state = client.get("/status").json()
        assert state["pending"] == 1 and state["recorded"] == 0  # not counted on its word
    # the secret is generated once and kept: a second process reads the same one
    assert (settings.home / "secrets" / "trigger_token").read_text() == settings.webhook_token


def test_bad_bodies_get_4xx_and_change_nothing(settings):
    settings = settings.model_copy(update={"trigger_max_body_bytes": 2048})
    with TestClient(create_app(settings, action=lambda s, ids: None, poll=False)) as client:
        h = {**auth(settings), "Content-Type": "application/json"}
        cases = [
            (b"{", h, 400),
            (b"[]", h, 422),
            (b'{"action": "ANNOTATION_CREATED"}', h, 422),
            (b'{"action": "ANNOTATION_CREATED", "annotation": {"id": "seven"}}', h, 422),
            (b'{"annotation": {"id": 1}}', h, 422),
            (json.dumps(webhook(MAX_ID + 1)).encode(), h, 422),  # never a 500 from sqlite
            (json.dumps(webhook(-3)).encode(), h, 422),
            (json.dumps(webhook(10**40)).encode(), h, 422),
            (json.dumps(webhook(1)).encode(), {**h, "Content-Type": "text/plain"}, 415),
            (json.dumps(webhook(1)).encode(), {TOKEN_HEADER: settings.webhook_token}, 415),
            (json.dumps(webhook(1, pad="x" * 4096)).encode(), h, 413),
        ]
        for body, headers, code in cases:
            resp = client.post("/webhook", content=body, headers=headers)
            assert resp.status_code == code, (body[:80], resp.status_code, resp.text)
            assert resp.json()["error"]

        def chunks():  # no Content-Length: the cap holds while reading
            for _ in range(8):
                yield b" " * 1024

        resp = client.post("/webhook", content=chunks(), headers=h)
        assert resp.status_code == 413
        state = client.get("/status").json()
        assert state["recorded"] == 0 and state["pending"] == 0
        assert client.get("/health").status_code == 200


def test_turn_fires_once_per_n_labels_and_a_restart_keeps_counting(settings):
    settings = settings.model_copy(update={"trigger_min_labels": 3})
    calls = []
    trigger = Trigger(settings, action=lambda s, ids: calls.append(sorted(ids)))
    assert trigger.record([(1, 101), (2, 102)], "webhook")["turn_fired"] is None
    assert trigger.record([(2, 102)], "webhook") == {"new": 0, "turn_fired": None}
    assert trigger.record([(3, 103)], "webhook")["turn_fired"] == 1
    wait_turns(trigger, 1)
    assert calls == [[1, 2, 3]]
    trigger.record([(5, 105), (6, 106)], "poll")
    again = Trigger(settings, action=lambda s, ids: calls.append(sorted(ids)))
    assert again.ledger.status()["recorded"] == 5
    again.record([(7, 107)], "webhook")
    wait_turns(again, 2)
    assert calls == [[1, 2, 3], [5, 6, 7]]


def test_busy_rearms_the_labels(settings):
    settings = settings.model_copy(update={"trigger_min_labels": 2})

    def busy(s, ids):
        raise Busy("a turn is already running")

    trigger = Trigger(settings, action=busy)
    trigger.record([(1, 1), (2, 2)], "poll")
    state = wait_turns(trigger, 1)
    assert state["turns"][0]["status"] == "busy" and state["waiting"] == 2
    calls = []
    trigger.action = lambda s, ids: calls.append(sorted(ids))
    assert trigger.record([], "poll")["turn_fired"] == 2  # the same labels fire again
    wait_turns(trigger, 2)
    assert calls == [[1, 2]]


def test_failure_is_retried_then_rearmed_and_held(settings):
    settings = settings.model_copy(update={"trigger_min_labels": 1, "trigger_retries": 1})
    attempts = []

    def boom(s, ids):
        attempts.append(ids)
        raise RuntimeError("pipeline submit failed")

    trigger = Trigger(settings, action=boom)
    trigger.record([(1, 1)], "webhook")
    state = wait_turns(trigger, 1)
    assert len(attempts) == 2  # one retry
    assert state["turns"][0]["status"] == "failed"
    assert "pipeline submit failed" in state["turns"][0]["error"]
    assert state["waiting"] == 1  # re-armed, not lost
    assert trigger.hold_until > time.monotonic()  # held: no turn storm
    assert trigger.record([(2, 2)], "webhook")["turn_fired"] is None
    trigger.hold_until = 0.0
    trigger.action = lambda s, ids: None
    assert trigger.record([], "poll")["turn_fired"] == 2
    state = wait_turns(trigger, 1, ("done",))
    assert state["turns"][0]["status"] == "done" and state["waiting"] == 0


def test_stale_running_turns_are_reconciled_at_start(settings):
    settings = settings.model_copy(update={"trigger_min_labels": 2})
    first = Trigger(settings, action=lambda s, ids: time.sleep(60))
    first.ledger.record([(1, 1), (2, 2)], "poll")  # fired; the process then "dies"
    assert first.ledger.status()["turns"][0]["status"] == "running"
    calls = []
    second = Trigger(settings, action=lambda s, ids: calls.append(sorted(ids)))
    assert second.interrupted == [1]
    state = second.ledger.status()
    assert state["turns"][0]["status"] == "interrupted" and state["waiting"] == 2
    second.record([], "poll")
    wait_turns(second, 1, ("done",))
    assert calls == [[1, 2]]


def test_poll_is_rate_limited_and_reports_a_missing_label_studio(settings):
    settings = settings.model_copy(update={"trigger_poll_min_s": 60})
    with TestClient(create_app(settings, action=lambda s, ids: None, poll=False)) as client:
        result = client.post("/poll").json()
        assert result["ok"] is False and "Label Studio" in result["error"]
        resp = client.post("/poll")
        assert resp.status_code == 429 and "FLYWHEEL_TRIGGER_POLL_MIN_S" in resp.json()["error"]
        assert int(resp.headers["Retry-After"]) > 0


def test_poll_thread_survives_unexpected_errors(settings):
    settings = settings.model_copy(update={"trigger_poll_s": 0.05})
    trigger = Trigger(settings, action=lambda s, ids: None)
    seen = []

    def broken():
        seen.append(1)
        raise KeyError("annotations")  # not a FlywheelError: an unexpected one

    trigger._live = broken
    thread = threading.Thread(target=trigger.poll_forever, daemon=True)
    thread.start()
    time.sleep(0.5)
    trigger.stop()
    thread.join(5)
    assert len(seen) >= 3  # it kept polling
    assert trigger.last_poll["ok"] is False and "annotations" in trigger.last_poll["error"]


def test_action_setting_is_checked():
    from flywheel.errors import SettingsError

    assert callable(load_action("flywheel.labelling.trigger:log_turn"))
    with pytest.raises(SettingsError, match="FLYWHEEL_TRIGGER_ACTION"):
        load_action("flywheel.nowhere:go")
    with pytest.raises(SettingsError, match="module:function"):
        load_action("flywheel.labelling.trigger")
