"""The trigger: new annotations in, the next turn of the loop out.

A small ASGI app (FastAPI) that Label Studio calls on ANNOTATION_CREATED / ANNOTATION_UPDATED
(the webhook `flywheel collection init` registers). It records each annotation id once, in
sqlite under `<home>/data/trigger/trigger.sqlite3`, so a restart loses nothing and a repeated
webhook changes nothing. Cancelled (skipped) annotations are not labels and are not counted.
When `settings.trigger_min_labels` recorded labels are waiting, it fires one turn: it marks
them as taken by that turn and, in a background thread, calls `settings.trigger_action`
("module:function", called as `function(settings, annotation_ids)`; the default only logs).

Polling fallback: at start and then every `settings.trigger_poll_s` seconds (0: never; `POST
/poll` still works) it reads the project's annotations from Label Studio and records the
ones no webhook brought, so labels still count when webhooks cannot be delivered (or arrived
while the trigger was down).

Endpoints: `POST /webhook` (Label Studio's payload; a malformed body gets 422 with a JSON
error and changes nothing), `POST /poll` (poll now), `GET /status` (counts and the last
turns), `GET /health`, `GET /metrics` (Prometheus, flywheel.serving.metrics).

Run it: `python -m flywheel.labelling.trigger` (the dev-box service and the Kubernetes
container use the same command; everything comes from the settings).
"""

from __future__ import annotations

import importlib
import logging
import sqlite3
import threading
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from flywheel.errors import FlywheelError, SettingsError
from flywheel.settings import Settings, get_settings

log = logging.getLogger("flywheel.trigger")

LABEL_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED"}

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
    status TEXT NOT NULL,            -- running | done | failed
    error TEXT
);
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

    def record(self, items: list[tuple[int, int | None]], source: str):
        """Record (annotation_id, task_id) pairs; returns (new count, fired turn or None).

        A turn takes every waiting label once at least `min_labels` are waiting."""
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
                if len(waiting) >= self.min_labels:
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

    def finish(self, turn_id: int, error: str | None = None) -> None:
        with closing(self._db()) as db:
            db.execute(
                "UPDATE turns SET status = ?, error = ? WHERE turn_id = ?",
                ("failed" if error else "done", error, turn_id),
            )

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
        return {
            "recorded": recorded,
            "waiting": waiting,
            "min_labels": self.min_labels,
            "turns_fired": n_turns,
            "by_source": by_source,
            "turns": turns,
        }


class Trigger:
    """Ledger + action + the polling fallback."""

    def __init__(self, settings: Settings, action=None):
        self.settings = settings
        self.ledger = Ledger(
            settings.data_dir / "trigger" / "trigger.sqlite3", settings.trigger_min_labels
        )
        self.action = action or load_action(settings.trigger_action)
        self.last_poll: dict = {"at": None, "ok": None, "error": None, "new": 0}
        self._stop = threading.Event()

    def record(self, items: list[tuple[int, int | None]], source: str) -> dict:
        new, turn = self.ledger.record(items, source)
        if turn:
            threading.Thread(
                target=self._run, args=turn, daemon=True, name=f"turn-{turn[0]}"
            ).start()
        return {"new": new, "turn_fired": turn[0] if turn else None}

    def _run(self, turn_id: int, annotation_ids: list[int]) -> None:
        log.info(
            "turn %d fired by %d labels: calling %s",
            turn_id,
            len(annotation_ids),
            self.settings.trigger_action,
        )
        try:
            self.action(self.settings, annotation_ids)
        except Exception as exc:  # noqa: BLE001 - the turn failed; the trigger stays up
            log.exception("turn %d failed", turn_id)
            self.ledger.finish(turn_id, f"{type(exc).__name__}: {exc}")
        else:
            self.ledger.finish(turn_id)

    def poll(self) -> dict:
        """Record every live annotation Label Studio has (the webhook fallback)."""
        from flywheel.labelling import client as lsc

        try:
            tasks = lsc.project_tasks(self.settings)
        except FlywheelError as exc:
            self.last_poll = {"at": _now(), "ok": False, "error": str(exc), "new": 0}
            return self.last_poll
        items = [
            (a["id"], t["id"])
            for t in tasks
            for a in t.get("annotations") or []
            if not a.get("was_cancelled")
        ]
        result = self.record(items, "poll")
        self.last_poll = {"at": _now(), "ok": True, "error": None, **result}
        return self.last_poll

    def poll_forever(self) -> None:
        while self.settings.trigger_poll_s > 0 and not self._stop.is_set():
            self.poll()
            self._stop.wait(self.settings.trigger_poll_s)

    def stop(self) -> None:
        self._stop.set()


class AnnotationRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int
    task: int | None = None
    was_cancelled: bool = False


class Webhook(BaseModel):
    """The part of Label Studio's webhook payload the trigger reads."""

    model_config = ConfigDict(extra="allow")
    action: str
    annotation: AnnotationRef | None = None


def create_app(settings: Settings | None = None, action=None, poll: bool = True):
    """The ASGI app. `action` overrides settings.trigger_action (tests); `poll=False` turns
    the polling thread off."""
    settings = settings or get_settings()
    trigger = Trigger(settings, action)

    @asynccontextmanager
    async def lifespan(app):
        if poll:
            threading.Thread(target=trigger.poll_forever, daemon=True, name="poll").start()
        yield
        trigger.stop()

    app = FastAPI(title="flywheel trigger", lifespan=lifespan)
    app.state.trigger = trigger
    from flywheel.serving.metrics import RequestMetrics, metrics_response

    app.add_middleware(RequestMetrics, server="trigger")
    app.add_api_route("/metrics", metrics_response, methods=["GET"])

    def bad(message: str, status: int = 422):
        return JSONResponse({"error": message}, status_code=status)

    @app.post("/webhook")
    async def webhook(request: Request):
        try:
            body = await request.json()
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
        return trigger.record([(hook.annotation.id, hook.annotation.task)], "webhook")

    @app.post("/poll")
    def poll_now():
        return trigger.poll()

    @app.get("/status")
    def status():
        return {
            **trigger.ledger.status(),
            "project": settings.label_studio_project,
            "action": settings.trigger_action,
            "poll_s": settings.trigger_poll_s,
            "last_poll": trigger.last_poll,
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
