"""Promotion under faults, on the real MLflow registry: it fails closed, is serialised,
compares-and-sets, and completes a move that was interrupted between its alias writes."""

from __future__ import annotations

import json
import threading
import time

import pytest

from flywheel.registry import (
    PromotionConflict,
    RegistryUnavailable,
    promote,
    recover,
    rollback,
    versions,
)
from flywheel.registry.promotion import INTENT_TAG, _client, _move
from tests.conftest import free_port
from tests.training.test_registry import _aliases, _version


def _intent(settings, intent: dict) -> None:
    """What a promotion or rollback killed after writing its intent leaves in the registry."""
    _client(settings).set_registered_model_tag(settings.model_name, INTENT_TAG, json.dumps(intent))


def test_unreadable_registry_fails_closed_with_a_clear_error(tracked):
    dead = tracked.model_copy(update={"mlflow_tracking_uri": f"http://127.0.0.1:{free_port()}"})
    start = time.monotonic()
    with pytest.raises(RegistryUnavailable) as info:
        promote(dead, "1")
    took = time.monotonic() - start
    print(f"\npromotion against a dead registry failed in {took:.1f} s")
    assert "could not" in str(info.value) and "nothing was changed" in str(info.value)
    with pytest.raises(RegistryUnavailable):
        rollback(dead)


def test_concurrent_promotions_are_serialised(tracked):
    v1 = _version(tracked, 0.80)
    promote(tracked)
    v2 = _version(tracked, 0.85)
    v3 = _version(tracked, 0.90)
    errors = []

    def go(version):
        try:
            promote(tracked, version)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(v,)) for v in (v2, v3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    aliases = _aliases(tracked)
    assert aliases["champion"] == v3  # the best one wins whatever the order
    assert aliases["previous"] in (v1, v2)  # the champion it replaced, never itself
    assert aliases["previous"] != aliases["champion"]
    assert rollback(tracked).champion_version == aliases["previous"]


def test_compare_and_set_refuses_a_stale_decision(tracked):
    v1 = _version(tracked, 0.80)
    promote(tracked)
    v2 = _version(tracked, 0.90)
    client = _client(tracked)
    with pytest.raises(PromotionConflict, match="moved"):
        _move(client, tracked, "promotion", v2, None, None)  # decided as if no champion
    assert _aliases(tracked)["champion"] == v1
    assert INTENT_TAG not in (client.get_registered_model(tracked.model_name).tags or {})


def test_interrupted_promotion_is_completed(tracked):
    v1 = _version(tracked, 0.80)
    promote(tracked)
    v2 = _version(tracked, 0.90)
    # killed after the intent and `previous` were written, before `champion`
    _intent(tracked, {"op": "promotion", "champion": v2, "previous": v1, "expected": v1})
    _client(tracked).set_registered_model_alias(tracked.model_name, "previous", v1)
    d = recover(tracked)
    assert d.action == "recovered" and d.champion_version == v2
    assert _aliases(tracked) == {"champion": v2, "previous": v1, "challenger": v2}
    assert recover(tracked) is None  # nothing left to do


def test_interrupted_rollback_is_completed_before_the_next_move(tracked):
    v1 = _version(tracked, 0.80)
    promote(tracked)
    v2 = _version(tracked, 0.90)
    promote(tracked)
    # a rollback killed after writing `previous` = v2: only its intent still points at v1
    _intent(tracked, {"op": "rollback", "champion": v1, "previous": v2, "expected": v2})
    _client(tracked).set_registered_model_alias(tracked.model_name, "previous", v2)
    assert _aliases(tracked)["champion"] == v2 == _aliases(tracked)["previous"]
    d = promote(tracked, v2)  # any move completes the interrupted one first
    # without the completed rollback v2 would be "unchanged"; with it, v1 was champion again
    assert d.action == "promoted" and d.reason.endswith("by at least 0.0")
    assert _aliases(tracked) == {"champion": v2, "previous": v1, "challenger": v2}
    assert [v.version for v in versions(tracked)] == [v1, v2]


def test_a_rerun_of_a_turn_reuses_its_version(tracked, tmp_path):
    """A train step killed after registering (before `challenger` was set) and run again
    finds the version by its run's snapshot tag: no second version, challenger set."""
    import mlflow

    from flywheel.loop import steps

    mlflow.set_tracking_uri(tracked.tracking_uri)
    mlflow.set_experiment(tracked.mlflow_experiment)
    with mlflow.start_run(
        tags={"snapshot_id": "snap-turn-7", "feature_service": tracked.feature_service}
    ) as run:
        mlflow.log_metric("holdout_accuracy", 0.91)
        mlflow.log_param("n_train", 120)
    client = _client(tracked)
    client.create_registered_model(tracked.model_name)
    mv = client.create_model_version(
        tracked.model_name, f"runs:/{run.info.run_id}/model", run.info.run_id
    )
    out = steps.train(str(tmp_path / "never-read.parquet"), "snap-turn-7", settings=tracked)
    assert out["model_version"] == str(mv.version) and out["run_id"] == run.info.run_id
    assert out["holdout_accuracy"] == 0.91 and out["n_train"] == 120
    assert _aliases(tracked) == {"challenger": str(mv.version)}
    assert len(versions(tracked)) == 1


def test_retention_never_prunes_an_aliased_version(tracked):
    from flywheel.registry.retention import prune_versions

    v1 = _version(tracked, 0.80)
    promote(tracked)
    v2 = _version(tracked, 0.85)
    promote(tracked)  # champion v2, previous v1
    v3 = _version(tracked, 0.70)
    v4 = _version(tracked, 0.60)
    v5 = _version(tracked, 0.50)  # challenger
    keep2 = tracked.model_copy(update={"keep_model_versions": 2})
    assert prune_versions(keep2) == [v3]
    assert [v.version for v in versions(tracked)] == [v1, v2, v4, v5]
    assert _aliases(tracked) == {"champion": v2, "previous": v1, "challenger": v5}
    assert prune_versions(tracked.model_copy(update={"keep_model_versions": 0})) == []


def test_old_pipeline_outputs_are_pruned(settings):
    import os

    from flywheel.registry.retention import prune_pipeline_outputs

    outputs = settings.home / "kfp" / "outputs"
    old, new = outputs / "turn-old", outputs / "turn-new"
    for d in (old, new, settings.home / "kfp" / "cache"):
        d.mkdir(parents=True)
    week_ago = time.time() - 20 * 86400
    os.utime(old, (week_ago, week_ago))
    assert prune_pipeline_outputs(settings) == [old]
    assert new.exists() and not old.exists()
    assert not (settings.home / "kfp" / "cache").exists()
