"""FLYWHEEL_PROMOTION=approve: the winning challenger waits with a flip report (MLflow and a
Label Studio view) and an `approval_awaited` webhook; reject keeps the champion and records
who and why; approve (through the CLI) promotes and records who."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import pytest
from mlflow import MlflowClient

from flywheel.loop import steps
from flywheel.registry import RegistryError, versions
from flywheel.registry.approval import FLIP_FIELD, approve, pending, reject
from tests.conftest import settings_env
from tests.monitoring.conftest import train_version
from tests.monitoring.receiver import Receiver


@pytest.fixture(scope="module")
def gated(demo):
    receiver = Receiver()
    settings = demo.settings.model_copy(
        update={
            "model_name": "approval-model",
            "promotion": "approve",
            "notify_webhooks": [receiver.url],
        }
    )
    # v1: barely trained; with no champion yet it is promoted without waiting
    v1 = train_version(demo, settings, max_epochs=1, lr=1e-6)
    assert steps.register(v1, settings=settings)["action"] == "promoted"
    yield settings, receiver
    receiver.close()


def _champion(settings) -> str:
    return next(v.version for v in versions(settings) if "champion" in v.aliases)


def _tags(settings, version) -> dict:
    return MlflowClient(settings.tracking_uri).get_model_version(settings.model_name, version).tags


def test_winner_waits_with_a_flip_report_then_reject(demo, gated):
    from flywheel.labelling.review import tagged

    settings, receiver = gated
    v2 = train_version(demo, settings)
    out = steps.register(v2, settings=settings)
    assert out["action"] == "awaiting_approval" and not out["promoted"]
    assert _champion(settings) == "1" and pending(settings) == [v2]
    assert out["flips"] > 0 and 0 < out["tagged"] <= settings.labels_per_turn
    run_id = MlflowClient(settings.tracking_uri).get_model_version("approval-model", v2).run_id
    report = mlflow.artifacts.load_text(f"runs:/{run_id}/flip_report.md")
    assert f"{out['flips']} of 360 catalogued items" in report
    assert "## By class" in report and "| digits |" in report
    flips = tagged(settings, FLIP_FIELD)
    assert len(flips) == out["tagged"] and set(flips.values()) == {f"flip-v1-v{v2}"}
    assert receiver.wait_for(1) == ["approval_awaited"]
    assert f"flywheel registry approve {v2}" in receiver.bodies[0]["text"]

    reject(settings, v2, by="curator@museum", reason="too many flips")
    tags = _tags(settings, v2)
    assert tags["approval"] == "rejected" and tags["approval_by"] == "curator@museum"
    assert tags["approval_reason"] == "too many flips" and tags["approval_at"]
    assert _champion(settings) == "1" and pending(settings) == []
    with pytest.raises(RegistryError, match="not awaiting approval"):
        approve(settings, v2)


def test_approve_through_the_cli_promotes_and_records_who(demo, gated):
    settings, receiver = gated
    v3 = train_version(demo, settings, seed=1)
    assert steps.register(v3, settings=settings)["action"] == "awaiting_approval"
    done = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "registry", "approve", v3, "--by", "registrar"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "approved by registrar" in done.stdout
    assert _champion(settings) == v3
    tags = _tags(settings, v3)
    assert tags["approval"] == "approved" and tags["approval_by"] == "registrar"
    # each event once: two waits, one promotion (sent by the CLI process before it exited)
    assert sorted(receiver.wait_for(3)) == ["approval_awaited", "approval_awaited", "promotion"]
    missing = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "registry", "reject", "99"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode != 0 and "no version 99" in missing.stderr
