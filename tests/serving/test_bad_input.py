"""Every bad input the issue lists gets a 4xx JSON error naming the problem, and the
servers keep serving afterwards."""

from __future__ import annotations

import base64
import io

import httpx
import pytest

from tests.serving.conftest import MODEL

ROW = [0.5] * 64


def v2(data, shape, datatype="FP32", name="pixels", **extra):
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}], **extra}


def png(size=8) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (size, size), 128).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


# (server, protocol, body (dict or raw bytes), status, words the error must contain)
PREDICTOR_CASES = {
    "v1 wrong shape": ("v1", {"instances": [[0.5] * 63]}, 400, "64 features"),
    "v1 flat row": ("v1", {"instances": ROW}, 400, "flat row"),
    "v1 3-d": ("v1", {"instances": [[ROW]]}, 400, "shape"),
    "v1 ragged": ("v1", {"instances": [ROW, ROW[:10]]}, 400, "same length"),
    "v1 strings": ("v1", {"instances": [["a"] * 64]}, 400, "strings"),
    "v1 booleans": ("v1", {"instances": [[True] * 64]}, 400, "booleans"),
    "v1 NaN": ("v1", b'{"instances": [[NaN' + b", 0.5" * 63 + b"]]}", 400, ""),
    "v1 huge": ("v1", {"instances": [[1e39] * 64]}, 400, "infinite"),
    "v1 empty batch": ("v1", {"instances": []}, 400, "empty batch"),
    "v1 over the limit": ("v1", {"instances": [ROW] * 65}, 400, "over the limit"),
    "v1 no instances": ("v1", {"rows": [ROW]}, 400, "instances"),
    "v1 malformed JSON": ("v1", b'{"instances": [[0.5,', 400, ""),
    "v2 wrong shape": ("v2", v2(ROW[:32], [1, 32]), 400, "64 features"),
    "v2 shape/data mismatch": ("v2", v2(ROW, [2, 64]), 400, "does not match"),
    "v2 wrong dtype": ("v2", v2([1] * 64, [1, 64], "INT64"), 400, "FP32"),
    "v2 bytes dtype": ("v2", v2(["x"] * 64, [1, 64], "BYTES"), 400, "FP32"),
    "v2 NaN": (
        "v2",
        b'{"inputs": [{"name": "p", "shape": [1, 64], "datatype": "FP32", '
        b'"data": [NaN' + b", 0.5" * 63 + b"]}]}",
        400,
        "NaN",
    ),
    "v2 Infinity": (
        "v2",
        b'{"inputs": [{"name": "p", "shape": [1, 64], "datatype": "FP32", '
        b'"data": [Infinity' + b", 0.5" * 63 + b"]}]}",
        400,
        "infinite",
    ),
    "v2 empty batch": ("v2", v2([], [0, 64]), 400, "empty batch"),
    "v2 over the limit": ("v2", v2(ROW * 65, [65, 64]), 400, "over the limit"),
    "v2 two inputs": ("v2", {"inputs": v2(ROW, [1, 64])["inputs"] * 2}, 400, "one input"),
    "v2 no inputs field": ("v2", {"id": "x"}, 400, "inputs"),
    "v2 malformed JSON": ("v2", b'{"inputs": [', 400, ""),
}

TRANSFORMER_CASES = {
    "unknown ids": (
        "v1",
        {"instances": ["digits-0001", "nope-1", "nope-2"]},
        400,
        "nope-1, nope-2",
    ),
    "empty batch": ("v1", {"instances": []}, 400, "empty batch"),
    "over the limit": ("v1", {"instances": ["digits-0001"] * 65}, 400, "over the limit"),
    "not base64": ("v1", {"instances": [{"image": "%%%not base64%%%"}]}, 400, "base64"),
    "not an image": (
        "v1",
        {"instances": [{"image": base64.b64encode(b"hello").decode()}]},
        400,
        "row 0",
    ),
    "wrong instance": ("v1", {"instances": [42]}, 400, "instance 0"),
    "malformed JSON": ("v1", b'{"instances": ["digits-0001"', 400, ""),
    "v2 unknown input": ("v2", v2(["digits-0001"], [1], "BYTES", name="id"), 400, "'id'"),
    "v2 wrong dtype": ("v2", v2([1], [1], "INT32", name="item_id"), 400, "BYTES"),
    "v2 unknown ids": ("v2", v2(["nope-3"], [1], "BYTES", name="item_id"), 400, "nope-3"),
}


def _post(base: str, protocol: str, body) -> httpx.Response:
    url = (
        f"{base}/v1/models/{MODEL}:predict"
        if protocol == "v1"
        else f"{base}/v2/models/{MODEL}/infer"
    )
    if isinstance(body, bytes):
        return httpx.post(url, content=body, headers={"content-type": "application/json"})
    return httpx.post(url, json=body)


def _check(resp: httpx.Response, status: int, words: str) -> None:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert isinstance(error, str) and error
    assert words in error, error


@pytest.mark.parametrize("case", PREDICTOR_CASES)
def test_predictor_rejects(serving, case):
    protocol, body, status, words = PREDICTOR_CASES[case]
    _check(_post(serving.predictor, protocol, body), status, words)


@pytest.mark.parametrize("case", TRANSFORMER_CASES)
def test_transformer_rejects(serving, case):
    protocol, body, status, words = TRANSFORMER_CASES[case]
    _check(_post(serving.transformer, protocol, body), status, words)


def test_images_of_another_size_are_featurised_not_refused(serving):
    resp = _post(serving.transformer, "v1", {"instances": [{"image": png(32)}]})
    assert resp.status_code == 200, resp.text


def test_servers_keep_serving_after_bad_input(serving):
    for base, body in (
        (serving.predictor, {"instances": [ROW]}),
        (serving.transformer, {"instances": [serving.items[0]]}),
    ):
        assert _post(base, "v1", b"{").status_code == 400
        assert _post(base, "v1", body).status_code == 200
