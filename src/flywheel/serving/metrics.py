"""Prometheus metrics of the flywheel servers (predictor, transformer, trigger).

Every metric lives in prometheus-client's default registry, the one KServe's `/metrics`
already serves (its own `request_*_seconds` histograms sit beside ours); the trigger mounts
the same registry at its `/metrics`. Names (all prefixed `flywheel_`):

| metric | type | labels | what |
|---|---|---|---|
| `flywheel_http_requests_total` | counter | server, method, endpoint, status | every request |
| `flywheel_http_errors_total` | counter | server, method, endpoint, status | answers >= 400 |
| `flywheel_http_request_seconds` | histogram | server, method, endpoint | request latency |
| `flywheel_served_model_version` | gauge | server, model | the version answering (number) |
| `flywheel_served_model_info` | gauge (=1) | server, model, version | the same, as a label |
| `flywheel_feature_lookup_seconds` | histogram | store | Feast online lookup per request |
| `flywheel_prediction_confidence` | histogram | server, model_version | top class probability |
| `flywheel_predicted_class_total` | counter | server, model_version, label | predicted classes |
| `flywheel_prediction_log_write_errors_total` | counter | (none) | failed prediction-log writes |

`endpoint` is the route template (`/v1/models/{model_name}:predict`), never the raw path,
so ids in URLs cannot blow up the number of series; unmatched paths count as `other`.

Several server workers (KServe `--workers N`) are separate processes: set
PROMETHEUS_MULTIPROC_DIR for them as prometheus-client documents; one worker (the default)
needs nothing.
"""

from __future__ import annotations

import time

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

REQUESTS = Counter(
    "flywheel_http_requests", "HTTP requests answered", ["server", "method", "endpoint", "status"]
)
ERRORS = Counter(
    "flywheel_http_errors",
    "HTTP requests answered with status >= 400",
    ["server", "method", "endpoint", "status"],
)
LATENCY = Histogram(
    "flywheel_http_request_seconds",
    "HTTP request latency (seconds)",
    ["server", "method", "endpoint"],
    buckets=LATENCY_BUCKETS,
)
SERVED_VERSION = Gauge(
    "flywheel_served_model_version", "Model version being served", ["server", "model"]
)
SERVED_INFO = Gauge(
    "flywheel_served_model_info",
    "1 for the model version being served",
    ["server", "model", "version"],
)
FEATURE_LOOKUP = Histogram(
    "flywheel_feature_lookup_seconds",
    "Online feature lookup latency per request (seconds)",
    ["store"],
    buckets=LATENCY_BUCKETS,
)
CONFIDENCE = Histogram(
    "flywheel_prediction_confidence",
    "Top class probability of each prediction",
    ["server", "model_version"],
    buckets=CONFIDENCE_BUCKETS,
)
PREDICTED = Counter(
    "flywheel_predicted_class",
    "Predictions by predicted class",
    ["server", "model_version", "label"],
)
PREDLOG_WRITE_ERRORS = Counter(
    "flywheel_prediction_log_write_errors", "Prediction-log writes that failed"
)

_served: dict[tuple[str, str], str] = {}


def served(server: str, model: str, version: str | None) -> None:
    """Record the version `server` answers with (called on load and on every answer)."""
    if version is None or _served.get((server, model)) == version:
        return
    old = _served.get((server, model))
    if old is not None:
        SERVED_INFO.remove(server, model, old)
    _served[(server, model)] = version
    SERVED_INFO.labels(server, model, version).set(1)
    try:
        SERVED_VERSION.labels(server, model).set(float(version))
    except ValueError:  # a version that is not a number: the info gauge still says it
        SERVED_VERSION.labels(server, model).set(float("nan"))


def predictions(server: str, model_version: str, probs: np.ndarray, classes: list[str]) -> None:
    """Confidence histogram and class counters for one batch of probabilities [n, k]."""
    if probs.size == 0:
        return
    top = probs.max(axis=1)
    best = probs.argmax(axis=1)
    hist = CONFIDENCE.labels(server, model_version)
    for value in top.tolist():
        hist.observe(value)
    labels, counts = np.unique(best, return_counts=True)
    for index, count in zip(labels.tolist(), counts.tolist(), strict=True):
        label = classes[index] if index < len(classes) else str(index)
        PREDICTED.labels(server, model_version, label).inc(count)


class feature_lookup:  # noqa: N801 - used as a context manager, reads like a verb
    """`with feature_lookup("feast"): ...` times one online lookup."""

    def __init__(self, store: str):
        self.store = store

    def __enter__(self):
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        FEATURE_LOOKUP.labels(self.store).observe(time.perf_counter() - self.started)


class RequestMetrics:
    """ASGI middleware: request count, error count and latency by route template."""

    def __init__(self, app, server: str):
        self.app = app
        self.server = server

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "other"
            if endpoint != "/metrics":
                method, code = scope.get("method", "GET"), str(status["code"])
                REQUESTS.labels(self.server, method, endpoint, code).inc()
                if status["code"] >= 400:
                    ERRORS.labels(self.server, method, endpoint, code).inc()
                LATENCY.labels(self.server, method, endpoint).observe(time.perf_counter() - started)


def metrics_response():
    """A Starlette response with the registry in Prometheus' text format (the trigger)."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
    from starlette.responses import Response

    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
