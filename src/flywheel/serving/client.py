"""A small client for the model servers (the CLI, the loop and the tests use it).

    predict_items(item_ids, settings) -> Predictions    via the transformer (v1)
    predict_images(images, settings) -> Predictions     inline images via the transformer
    reload(settings)                                     make the predictor load the champion

Errors come back as ServiceError carrying the server's JSON message.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from flywheel.errors import ServiceError
from flywheel.settings import Settings


@dataclass
class Predictions:
    item_ids: list[str | None]
    labels: list[str]
    probabilities: list[list[float]]
    classes: list[str]
    model_version: str


def _post(url: str, body: dict, timeout: float) -> dict:
    try:
        resp = httpx.post(url, json=body, timeout=timeout)
    except httpx.TransportError as exc:
        raise ServiceError(
            f"{url} cannot be reached ({type(exc).__name__}); "
            f"is it up? `flywheel up predictor transformer`"
        ) from None
    if resp.status_code != 200:
        try:
            message = resp.json().get("error", resp.text)
        except ValueError:
            message = resp.text
        raise ServiceError(f"{url} answered {resp.status_code}: {message}")
    return resp.json()


def _predict(instances: list, settings: Settings, timeout: float) -> Predictions:
    url = f"{settings.url(settings.transformer_port)}/v1/models/{settings.model_name}:predict"
    body = _post(url, {"instances": instances}, timeout)
    preds = body["predictions"]
    return Predictions(
        [p["item_id"] for p in preds],
        [p["label"] for p in preds],
        [p["probabilities"] for p in preds],
        body["classes"],
        body["model_version"],
    )


def predict_items(
    item_ids: Sequence[str], settings: Settings, timeout: float = 30.0
) -> Predictions:
    """Predictions for items in the feature store, in order."""
    return _predict([str(i) for i in item_ids], settings, timeout)


def predict_images(
    images: Iterable[bytes | Path],
    settings: Settings,
    item_ids: Sequence[str | None] | None = None,
    timeout: float = 30.0,
) -> Predictions:
    """Predictions for inline images (bytes or paths of PNG/JPEG files)."""
    images = [i if isinstance(i, bytes) else Path(i).read_bytes() for i in images]
    ids = list(item_ids) if item_ids is not None else [None] * len(images)
    instances = [
        {"image": base64.b64encode(b).decode(), "item_id": i}
        for b, i in zip(images, ids, strict=True)
    ]
    return _predict(instances, settings, timeout)


def reload(settings: Settings, timeout: float = 120.0) -> None:
    """Make the predictor load the model version the `champion` alias points to now."""
    base = settings.url(settings.predictor_port)
    _post(f"{base}/v2/repository/models/{settings.model_name}/load", {}, timeout)
