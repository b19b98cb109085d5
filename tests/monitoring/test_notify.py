"""Webhooks: a receiver on loopback gets each event once, Slack-compatible; failures are
retried a bounded number of times; the caller never waits or fails."""

from __future__ import annotations

import time

import pytest

from flywheel.monitoring.notify import EVENTS, notify
from tests.conftest import free_port
from tests.monitoring.receiver import Receiver


@pytest.fixture()
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_each_event_once(settings, receiver):
    s = settings.model_copy(update={"notify_webhooks": [receiver.url]})
    threads = [t for event in EVENTS for t in notify(s, event, f"{event} happened", version="3")]
    for t in threads:
        t.join(10)
    assert sorted(receiver.events()) == sorted(EVENTS)
    for body in receiver.bodies:
        assert body["text"].startswith(f"[flywheel] {body['event']}: ")  # what Slack shows
        assert body["model"] == s.model_name and body["version"] == "3"


def test_only_configured_events_and_none_without_webhooks(settings, receiver):
    assert notify(settings, "turn_done", "x") == []  # no webhook configured
    s = settings.model_copy(
        update={"notify_webhooks": [receiver.url], "notify_events": ["drift_found"]}
    )
    assert notify(s, "turn_done", "x") == []
    [t] = notify(s, "drift_found", "x")
    t.join(10)
    assert receiver.events() == ["drift_found"]
    with pytest.raises(ValueError, match="unknown notification event"):
        notify(s, "lunch", "x")


def test_failures_retried_then_delivered_once(settings):
    flaky = Receiver(fail_first=2)
    try:
        s = settings.model_copy(update={"notify_webhooks": [flaky.url], "notify_retries": 3})
        [t] = notify(s, "promotion", "v2 is champion")
        t.join(20)
        assert flaky.attempts == 3 and flaky.events() == ["promotion"]
    finally:
        flaky.close()


def test_never_blocks_and_gives_up_when_nobody_listens(settings):
    dead = f"http://127.0.0.1:{free_port()}/hook"
    s = settings.model_copy(
        update={"notify_webhooks": [dead], "notify_retries": 2, "notify_timeout_s": 1}
    )
    started = time.perf_counter()
    [t] = notify(s, "turn_failed", "boom")
    assert time.perf_counter() - started < 0.5  # the caller does not wait for delivery
    t.join(30)
    assert not t.is_alive()  # bounded: gave up after the retries
