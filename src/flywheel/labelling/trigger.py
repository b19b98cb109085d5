"""The trigger: new annotations in, the next turn of the loop out.

A small ASGI app (FastAPI) that Label Studio calls on ANNOTATION_CREATED / ANNOTATION_UPDATED
(the webhook `flywheel collection init` registers). It records each annotation id once, in
sqlite under `<home>/data/trigger/trigger.sqlite3`, so a restart loses nothing and a repeated
webhook changes nothing. Cancelled (skipped) annotations are not labels and are not counted.
When `settings.trigger_min_labels` recorded labels are waiting, it fires one turn: it marks
them as taken by that turn and, in a background thread, calls `settings.trigger_action`
("module:function", called as `function(settings, annotation_ids)`; the default only logs).

Authenticated and bounded: the webhook must carry the secret header `X-Flywheel-Token`
(`settings.webhook_token`, generated once; `ensure_webhook` sets it on the Label Studio
webhook) compared in constant time (401 otherwise); only `application/json` (415), at most
`trigger_max_body_bytes` (413), ids in 1..2^63-1 (422). A webhook's id is not counted on its
word: it waits as *pending* until the confirmer finds it among the project's live annotations
in Label Studio (one export call per burst); ids Label Studio does not have are dropped after
three looks (`unconfirmed` in /status). `POST /poll` runs at most every `trigger_poll_min_s`
(429 otherwise).

Faults: a turn whose action fails is retried `trigger_retries` times (1 s, 2 s, 4 s ... apart);
when it still fails, or the loop is busy (`flywheel.loop.lock.Busy`: a turn is running), or
the trigger died during it (a `running` turn found at start), its labels are re-armed: they
wait again and fire with the next label or poll, not before a hold that doubles with each
failure in a row (up to `trigger_backoff_max_s`). The poll thread logs and survives any error.

Polling fallback: at start and then every `settings.trigger_poll_s` seconds (0: never; `POST
/poll` still works) it reads the project's annotations from Label Studio and records the
ones no webhook brought, so labels still count when webhooks cannot be delivered (or arrived
while the trigger was down).

Endpoints: `POST /webhook` (Label Studio's payload; a malformed body gets 4xx with a JSON
error and changes nothing), `POST /poll` (poll now), `GET /status` (counts and the last
turns), `GET /health`, `GET /metrics` (Prometheus, flywheel.serving.metrics).

Run it: `python -m flywheel.labelling.trigger` (the dev-box service and the Kubernetes
container use the same command; everything comes from the settings).
"""

from __future__ import annotations

import hmac
import importlib
import json
import logging
import sqlite3
import threading
import time
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flywheel.errors import FlywheelError, SettingsError
from flywheel.settings import Settings, get_settings

log = logging.getLogger("flywheel.trigger")

LABEL_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED"}
TOKEN_HEADER = "X-Flywheel-Token"
MAX_ID = 2**63 - 1  # sqlite INTEGER
CONFIRM_LOOKS = 3  # a pending id Label Studio does not show after this many looks is dropped

SCHEMA = """
CREATE TABLE IF NOT EXISTS annotations (
    annotation_id INTEGER PRIMARY KEY,
    task_id INTEGER,
    source TEXT NOT NULL,            -- webhook | poll
    received_at TEXT NOT NULL,
    turn_id INTEGER                  -- NULL while waiting for a turn
);
CREATE TABLE IF NOT EXISTS turns (
    turn_id INTEGER PRIMARY KEY AUTOINCREMENT,
    fired_at TEXT NOT NULL,
    labels INTEGER NOT NULL,
    status TEXT NOT NULL,            -- running | done | failed | busy | interrupted
    error TEXT
);
CREATE TABLE IF NOT EXISTS pending (  -- webhook ids not yet confirmed in Label Studio
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    annotation_id INTEGER UNIQUE NOT NULL,
    task_id INTEGER,
    received_at TEXT NOT NULL,
    looks INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def log_turn(settings: Settings, annotation_ids: list[int]) -> None:
    """The default action: log that a turn would start (the loop wires the real one)."""
    log.info("turn: %d new labels in %s", len(annotation_ids), settings.label_studio_project)


def load_action(spec: str):
    """Import "module:function"; a clear SettingsError when it cannot be found."""
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name) if name else None
    except (ImportError, AttributeError) as exc:
        raise SettingsError(f"FLYWHEEL_TRIGGER_ACTION={spec!r} cannot be loaded: {exc}") from None
    if not callable(fn):
        raise SettingsError(
            f'FLYWHEEL_TRIGGER_ACTION={spec!r} must name a function as "module:function"'
        )
    return fn


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Ledger:
    """The trigger's record of annotations and turns (sqlite, safe across threads)."""

    def __init__(self, path: Path, min_labels: int):
        self.path = path
        self.min_labels = min_labels
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._db()) as db:
            db.executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def record(self, items: list[tuple[int, int | None]], source: str, may_fire: bool = True):
        """Record (annotation_id, task_id) pairs; returns (new count, fired turn or None).

        A turn takes every waiting label once at least `min_labels` are waiting (and
        `may_fire`: the trigger holds firing for a while after failed turns)."""
        with closing(self._db()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                before = db.total_changes
                db.executemany(
                    "INSERT OR IGNORE INTO annotations (annotation_id, task_id, source, "
                    "received_at) VALUES (?, ?, ?, ?)",
                    [(a, t, source, _now()) for a, t in items],
                )
                new = db.total_changes - before
                turn = None
                waiting = [
                    r[0]
                    for r in db.execute(
                        "SELECT annotation_id FROM annotations WHERE turn_id IS NULL "
                        "ORDER BY annotation_id"
                    )
                ]
                if may_fire and len(waiting) >= self.min_labels:
                    cur = db.execute(
                        "INSERT INTO turns (fired_at, labels, status) VALUES (?, ?, 'running')",
                        (_now(), len(waiting)),
                    )
                    turn = (cur.lastrowid, waiting)
                    db.execute(
                        "UPDATE annotations SET turn_id = ? WHERE turn_id IS NULL", (cur.lastrowid,)
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return new, turn

    def finish(self, turn_id: int, error: str | None = None, status: str | None = None) -> None:
        """Close a turn: done, or failed/busy/interrupted with its labels re-armed."""
        status = status or ("failed" if error else "done")
        with closing(self._db()) as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "UPDATE turns SET status = ?, error = ? WHERE turn_id = ?",
                (status, error, turn_id),
            )
            if status != "done":
                db.execute("UPDATE annotations SET turn_id = NULL WHERE turn_id = ?", (turn_id,))
            db.execute("COMMIT")

    def reconcile(self) -> list[int]:
        """Turns left `running` by a trigger that died: mark them interrupted, re-arm their
        labels. Called at start, before anything can fire. Returns their ids."""
        with closing(self._db()) as db:
            stale = [r[0] for r in db.execute("SELECT turn_id FROM turns WHERE status='running'")]
        for turn_id in stale:
            self.finish(turn_id, "the trigger stopped while this turn ran", "interrupted")
        return stale

    # webhook ids wait here until Label Studio confirms them ------------------------------
    def add_pending(self, annotation_id: int, task_id: int | None) -> int:
        with closing(self._db()) as db:
            known = db.execute(
                "SELECT 1 FROM annotations WHERE annotation_id = ?", (annotation_id,)
            ).fetchone()
            if known:
                return 0
            cur = db.execute(
                "INSERT OR IGNORE INTO pending (annotation_id, task_id, received_at) "
                "VALUES (?, ?, ?)",
                (annotation_id, task_id, _now()),
            )
            return cur.rowcount

    def pending(self) -> list[tuple[int, int | None]]:
        with closing(self._db()) as db:
            return db.execute("SELECT annotation_id, task_id FROM pending ORDER BY seq").fetchall()

    def settle_pending(self, confirmed: set[int], looked_at: list[int]) -> int:
        """Drop confirmed ids (recorded by the caller) and count a look for the others;
        drop those Label Studio did not show in CONFIRM_LOOKS looks. Returns the dropped."""
        with closing(self._db()) as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM pending WHERE annotation_id = ?", [(a,) for a in confirmed])
            db.executemany(
                "UPDATE pending SET looks = looks + 1 WHERE annotation_id = ?",
                [(a,) for a in looked_at if a not in confirmed],
            )
            gone = db.execute("DELETE FROM pending WHERE looks >= ?", (CONFIRM_LOOKS,)).rowcount
            if gone:
                db.execute(
                    "INSERT INTO counters VALUES ('unconfirmed', ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    (gone,),
                )
            db.execute("COMMIT")
        return gone

    def status(self) -> dict:
        with closing(self._db()) as db:
            recorded = db.execute("SELECT COUNT(*) FROM annotations").fetchone()[0]
            waiting = db.execute(
                "SELECT COUNT(*) FROM annotations WHERE turn_id IS NULL"
            ).fetchone()[0]
            turns = [
                dict(zip(("turn_id", "fired_at", "labels", "status", "error"), r, strict=True))
                for r in db.execute(
                    "SELECT turn_id, fired_at, labels, status, error "
                    "FROM turns ORDER BY turn_id DESC LIMIT 20"
                )
            ]
            n_turns = db.execute("SELECT COUNT(*) FROM turns").fetchone()[0]
            by_source = dict(
                db.execute("SELECT source, COUNT(*) FROM annotations GROUP BY source").fetchall()
            )
            pending = db.execute("SELECT COUNT(*) FROM pending").fetchone()[0]
            counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
        return {
            "recorded": recorded,
            "waiting": waiting,
            "pending": pending,
            "unconfirmed": counters.get("unconfirmed", 0),
            "min_labels": self.min_labels,
            "turns_fired": n_turns,
            "by_source": by_source,
            "turns": turns,
        }


class Trigger:
    """Ledger + action + the confirmer and the polling fallback."""

    def __init__(self, settings: Settings, action=None):
        self.settings = settings
        self.ledger = Ledger(
            settings.data_dir / "trigger" / "trigger.sqlite3", settings.trigger_min_labels
        )
        self.action = action or load_action(settings.trigger_action)
        self.last_poll: dict = {"at": None, "ok": None, "error": None, "new": 0}
        self.last_confirm: dict = {"at": None, "ok": None, "error": None, "confirmed": 0}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one confirm/poll at a time
        self.failures = 0  # failed turns in a row
        self.hold_until = 0.0  # monotonic time before which nothing fires
        self.interrupted = self.ledger.reconcile()
        if self.interrupted:
            log.warning("re-armed the labels of interrupted turns %s", self.interrupted)

    def record(self, items: list[tuple[int, int | None]], source: str) -> dict:
        may_fire = time.monotonic() >= self.hold_until
        new, turn = self.ledger.record(items, source, may_fire)
        if turn:
            threading.Thread(
                target=self._run, args=turn, daemon=True, name=f"turn-{turn[0]}"
            ).start()
        return {"new": new, "turn_fired": turn[0] if turn else None}

    def _run(self, turn_id: int, annotation_ids: list[int]) -> None:
        from flywheel.loop.lock import Busy

        log.info(
            "turn %d fired by %d labels: calling %s",
            turn_id,
            len(annotation_ids),
            self.settings.trigger_action,
        )
        try:
            self._call_with_retries(annotation_ids)
        except Busy as exc:
            log.info("turn %d: %s; its labels wait for the next turn", turn_id, exc)
            self.ledger.finish(turn_id, str(exc), "busy")
        except Exception as exc:  # noqa: BLE001 - the turn failed; the trigger stays up
            log.exception("turn %d failed; its labels are re-armed", turn_id)
            self.ledger.finish(turn_id, f"{type(exc).__name__}: {exc}")
            self.failures += 1
            hold = min(2.0**self.failures, self.settings.trigger_backoff_max_s)
            self.hold_until = time.monotonic() + hold
        else:
            self.ledger.finish(turn_id)
            self.failures = 0
            self.hold_until = 0.0

    def _call_with_retries(self, annotation_ids: list[int]) -> None:
        from tenacity import (
            retry,
            retry_if_not_exception_type,
            stop_after_attempt,
            wait_exponential,
        )

        from flywheel.loop.lock import Busy

        call = retry(
            retry=retry_if_not_exception_type(Busy),
            stop=stop_after_attempt(self.settings.trigger_retries + 1),
            wait=wait_exponential(multiplier=1, max=30),
            reraise=True,
        )(self.action)
        call(self.settings, annotation_ids)

    # confirmation of webhook ids, and polling ----------------------------------------------
    def _live(self) -> list[tuple[int, int]]:
        """Every live (not cancelled) annotation of the project: (annotation id, task id)."""
        from flywheel.labelling import client as lsc

        return [
            (a["id"], t["id"])
            for t in lsc.project_tasks(self.settings)
            for a in t.get("annotations") or []
            if not a.get("was_cancelled")
        ]

    def confirm(self) -> dict:
        """Record the pending webhook ids Label Studio has, one by one in arrival order (so
        turns fire exactly every `min_labels` labels); drop the ones it never shows."""
        with self._lock:
            pending = self.ledger.pending()
            if not pending:
                return self.last_confirm
            try:
                live = dict(self._live())
            except FlywheelError as exc:
                self.last_confirm = {"at": _now(), "ok": False, "error": str(exc), "confirmed": 0}
                return self.last_confirm
            confirmed = {a for a, _ in pending if a in live}
            for annotation_id, _ in pending:
                if annotation_id in confirmed:
                    self.record([(annotation_id, live[annotation_id])], "webhook")
            dropped = self.ledger.settle_pending(confirmed, [a for a, _ in pending])
            self.last_confirm = {
                "at": _now(),
                "ok": True,
                "error": None,
                "confirmed": len(confirmed),
                "dropped": dropped,
            }
            return self.last_confirm

    def confirm_forever(self, delay_s: float = 0.5) -> None:
        """Wake on webhooks, wait `delay_s` so a burst is confirmed with one export."""
        while not self._stop.is_set():
            self._wake.wait(5.0)
            if self._stop.is_set():
                return
            self._wake.clear()
            self._stop.wait(delay_s)
            try:
                result = self.confirm()
                if result.get("ok") is False or self.ledger.pending():
                    self._stop.wait(2.0)  # Label Studio down or slow: look again soon
                    self._wake.set()
            except Exception:  # noqa: BLE001 - keep confirming whatever happens
                log.exception("confirming webhook ids failed; trying again")
                self._stop.wait(2.0)
                self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def poll(self) -> dict:
        """Record every live annotation Label Studio has (the webhook fallback)."""
        with self._lock:
            try:
                items = self._live()
            except FlywheelError as exc:
                self.last_poll = {"at": _now(), "ok": False, "error": str(exc), "new": 0}
                return self.last_poll
            result = self.record(items, "poll")
            self.last_poll = {"at": _now(), "ok": True, "error": None, **result}
            return self.last_poll

    def poll_forever(self) -> None:
        while self.settings.trigger_poll_s > 0 and not self._stop.is_set():
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001 - the poll thread must not die
                log.exception("poll failed; polling again in %s s", self.settings.trigger_poll_s)
                self.last_poll = {"at": _now(), "ok": False, "error": repr(exc), "new": 0}
            self._stop.wait(self.settings.trigger_poll_s)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


Id = Field(ge=1, le=MAX_ID)


class AnnotationRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int = Id
    task: int | None = Field(None, ge=1, le=MAX_ID)
    was_cancelled: bool = False


class Webhook(BaseModel):
    """The part of Label Studio's webhook payload the trigger reads."""

    model_config = ConfigDict(extra="allow")
    action: str = Field(max_length=100)
    annotation: AnnotationRef | None = None


def create_app(settings: Settings | None = None, action=None, poll: bool = True):
    """The ASGI app. `action` overrides settings.trigger_action (tests); `poll=False` turns
    the polling thread off (webhook ids are still confirmed against Label Studio)."""
    settings = settings or get_settings()
    trigger = Trigger(settings, action)
    token = settings.webhook_token.encode()
    last_manual_poll = [float("-inf")]

    @asynccontextmanager
    async def lifespan(app):
        threading.Thread(target=trigger.confirm_forever, daemon=True, name="confirm").start()
        if poll:
            threading.Thread(target=trigger.poll_forever, daemon=True, name="poll").start()
        yield
        trigger.stop()

    app = FastAPI(title="flywheel trigger", lifespan=lifespan)
    app.state.trigger = trigger
    from flywheel.serving.metrics import RequestMetrics, metrics_response

    app.add_middleware(RequestMetrics, server="trigger")
    app.add_api_route("/metrics", metrics_response, methods=["GET"])

    def bad(message: str, status: int = 422, headers: dict | None = None):
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    async def read_body(request: Request) -> bytes | None:
        """The body, or None once it passes the cap (read no further)."""
        cap = settings.trigger_max_body_bytes
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > cap):
            return None
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > cap:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    @app.post("/webhook")
    async def webhook(request: Request):
        given = request.headers.get(TOKEN_HEADER, "").encode()
        if not hmac.compare_digest(given, token):
            return bad(f"missing or wrong {TOKEN_HEADER} header", 401)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return bad(f"the body must be application/json, not {ctype or 'untyped'}", 415)
        raw = await read_body(request)
        if raw is None:
            return bad(f"the body is larger than {settings.trigger_max_body_bytes} bytes", 413)
        try:
            body = json.loads(raw)
        except ValueError:
            return bad("the body is not JSON", 400)
        try:
            hook = Webhook.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return bad(f"malformed webhook: {where}: {first['msg']}")
        if hook.action not in LABEL_ACTIONS:
            return {"ignored": hook.action}
        if hook.annotation is None:
            return bad(f"malformed webhook: {hook.action} without an annotation")
        if hook.annotation.was_cancelled:
            return {"ignored": "cancelled annotation"}
        queued = trigger.ledger.add_pending(hook.annotation.id, hook.annotation.task)
        trigger.wake()
        return {"pending": queued}

    @app.post("/poll")
    def poll_now():
        wait = last_manual_poll[0] + settings.trigger_poll_min_s - time.monotonic()
        if wait > 0:
            return bad(
                f"polled less than {settings.trigger_poll_min_s:g} s ago "
                "(FLYWHEEL_TRIGGER_POLL_MIN_S); try again later",
                429,
                {"Retry-After": str(int(wait) + 1)},
            )
        last_manual_poll[0] = time.monotonic()
        return trigger.poll()

    @app.get("/status")
    def status():
        return {
            **trigger.ledger.status(),
            "project": settings.label_studio_project,
            "action": settings.trigger_action,
            "poll_s": settings.trigger_poll_s,
            "last_poll": trigger.last_poll,
            "last_confirm": trigger.last_confirm,
            "failures_in_a_row": trigger.failures,
            "interrupted_at_start": trigger.interrupted,
        }

    @app.get("/health")
    def health():
        return {"ok": True}

    return app


def main() -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = get_settings()
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.trigger_port, log_level="info"
    )


if __name__ == "__main__":
    main()
