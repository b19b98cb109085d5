"""Fixtures for the cluster contract: the chart rendered per profile, the pipelines compiled
in a child process whose environment is a different machine's settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from flywheel.deploy.render import profiles, render
from flywheel.settings import load
from tests.conftest import ROOT

# Settings of "the machine that compiles": none of these may reach the compiled YAML.
COMPILER_ENV = {
    "FLYWHEEL_MODE": "local",
    "FLYWHEEL_MLFLOW_TRACKING_URI": "http://compile-box.example:5999",
    "FLYWHEEL_LABEL_STUDIO_URL": "http://127.0.0.1:8123",
    "FLYWHEEL_LABEL_STUDIO_TOKEN": "compile-box-token-0123456789",
    "FLYWHEEL_IMAGE": "registry.compile-box.example/flywheel:dev",
    "FLYWHEEL_TRAIN_GPUS": "3",
    "FLYWHEEL_LABELS_PER_TURN": "17",
    "FLYWHEEL_ACQUISITION": "entropy",
}


@pytest.fixture(scope="session", params=profiles())
def rendered(request):
    return render(request.param)


@pytest.fixture(scope="session")
def compiled(tmp_path_factory) -> dict:
    """{pipeline name: (text, spec, platform spec)} compiled by `flywheel loop compile`."""
    out = tmp_path_factory.mktemp("compiled")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(COMPILER_ENV, FLYWHEEL_HOME=str(out / "home"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    done = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "loop", "compile", "--out", str(out)],
        env=env,
        cwd=out,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = {}
    for name in ("flywheel-turn", "flywheel-sweep"):
        text = (out / f"{name}.yaml").read_text()
        spec, platform = yaml.safe_load_all(text)
        result[name] = (text, spec, platform)
    return result


@pytest.fixture()
def pod_settings(tmp_path, monkeypatch):
    """Build the Settings a process with exactly `env` builds (no .env, no other FLYWHEEL_*)."""

    def build(env: dict[str, str]):
        for key in list(os.environ):
            if key.startswith("FLYWHEEL_"):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.chdir(tmp_path)
        return load()

    return build


def dump(obj) -> str:
    return json.dumps(obj, sort_keys=True)
