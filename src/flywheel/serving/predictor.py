"""The predictor: a KServe model server for the registry's `champion`.

    python -m flywheel.serving.predictor [--model_name NAME] [--http_port PORT] [KServe args]

It loads `models:/<FLYWHEEL_MODEL_NAME>@champion` from MLflow (the contract in
docs/interfaces.md section 4: float32 `[-1, d]` in, class probabilities out, class names in
the model's metadata `classes`) onto the GPU when there is one, and answers

- v1: `POST /v1/models/<name>:predict` `{"instances": [[d floats], ...]}` ->
  `{"predictions": [[k probabilities], ...], "classes": [...], "model_version": "3"}`
- v2 / Open Inference Protocol: `POST /v2/models/<name>/infer` with one FP32 (or FP64)
  tensor `[n, d]` -> outputs `probabilities` FP32 `[n, k]` and `label` BYTES `[n]`,
  `model_version` set, parameter `classes` (JSON list); the response id is the request's
  id, or a new one when the request has none.

A request's rows go through the model as one batch (at most `FLYWHEEL_MAX_BATCH` rows).

Reload: `POST /v2/repository/models/<name>/load` (KServe's model repository extension) and,
every `FLYWHEEL_CHAMPION_POLL_S` seconds, a watch re-resolve the alias; when it points to
another version, that version is loaded beside the old one and swapped in with one
assignment. Only a model flywheel's trainer wrote is loaded (pt2, no pickle, no code, its
provenance tag and digest checked: flywheel.registry.trusted); any other version is refused
with an error in the log and the old champion keeps serving. A request holds the model
object it started with, so none is dropped or mixed.

With no champion registered the server still starts: health/live is OK, the model is not
ready and inference answers 503 with a JSON body that says so.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput, ModelNotReady
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from flywheel.errors import FlywheelError
from flywheel.registry.trusted import UntrustedModel
from flywheel.serving import metrics
from flywheel.settings import Settings, get_settings

log = logging.getLogger("flywheel.serving.predictor")

ALIAS = "champion"
FLOAT_DATATYPES = {"FP32", "FP64", "FP16"}


class NoChampion(FlywheelError):
    """The registry has no model version to serve (or cannot be reached)."""


@dataclass(frozen=True)
class Loaded:
    """One loaded model version. Swapped as a whole, never changed in place."""

    module: Any  # torch.nn.Module
    version: str
    classes: list[str]
    n_features: int | None
    device: str


def champion_version(settings: Settings, alias: str = ALIAS) -> str:
    """The model version `alias` points to; NoChampion with the reason when none does."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    try:
        return str(client.get_model_version_by_alias(settings.model_name, alias).version)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise NoChampion(
                f"no version of registered model {settings.model_name!r} has the alias "
                f"{alias!r} in MLflow at {settings.tracking_uri}; train and promote one"
            ) from None
        raise NoChampion(f"MLflow at {settings.tracking_uri} did not answer: {exc}") from None


def load_version(settings: Settings, version: str) -> Loaded:
    """Load `models:/<name>/<version>` (only a trusted model: flywheel.registry.trusted
    raises UntrustedModel otherwise) on the GPU if there is one."""
    import torch

    from flywheel.registry.trusted import load_trusted

    want = "cuda" if torch.cuda.is_available() else "cpu"
    trusted = load_trusted(settings, version)
    module, device = _on_device(trusted.module, want, trusted.n_features)
    return Loaded(module, trusted.version, trusted.classes, trusted.n_features, device)


def _on_device(module, want: str, n_features: int | None):
    """The module on `want` if a probe forward works there, else where it was loaded."""
    import torch

    params = list(module.parameters())
    have = str(params[0].device.type) if params else "cpu"
    if have == want or n_features is None:
        return module, have
    try:
        moved = module.to(want)
        with torch.inference_mode():
            moved(torch.zeros(2, n_features, device=want))
        return moved, want
    except Exception as exc:  # noqa: BLE001 - e.g. constants baked into an exported graph
        log.warning("cannot run the model on %s (%s); serving it on %s", want, exc, have)
        return module.to(have), have


def forward(loaded: Loaded, rows: np.ndarray) -> np.ndarray:
    """Class probabilities (float32 [n, k]) for float32 rows [n, d], one batch."""
    import torch

    with torch.inference_mode():
        out = loaded.module(torch.from_numpy(rows).to(loaded.device))
    return out.float().cpu().numpy()


def check_rows(data: Any, max_batch: int, n_features: int | None, where: str) -> np.ndarray:
    """Turn request data into float32 [n, d] or raise InvalidInput naming the problem."""
    try:
        array = np.asarray(data)
    except ValueError as exc:  # ragged nested lists
        raise InvalidInput(f"{where}: rows must all have the same length ({exc})") from None
    if array.size == 0:
        raise InvalidInput(f"{where}: empty batch; send at least one row")
    if array.dtype.kind not in "iuf":
        raise InvalidInput(f"{where}: expected numbers (float32), got {_kind(array)}")
    if array.ndim == 1 and array.size and n_features and array.size == n_features:
        raise InvalidInput(
            f"{where}: expected a batch of rows [n, {n_features}], got one "
            f"flat row of {array.size}; wrap it in a list"
        )
    if array.ndim != 2:
        raise InvalidInput(
            f"{where}: expected shape [n, {n_features or 'd'}], got {list(array.shape)}"
        )
    n, d = array.shape
    if n == 0:
        raise InvalidInput(f"{where}: empty batch; send at least one row")
    if n > max_batch:
        raise InvalidInput(
            f"{where}: batch of {n} rows is over the limit of {max_batch} "
            f"(FLYWHEEL_MAX_BATCH); split it"
        )
    if n_features is not None and d != n_features:
        raise InvalidInput(f"{where}: expected {n_features} features per row, got {d}")
    rows = array.astype(np.float32, copy=False)
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    if bad.size:
        raise InvalidInput(f"{where}: NaN or infinite values in rows {bad[:10].tolist()}")
    return np.ascontiguousarray(rows)


def _kind(array: np.ndarray) -> str:
    return {"b": "booleans", "U": "strings", "S": "bytes", "O": "mixed or nested values"}.get(
        array.dtype.kind, str(array.dtype)
    )


class Predictor(kserve.Model):
    """Serves the champion; `reload()` swaps in a newly promoted version."""

    def __init__(self, name: str, settings: Settings):
        super().__init__(name)
        self.settings = settings
        self.loaded: Loaded | None = None
        self.not_ready_reason: str | None = "the model has not been loaded yet"
        self.refused: set[str] = set()  # versions that broke a loading rule
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()

    # --- loading ----------------------------------------------------------------------------
    def load(self) -> bool:
        self.reload()
        return self.ready

    def reload(self) -> str | None:
        """Load the version the alias points to, if it is not the one served. Returns it."""
        with self._reload_lock:
            try:
                version = champion_version(self.settings)
            except NoChampion as exc:
                if self.loaded is None:
                    self.not_ready_reason = str(exc)
                else:  # alias gone or MLflow down: keep serving what we have
                    log.warning("%s; still serving version %s", exc, self.loaded.version)
                return self.loaded.version if self.loaded else None
            if self.loaded is not None and self.loaded.version == version:
                return version
            if version in self.refused:  # logged once; the old champion keeps serving
                return self.loaded.version if self.loaded else None
            started = time.perf_counter()
            try:
                new = load_version(self.settings, version)
            except UntrustedModel as exc:
                self.refused.add(version)
                keep = (
                    f"still serving version {self.loaded.version}"
                    if self.loaded
                    else ("no model is served")
                )
                log.error("refused to load version %s: %s; %s", version, exc, keep)
                if self.loaded is None:
                    self.not_ready_reason = f"refused version {version}: {exc}"
                return self.loaded.version if self.loaded else None
            self.loaded = new  # the swap: in-flight requests keep their own reference
            self.ready, self.not_ready_reason = True, None
            metrics.served("predictor", self.name, version)
            log.info(
                "serving %s version %s on %s (loaded in %.1f s)",
                self.settings.model_name,
                version,
                new.device,
                time.perf_counter() - started,
            )
            return version

    def start_watch(self) -> None:
        """Poll the alias every `champion_poll_s` seconds in a daemon thread (0: off)."""
        interval = self.settings.champion_poll_s
        if interval <= 0:
            return

        def watch() -> None:
            while not self._stop.wait(interval):
                try:
                    self.reload()
                except Exception:  # noqa: BLE001 - a failed load must not stop the watch
                    log.exception("reloading the champion failed; still serving the old one")

        threading.Thread(target=watch, name="champion-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        super().stop()

    # --- inference ----------------------------------------------------------------------------
    async def predict(self, payload: dict | InferRequest, headers: dict | None = None):
        loaded = self.loaded
        if loaded is None:
            raise ModelNotReady(self.name, self.not_ready_reason)
        max_batch = self.settings.max_batch
        if isinstance(payload, InferRequest):
            rows = self._v2_rows(payload, loaded, max_batch)
            probs = forward(loaded, rows)
            metrics.predictions("predictor", loaded.version, probs, loaded.classes)
            return InferResponse(
                response_id=payload.id or str(uuid.uuid4()),
                model_name=self.name,
                model_version=loaded.version,
                infer_outputs=[
                    InferOutput("probabilities", list(probs.shape), "FP32", probs),
                    InferOutput("label", [len(probs)], "BYTES", _labels(probs, loaded.classes)),
                ],
                parameters={"classes": json.dumps(loaded.classes)},
            )
        if not isinstance(payload, dict) or "instances" not in payload:
            raise InvalidInput('expected a JSON object {"instances": [[...], ...]}')
        rows = check_rows(payload["instances"], max_batch, loaded.n_features, "instances")
        probs = forward(loaded, rows)
        metrics.predictions("predictor", loaded.version, probs, loaded.classes)
        return {
            "predictions": probs.tolist(),
            "classes": loaded.classes,
            "model_version": loaded.version,
        }

    @staticmethod
    def _v2_rows(request: InferRequest, loaded: Loaded, max_batch: int) -> np.ndarray:
        if len(request.inputs) != 1:
            raise InvalidInput(f"expected one input tensor, got {len(request.inputs)}")
        tensor = request.inputs[0]
        where = f"input {tensor.name!r}"
        if tensor.datatype not in FLOAT_DATATYPES:
            raise InvalidInput(f"{where}: datatype must be FP32, got {tensor.datatype}")
        shape = list(tensor.shape)
        try:
            array = np.asarray(tensor.data if tensor._raw_data is None else tensor.as_numpy())
        except ValueError:
            raise InvalidInput(f"{where}: data is ragged; send {shape} numbers") from None
        if array.dtype.kind not in "iuf":
            raise InvalidInput(f"{where}: data must be numbers, got {_kind(array)}")
        if len(shape) != 2 or math.prod(shape) != array.size:
            raise InvalidInput(
                f"{where}: shape {shape} is not [n, {loaded.n_features or 'd'}]"
                f" or does not match the {array.size} values sent"
            )
        return check_rows(array.reshape(shape), max_batch, loaded.n_features, where)

    def get_input_types(self) -> list[dict]:
        d = self.loaded.n_features if self.loaded and self.loaded.n_features else -1
        return [{"name": "pixels", "datatype": "FP32", "shape": [-1, d]}]

    def get_output_types(self) -> list[dict]:
        k = len(self.loaded.classes) if self.loaded and self.loaded.classes else -1
        return [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, k]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ]


def _labels(probs: np.ndarray, classes: list[str]) -> list[str]:
    best = probs.argmax(axis=1)
    return [classes[i] if i < len(classes) else str(i) for i in best]


def _one_intra_op_thread() -> None:
    """One torch thread per server unless OMP_NUM_THREADS says otherwise.

    A model server runs many small forwards beside its event loop; with two intra-op
    threads on a busy 2-core box a 64-row forward took 1.2-2.6 ms (threads waiting on each
    other) against 0.13 ms with one, and requests 10x longer. On the GPU it changes nothing.
    """
    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


def main(argv: list[str] | None = None) -> None:
    """Entry point: `python -m flywheel.serving.predictor [KServe args]`."""
    from flywheel.serving import server

    args = server.parse_args(argv)
    settings = get_settings()
    # Fail fast on an unreachable MLflow instead of retrying for minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    _one_intra_op_thread()
    from flywheel.registry.trusted import warm_up

    warm_up()
    model = Predictor(args.model_name or settings.model_name, settings)
    model.load()
    if not model.ready:
        log.warning("not ready: %s", model.not_ready_reason)
    model.start_watch()
    server.serve(model, settings, args, settings.predictor_port)


if __name__ == "__main__":
    main()
