"""Prometheus /metrics of the predictor, the transformer and the trigger, scraped and parsed
(prometheus_client.parser) while requests are being served."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.serving.conftest import MODEL


def scrape(base: str) -> dict[str, list]:
    """Samples by metric name (`name`, `name_total`, `name_bucket`...) from GET /metrics."""
    resp = httpx.get(f"{base}/metrics", timeout=30)
    assert resp.status_code == 200, resp.text
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(
        s.value
        for s in samples.get(name, [])
        if all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_model_servers_metrics_during_load(serving):
    predict = "/v1/models/{model_name}:predict"
    before_t = scrape(serving.transformer)
    before_p = scrape(serving.predictor)
    items = serving.items[:8]
    image = base64.b64encode(Path(serving.image_paths[items[0]]).read_bytes()).decode()
    n_requests, scrapes, errors = 12, [], []

    def load() -> None:
        with httpx.Client(timeout=30) as http:
            for _ in range(n_requests):
                resp = http.post(
                    f"{serving.transformer}/v1/models/{MODEL}:predict",
                    json={"instances": [*items, {"image": image}]},
                )
                errors.append(resp.status_code)
            for _ in range(3):  # bad input: 400, counted as errors
                http.post(
                    f"{serving.transformer}/v1/models/{MODEL}:predict",
                    json={"instances": ["no-such-item"]},
                )

    worker = threading.Thread(target=load)
    worker.start()
    while worker.is_alive():  # scraping while the load runs must keep working
        scrapes.append(scrape(serving.transformer))
    worker.join()
    assert scrapes, "no scrape happened during the load"
    assert set(errors) == {200}
    after_t = scrape(serving.transformer)
    after_p = scrape(serving.predictor)

    def delta(after, before, name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    # requests, errors and latency by endpoint (route template, not the raw path)
    ok = dict(server="transformer", endpoint=predict, method="POST")
    assert delta(after_t, before_t, "flywheel_http_requests_total", status="200", **ok) == 12
    assert delta(after_t, before_t, "flywheel_http_errors_total", status="400", **ok) == 3
    assert delta(after_t, before_t, "flywheel_http_request_seconds_count", **ok) == 15
    assert (
        delta(
            after_p,
            before_p,
            "flywheel_http_requests_total",
            server="predictor",
            endpoint=predict,
            status="200",
        )
        >= 12
    )
    # the served version, on both servers
    for samples, server in ((after_t, "transformer"), (after_p, "predictor")):
        assert value(samples, "flywheel_served_model_version", server=server) == float(
            serving.version
        )
        assert (
            value(samples, "flywheel_served_model_info", server=server, version=serving.version)
            == 1
        )
    # feature lookups: one per request with item ids (the failing ones included)
    assert delta(after_t, before_t, "flywheel_feature_lookup_seconds_count", store="feast") == 15
    # confidence histogram and predicted classes: 9 rows per answered request
    rows = 12 * (len(items) + 1)
    for after, before, server in (
        (after_t, before_t, "transformer"),
        (after_p, before_p, "predictor"),
    ):
        conf = dict(server=server, model_version=serving.version)
        assert delta(after, before, "flywheel_prediction_confidence_count", **conf) == rows
        assert delta(after, before, "flywheel_predicted_class_total", **conf) == rows
        buckets = [
            s
            for s in after["flywheel_prediction_confidence_bucket"]
            if s.labels["server"] == server and s.labels["le"] == "+Inf"
        ]
        assert buckets and all(0 <= s.value for s in buckets)
    assert "flywheel_prediction_log_write_errors_total" in after_t
    # KServe's own histograms are still there
    assert "request_predict_seconds_count" in after_p


def test_trigger_metrics(settings):
    from flywheel.labelling.trigger import create_app

    app = create_app(settings, action=lambda s, ids: None, poll=False)
    with TestClient(app) as client:
        client.get("/status")
        client.post("/webhook", content=b"not json")
        samples = {}
        for family in text_string_to_metric_families(client.get("/metrics").text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append(sample)
    assert (
        value(
            samples,
            "flywheel_http_requests_total",
            server="trigger",
            endpoint="/status",
            status="200",
        )
        >= 1
    )
    assert (
        value(
            samples,
            "flywheel_http_errors_total",
            server="trigger",
            endpoint="/webhook",
            status="400",
        )
        >= 1
    )
