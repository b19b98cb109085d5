"""Quarantine: items that failed after intake, kept out of the loop with their reason.

A poison item (an image that fails to decode at features build, an item the model cannot
score) must never stop a build, a turn or a selection for the others. The step that meets
it calls `quarantine(settings, item_id, stage, reason, image_sha256)` and goes on without
it; readers skip `quarantined_ids(settings)`. `flywheel status` counts them and
`flywheel collection report` lists them.

The store is one small JSON file, `<home>/data/quarantine.json`:
`{item_id: {"stage", "reason", "image_sha256", "at"}}`, written atomically. An entry is
released when the item's image changes (a new `image_sha256` is built) or by `release`.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from flywheel.settings import Settings


def store_path(settings: Settings) -> Path:
    return settings.data_dir / "quarantine.json"


def read(settings: Settings) -> dict[str, dict]:
    """Every quarantined item: item_id -> {stage, reason, image_sha256, at}."""
    path = store_path(settings)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text() or "{}")
    except ValueError:
        return {}  # a damaged store must not stop the loop; it is rewritten on the next write


def quarantined_ids(settings: Settings) -> set[str]:
    return set(read(settings))


def _write(settings: Settings, entries: dict[str, dict]) -> None:
    path = store_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
    tmp.replace(path)


def quarantine(
    settings: Settings, item_id: str, stage: str, reason: str, image_sha256: str = ""
) -> None:
    """Put one item in quarantine (or update its reason)."""
    add_many(settings, [(item_id, stage, reason, image_sha256)])


def add_many(settings: Settings, entries: list[tuple[str, str, str, str]]) -> None:
    """Quarantine several (item_id, stage, reason, image_sha256) at once."""
    if not entries:
        return
    now = datetime.now(UTC).isoformat(timespec="seconds")
    store = read(settings)
    for item_id, stage, reason, digest in entries:
        store[str(item_id)] = {
            "stage": stage,
            "reason": str(reason)[:500],
            "image_sha256": digest,
            "at": now,
        }
    _write(settings, store)


def release(settings: Settings, item_ids) -> int:
    """Take items out of quarantine; returns how many were in it."""
    store = read(settings)
    gone = [i for i in item_ids if store.pop(str(i), None) is not None]
    if gone:
        _write(settings, store)
    return len(gone)
