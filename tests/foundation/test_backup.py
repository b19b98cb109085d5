"""Backup and restore drill on real services: back up the running session stack (sqlite
online backup while MLflow and Label Studio serve), restore into a fresh home, start the
services there and find the same experiments, model versions and projects, with the same
secrets. A damaged or incomplete backup is refused before anything is touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from flywheel import backup as bk
from flywheel import services
from flywheel.errors import InputError, ServiceError
from tests.conftest import ROOT, make_settings, settings_env


def _cli(settings, *args):
    return subprocess.run(
        [sys.executable, "-m", "flywheel.cli", *args],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_restore_drill(stack, tmp_path):
    from label_studio_sdk import LabelStudio
    from mlflow import MlflowClient

    client = MlflowClient(stack.tracking_uri)
    client.create_experiment("backup-drill")
    ls = LabelStudio(base_url=stack.label_studio_base_url, api_key=stack.ls_token)
    ls.projects.create(title="backup-drill", label_config="<View></View>")
    experiments = {e.name for e in client.search_experiments()}
    projects = {p.title for p in ls.projects.list()}
    (stack.snapshot_dir).mkdir(parents=True, exist_ok=True)
    (stack.snapshot_dir / "snap-drill.parquet").write_bytes(b"PAR1 drill")

    out = _cli(stack, "backup", str(tmp_path / "bk"))  # while both services run
    assert out.returncode == 0, out.stderr
    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    assert {"mlflow/mlflow.db", "label-studio/label_studio.sqlite3", "secrets"} <= set(
        manifest["parts"]
    )
    assert oct(os.stat(tmp_path / "bk").st_mode & 0o777) == "0o700"

    restored = make_settings(tmp_path / "restored")
    out = _cli(restored, "restore", str(tmp_path / "bk"))
    assert out.returncode == 0, out.stderr
    assert restored.ls_token == stack.ls_token  # the secrets came back with the data
    try:
        services.up(restored, ["mlflow", "label-studio"])
        again = MlflowClient(restored.tracking_uri)
        assert experiments <= {e.name for e in again.search_experiments()}
        ls2 = LabelStudio(base_url=restored.label_studio_base_url, api_key=restored.ls_token)
        assert projects <= {p.title for p in ls2.projects.list()}
        assert (restored.snapshot_dir / "snap-drill.parquet").read_bytes() == b"PAR1 drill"
        # restoring over running services is refused, naming them
        with pytest.raises(ServiceError, match="flywheel down"):
            bk.restore(restored, tmp_path / "bk")
    finally:
        services.down(restored)


def test_damaged_or_incomplete_backups_are_refused(settings, tmp_path):
    settings.snapshot_dir.mkdir(parents=True)
    (settings.snapshot_dir / "a.parquet").write_bytes(b"labels")
    settings.secret("label_studio_token")
    out = bk.backup(settings, tmp_path / "bk")
    (out / "snapshots" / "a.parquet").write_bytes(b"lebals")
    with pytest.raises(InputError, match="does not match its checksum"):
        bk.restore(settings, out)
    (out / "manifest.json").unlink()
    with pytest.raises(InputError, match="not a complete flywheel backup"):
        bk.restore(settings, out)
    assert (settings.snapshot_dir / "a.parquet").read_bytes() == b"labels"  # untouched
    with pytest.raises(InputError, match="not empty"):
        bk.backup(settings, out)
