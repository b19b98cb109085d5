"""Shared fixtures: settings rooted in a temporary home with free loopback ports, and one
session-wide stack of real services (MLflow, Label Studio) started through `flywheel up`.

Label Studio's first start runs its migrations (about a minute), so the stack is started
once per test session and shared; tests that stop services use their own home.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from flywheel import services
from flywheel.settings import Settings, load

ROOT = Path(__file__).resolve().parents[1]

PORT_FIELDS = [
    "mlflow_port",
    "label_studio_port",
    "feast_port",
    "predictor_port",
    "transformer_port",
    "trigger_port",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_settings(home: Path, **overrides) -> Settings:
    """Settings for a test: own home, own free ports, repo-relative paths made absolute."""
    values = {field: free_port() for field in PORT_FIELDS}
    values.update(
        home=home,
        feature_repo=ROOT / "feature_repo",
        label_studio_venv=ROOT / ".venv-labelstudio",
        health_timeout_s=240,
    )
    values.update(overrides)
    return load(**values)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a `flywheel` subprocess see the same settings."""
    return settings.to_env(base=True)


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    """Fresh settings in a temporary home (no service started)."""
    return make_settings(tmp_path / "home")


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Settings:
    """MLflow and Label Studio, up for the whole session, on free loopback ports."""
    settings = make_settings(tmp_path_factory.mktemp("stack") / "home")
    try:
        services.up(settings, ["mlflow", "label-studio"])
        yield settings
    finally:
        services.down(settings)


def pytest_collection_modifyitems(session, config, items):
    """The fault suite (tests/faults) runs last: it kills services on purpose, and it starts
    the serving fixture a second time on the same stack, so the serving tests (which check
    the not-ready state before any champion exists) must come first."""
    faults = [i for i in items if "tests/faults/" in i.nodeid]
    items[:] = [i for i in items if "tests/faults/" not in i.nodeid] + faults
