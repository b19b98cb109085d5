"""Bounds on what a model server accepts, checked before any work is done.

- Request bodies: at most `FLYWHEEL_MAX_REQUEST_BYTES` (`BodyLimit`, an ASGI middleware
  in front of KServe's app): a longer declared Content-Length, or a chunked body that grows
  past it, gets 413 with a JSON error before the body is parsed.
- Inline images: at most `FLYWHEEL_MAX_IMAGE_PIXELS` pixels over all frames
  (`check_image`, which reads only the header): a decompression bomb (a small file that
  decodes to gigabytes) gets 400, never a decode.
- KServe's model repository: `unload` is refused (403) on the serving port, and so is
  `load` on the cluster, where the predictor follows the champion alias by itself
  (`RepositoryRefused`). On the dev box `load` only re-reads the champion alias: it
  cannot load anything else (see flywheel.serving.server).
"""

from __future__ import annotations

import io
import json

from flywheel.errors import FlywheelError, InputError


class RepositoryRefused(FlywheelError):
    """A model-repository operation that the serving port does not allow (403)."""


def check_image(data: bytes, max_pixels: int, where: str = "image") -> None:
    """InputError unless `data` is an image of at most `max_pixels` pixels (header only)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            frames = int(getattr(img, "n_frames", 1) or 1)
    except Image.DecompressionBombError as exc:
        raise InputError(f"{where}: refused as a decompression bomb ({exc})") from None
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InputError(f"cannot read {where}: {exc}") from None
    total = width * height * frames
    if total > max_pixels:
        raise InputError(
            f"{where} is {width} x {height} pixels"
            + (f" x {frames} frames" if frames > 1 else "")
            + f" = {total} pixels, over the limit of {max_pixels} (FLYWHEEL_MAX_IMAGE_PIXELS)"
        )


class BodyLimit:
    """ASGI middleware: 413 for request bodies over `max_bytes` (declared or streamed)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await _reply(send, 400, "Content-Length is not a number")
            if size > self.max_bytes:
                return await _reply(send, 413, self._too_large(size))
            return await self.app(scope, receive, send)
        chunks, size = [], 0  # chunked: read up to the limit, then hand the body on
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await _reply(send, 413, self._too_large(size, streamed=True))
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body, handed = b"".join(chunks), False

        async def replay():
            nonlocal handed
            if not handed:
                handed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _too_large(self, size: int, streamed: bool = False) -> str:
        got = f"more than {self.max_bytes}" if streamed else str(size)
        return (
            f"request body of {got} bytes is over the limit of {self.max_bytes} "
            "(FLYWHEEL_MAX_REQUEST_BYTES); send fewer rows or smaller images per request"
        )


async def _reply(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
