"""Local services through the real CLI: up, status, logs, down, restart, and the error cases.

Uses real MLflow and Label Studio servers on free loopback ports in a home of its own (not
the shared `stack`), because it stops and restarts them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flywheel import services
from flywheel.errors import ServiceError
from tests.conftest import ROOT, make_settings, settings_env


def cli(settings, *args, timeout=400):
    return subprocess.run(
        [sys.executable, "-m", "flywheel.cli", *args],
        capture_output=True,
        text=True,
        env=settings_env(settings),
        cwd=ROOT,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("lifecycle") / "home")
    yield settings
    services.down(settings)


def test_up_starts_both_and_prints_urls(lifecycle):
    out = cli(lifecycle, "up", "mlflow", "label-studio")
    assert out.returncode == 0, out.stderr
    assert lifecycle.url(lifecycle.mlflow_port) in out.stdout
    assert lifecycle.url(lifecycle.label_studio_port) in out.stdout
    rows = {r.name: r for r in services.status(lifecycle, ["mlflow", "label-studio"])}
    assert rows["mlflow"].state == "running" and rows["mlflow"].pid
    assert rows["label-studio"].state == "running" and rows["label-studio"].pid


def test_up_twice_is_harmless(lifecycle):
    before = {r.name: r.pid for r in services.status(lifecycle, ["mlflow", "label-studio"])}
    assert cli(lifecycle, "up", "mlflow", "label-studio").returncode == 0
    after = {r.name: r.pid for r in services.status(lifecycle, ["mlflow", "label-studio"])}
    assert before == after  # nothing restarted


def test_mlflow_round_trip(lifecycle, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=lifecycle.tracking_uri)
    exp = client.create_experiment("foundation-roundtrip")
    run = client.create_run(exp)
    client.log_param(run.info.run_id, "lr", "0.01")
    client.log_metric(run.info.run_id, "accuracy", 0.93, step=1)
    note = tmp_path / "note.txt"
    note.write_text("hello flywheel")
    client.log_artifact(run.info.run_id, str(note))
    client.set_terminated(run.info.run_id)

    got = client.get_run(run.info.run_id)
    assert got.data.params["lr"] == "0.01" and got.data.metrics["accuracy"] == 0.93
    dest = client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path / "dl"))
    assert Path(dest).read_text() == "hello flywheel"
    # artifacts are proxied by the server into <home>/data/mlflow/artifacts
    assert list((lifecycle.data_dir / "mlflow" / "artifacts").rglob("note.txt"))


def test_label_studio_token_authenticates(lifecycle):
    from label_studio_sdk import LabelStudio

    ls = LabelStudio(base_url=lifecycle.label_studio_base_url, api_key=lifecycle.ls_token)
    project = ls.projects.create(
        title="foundation-check",
        label_config=(
            '<View><Image name="image" value="$image"/>'
            '<Choices name="label" toName="image"><Choice value="a"/></Choices></View>'
        ),
    )
    assert project.id in [p.id for p in ls.projects.list()]
    bad = LabelStudio(base_url=lifecycle.label_studio_base_url, api_key="wrong-token")
    with pytest.raises(Exception) as info:
        list(bad.projects.list())
    assert "401" in str(info.value)


def test_logs_show_each_service(lifecycle):
    out = cli(lifecycle, "logs", "mlflow", "-n", "5")
    assert out.returncode == 0 and "mlflow.log" in out.stdout


def test_killed_service_is_noticed_and_restarted(lifecycle):
    [row] = services.status(lifecycle, ["mlflow"])
    os.killpg(os.getpgid(row.pid), signal.SIGKILL)
    deadline = time.monotonic() + 15
    while services.status(lifecycle, ["mlflow"])[0].state == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    out = cli(lifecycle, "status", "mlflow")
    assert "running" not in out.stdout
    assert cli(lifecycle, "up", "mlflow").returncode == 0
    [again] = services.status(lifecycle, ["mlflow"])
    assert again.state == "running" and again.pid != row.pid


def test_down_stops_everything_and_data_survives(lifecycle):
    from mlflow.tracking import MlflowClient

    out = cli(lifecycle, "down")
    assert out.returncode == 0
    assert all(r.state == "stopped" for r in services.status(lifecycle, ["mlflow", "label-studio"]))
    assert services.port_free(lifecycle.host, lifecycle.mlflow_port)
    assert services.port_free(lifecycle.host, lifecycle.label_studio_port)
    assert cli(lifecycle, "down").returncode == 0  # twice is harmless

    assert cli(lifecycle, "up", "mlflow", "label-studio").returncode == 0
    client = MlflowClient(tracking_uri=lifecycle.tracking_uri)
    assert client.get_experiment_by_name("foundation-roundtrip") is not None
    from label_studio_sdk import LabelStudio

    ls = LabelStudio(base_url=lifecycle.label_studio_base_url, api_key=lifecycle.ls_token)
    assert "foundation-check" in [p.title for p in ls.projects.list()]


# --- error cases -------------------------------------------------------------------------------


def test_port_taken_is_refused_naming_the_setting(tmp_path):
    settings = make_settings(tmp_path / "home")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", settings.label_studio_port))
        sock.listen()
        out = cli(settings, "up", "label-studio")
    services.down(settings)
    assert out.returncode != 0
    assert str(settings.label_studio_port) in out.stderr
    assert "FLYWHEEL_LABEL_STUDIO_PORT" in out.stderr


def _fake_venv(root: Path, script: str) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    exe = bin_dir / "label-studio"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(0o755)
    return root


def test_service_exiting_during_start_shows_its_log(tmp_path):
    venv = _fake_venv(tmp_path / "venv", "echo 'cannot open database: disk is on fire'\nexit 3\n")
    settings = make_settings(tmp_path / "home", label_studio_venv=venv)
    try:
        with pytest.raises(ServiceError) as info:
            services.up(settings, ["label-studio"])
    finally:
        services.down(settings)
    message = str(info.value)
    assert "label-studio exited during start" in message
    assert "disk is on fire" in message


def test_health_check_time_out_is_reported(tmp_path):
    venv = _fake_venv(tmp_path / "venv", "echo 'still thinking'\nexec sleep 60\n")
    settings = make_settings(tmp_path / "home", label_studio_venv=venv, health_timeout_s=2)
    try:
        with pytest.raises(ServiceError) as info:
            services.up(settings, ["label-studio"])
    finally:
        services.down(settings)
    assert "did not answer" in str(info.value) and "FLYWHEEL_HEALTH_TIMEOUT_S" in str(info.value)
    assert "still thinking" in str(info.value)
