"""The sweep (child runs, best registered), the CLI, and the GPU check's CPU path."""

from __future__ import annotations

import os
import subprocess
import sys

from flywheel.training.run import TrainConfig
from flywheel.training.sweep import run_sweep
from tests.conftest import ROOT, settings_env


def test_sweep_logs_child_runs_and_registers_the_best(digits, tracked):
    from mlflow import MlflowClient

    result = run_sweep(
        digits, tracked, TrainConfig(max_epochs=3, cpu_threads=1), n_trials=2, widths=(8, 16)
    )
    client = MlflowClient(tracked.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'",
    )
    assert len(children) == 2
    assert {c.info.run_id for c in children} == {t["run_id"] for t in result.trials}
    assert result.best_val_loss == min(t["val_loss"] for t in result.trials)
    assert parent.data.tags["best_run_id"] == result.best_run_id
    mv = client.get_model_version_by_alias(tracked.model_name, "challenger")
    assert mv.run_id == result.best_run_id and mv.version == result.best.version == "1"
    best = client.get_run(result.best_run_id).data
    assert "holdout_accuracy" in best.metrics and "lr" in best.params


def test_cli_builds_a_valid_trainjob(settings, tmp_path):
    out = tmp_path / "trainjob.yaml"
    env = {**settings_env(settings), "FLYWHEEL_CRDS_DIR": str(settings.crds_dir)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flywheel.cli",
            "train",
            "trainjob",
            "--nodes",
            "2",
            "--gpus",
            "8",
            "-o",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if "no CRD files" in proc.stderr:
        return  # the CRD folder is missing: test_trainjob.py says so with a skip
    assert proc.returncode == 0, proc.stderr
    assert "numProcPerNode: 8" in out.read_text()


def test_gpu_check_script_runs_on_cpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(
        [str(ROOT / "bench" / "gpu_check.sh"), "--cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=330,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = (tmp_path / "gpu_check.txt").read_text()
    assert "ratio flywheel/bare" in text
    assert "mlflow imported by the entry point: False" in text
