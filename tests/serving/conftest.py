"""One serving stack for the serving tests: the session's MLflow server (tests/conftest.py
`stack`), the predictor and the transformer as real supervised services in a home of their
own, a small demo catalogue in a real Feast store, and small torch models registered in
MLflow by the interfaces.md contract (float32 [-1, 64] in, softmax probabilities out,
classes in the model metadata).

The fixture probes the servers once before any champion exists (they must answer 503,
not 500), then registers version 1 and makes it the champion.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest

from flywheel import services
from flywheel.settings import Settings
from tests.conftest import make_settings

MODEL = "flywheel-serving-test"
CLASSES = [str(d) for d in range(10)]
N_ITEMS = 24


def tiny_model(seed: int):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 10), torch.nn.Softmax(dim=1)).eval()


def register(settings: Settings, seed: int, alias: str | None = "champion"):
    """Log a tiny model, register it, point `alias` at it. Returns (version, module)."""
    import mlflow
    from mlflow import MlflowClient

    from flywheel.training.tracking import log_model

    module = tiny_model(seed)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    mlflow.set_experiment("serving-tests")
    example = np.random.default_rng(seed).random((4, 64), dtype=np.float32)
    with mlflow.start_run():
        info = log_model(module, example, CLASSES, {}, MODEL)
    version = str(info.registered_model_version)
    if alias:
        MlflowClient().set_registered_model_alias(MODEL, alias, version)
    return version, module


def expected(module, rows) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return module(torch.as_tensor(np.asarray(rows, dtype=np.float32))).numpy()


@dataclass
class Serving:
    settings: Settings
    version: str = ""
    module: object = None
    items: list[str] = field(default_factory=list)
    rows: dict[str, np.ndarray] = field(default_factory=dict)  # item id -> pixels
    image_paths: dict[str, str] = field(default_factory=dict)
    not_ready: dict[str, httpx.Response] = field(default_factory=dict)

    @property
    def predictor(self) -> str:
        return self.settings.url(self.settings.predictor_port)

    @property
    def transformer(self) -> str:
        return self.settings.url(self.settings.transformer_port)


@pytest.fixture(scope="session")
def serving(tmp_path_factory, stack) -> Serving:
    """The session's MLflow (`stack`, under a model name of our own) + our two servers,
    supervised from a home of their own."""
    from flywheel.features import build_features, pixels
    from flywheel.labelling.collection import init_demo, read_catalogue

    home = tmp_path_factory.mktemp("serving") / "home"
    settings = make_settings(
        home,
        model_name=MODEL,
        champion_poll_s=1.0,
        max_batch=64,
        mlflow_tracking_uri=stack.tracking_uri,
    )
    state = Serving(settings)
    init_demo(settings, limit=N_ITEMS, register=False)
    build_features(settings)
    catalogue = read_catalogue(settings)
    for item_id, path in zip(catalogue["item_id"], catalogue["image_path"], strict=True):
        state.items.append(item_id)
        state.rows[item_id] = pixels(path, settings)
        state.image_paths[item_id] = path
    try:
        services.up(settings, ["predictor", "transformer"])
        with httpx.Client(timeout=30) as http:  # before any champion exists
            state.not_ready = {
                "live": http.get(f"{state.predictor}/v2/health/live"),
                "ready": http.get(f"{state.predictor}/v2/models/{MODEL}/ready"),
                "v1": http.post(
                    f"{state.predictor}/v1/models/{MODEL}:predict", json={"instances": [[0.0] * 64]}
                ),
                "v2": http.post(
                    f"{state.predictor}/v2/models/{MODEL}/infer",
                    json={
                        "inputs": [
                            {
                                "name": "pixels",
                                "shape": [1, 64],
                                "datatype": "FP32",
                                "data": [0.0] * 64,
                            }
                        ]
                    },
                ),
                "transformer": http.post(
                    f"{state.transformer}/v1/models/{MODEL}:predict",
                    json={"instances": [state.items[0]]},
                ),
            }
            state.version, state.module = register(settings, seed=1)
            wait_for_version(state, state.version)
        yield state
    finally:
        services.down(settings)


def wait_for_version(
    state: Serving, version: str, timeout: float = 60.0, reload: bool = True
) -> None:
    """Until the predictor serves `version` (asking it to reload when `reload`)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=120) as http:  # a first load imports a lot on a busy box
        while True:
            if reload:
                http.post(f"{state.predictor}/v2/repository/models/{MODEL}/load", timeout=180)
            resp = http.post(
                f"{state.predictor}/v1/models/{MODEL}:predict", json={"instances": [[0.0] * 64]}
            )
            if resp.status_code == 200 and resp.json()["model_version"] == version:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"predictor never served version {version}: {resp.text}")
            time.sleep(0.3)
