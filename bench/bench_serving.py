"""Serving benchmark: latency and throughput of the model servers (not a test).

    .venv/bin/python bench/bench_serving.py [--requests N] [--clients 8]

Four configurations, all in one run, on the same registered model (a 64-128-10 MLP with
softmax, logged by the interfaces.md contract) and the same rows:

  (a) in-process   the MLflow model loaded in this process, a torch forward (the floor)
  (b) predictor    our KServe predictor over HTTP, v1 JSON (and v2 JSON)
  (c) chain        item ids -> transformer -> Feast online store -> predictor (v1)
  (d) mlflow serve `mlflow models serve -m models:/<name>@champion --env-manager local`,
                   the peer a user would pick instead (POST /invocations)

each with 1-row and 64-row requests, sequentially (1 client) and with 8 concurrent
clients (threads, one keep-alive connection each). Prints p50/p99 latency, requests/s
and the ratios of p50 to the floor (a) and to the peer (d); saves a plot to
build/bench/serving.png. Everything runs under a temporary home on free loopback ports.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from flywheel import services  # noqa: E402
from tests.conftest import free_port, make_settings  # noqa: E402

console = Console()
MODEL = "flywheel-bench"
N_ITEMS = 200


def register_model(settings) -> str:
    import mlflow
    import torch
    from mlflow import MlflowClient

    from flywheel.training.tracking import log_model

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10), torch.nn.Softmax(dim=1)
    ).eval()
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    mlflow.set_experiment("bench-serving")
    example = np.random.default_rng(0).random((4, 64), dtype=np.float32)
    with mlflow.start_run():
        info = log_model(module, example, [str(d) for d in range(10)], {}, MODEL)
    version = str(info.registered_model_version)
    MlflowClient().set_registered_model_alias(MODEL, "champion", version)
    return version


def mlflow_serve(settings, port: int, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # it runs `uvicorn` from PATH
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    }
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{MODEL}@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not services.healthy(f"http://127.0.0.1:{port}/ping"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"mlflow models serve did not start:\n{services.tail(log)}")
        time.sleep(0.5)
    return proc


def measure(make_call, clients: int, requests: int) -> tuple[float, float, float]:
    """p50 ms, p99 ms, requests/s. `make_call()` gives each client its own call()."""
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)
    per_client = max(1, requests // clients)

    def client() -> None:
        call = make_call()
        for _ in range(min(20, per_client)):  # warm up
            call()
        barrier.wait()
        mine = []
        for _ in range(per_client):
            t = time.perf_counter()
            call()
            mine.append((time.perf_counter() - t) * 1000)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return (
        float(np.percentile(latencies, 50)),
        float(np.percentile(latencies, 99)),
        len(latencies) / wall,
    )


def http_caller(port: int, path: str, bodies: list[bytes]):
    def make_call():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        state = {"i": 0}
        headers = {"Content-Type": "application/json"}

        def call():
            body = bodies[state["i"] % len(bodies)]
            state["i"] += 1
            conn.request("POST", path, body, headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise SystemExit(f"{path} answered {resp.status}: {data[:300]!r}")

        return call

    return make_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    opts = parser.parse_args()

    import torch

    from flywheel.features import build_features
    from flywheel.labelling.collection import init_demo, read_catalogue
    from flywheel.serving import client as serving_client
    from flywheel.serving.predictor import forward, load_version

    home = Path(tempfile.mkdtemp(prefix="flywheel-bench-serving-"))
    settings = make_settings(home / "home", model_name=MODEL, champion_poll_s=0)
    peer = None
    rows_out = []
    try:
        with console.status("demo catalogue and Feast store...") as status:
            init_demo(settings, limit=N_ITEMS, register=False)
            build_features(settings)
            items = list(read_catalogue(settings)["item_id"])
            status.update("MLflow, predictor, transformer...")
            services.up(settings, ["mlflow", "predictor", "transformer"])
            status.update("registering the model...")
            version = register_model(settings)
            serving_client.reload(settings)
            status.update("mlflow models serve...")
            peer_port = free_port()
            peer = mlflow_serve(settings, peer_port, settings.log_dir / "mlflow-serve.log")
            loaded = load_version(settings, version)
            torch.set_num_threads(1)  # as the predictor does (see predictor.py)

        rng = np.random.default_rng(1)
        pp, tp = settings.predictor_port, settings.transformer_port
        v1 = f"/v1/models/{MODEL}:predict"
        v2 = f"/v2/models/{MODEL}/infer"
        results = {}
        for n in (1, 64):
            batches = [rng.random((n, 64), dtype=np.float32) for _ in range(16)]
            id_batches = [list(rng.choice(items, n, replace=False)) for _ in range(16)]

            def floor_call(batches=batches):
                state = {"i": 0}

                def call():
                    forward(loaded, batches[state["i"] % 16])
                    state["i"] += 1

                return call

            configs = {
                "(a) in-process": floor_call,
                "(b) predictor v1": http_caller(
                    pp, v1, [json.dumps({"instances": b.tolist()}).encode() for b in batches]
                ),
                "(b) predictor v2": http_caller(
                    pp,
                    v2,
                    [
                        json.dumps(
                            {
                                "inputs": [
                                    {
                                        "name": "pixels",
                                        "shape": [n, 64],
                                        "datatype": "FP32",
                                        "data": b.ravel().tolist(),
                                    }
                                ]
                            }
                        ).encode()
                        for b in batches
                    ],
                ),
                "(c) ids->transformer->Feast->predictor": http_caller(
                    tp, v1, [json.dumps({"instances": ids}).encode() for ids in id_batches]
                ),
                "(d) mlflow models serve": http_caller(
                    peer_port,
                    "/invocations",
                    [json.dumps({"inputs": b.tolist()}).encode() for b in batches],
                ),
            }
            for clients in (1, opts.clients):
                for name, make_call in configs.items():
                    console.print(f"  {name}, {n} row(s), {clients} client(s)...")
                    results[(name, n, clients)] = measure(make_call, clients, opts.requests)
        rows_out = report(results, opts.clients, torch.get_num_threads())
        plot(results, opts.clients)
    finally:
        if peer is not None:
            os.killpg(peer.pid, 15)
            peer.wait(30)
        services.down(settings)
        shutil.rmtree(home, ignore_errors=True)
    return rows_out


def report(results, clients: int, threads: int):
    table = Table(
        title=f"serving latency (loopback, {os.cpu_count()} cores, torch threads "
        f"{threads}); ratios are p50 / baseline p50"
    )
    for col in (
        "configuration",
        "rows",
        "clients",
        "p50 ms",
        "p99 ms",
        "req/s",
        "x floor (a)",
        "x peer (d)",
    ):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for (name, n, c), (p50, p99, rps) in results.items():
        floor = results[("(a) in-process", n, c)][0]
        peer = results[("(d) mlflow models serve", n, c)][0]
        table.add_row(
            name,
            str(n),
            str(c),
            f"{p50:.2f}",
            f"{p99:.2f}",
            f"{rps:.0f}",
            f"{p50 / floor:.1f}",
            f"{p50 / peer:.2f}",
        )
    console.print(table)
    return table


def plot(results, clients: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(name for name, _, _ in results))
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.5), sharey=False)
    for ax, (n, c) in zip(axes, [(1, 1), (64, 1), (1, clients), (64, clients)], strict=True):
        p50 = [results[(name, n, c)][0] for name in names]
        p99 = [results[(name, n, c)][1] for name in names]
        x = np.arange(len(names))
        ax.bar(x - 0.2, p50, 0.4, label="p50")
        ax.bar(x + 0.2, p99, 0.4, label="p99")
        ax.set_xticks(
            x,
            [
                name.split()[0] + (" " + name.split()[-1] if "predictor v" in name else "")
                for name in names
            ],
        )
        ax.set_title(f"{n} row(s), {c} client(s)")
        ax.set_ylabel("ms")
    axes[0].legend()
    fig.suptitle("flywheel serving: " + ", ".join(names), fontsize=8)
    out = ROOT / "build" / "bench" / "serving.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    console.print(f"plot: {out}")


if __name__ == "__main__":
    main()
