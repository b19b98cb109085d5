"""The prediction log: one JSON line per served prediction, read by labelling and monitoring.

Files live under `<home>/data/predictions/`, one per UTC day (`predictions-YYYY-MM-DD.jsonl`),
so old days can be archived or deleted whole. Each line is

    {"ts": "2026-11-26T13:55:01.123456+00:00", "item_id": "digits-0001",
     "model_version": "3", "probabilities": [0.01, ...], "latency_ms": 1.7, "source": "store"}

`source` is `store` (features read from Feast by item id) or `image` (an inline image sent with
the request; `item_id` is then the id the client gave, or null). Image rows also carry
`features`, the representation the model saw, so drift monitoring can compare them.
One request's lines are written with one `write` on a file opened for appending, so
concurrent writers (several server workers) never interleave within a request.

Faults: nothing is dropped silently. A failed or short write (disk full, file too large) is
counted, logged, and recorded with the time and reason in `<home>/run/predlog-<pid>.json`,
which `flywheel status` shows (`write_errors`); the next write starts on a fresh line, so a
torn line stays one torn line, and readers skip lines that are not whole JSON records
(`read_predictions(...).attrs["skipped_lines"]`). Serving never fails because the log
cannot be written.

Rotation: a day's file that reaches `FLYWHEEL_PREDLOG_MAX_BYTES` continues in
`predictions-YYYY-MM-DD.1.jsonl`, `.2` ...; files of days older than
`FLYWHEEL_PREDLOG_KEEP_DAYS` are deleted (checked when the day changes; 0 keeps every day).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from flywheel.settings import Settings

log = logging.getLogger("flywheel.predlog")

PREFIX = "predictions-"


def log_dir(settings: Settings) -> Path:
    """Folder of the prediction log."""
    return settings.data_dir / "predictions"


@dataclass(frozen=True)
class Record:
    item_id: str | None
    model_version: str
    probabilities: list[float]
    latency_ms: float
    source: str = "store"
    features: list[float] | None = None  # the representation, for inline images (drift)


def _day_of(path: Path) -> str:
    """ "2026-11-29" for predictions-2026-11-29.jsonl and predictions-2026-11-29.3.jsonl."""
    return path.name[len(PREFIX) : len(PREFIX) + 10]


class PredictionLog:
    """Appends records to today's file. Cheap enough to call on every request.

    Args:
        folder: the log folder (`log_dir(settings)`).
        max_bytes: size at which a day's file continues in the next numbered file.
        keep_days: days of files kept (0: all).
        state_dir: where the write-error record goes (`<home>/run`); None: not recorded.
    """

    def __init__(
        self,
        folder: Path,
        max_bytes: int = 64 * 2**20,
        keep_days: int = 0,
        state_dir: Path | None = None,
    ):
        self.folder = folder
        self.max_bytes = max_bytes
        self.keep_days = keep_days
        self.state_dir = state_dir
        self.written = 0  # records written
        self.errors = 0  # writes that failed (their records are counted in `lost`)
        self.lost = 0
        self.last_error: str | None = None
        self._torn = False  # the last write may have left half a line
        self._day = ""
        self._part = 0

    @classmethod
    def for_settings(cls, settings: Settings) -> PredictionLog:
        return cls(
            log_dir(settings),
            settings.predlog_max_bytes,
            settings.predlog_keep_days,
            settings.run_dir,
        )

    def write(self, records: Iterable[Record]) -> bool:
        """Append the records as whole lines; False (counted, never raised) if it failed."""
        now = datetime.now(UTC)
        ts = now.isoformat()
        records = list(records)
        text = b"".join(orjson.dumps({"ts": ts, **r.__dict__}) + b"\n" for r in records)
        if not text:
            return True
        path: Path | str = self.folder
        prefix = b""
        try:
            path = self._path(now, len(text))
            if self._torn:
                prefix = b"\n"  # end the torn line: it stays one skipped line
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                done = os.write(fd, prefix + text)
            finally:
                os.close(fd)
            if done != len(prefix + text):
                # the whole lines before the tear are in the file; the rest is lost
                whole = text[: max(0, done - len(prefix))].count(b"\n")
                self.written += whole
                self._torn = True
                self._failed(
                    len(records) - whole,
                    f"{path}: short write, {done} of {len(prefix + text)} bytes (disk full?)",
                )
                return False
        except OSError as exc:
            self._torn = True
            self._failed(len(records), f"{path}: {exc}")
            return False
        self._torn = False
        self.written += len(records)
        return True

    def _path(self, now: datetime, size: int) -> Path:
        day = f"{now:%Y-%m-%d}"
        if day != self._day:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._day, self._part = day, self._last_part(day)
            self.prune(now)
        path = self._file(day, self._part)
        try:
            current = path.stat().st_size
        except FileNotFoundError:
            current = 0
        if current and current + size > self.max_bytes:
            self._part += 1
            self._torn = False  # a new file starts clean
            path = self._file(day, self._part)
        return path

    def _file(self, day: str, part: int) -> Path:
        return self.folder / (
            f"{PREFIX}{day}.jsonl" if part == 0 else f"{PREFIX}{day}.{part}.jsonl"
        )

    def _last_part(self, day: str) -> int:
        parts = [0]
        for p in self.folder.glob(f"{PREFIX}{day}.*.jsonl"):
            middle = p.name[len(PREFIX) + 11 : -len(".jsonl")]
            if middle.isdigit():
                parts.append(int(middle))
        return max(parts)

    def prune(self, now: datetime | None = None) -> list[Path]:
        """Delete the files of days older than `keep_days` (0: keep all). Returns them."""
        if self.keep_days <= 0:
            return []
        oldest = f"{(now or datetime.now(UTC)) - timedelta(days=self.keep_days):%Y-%m-%d}"
        gone = []
        for p in sorted(self.folder.glob(f"{PREFIX}*.jsonl")):
            if _day_of(p) < oldest:
                p.unlink(missing_ok=True)
                gone.append(p)
        return gone

    def _failed(self, n: int, reason: str) -> None:
        self.errors += 1
        self.lost += n
        self.last_error = f"{datetime.now(UTC).isoformat()} {reason}"
        if self.errors == 1 or self.errors % 100 == 0:
            log.error(
                "cannot write the prediction log (%d failed writes, %d records lost): %s",
                self.errors,
                self.lost,
                reason,
            )
        self._save_state()

    def state(self) -> dict:
        return {
            "pid": os.getpid(),
            "folder": str(self.folder),
            "written": self.written,
            "write_errors": self.errors,
            "records_lost": self.lost,
            "last_error": self.last_error,
        }

    def _save_state(self) -> None:
        """Best effort: `<state_dir>/predlog-<pid>.json`, replaced atomically."""
        if self.state_dir is None:
            return
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".predlog-")
            with os.fdopen(fd, "w") as fh:
                json.dump(self.state(), fh)
            os.replace(tmp, self.state_dir / f"predlog-{os.getpid()}.json")
        except OSError:
            pass  # the log line above still says it


def write_errors(settings: Settings) -> list[dict]:
    """The write-error records of the serving processes (for `flywheel status`)."""
    out = []
    for p in sorted(settings.run_dir.glob("predlog-*.json")):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return out


def read_predictions(settings: Settings, since: datetime | None = None):
    """All logged predictions as a pandas DataFrame (ts as UTC datetimes), oldest first.

    Args:
        settings: where the log is (`<home>/data/predictions`).
        since: keep only predictions at or after this time (aware datetime).
    Returns:
        DataFrame with ts, item_id, model_version, probabilities (list), latency_ms, source,
        features (list for inline images, else None);
        empty (with those columns) when nothing was logged yet. Lines that are not whole
        records (a write torn by a full disk) are skipped and counted in
        `frame.attrs["skipped_lines"]`.
    """
    import pandas as pd

    columns = ["ts", "item_id", "model_version", "probabilities", "latency_ms", "source"]
    columns.append("features")  # image rows only; None elsewhere
    rows, skipped = [], 0
    for path in sorted(log_dir(settings).glob(f"{PREFIX}*.jsonl")):
        if since is not None and _day_of(path) < f"{since:%Y-%m-%d}":
            continue
        with path.open("rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError:
                    skipped += 1
                    continue
                if not isinstance(row, dict) or "ts" not in row:
                    skipped += 1
                    continue
                rows.append(row)
    frame = pd.DataFrame(rows, columns=columns)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    if since is not None:
        frame = frame[frame["ts"] >= pd.Timestamp(since)]
    frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
    frame.attrs["skipped_lines"] = skipped
    return frame
