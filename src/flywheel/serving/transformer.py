"""The transformer: item ids (or inline images) -> features -> the predictor -> the log.

    python -m flywheel.serving.transformer [--predictor_host HOST:PORT]
        [--predictor_protocol v1|v2] [--model_name NAME] [--http_port PORT] [KServe args]

A `kserve.Model` in front of the predictor. Each row of a request is either

- an item id: its `pixels` vector is read from the Feast online store
  (`flywheel.features.online_features`; unknown ids answer 400 naming them), or
- an inline image (base64 PNG/JPEG) for an item not in the store: featurised by
  `flywheel.features.representation`, the same code that built the training features.

Representations: the transformer reads the vectors the CHAMPION was trained on (the
`representation` its training recorded, flywheel.registry.representation; re-checked every
FLYWHEEL_CHAMPION_POLL_S): `pixels`, or one backbone's embedding vectors
(flywheel.features.vectors, keyed by representation id), whose inline images are embedded
by `flywheel.features.embedding.embed_images` with the backbone the champion recorded
(its weights digest checked). A new backbone's features never reach an old champion; when
the predictor answers with another version than the one the rows were read for, the
rows are read again for the new champion (once).

Requests, v1 (`POST /v1/models/<name>:predict`):

    {"instances": ["digits-0001", {"item_id": "digits-0002"},
                   {"image": "<base64 PNG>", "item_id": "my-new-card"}]}
    -> {"predictions": [{"item_id": ..., "label": "3", "probabilities": [...]}, ...],
        "classes": [...], "model_version": "3"}

v2 (`POST /v2/models/<name>/infer`): BYTES inputs named `item_id` and/or `image` (base64);
outputs `probabilities` FP32 [n, k], `label` and `item_id` BYTES [n] (ids first, then
images, as sent). The rows go to the predictor as one JSON request (v1 or v2, as
`--predictor_protocol` says; KServe's binary v2 tensors break between the two, FACTS.md).

Every answered row is appended to the prediction log (flywheel.serving.predlog) with the
item id, model version, probabilities and the request's latency.

Model readiness (`/v2/models/<name>/ready`) reflects the dependencies (KServe 0.21's
server-level `/v2/health/ready` does not consult the model, so it is not used): ready
only while the feature store opens and has the feature service, and the predictor says its
model is ready (checked at most every READY_CHECK_S; the reason is in 503 answers). Liveness
(`/v2/health/live`) does not depend on them.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import ssl
import time
import uuid
from dataclasses import dataclass, field

import kserve
import numpy as np
import orjson
from kserve.errors import InferenceError, InvalidInput, ModelNotReady
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from flywheel.errors import InputError
from flywheel.serving import metrics
from flywheel.serving.limits import check_image
from flywheel.serving.predlog import PredictionLog, Record
from flywheel.settings import Settings, get_settings

log = logging.getLogger("flywheel.serving.transformer")

FORWARDED_HEADERS = {"x-request-id", "x-b3-traceid", "authorization"}  # as KServe forwards
READY_CHECK_S = 2.0


@dataclass
class Batch:
    """One request on its way through: rows, where they came from, how to answer."""

    rows: np.ndarray
    item_ids: list[str | None]
    sources: list[str]
    v2_request: InferRequest | None  # None: the client spoke v1
    started: float = field(default_factory=time.perf_counter)
    entries: list = field(default_factory=list)
    model_version: str | None = None  # the champion the rows were read for (None: unknown)


@dataclass
class Result:
    batch: Batch
    probabilities: np.ndarray
    model_version: str
    classes: list[str]


class Transformer(kserve.Model):
    def __init__(self, name: str, settings: Settings):
        super().__init__(name)
        self.settings = settings
        self.log = PredictionLog.for_settings(settings)
        self._session = None  # aiohttp session to the predictor, made on first use
        self._ssl = None
        self._champion: tuple[str | None, dict | None] = (None, None)
        self._champion_at = -1e9
        self.not_ready_reason: str | None = "not checked yet"
        self._checked_at = float("-inf")

    def load(self) -> bool:
        """Open the feature store once, so the first request does not pay for it."""
        problem = self._store_problem()
        if problem:  # images still work without a store; readiness says what is wrong
            log.warning("%s; item ids will fail until it opens", problem)
        if self._checked_at == float("-inf"):  # later, `healthy` keeps readiness current
            self.ready, self.not_ready_reason = problem is None, problem
        return True

    def _store_problem(self) -> str | None:
        from flywheel import features

        try:
            features.store_for(self.settings).get_feature_service(self.settings.feature_service)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            return f"the feature store cannot be opened ({type(exc).__name__}: {exc})"[:400]
        return None

    async def _predictor_problem(self) -> str | None:
        import aiohttp

        config = self.predictor_config
        if config is None or not config.predictor_host:
            return None
        url = f"{config.predictor_base_url}/v2/models/{self.name}/ready"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
                session.get(url) as resp,
            ):
                if resp.status == 200:
                    return None
                return f"the predictor is not ready ({resp.status}: {(await resp.text())[:200]})"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"the predictor at {url} cannot be reached ({type(exc).__name__})"

    async def healthy(self) -> bool:
        """Ready iff the feature store and the predictor are (re-checked every
        READY_CHECK_S, so requests, which also ask, do not pay for it)."""
        import asyncio

        now = time.monotonic()
        if now - self._checked_at < READY_CHECK_S:
            return self.ready
        self._checked_at = now
        problem = await asyncio.to_thread(self._store_problem) or await self._predictor_problem()
        self.ready, self.not_ready_reason = problem is None, problem
        return self.ready

    def validate(self, payload):
        return payload  # preprocess already checked it and returns a Batch

    def get_input_types(self) -> list[dict]:
        """v2 model metadata (`GET /v2/models/<name>`): what a stock client may send."""
        return [
            {"name": "item_id", "datatype": "BYTES", "shape": [-1]},
            {"name": "image", "datatype": "BYTES", "shape": [-1]},
        ]

    def get_output_types(self) -> list[dict]:
        k = len(self.settings.label_classes)
        return [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, k]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "item_id", "datatype": "BYTES", "shape": [-1]},
        ]

    # --- request -> rows --------------------------------------------------------------------
    async def preprocess(self, payload, headers=None) -> Batch:
        started = time.perf_counter()
        if isinstance(payload, InferRequest):
            ids, images = self._v2_entries(payload)
            entries = [("id", i, None) for i in ids] + [("image", n, b) for n, b in images]
            v2 = payload
        else:
            entries, v2 = self._v1_entries(payload), None
        if not entries:
            raise InvalidInput("empty batch: send at least one item id or image")
        if len(entries) > self.settings.max_batch:
            raise InvalidInput(
                f"batch of {len(entries)} rows is over the limit of "
                f"{self.settings.max_batch} (FLYWHEEL_MAX_BATCH); split it"
            )
        version, meta = self._champion_meta()
        rows = self._features(entries, meta)
        return Batch(
            rows,
            [e[1] for e in entries],
            ["store" if e[0] == "id" else "image" for e in entries],
            v2,
            started,
            entries,
            version,
        )

    def _champion_meta(self, refresh: bool = False) -> tuple[str | None, dict | None]:
        """(champion version, its representation metadata), kept for champion_poll_s;
        the last known one while MLflow does not answer."""
        now = time.monotonic()
        if refresh or now - self._champion_at > max(self.settings.champion_poll_s, 1.0):
            from flywheel.registry.representation import champion_representation

            try:
                found = champion_representation(self.settings)
                if found[0] is not None or self._champion[0] is None:
                    self._champion = found
            except Exception as exc:  # noqa: BLE001 - MLflow down: keep what we know
                log.warning("cannot read the champion's representation: %s", exc)
                if self._champion[0] is None:  # never guess which vectors to send
                    raise ModelNotReady(
                        self.name, f"cannot read the champion's representation: {exc}"
                    ) from None
            self._champion_at = now
        return self._champion

    @staticmethod
    def _v1_entries(payload) -> list[tuple]:
        if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
            raise InvalidInput(
                'expected a JSON object {"instances": [item id or '
                '{"image": base64, "item_id": optional}, ...]}'
            )
        entries = []
        for n, inst in enumerate(payload["instances"]):
            if isinstance(inst, str):
                entries.append(("id", inst, None))
            elif isinstance(inst, dict) and isinstance(inst.get("image"), str):
                item_id = inst.get("item_id")
                entries.append(("image", None if item_id is None else str(item_id), inst["image"]))
            elif isinstance(inst, dict) and isinstance(inst.get("item_id"), str):
                entries.append(("id", inst["item_id"], None))
            else:
                raise InvalidInput(
                    f"instance {n}: expected an item id string, "
                    f'{{"item_id": "..."}} or {{"image": "<base64>"}}'
                )
        return entries

    @staticmethod
    def _v2_entries(request: InferRequest) -> tuple[list[str], list[tuple]]:
        ids, images = [], []
        for tensor in request.inputs:
            if tensor.name not in ("item_id", "image"):
                raise InvalidInput(
                    f"unknown input {tensor.name!r}: send BYTES inputs "
                    f"'item_id' and/or 'image' (base64)"
                )
            if tensor.datatype != "BYTES":
                raise InvalidInput(
                    f"input {tensor.name!r}: datatype must be BYTES, got {tensor.datatype}"
                )
            values = tensor.data if tensor._raw_data is None else tensor.as_numpy().tolist()
            values = list(np.asarray(values, dtype=object).ravel())
            values = [v.decode() if isinstance(v, bytes) else v for v in values]
            if not all(isinstance(v, str) for v in values):
                raise InvalidInput(f"input {tensor.name!r}: every value must be a string")
            if tensor.name == "item_id":
                ids += values
            else:
                images += [(None, v) for v in values]
        return ids, images

    def _features(self, entries: list[tuple], meta: dict | None = None) -> np.ndarray:
        rep = (meta or {}).get("representation", "pixels")
        if rep != "pixels":
            return self._embedding_rows(entries, meta)
        from flywheel import features

        vectors: list[np.ndarray | None] = [None] * len(entries)
        id_pos = [n for n, e in enumerate(entries) if e[0] == "id"]
        if id_pos:
            try:
                with metrics.feature_lookup("feast"):
                    found = features.online_features([entries[n][1] for n in id_pos], self.settings)
            except features.UnknownItemsError as exc:
                raise InvalidInput(str(exc)) from None
            for n, row in zip(id_pos, found, strict=True):
                vectors[n] = row
        # a pixel champion reads pixels even while the features are built with a backbone
        represent = (
            features.pixels
            if self.settings.representation == "embedding"
            else features.representation
        )
        for n, (kind, _, data) in enumerate(entries):
            if kind == "image":
                try:
                    raw = _image_bytes(data, n)
                    check_image(raw, self.settings.max_image_pixels)
                    vectors[n] = represent(raw, self.settings)
                except InputError as exc:
                    raise InvalidInput(f"row {n}: {exc}") from None
        dims = {v.shape[0] for v in vectors}
        if len(dims) > 1:
            raise InvalidInput(
                f"rows have different lengths {sorted(dims)}: images must be "
                f"featurised like the stored items"
            )
        return np.stack(vectors).astype(np.float32, copy=False)

    def _embedding_rows(self, entries: list[tuple], meta: dict) -> np.ndarray:
        """Rows of the champion's embedding representation: stored vectors for ids, the
        champion's backbone for inline images."""
        from flywheel.features import UnknownItemsError
        from flywheel.features.vectors import online_embeddings

        rep = meta["representation"]
        rows: list[np.ndarray | None] = [None] * len(entries)
        id_pos = [n for n, e in enumerate(entries) if e[0] == "id"]
        if id_pos:
            try:
                found = online_embeddings([entries[n][1] for n in id_pos], self.settings, rep)
            except UnknownItemsError as exc:
                raise InvalidInput(str(exc)) from None
            for n, row in zip(id_pos, found, strict=True):
                rows[n] = row
        img_pos = [n for n, e in enumerate(entries) if e[0] == "image"]
        if img_pos:
            from flywheel.features.embedding import embed_images

            data = [_image_bytes(entries[n][2], n) for n in img_pos]
            try:
                vectors = embed_images(data, self.settings, backbone=_backbone(self.settings, meta))
            except InputError as exc:
                raise InvalidInput(str(exc)) from None
            for n, row in zip(img_pos, vectors, strict=True):
                rows[n] = row
        return np.stack(rows).astype(np.float32, copy=False)

    # --- rows -> predictor --------------------------------------------------------------------
    async def predict(self, batch: Batch, headers=None) -> Result:
        """One JSON request to the predictor for the whole batch; if the predictor answers
        with another version than the rows were read for, read them again and resend."""
        result = await self._predict(batch, headers)
        if batch.model_version is not None and result.model_version != batch.model_version:
            version, meta = self._champion_meta(refresh=True)
            if version == result.model_version:
                batch.rows, batch.model_version = self._features(batch.entries, meta), version
                result = await self._predict(batch, headers)
        return result

    async def _predict(self, batch: Batch, headers=None) -> Result:
        """One JSON request to the predictor for the whole batch (aiohttp: about 1 ms less
        per hop than KServe's httpx client, measured in bench/bench_serving.py)."""
        config = self.predictor_config
        if config.predictor_protocol == "v2":
            path = f"/v2/models/{self.name}/infer"
            body = {
                "id": str(uuid.uuid4()),
                "inputs": [
                    {
                        "name": "pixels",
                        "shape": list(batch.rows.shape),
                        "datatype": "FP32",
                        "data": batch.rows.ravel().tolist(),
                    }
                ],
            }
        else:
            path = f"/v1/models/{self.name}:predict"
            body = {"instances": batch.rows.tolist()}
        status, answer = await self._post(config.predictor_base_url + path, body, headers)
        if status != 200:
            text = str(answer.get("error", answer)) if isinstance(answer, dict) else answer
            if status == 503:
                raise ModelNotReady(self.name, f"the predictor says: {text}")
            if 400 <= status < 500:
                raise InvalidInput(f"the predictor refused the rows: {text}")
            raise InferenceError(f"the predictor failed ({status}): {text}")
        if "outputs" in answer:  # v2
            out = {o["name"]: o for o in answer["outputs"]}["probabilities"]
            probs = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
            classes = orjson.loads((answer.get("parameters") or {}).get("classes", "[]"))
        else:
            probs = np.asarray(answer["predictions"], dtype=np.float32)
            classes = answer.get("classes", [])
        return Result(batch, probs, str(answer.get("model_version")), classes)

    async def _post(self, url: str, body: dict, headers) -> tuple[int, dict | str]:
        import aiohttp

        if self._session is None:  # made inside the server's event loop, kept open
            config = self.predictor_config
            ca = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            self._ssl = ssl.create_default_context(cafile=ca) if ca else None
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=config.predictor_request_timeout_seconds)
            )
        forward = {k: v for k, v in (headers or {}).items() if k in FORWARDED_HEADERS}
        try:
            async with self._session.post(
                url,
                data=orjson.dumps(body),
                ssl=self._ssl or True,
                headers={**forward, "content-type": "application/json"},
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ModelNotReady(
                self.name, f"the predictor at {url} cannot be reached ({type(exc).__name__})"
            ) from None
        try:
            return status, orjson.loads(raw)
        except orjson.JSONDecodeError:
            return status, raw[:300].decode(errors="replace")

    def _log(self, records) -> None:
        """Append to the prediction log; a full or read-only disk must not fail a prediction
        (the log counts, records and reports its own failures; here they become a metric)."""
        if not self.log.write(records):
            metrics.PREDLOG_WRITE_ERRORS.inc()

    # --- answer and log ------------------------------------------------------------------------
    async def postprocess(self, result: Result, headers=None, response_headers=None):
        batch, probs = result.batch, result.probabilities
        latency_ms = (time.perf_counter() - batch.started) * 1000
        metrics.served("transformer", self.name, result.model_version)
        metrics.predictions("transformer", result.model_version, probs, result.classes)
        self._log(
            Record(
                i,
                result.model_version,
                p,
                round(latency_ms, 3),
                s,
                batch.rows[n].tolist() if s == "image" else None,
            )
            for n, (i, p, s) in enumerate(
                zip(batch.item_ids, probs.tolist(), batch.sources, strict=True)
            )
        )
        best = probs.argmax(axis=1)
        labels = [result.classes[b] if b < len(result.classes) else str(b) for b in best]
        if batch.v2_request is None:
            return {
                "predictions": [
                    {"item_id": i, "label": lab, "probabilities": p}
                    for i, lab, p in zip(batch.item_ids, labels, probs.tolist(), strict=True)
                ],
                "classes": result.classes,
                "model_version": result.model_version,
            }
        return InferResponse(
            response_id=batch.v2_request.id or str(uuid.uuid4()),
            model_name=self.name,
            model_version=result.model_version,
            infer_outputs=[
                InferOutput("probabilities", list(probs.shape), "FP32", probs),
                InferOutput("label", [len(labels)], "BYTES", labels),
                InferOutput("item_id", [len(labels)], "BYTES", [i or "" for i in batch.item_ids]),
            ],
            parameters={"classes": orjson.dumps(result.classes).decode()},
        )


def _backbone(settings: Settings, meta: dict):
    """The backbone a champion's vectors came from (its recorded name, weights and side),
    checked against the recorded representation id."""
    from flywheel.errors import FlywheelError
    from flywheel.features.embedding import BackboneSpec, cache_dir, load_backbone

    spec = BackboneSpec(
        str(meta.get("backbone", settings.backbone)),
        str(meta.get("backbone_weights", settings.backbone_weights)),
        int(meta.get("backbone_image_size", settings.backbone_image_size)),
        str(cache_dir(settings)),
    )
    try:
        backbone = load_backbone(spec)
    except FlywheelError as exc:
        raise ModelNotReady("backbone", f"cannot load the champion's backbone: {exc}") from None
    if backbone.representation_id != meta["representation"]:
        raise InvalidInput(
            f"inline images need the backbone of representation {meta['representation']} "
            f"the served model was trained on; {spec.name} with weights {spec.weights} here "
            f"is {backbone.representation_id}"
        )
    return backbone


def _image_bytes(data: str, n: int) -> bytes:
    if data.startswith("data:") and "," in data:  # a data: URL
        data = data.split(",", 1)[1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"row {n}: image is not valid base64") from None


def _error_text(response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text[:300]


def main(argv: list[str] | None = None) -> None:
    """Entry point: `python -m flywheel.serving.transformer [KServe args]`."""
    from kserve.predictor_config import PredictorConfig

    from flywheel.serving import server

    args = server.parse_args(argv)
    settings = get_settings()
    # the champion's representation is read from MLflow: fail fast when it is down
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    host = args.predictor_host or f"{settings.host}:{settings.predictor_port}"
    config = PredictorConfig(
        predictor_host=host,
        predictor_protocol=args.predictor_protocol,
        predictor_use_ssl=args.predictor_use_ssl,
        predictor_request_timeout_seconds=args.predictor_request_timeout_seconds,
        predictor_request_retries=args.predictor_request_retries,
        predictor_health_check=args.enable_predictor_health_check,
    )
    model = Transformer(args.model_name or settings.model_name, settings)
    model.load()
    server.serve(model, settings, args, settings.transformer_port, predictor_config=config)


if __name__ == "__main__":
    main()
