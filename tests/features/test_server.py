"""The Feast feature server as a `flywheel up` service, and the `flywheel features` CLI."""

from __future__ import annotations

import subprocess

import httpx
import numpy as np
import pytest

from flywheel import services
from flywheel.features import build_features, representation
from tests.conftest import ROOT, make_settings, settings_env
from tests.features.catalogue import digit_image, write_catalogue


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("feast-server") / "home")
    write_catalogue(settings, 8)
    build_features(settings)
    try:
        services.up(settings, ["feast"])
        yield settings
    finally:
        services.down(settings)


def test_feature_server_answers_online_features(served):
    base = served.url(served.feast_port)
    assert httpx.get(f"{base}/health").status_code == 200
    [row] = [s for s in services.status(served, ["feast"])]
    assert row.state == "running"
    body = {
        "feature_service": served.feature_service,
        "entities": {"item_id": ["digits-0003", "nope"]},
    }
    answer = httpx.post(f"{base}/get-online-features", json=body).json()
    names = answer["metadata"]["feature_names"]
    pixels = answer["results"][names.index("pixels")]
    np.testing.assert_allclose(pixels["values"][0], representation(digit_image(3)), atol=1e-6)
    assert pixels["values"][1] is None and pixels["statuses"][1] == "NOT_FOUND"


def test_cli_get_and_unknown_item(served):
    env = settings_env(served)
    ok = subprocess.run(
        [
            str(ROOT / ".venv/bin/flywheel"),
            "features",
            "get",
            "digits-0002",
            "-f",
            "collection",
            "-f",
            "accession_date",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "digits-0002" in ok.stdout and "2020-01-03" in ok.stdout
    bad = subprocess.run(
        [str(ROOT / ".venv/bin/flywheel"), "features", "get", "nope"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "no features for 1 item(s): nope" in bad.stderr


def test_feast_cli_applies_the_repo_unchanged(served):
    """`feast apply` (what a person runs by hand) sees the same stores and definitions."""
    from flywheel.features import feast_env

    repo = ROOT / "feature_repo"
    assert sorted(p.name for p in repo.glob("*.py")) == ["definitions.py"]
    env = {**settings_env(served), **feast_env(served)}
    run = subprocess.run(
        [str(ROOT / ".venv/bin/feast"), "-c", str(repo), "apply"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    # build_features applied the same objects: none is new or gone (Feast may re-stamp one)
    for verb in ("Created entity", "Created feature view", "Created feature service", "Deleted"):
        assert verb not in run.stdout
    assert sorted(p.name for p in repo.iterdir() if p.name != "__pycache__") == [
        "definitions.py",
        "feature_store.cluster.yaml",
        "feature_store.yaml",
    ]
