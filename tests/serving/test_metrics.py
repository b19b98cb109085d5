"""Prometheus /metrics of the predictor, the transformer and the trigger, scraped and parsed
(prometheus_client.parser) while requests are being served."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import httpx
import pytest
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


@pytest.mark.skipif(
    not Path("/usr/bin/prometheus").exists(), reason="needs Debian's prometheus (apt-get install)"
)
def test_dev_box_prometheus_scrapes_and_the_dashboard_queries_work(serving, tmp_path):
    """`flywheel up --with monitoring` in a home of its own, scraping the serving servers:
    the served version arrives in Prometheus and every query of the chart's Grafana
    dashboard evaluates there."""
    import json
    import time

    from flywheel import services
    from tests.conftest import ROOT, free_port, make_settings

    s = serving.settings
    mon = make_settings(
        tmp_path / "home",
        predictor_port=s.predictor_port,
        transformer_port=s.transformer_port,
        prometheus_port=free_port(),
        prometheus_scrape_s=1,
    )
    assert [svc.name for svc in services.select(mon)].count("monitoring") == 0  # optional
    api = f"{mon.url(mon.prometheus_port)}/api/v1/query"
    try:
        services.up(mon, ["monitoring"])
        config = json.loads((mon.run_dir / "prometheus.yml").read_text().split("\n", 1)[1])
        assert [j["job_name"] for j in config["scrape_configs"]] == [
            "predictor",
            "transformer",
            "trigger",
        ]
        deadline = time.monotonic() + 90
        while True:  # traffic while Prometheus scrapes every second
            httpx.post(
                f"{serving.transformer}/v1/models/{MODEL}:predict",
                json={"instances": serving.items[:4]},
                timeout=30,
            )
            q = httpx.get(api, params={"query": "flywheel_served_model_version"}).json()
            ready = httpx.get(
                api, params={"query": "sum(rate(flywheel_http_requests_total[1m]))"}
            ).json()
            values = {r["metric"]["server"]: r["value"][1] for r in q["data"]["result"]}
            rate = ready["data"]["result"]
            if values.get("predictor") == serving.version and rate and float(rate[0]["value"][1]):
                break
            assert time.monotonic() < deadline, (q, ready)
            time.sleep(1)
        dashboard = json.loads(
            (ROOT / "charts" / "flywheel" / "files" / "grafana-dashboard.json").read_text()
        )
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                answer = httpx.get(api, params={"query": target["expr"]}).json()
                assert answer["status"] == "success", (panel["title"], answer)
                if "write errors" not in panel["title"] and "Errors" not in panel["title"]:
                    assert answer["data"]["result"], panel["title"]  # data, not just valid
    finally:
        services.down(mon)


def test_prediction_log_keeps_the_representation_of_inline_images(serving):
    """Drift monitoring compares what the model saw: inline-image rows carry it."""
    import numpy as np

    from flywheel.serving.predlog import read_predictions

    item = serving.items[5]
    image = base64.b64encode(Path(serving.image_paths[item]).read_bytes()).decode()
    resp = httpx.post(
        f"{serving.transformer}/v1/models/{MODEL}:predict",
        json={"instances": [item, {"image": image, "item_id": "inline-probe"}]},
    )
    assert resp.status_code == 200, resp.text
    frame = read_predictions(serving.settings)
    [row] = frame[frame["item_id"] == "inline-probe"].to_dict(orient="records")
    assert row["source"] == "image"
    np.testing.assert_allclose(row["features"], serving.rows[item], atol=1e-6)
    stored = frame[(frame["item_id"] == item) & (frame["source"] == "store")]
    assert stored["features"].isna().all()
