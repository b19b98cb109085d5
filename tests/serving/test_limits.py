"""Serving bounds (flywheel.serving.limits) against the running servers: request bodies over
the limit get 413, a decompression bomb gets 400 (never a decode), KServe's `unload` is
refused with 403; every answer is a JSON error and the servers keep serving."""

from __future__ import annotations

import base64
import struct
import zlib

import httpx
import pytest

from flywheel.errors import InputError
from flywheel.serving.limits import check_image
from tests.serving.conftest import MODEL


def png(width: int, height: int, idat: bytes | None = None) -> bytes:
    """A grey 8-bit PNG; its IDAT is all-black rows unless given (a bomb compresses ~1000:1)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    if idat is None:
        idat = zlib.compress(b"\x00" * ((width + 1) * height), 9)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def test_check_image_reads_only_the_header():
    check_image(png(64, 64), max_pixels=4096)
    with pytest.raises(InputError, match="64 x 65 pixels = 4160 pixels, over the limit of 4096"):
        check_image(png(64, 65), max_pixels=4096)
    with pytest.raises(InputError, match="decompression bomb"):  # 1e10 pixels: PIL refuses too
        check_image(png(100_000, 100_000, idat=b""), max_pixels=10**12)
    with pytest.raises(InputError, match="cannot read"):
        check_image(b"not an image", max_pixels=4096)


def _alive(serving) -> None:
    ok = httpx.post(
        f"{serving.transformer}/v1/models/{MODEL}:predict",
        json={"instances": serving.items[:1]},
        timeout=30,
    )
    assert ok.status_code == 200, ok.text


def test_decompression_bomb_gets_400(serving):
    bomb = png(8000, 8000)  # 64 megapixels in about 64 KB
    assert len(bomb) < 200_000
    resp = httpx.post(
        f"{serving.transformer}/v1/models/{MODEL}:predict",
        json={"instances": [{"image": base64.b64encode(bomb).decode()}]},
        timeout=30,
    )
    assert resp.status_code == 400, resp.text
    assert "over the limit of 40000000" in resp.json()["error"]
    assert "FLYWHEEL_MAX_IMAGE_PIXELS" in resp.json()["error"]
    _alive(serving)


@pytest.mark.parametrize("server", ["predictor", "transformer"])
def test_body_over_the_limit_gets_413(serving, server):
    url = f"{getattr(serving, server)}/v1/models/{MODEL}:predict"
    limit = serving.settings.max_request_bytes
    big = b'{"instances": [' + b"0," * (limit // 2) + b"0]}"
    resp = httpx.post(url, content=big, headers={"content-type": "application/json"}, timeout=60)
    assert resp.status_code == 413, resp.text[:300]
    assert "FLYWHEEL_MAX_REQUEST_BYTES" in resp.json()["error"]

    def chunks():  # no Content-Length: the limit applies while the body streams
        yield b'{"instances": ['
        for _ in range(limit // (1 << 16) + 2):
            yield b"0," * (1 << 15)
        yield b"0]}"

    resp = httpx.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413, resp.text[:300]
    assert "more than" in resp.json()["error"]
    _alive(serving)


def test_unload_is_refused(serving):
    resp = httpx.post(f"{serving.predictor}/v2/repository/models/{MODEL}/unload", timeout=30)
    assert resp.status_code == 403, resp.text
    assert "not allowed" in resp.json()["error"]
    ready = httpx.get(f"{serving.predictor}/v2/models/{MODEL}/ready", timeout=30)
    assert ready.status_code == 200, ready.text
    _alive(serving)
