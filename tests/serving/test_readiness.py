"""The transformer's readiness reflects its dependencies: a feature store that cannot open,
or a predictor that cannot be reached, makes it not ready (503 naming why) while it stays live."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from flywheel import services
from tests.conftest import ROOT, free_port, make_settings, settings_env
from tests.serving.conftest import MODEL


def _transformer(settings, predictor_port: int, log):
    port = free_port()
    args = ["--model_name", MODEL, "--http_port", str(port)]
    args += ["--predictor_host", f"127.0.0.1:{predictor_port}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "flywheel.serving.transformer", *args],
        env=settings_env(settings),
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while not services.healthy(f"{url}/v2/health/live"):
        assert proc.poll() is None, services.tail(log)
        assert time.monotonic() < deadline, services.tail(log)
        time.sleep(0.5)
    return proc, url


def _not_ready(url: str) -> str:
    deadline = time.monotonic() + 30
    while True:
        resp = httpx.get(f"{url}/v2/models/{MODEL}/ready", timeout=10)
        if resp.status_code == 503:
            assert httpx.get(f"{url}/v2/health/live", timeout=10).status_code == 200
            return resp.text
        assert time.monotonic() < deadline, resp.text
        time.sleep(0.5)


def test_readiness_follows_the_feature_store_and_the_predictor(serving, tmp_path):
    # the serving home's store works, but the predictor is not there
    proc, url = _transformer(serving.settings, free_port(), tmp_path / "dead-predictor.log")
    try:
        assert "predictor" in _not_ready(url)
    finally:
        proc.terminate()
        proc.wait(30)
    # a home whose feature store was never built, in front of a ready predictor
    empty = make_settings(tmp_path / "empty-home", model_name=MODEL)
    proc, url = _transformer(empty, serving.settings.predictor_port, tmp_path / "no-store.log")
    try:
        assert "feature store" in _not_ready(url)
    finally:
        proc.terminate()
        proc.wait(30)
    # and the supervised one, with both in place, is ready
    assert httpx.get(f"{serving.transformer}/v2/models/{MODEL}/ready").status_code == 200
