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

import psutil
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


def _wait_for(check, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"{what} not within {timeout} s"
        time.sleep(0.2)
    return time.monotonic() - start


def _healthy(settings, name: str, old_pid: int | None = None) -> bool:
    [row] = services.status(settings, [name])
    return row.state == "running" and row.pid != old_pid


def test_killed_service_comes_back_by_itself(lifecycle):
    """SIGKILL of the MLflow server process alone (not its group): its uvicorn worker is
    orphaned holding the port; supervisord restarts the service, whose launcher clears the
    orphan, with no person involved."""
    [row] = services.status(lifecycle, ["mlflow"])
    children = psutil.Process(row.pid).children(recursive=True)
    assert children, "mlflow server runs its workers as child processes"
    os.kill(row.pid, signal.SIGKILL)
    took = _wait_for(lambda: _healthy(lifecycle, "mlflow", row.pid), 120, "mlflow back")
    print(f"\nrecovery after SIGKILL of the mlflow server: {took:.1f} s")
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    [again] = services.status(lifecycle, ["mlflow"])
    assert again.restarts >= 1 and "SIGKILL" in again.last_exit
    out = cli(lifecycle, "status", "mlflow")
    assert "SIGKILL" in out.stdout, out.stdout


def test_up_clears_its_orphans_after_the_supervisor_died(lifecycle):
    """supervisord and the MLflow server both SIGKILLed: every service process is an orphan
    and MLflow's worker still holds its port. `flywheel up` recognises its own processes by
    their marker, clears them and starts again."""
    [row] = services.status(lifecycle, ["mlflow"])
    sup_pid = int((lifecycle.run_dir / "supervisord.pid").read_text())
    os.kill(sup_pid, signal.SIGKILL)
    os.kill(row.pid, signal.SIGKILL)
    time.sleep(0.5)
    assert not services.port_free(lifecycle.host, lifecycle.mlflow_port)  # the orphan has it
    start = time.monotonic()
    out = cli(lifecycle, "up", "mlflow", "label-studio")
    assert out.returncode == 0, out.stderr
    took = time.monotonic() - start
    print(f"\nrecovery by `flywheel up` after SIGKILL of supervisord: {took:.1f} s")
    assert _healthy(lifecycle, "mlflow", row.pid)


def test_crash_loop_is_reported_with_the_log_tail(tmp_path):
    venv = _fake_venv(tmp_path / "venv", "echo 'config is broken beyond repair'\nexit 1\n")
    settings = make_settings(
        tmp_path / "home", label_studio_venv=venv, service_start_s=1, service_start_retries=2
    )
    try:
        with pytest.raises(ServiceError):
            services.up(settings, ["label-studio"])
        _wait_for(
            lambda: services.status(settings, ["label-studio"])[0].state == "fatal", 30, "fatal"
        )
        out = cli(settings, "status", "label-studio")
        [row] = services.status(settings, ["label-studio"])
    finally:
        services.down(settings)
    assert "fatal" in out.stdout and "crash loop" in out.stdout
    assert "config is broken beyond repair" in out.stdout
    assert "exit status 1" in row.last_exit and row.restarts >= 2


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
