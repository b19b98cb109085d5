"""The transformer's Open Inference Protocol v2 metadata, discovered and called by a stock
client (tritonclient.http) against the real servers."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from tests.serving.conftest import CLASSES, MODEL, expected


def test_tritonclient_discovers_and_calls_the_transformer(serving):
    import tritonclient.http as http

    url = serving.transformer.removeprefix("http://")
    client = http.InferenceServerClient(url=url)
    assert client.is_server_live() and client.is_model_ready(MODEL)
    meta = client.get_model_metadata(MODEL)
    inputs = {i["name"]: i for i in meta["inputs"]}
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert {n: i["datatype"] for n, i in inputs.items()} == {"item_id": "BYTES", "image": "BYTES"}
    assert outputs["probabilities"]["datatype"] == "FP32"
    assert outputs["probabilities"]["shape"] == [-1, len(CLASSES)]

    # build the request only from what the metadata said
    items = serving.items[:2]
    image = base64.b64encode(Path(serving.image_paths[items[0]]).read_bytes())
    values = {"item_id": [i.encode() for i in items], "image": [image]}
    request = []
    for name, spec in inputs.items():
        data = np.array(values[name], dtype=object)
        tensor = http.InferInput(name, list(data.shape), spec["datatype"])
        tensor.set_data_from_numpy(data, binary_data=False)
        request.append(tensor)
    wanted = [http.InferRequestedOutput(n, binary_data=False) for n in outputs]
    result = client.infer(
        MODEL, request, outputs=wanted, headers={"Content-Type": "application/json"}
    )
    probs = result.as_numpy("probabilities")
    want = expected(serving.module, np.stack([serving.rows[i] for i in items]))
    np.testing.assert_allclose(probs[:2], want, atol=1e-6)
    np.testing.assert_allclose(probs[2], want[0], atol=1e-6)
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    assert labels == [CLASSES[int(np.argmax(row))] for row in probs]
    client.close()
