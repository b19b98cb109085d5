"""Step timings, appended as JSON lines to `<home>/data/loop/timings.jsonl`.

Every step records its start and end (wall clock, UTC seconds), so a turn's latency can be
broken down by step whether the steps ran in one process or as separate KFP tasks.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from flywheel.settings import Settings


def path(settings: Settings) -> Path:
    return settings.data_dir / "loop" / "timings.jsonl"


@contextmanager
def timed(settings: Settings, step: str, **fields):
    """Record how long the block took under `step` (also when it fails)."""
    start = time.time()
    record = {"step": step, "start": start, **fields}
    try:
        yield record
        record["ok"] = True
    except BaseException as exc:
        record["ok"] = False
        record["error"] = f"{type(exc).__name__}: {exc}"[:300]
        raise
    finally:
        record["end"] = time.time()
        record["seconds"] = round(record["end"] - start, 3)
        p = path(settings)
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("a") as fh:
            fh.write(json.dumps(record, default=str) + "\n")


def read(settings: Settings, since: float = 0.0) -> list[dict]:
    p = path(settings)
    if not p.exists():
        return []
    rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["start"] >= since]
