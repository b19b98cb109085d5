"""Promotion: the predictor picks up a new champion (admin endpoint and alias watch)
without dropping or mixing in-flight requests."""

from __future__ import annotations

import threading

import httpx
import numpy as np

from tests.serving.conftest import MODEL, expected, register, wait_for_version


def test_reload_endpoint_swaps_without_dropping_requests(serving):
    old_version, old_module = serving.version, serving.module
    rows = np.random.default_rng(7).random((8, 64), dtype=np.float32)
    answers, stop = [], threading.Event()

    def hammer():
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                answers.append(
                    http.post(
                        f"{serving.predictor}/v1/models/{MODEL}:predict",
                        json={"instances": rows.tolist()},
                    )
                )

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        version, module = register(serving.settings, seed=2)
        resp = httpx.post(f"{serving.predictor}/v2/repository/models/{MODEL}/load", timeout=120)
        assert resp.status_code == 200, resp.text
    finally:
        stop.set()
        worker.join()
    serving.version, serving.module = version, module
    assert answers and all(a.status_code == 200 for a in answers)
    by_version = {old_version: old_module, version: module}
    for answer in answers:  # each answer comes whole from one model version
        body = answer.json()
        np.testing.assert_allclose(
            body["predictions"], expected(by_version[body["model_version"]], rows), atol=1e-6
        )
    after = httpx.post(
        f"{serving.predictor}/v1/models/{MODEL}:predict", json={"instances": rows.tolist()}
    )  # (the hammer's last answer may have been computed just before the swap)
    assert after.json()["model_version"] == version
    via_transformer = httpx.post(
        f"{serving.transformer}/v1/models/{MODEL}:predict", json={"instances": serving.items[:2]}
    ).json()
    assert via_transformer["model_version"] == version


def test_watch_follows_the_alias(serving):
    version, module = register(serving.settings, seed=3)
    wait_for_version(serving, version, timeout=30, reload=False)  # champion_poll_s=1
    serving.version, serving.module = version, module


def test_a_challenger_alias_is_not_served(serving):
    register(serving.settings, seed=4, alias="challenger")
    resp = httpx.post(f"{serving.predictor}/v2/repository/models/{MODEL}/load", timeout=120)
    assert resp.status_code == 200
    body = httpx.post(
        f"{serving.predictor}/v1/models/{MODEL}:predict", json={"instances": [[0.1] * 64]}
    ).json()
    assert body["model_version"] == serving.version
