"""The CLI's help, settings errors and the idempotent setup (no services needed)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

FLYWHEEL = [sys.executable, "-m", "flywheel.cli"]


def run(args, env=None, **kw):
    return subprocess.run(FLYWHEEL + args, capture_output=True, text=True, env=env, cwd=ROOT, **kw)


def test_help_lists_the_service_verbs():
    out = run(["--help"])
    assert out.returncode == 0
    for verb in ("up", "down", "status", "logs"):
        assert verb in out.stdout


def test_unknown_command_fails_with_usage():
    out = run(["frobnicate"])
    assert out.returncode != 0
    assert "frobnicate" in out.stderr


def test_malformed_setting_is_named(tmp_path):
    env = {**os.environ, "FLYWHEEL_HOME": str(tmp_path), "FLYWHEEL_MLFLOW_PORT": "not-a-port"}
    out = run(["status"], env=env)
    assert out.returncode == 2
    assert "FLYWHEEL_MLFLOW_PORT" in out.stderr and "not-a-port" in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_out_of_range_port_is_refused(tmp_path):
    env = {**os.environ, "FLYWHEEL_HOME": str(tmp_path), "FLYWHEEL_LABEL_STUDIO_PORT": "70000"}
    out = run(["status"], env=env)
    assert out.returncode == 2 and "FLYWHEEL_LABEL_STUDIO_PORT" in out.stderr


def test_unknown_service_is_named(tmp_path):
    env = {**os.environ, "FLYWHEEL_HOME": str(tmp_path)}
    out = run(["status", "nosuch"], env=env)
    assert out.returncode != 0
    assert "unknown service nosuch" in out.stderr and "mlflow" in out.stderr


def test_down_when_nothing_runs_is_harmless(tmp_path):
    env = {**os.environ, "FLYWHEEL_HOME": str(tmp_path)}
    assert run(["down"], env=env).returncode == 0
    out = run(["status"], env=env)
    assert out.returncode == 0 and "stopped" in out.stdout


def test_setup_is_idempotent():
    """`make setup` after a setup does nothing slow: no pip, no venv creation."""
    out = subprocess.run(["make", "setup"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "pip install" not in out.stdout and "venv" not in out.stdout.replace(".venv", "")
    question = subprocess.run(
        ["make", "-q", ".venv/.installed", ".venv-labelstudio/.installed"], cwd=ROOT
    )
    assert question.returncode == 0  # both environments are up to date


def test_make_help_is_the_default_target():
    out = subprocess.run(["make"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    for target in ("setup", "up", "down", "status", "logs", "demo", "test", "lint"):
        assert f"\n  {target} " in out.stdout


def test_generated_secrets_are_kept_private(settings):
    token = settings.ls_token
    assert 6 <= len(token) <= 40
    assert settings.ls_token == token  # generated once, then reused
    path = settings.home / "secrets" / "label_studio_token"
    assert path.stat().st_mode & 0o077 == 0
    other = type(settings)(home=settings.home.parent / "other")
    assert other.ls_token != token  # never a fixed default
