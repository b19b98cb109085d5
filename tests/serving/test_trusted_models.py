"""Model loading runs no foreign code (flywheel.registry.trusted): a pickled model whose
payload would write a marker file is refused by the running predictor, the marker never
appears and the old champion keeps answering; unstamped and tampered versions are refused."""

from __future__ import annotations

import json
import pickle
import time

import httpx
import numpy as np
import pytest
import torch

from flywheel.registry.trusted import TAG, UntrustedModel, load_trusted
from tests.serving.conftest import CLASSES, MODEL, expected, register, tiny_model


class Payload(torch.nn.Module):
    """A model whose unpickling runs code: it writes `marker`."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.lin = torch.nn.Linear(64, 10)

    def forward(self, x):
        return torch.softmax(self.lin(x), dim=1)

    def __reduce_ex__(self, protocol):
        return (exec, (f"open({self.marker!r}, 'w').write('ran foreign code')",))


def _log_raw(settings, model, serialization_format: str) -> str:
    """Register `model` straight through mlflow (not flywheel's trainer). Returns the version."""
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    mlflow.set_experiment("serving-tests-untrusted")
    extra = (
        {"input_example": np.zeros((2, 64), np.float32)}
        if serialization_format == "pt2"
        else {}  # no example: MLflow would load (and run) the pickle to infer a signature
    )
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            serialization_format=serialization_format,
            pip_requirements=["torch"],
            metadata={"classes": CLASSES},
            registered_model_name=MODEL,
            **extra,
        )
    return str(info.registered_model_version)


def _forge_provenance(settings, version: str, **change) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(settings.tracking_uri)
    mv = client.get_model_version(MODEL, version)
    tag = {"run_id": mv.run_id, "snapshot_id": "none", "sha256": "0" * 64, **change}
    client.set_model_version_tag(MODEL, version, TAG, json.dumps(tag))


def test_the_payload_is_real(tmp_path):
    """The check below can fail: unpickling this model does write its marker."""
    marker = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(Payload(str(marker))))
    assert marker.exists()


def test_pickled_model_with_payload_is_refused_and_old_champion_serves(serving, tmp_path):
    from mlflow import MlflowClient

    settings = serving.settings
    marker = tmp_path / "marker"
    old_version, old_module = serving.version, serving.module
    version = _log_raw(settings, Payload(str(marker)), "pickle")
    _forge_provenance(settings, version)  # even a provenance tag does not make pickle loadable
    assert not marker.exists(), "logging the model ran its payload"
    client = MlflowClient(settings.tracking_uri)
    client.set_registered_model_alias(MODEL, "champion", version)
    try:
        resp = httpx.post(f"{serving.predictor}/v2/repository/models/{MODEL}/load", timeout=120)
        assert resp.status_code == 200, resp.text
        rows = np.random.default_rng(11).random((3, 64), dtype=np.float32)
        answer = httpx.post(
            f"{serving.predictor}/v1/models/{MODEL}:predict",
            json={"instances": rows.tolist()},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == old_version
        np.testing.assert_allclose(
            answer.json()["predictions"], expected(old_module, rows), atol=1e-6
        )
        log = settings.log_dir / "predictor.log"
        deadline = time.monotonic() + 10
        while f"refused to load version {version}" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        assert "pt2" in log.read_text()  # the line names the rule
        with pytest.raises(UntrustedModel, match="pickled"):  # in-process loading refuses too
            load_trusted(settings, version)
        assert not marker.exists(), "the pickled model's code ran"
    finally:
        client.set_registered_model_alias(MODEL, "champion", old_version)


def test_unstamped_model_is_refused(serving):
    version = _log_raw(serving.settings, tiny_model(21), "pt2")  # pt2, but not from our trainer
    with pytest.raises(UntrustedModel, match="no flywheel.provenance tag"):
        load_trusted(serving.settings, version)


def test_tampered_provenance_is_refused(serving):
    settings = serving.settings
    version, _ = register(settings, seed=22, alias=None)
    assert load_trusted(settings, version).version == version  # stamped by log_model: loads
    _forge_provenance(settings, version, snapshot_id="none")  # digest no longer matches
    with pytest.raises(UntrustedModel, match="artifact changed after training"):
        load_trusted(settings, version)
    _forge_provenance(settings, version, run_id="0123456789abcdef")
    with pytest.raises(UntrustedModel, match="but the version comes from run"):
        load_trusted(settings, version)
