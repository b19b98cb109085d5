"""Retention: old model versions and old local pipeline outputs are pruned by settings.

    prune_versions(settings) -> list[str]   deletes model versions beyond the newest
        FLYWHEEL_KEEP_MODEL_VERSIONS (0: keep all), never one that holds an alias
        (`champion`, `previous`, `challenger`) or that an interrupted promotion names.
    prune_pipeline_outputs(settings) -> list[Path]   deletes KFP local run outputs under
        `<home>/kfp/outputs/` older than FLYWHEEL_KEEP_PIPELINE_DAYS (0: keep all), and then
        the local step cache, whose entries may point at them.

`flywheel registry prune` runs both. A version is deleted from the registry (its run and
the run's artifacts stay in MLflow's tracking store: the experiment history is kept).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from flywheel.registry.promotion import (
    INTENT_TAG,
    _client,
    _model,
    _registry,
    _serialised,
)


def prune_versions(settings) -> list[str]:
    """Delete the oldest unaliased versions beyond the newest `keep_model_versions`."""
    keep = settings.keep_model_versions
    if keep <= 0:
        return []
    client = _client(settings)
    with _serialised(settings):  # no promotion moves an alias meanwhile
        model = _model(client, settings)
        protected = {str(v) for v in (model.aliases or {}).values()}
        intent = (model.tags or {}).get(INTENT_TAG)
        if intent:
            moved = json.loads(intent)
            protected |= {str(moved.get("champion")), str(moved.get("previous"))}
        with _registry(settings, "list model versions"):
            found = client.search_model_versions(f"name='{settings.model_name}'")
        newest_first = sorted((str(v.version) for v in found), key=int, reverse=True)
        doomed = [v for v in newest_first[keep:] if v not in protected]
        for version in doomed:
            with _registry(settings, f"delete version {version}"):
                client.delete_model_version(settings.model_name, version)
    return doomed


def prune_pipeline_outputs(settings, now: float | None = None) -> list[Path]:
    """Delete local pipeline run outputs older than `keep_pipeline_days` (by mtime)."""
    days = settings.keep_pipeline_days
    root = settings.home / "kfp"
    if days <= 0 or not (root / "outputs").is_dir():
        return []
    cutoff = (now or time.time()) - days * 86400
    gone = [p for p in (root / "outputs").iterdir() if p.stat().st_mtime < cutoff]
    for p in gone:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    if gone and (root / "cache").is_dir():
        shutil.rmtree(root / "cache")  # cached steps may point at what was just deleted
    return gone
