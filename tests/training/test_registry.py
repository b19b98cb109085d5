"""Promotion, idempotence, margin and rollback on the real MLflow registry.

Versions here are registered from small runs that log a `holdout_accuracy` (the registry
needs no model bytes to decide), so the rule is tested fast and exactly."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flywheel.registry import RegistryError, promote, rollback, set_alias, versions
from tests.conftest import settings_env


def _version(settings, accuracy: float, champion_seen: tuple[str, float] | None = None) -> str:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_experiment(settings.mlflow_experiment)
    with mlflow.start_run() as run:
        mlflow.log_metric("holdout_accuracy", accuracy)
        if champion_seen:
            mlflow.set_tag("champion_version_compared", champion_seen[0])
            mlflow.log_metric("champion_holdout_accuracy", champion_seen[1])
    client = MlflowClient(settings.tracking_uri)
    try:
        client.get_registered_model(settings.model_name)
    except Exception:  # noqa: BLE001
        client.create_registered_model(settings.model_name)
    mv = client.create_model_version(
        settings.model_name, f"runs:/{run.info.run_id}/model", run.info.run_id
    )
    set_alias(settings, "challenger", mv.version)
    return str(mv.version)


def _aliases(settings) -> dict[str, str]:
    return {a: v.version for v in versions(settings) for a in v.aliases}


def test_first_model_becomes_champion_then_margin_decides(tracked):
    from mlflow import MlflowClient

    v1 = _version(tracked, 0.90)
    d = promote(tracked)
    assert d.promoted and d.reason == "no champion yet"
    assert _aliases(tracked) == {"champion": v1, "challenger": v1}
    assert promote(tracked).action == "unchanged"  # idempotent

    v2 = _version(tracked, 0.92)
    d = promote(tracked, margin=0.05)
    assert d.action == "kept" and d.champion_version == v1
    assert d.candidate_accuracy == 0.92 and d.champion_accuracy == 0.90
    tags = MlflowClient(tracked.tracking_uri).get_run(versions(tracked)[1].run_id).data.tags
    assert tags["promotion_decision"] == "kept" and tags["promotion_margin"] == "0.05"

    d = promote(tracked, v2, margin=0.01)
    assert d.promoted
    assert _aliases(tracked) == {"champion": v2, "challenger": v2, "previous": v1}
    assert promote(tracked, v2).action == "unchanged"
    assert _aliases(tracked)["previous"] == v1  # a repeat never loses the previous champion

    assert rollback(tracked).champion_version == v1
    assert _aliases(tracked) == {"champion": v1, "previous": v2, "challenger": v2}
    rollback(tracked)  # and back
    assert _aliases(tracked)["champion"] == v2


def test_equal_score_is_not_a_win_and_same_holdout_score_is_used(tracked):
    v1 = _version(tracked, 0.90)
    promote(tracked)
    _version(tracked, 0.90)
    assert promote(tracked, margin=0.0).action == "kept"
    # The challenger re-scored the champion on its own (larger) holdout: 0.85 there.
    v3 = _version(tracked, 0.88, champion_seen=(v1, 0.85))
    d = promote(tracked, margin=0.02)
    assert d.promoted and d.champion_accuracy == 0.85
    assert _aliases(tracked)["champion"] == v3


def test_unknown_model_and_missing_aliases(tracked):
    with pytest.raises(RegistryError, match=f"registered model '{tracked.model_name}' does"):
        promote(tracked)
    with pytest.raises(RegistryError, match="does not exist"):
        versions(tracked)
    _version(tracked, 0.5)
    with pytest.raises(RegistryError, match="no `previous`"):
        rollback(tracked)
    with pytest.raises(RegistryError, match="no version 99"):
        promote(tracked, "99")


def test_cli_names_the_missing_model(tracked):
    env = {**settings_env(tracked), "FLYWHEEL_MODEL_NAME": "no-such-model"}
    out = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "registry", "show"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "registered model 'no-such-model' does not exist" in out.stderr
