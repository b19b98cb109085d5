"""Notifications: settings-driven webhooks, Slack-compatible, never in the loop's way.

    notify(settings, event, text, **fields) -> list[threading.Thread]

Each URL in `FLYWHEEL_NOTIFY_WEBHOOKS` gets one POST of JSON

    {"text": "[flywheel] promotion: ...", "event": "promotion", "model": "...", ...fields}

(`text` is what Slack and Mattermost incoming webhooks show; the other keys are for
receivers that read them). Only events listed in `FLYWHEEL_NOTIFY_EVENTS` are sent:
`turn_done`, `turn_failed`, `promotion`, `drift_found`, `approval_awaited`.

Delivery runs in a background thread per URL: a failure (no connection, timeout, HTTP 429
or 5xx) is retried up to `FLYWHEEL_NOTIFY_RETRIES` times with doubling waits (0.5 s, 1 s,
2 s ...); any other answer ends it. The caller never waits and never sees an exception; a
delivery that gave up is logged. The threads are not daemons, so a short command still
delivers before it exits (bounded by retries x timeout).
"""

from __future__ import annotations

import logging
import threading
import time

from flywheel.settings import Settings

log = logging.getLogger("flywheel.notify")

EVENTS = ("turn_done", "turn_failed", "promotion", "drift_found", "approval_awaited")


def payload(settings: Settings, event: str, text: str, **fields) -> dict:
    return {
        "text": f"[flywheel] {event}: {text}",
        "event": event,
        "model": settings.model_name,
        "project": settings.label_studio_project,
        **{
            k: v if isinstance(v, str | int | float | bool) or v is None else str(v)
            for k, v in fields.items()
        },
    }


def _deliver(url: str, body: dict, retries: int, timeout: float) -> bool:
    import httpx

    wait = 0.5
    for attempt in range(retries + 1):
        try:
            resp = httpx.post(url, json=body, timeout=timeout)
            if resp.status_code < 400:
                return True
            if resp.status_code != 429 and resp.status_code < 500:
                log.warning("webhook %s refused %s: HTTP %s", url, body["event"], resp.status_code)
                return False
            problem = f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            problem = type(exc).__name__
        if attempt < retries:
            time.sleep(wait)
            wait *= 2
    log.warning(
        "webhook %s: gave up on %s after %d tries (%s)", url, body["event"], retries + 1, problem
    )
    return False


def notify(settings: Settings, event: str, text: str, **fields) -> list[threading.Thread]:
    """Send `event` to every configured webhook in the background; returns the threads."""
    if event not in EVENTS:
        raise ValueError(f"unknown notification event {event!r}; one of {', '.join(EVENTS)}")
    if event not in settings.notify_events or not settings.notify_webhooks:
        return []
    body = payload(settings, event, text, **fields)
    threads = []
    for url in settings.notify_webhooks:
        thread = threading.Thread(
            target=_deliver,
            args=(url, body, settings.notify_retries, settings.notify_timeout_s),
            name=f"notify-{event}",
        )
        thread.start()
        threads.append(thread)
    return threads
