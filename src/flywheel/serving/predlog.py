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
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from flywheel.settings import Settings


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


class PredictionLog:
    """Appends records to today's file. Cheap enough to call on every request."""

    def __init__(self, folder: Path):
        self.folder = folder

    def write(self, records: Iterable[Record]) -> None:
        now = datetime.now(UTC)
        ts = now.isoformat()
        text = b"".join(orjson.dumps({"ts": ts, **r.__dict__}) + b"\n" for r in records)
        if not text:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"predictions-{now:%Y-%m-%d}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text)
        finally:
            os.close(fd)


def read_predictions(settings: Settings, since: datetime | None = None):
    """All logged predictions as a pandas DataFrame (ts as UTC datetimes), oldest first.

    Args:
        settings: where the log is (`<home>/data/predictions`).
        since: keep only predictions at or after this time (aware datetime).
    Returns:
        DataFrame with ts, item_id, model_version, probabilities (list), latency_ms, source,
        features (list for inline images, else None);
        empty (with those columns) when nothing was logged yet.
    """
    import pandas as pd

    columns = ["ts", "item_id", "model_version", "probabilities", "latency_ms", "source"]
    columns.append("features")  # image rows only; None elsewhere
    rows = []
    for path in sorted(log_dir(settings).glob("predictions-*.jsonl")):
        if since is not None and path.stem[len("predictions-") :] < f"{since:%Y-%m-%d}":
            continue
        with path.open() as fh:
            rows += [orjson.loads(line) for line in fh if line.strip()]
    frame = pd.DataFrame(rows, columns=columns)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    if since is not None:
        frame = frame[frame["ts"] >= pd.Timestamp(since)]
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)
