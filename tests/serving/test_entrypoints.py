"""The container entry points take KServe's standard arguments; the CLI drives the servers."""

from __future__ import annotations

import os
import subprocess
import sys

from flywheel.settings import load
from tests.conftest import settings_env
from tests.serving.conftest import MODEL

FLYWHEEL = os.path.join(os.path.dirname(sys.executable), "flywheel")


def test_kserve_arguments_win_over_settings(settings):
    from flywheel.serving import server

    args = server.parse_args(
        [
            "--model_name",
            "digits",
            "--http_port",
            "9000",
            "--predictor_host",
            "digits-predictor.ns",
            "--predictor_protocol",
            "v2",
            "--workers",
            "1",
        ]
    )
    assert (args.model_name, args.http_port, args.predictor_host) == (
        "digits",
        9000,
        "digits-predictor.ns",
    )
    assert args.predictor_protocol == "v2"
    assert server.http_port(settings, args, 1234) == 9000
    defaults = server.parse_args([])
    assert defaults.model_name is None and defaults.predictor_protocol == "v1"
    assert server.http_port(settings, defaults, 1234) == 1234
    assert server.bind_host(settings) == "127.0.0.1"
    cluster = settings.model_copy(update={"mode": "cluster"})
    assert server.http_port(cluster, defaults, 1234) == 8080
    assert server.bind_host(cluster) == "0.0.0.0"
    # an explicit FLYWHEEL_HOST wins (the rehearsal binds cluster-mode servers to loopback)
    assert server.bind_host(load(mode="cluster", host="127.0.0.1")) == "127.0.0.1"


def _cli(serving, *args: str) -> subprocess.CompletedProcess:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")},
        **settings_env(serving.settings),
    }
    return subprocess.run(
        [FLYWHEEL, "serve", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_predict_reload_and_errors(serving):
    done = _cli(serving, "predict", *serving.items[:2])
    assert done.returncode == 0, done.stderr
    assert serving.items[1] in done.stdout and f"version {serving.version}" in done.stdout
    done = _cli(serving, "reload")
    assert done.returncode == 0, done.stderr
    assert MODEL in done.stdout
    done = _cli(serving, "predict", "no-such-item")
    assert done.returncode != 0
    assert "no-such-item" in done.stderr and "400" in done.stderr


def test_container_entry_point_with_kserve_args_and_a_v2_hop(serving):
    """`python -m flywheel.serving.transformer` as the KServe controller runs it: the
    model name, port, predictor host and protocol come as arguments."""
    import time

    import httpx
    import numpy as np

    from flywheel import services
    from tests.conftest import free_port

    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")},
        **settings_env(serving.settings),
    }
    args = [
        "--model_name",
        MODEL,
        "--http_port",
        str(port),
        "--predictor_protocol",
        "v2",
        "--predictor_host",
        f"127.0.0.1:{serving.settings.predictor_port}",
    ]
    log = serving.settings.log_dir / "transformer-v2.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flywheel.serving.transformer", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while not services.healthy(f"http://127.0.0.1:{port}/v2/health/ready"):
            assert proc.poll() is None, services.tail(log)
            assert time.monotonic() < deadline, services.tail(log)
            time.sleep(0.5)
        body = {"instances": serving.items[:3]}
        via_v2 = httpx.post(f"http://127.0.0.1:{port}/v1/models/{MODEL}:predict", json=body)
        via_v1 = httpx.post(f"{serving.transformer}/v1/models/{MODEL}:predict", json=body)
        assert via_v2.status_code == 200, via_v2.text
        a, b = via_v2.json(), via_v1.json()
        assert a["model_version"] == b["model_version"] and a["classes"] == b["classes"]
        np.testing.assert_allclose(
            [p["probabilities"] for p in a["predictions"]],
            [p["probabilities"] for p in b["predictions"]],
            atol=1e-6,
        )
    finally:
        proc.terminate()
        proc.wait(30)
