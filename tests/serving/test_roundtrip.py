"""v1 and v2 round trips through the predictor and the transformer, equal to the model's
in-process output; not-ready before a champion exists; the prediction log."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np

from tests.serving.conftest import CLASSES, MODEL, expected


def test_no_champion_answers_not_ready_never_500(serving):
    probe = serving.not_ready
    assert probe["live"].status_code == 200
    for key in ("ready", "v1", "v2", "transformer"):
        resp = probe[key]
        assert resp.status_code == 503, (key, resp.text)
        assert "error" in resp.json()
    assert "champion" in probe["v1"].json()["error"]
    assert "champion" in probe["transformer"].json()["error"]


def test_predictor_v1_equals_in_process(serving):
    rows = np.random.default_rng(0).random((5, 64), dtype=np.float32)
    resp = httpx.post(
        f"{serving.predictor}/v1/models/{MODEL}:predict", json={"instances": rows.tolist()}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model_version"] == serving.version
    assert body["classes"] == CLASSES
    np.testing.assert_allclose(body["predictions"], expected(serving.module, rows), atol=1e-6)


def test_predictor_v2_equals_in_process_and_keeps_or_makes_an_id(serving):
    rows = np.random.default_rng(1).random((3, 64), dtype=np.float32)
    tensor = {"name": "pixels", "shape": [3, 64], "datatype": "FP32", "data": rows.ravel().tolist()}
    url = f"{serving.predictor}/v2/models/{MODEL}/infer"
    with_id = httpx.post(url, json={"id": "req-42", "inputs": [tensor]})
    without_id = httpx.post(url, json={"inputs": [tensor]})
    for resp in (with_id, without_id):
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["id"]
        assert body["model_version"] == serving.version
        out = {o["name"]: o for o in body["outputs"]}
        probs = np.asarray(out["probabilities"]["data"]).reshape(out["probabilities"]["shape"])
        np.testing.assert_allclose(probs, expected(serving.module, rows), atol=1e-6)
        assert out["label"]["data"] == [CLASSES[i] for i in probs.argmax(1)]
    assert with_id.json()["id"] == "req-42"


def test_predictor_metadata_and_health(serving):
    meta = httpx.get(f"{serving.predictor}/v2/models/{MODEL}").json()
    assert meta["inputs"][0]["shape"] == [-1, 64]
    assert meta["outputs"][0]["shape"] == [-1, len(CLASSES)]
    assert httpx.get(f"{serving.predictor}/v2/models/{MODEL}/ready").status_code == 200
    assert httpx.get(f"{serving.transformer}/v2/health/ready").status_code == 200
    for base in (serving.predictor, serving.transformer):  # Prometheus metrics
        assert httpx.get(f"{base}/metrics").status_code == 200


def test_transformer_items_v1_equal_in_process(serving):
    items = serving.items[:6]
    resp = httpx.post(f"{serving.transformer}/v1/models/{MODEL}:predict", json={"instances": items})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model_version"] == serving.version
    assert [p["item_id"] for p in body["predictions"]] == items
    rows = np.stack([serving.rows[i] for i in items])
    want = expected(serving.module, rows)
    np.testing.assert_allclose([p["probabilities"] for p in body["predictions"]], want, atol=1e-6)
    assert [p["label"] for p in body["predictions"]] == [CLASSES[i] for i in want.argmax(1)]


def test_transformer_inline_image_matches_stored_item(serving):
    item = serving.items[3]
    image = base64.b64encode(Path(serving.image_paths[item]).read_bytes()).decode()
    resp = httpx.post(
        f"{serving.transformer}/v1/models/{MODEL}:predict",
        json={"instances": [item, {"image": image, "item_id": "new-card"}]},
    )
    assert resp.status_code == 200, resp.text
    stored, inline = resp.json()["predictions"]
    assert inline["item_id"] == "new-card"
    np.testing.assert_allclose(inline["probabilities"], stored["probabilities"], atol=1e-6)


def test_transformer_v2_ids_and_images(serving):
    items = serving.items[:2]
    image = base64.b64encode(Path(serving.image_paths[items[0]]).read_bytes()).decode()
    resp = httpx.post(
        f"{serving.transformer}/v2/models/{MODEL}/infer",
        json={
            "inputs": [
                {"name": "item_id", "shape": [2], "datatype": "BYTES", "data": items},
                {"name": "image", "shape": [1], "datatype": "BYTES", "data": [image]},
            ]
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["id"] and body["model_version"] == serving.version
    out = {o["name"]: o for o in body["outputs"]}
    probs = np.asarray(out["probabilities"]["data"]).reshape(out["probabilities"]["shape"])
    want = expected(serving.module, np.stack([serving.rows[i] for i in items]))
    np.testing.assert_allclose(probs[:2], want, atol=1e-6)
    np.testing.assert_allclose(probs[2], want[0], atol=1e-6)
    assert out["item_id"]["data"] == [*items, ""]


def test_prediction_log_has_every_transformer_row(serving):
    from flywheel.serving.predlog import read_predictions

    items = serving.items[10:13]
    resp = httpx.post(f"{serving.transformer}/v1/models/{MODEL}:predict", json={"instances": items})
    assert resp.status_code == 200, resp.text
    frame = read_predictions(serving.settings)
    mine = frame[frame["item_id"].isin(items)]
    assert sorted(mine["item_id"]) == sorted(items)
    assert set(mine["source"]) == {"store"}
    assert (mine["latency_ms"] > 0).all()
    assert mine["model_version"].notna().all()
    got = np.stack(mine.set_index("item_id").loc[items, "probabilities"].map(np.asarray))
    np.testing.assert_allclose(got, [p["probabilities"] for p in resp.json()["predictions"]])


def _listening(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port` (Linux /proc/net)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(addr)
    return found


def test_dev_box_servers_bind_loopback_only(serving):
    for port in (serving.settings.predictor_port, serving.settings.transformer_port):
        assert _listening(port) == {"0100007F"}  # 127.0.0.1, not 0.0.0.0
