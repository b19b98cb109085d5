"""The item representation: an image -> one float32 vector (the `pixels` feature).

Training (through the feature store) and serving (a base64 image sent to the
transformer) both call `representation`, so they cannot drift apart. The demo
representation is `pixels`: grey levels, box-filtered down to `settings.image_size`
squared, scaled to [0, 1]. `embedding` is a vision backbone's vector
(flywheel.features.embedding; those vectors live in their own feature view). A user
puts another model here by setting FLYWHEEL_REPRESENTATION=module:function, a function
(image, settings) -> 1-d array.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from flywheel.errors import InputError, SettingsError
from flywheel.settings import Settings

ImageLike = Image.Image | bytes | str | Path
Representation = Callable[[ImageLike, Settings | None], np.ndarray]


def open_image(image: ImageLike) -> Image.Image:
    """A PIL image from an image, its bytes, or its path; InputError when unreadable."""
    if isinstance(image, Image.Image):
        return image
    try:
        if isinstance(image, bytes | bytearray):
            return Image.open(io.BytesIO(image))
        return Image.open(Path(image))
    except (OSError, UnidentifiedImageError) as exc:
        what = "image bytes" if isinstance(image, bytes | bytearray) else f"image {image}"
        raise InputError(f"cannot read {what}: {exc}") from None


def pixels(image: ImageLike, settings: Settings | None = None, size: int | None = None):
    """Grey levels box-filtered to size x size, /255, as a float32 vector of size**2."""
    if size is None:
        size = settings.image_size if settings is not None else 8
    img = open_image(image).convert("L")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float32).reshape(-1) / 255.0


def embedding(image: ImageLike, settings: Settings | None = None) -> np.ndarray:
    """A vision backbone's vector of the image (flywheel.features.embedding)."""
    from flywheel.features.embedding import embedding as embed

    return embed(image, settings)


BUILTIN: dict[str, Representation] = {"pixels": pixels, "embedding": embedding}


@lru_cache(maxsize=8)
def load_representation(name: str) -> Representation:
    """The function a FLYWHEEL_REPRESENTATION value names ("pixels" or "module:function")."""
    if name in BUILTIN:
        return BUILTIN[name]
    module, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        fn = None
    if not callable(fn):
        raise SettingsError(
            f"FLYWHEEL_REPRESENTATION={name!r} names no function; use one of "
            f"{', '.join(BUILTIN)} or 'module:function'"
        )
    return fn


def representation(image: ImageLike, settings: Settings | None = None) -> np.ndarray:
    """The configured representation of one image: a 1-d float32 vector."""
    name = settings.representation if settings is not None else "pixels"
    vector = np.asarray(load_representation(name)(image, settings), dtype=np.float32)
    return vector.reshape(-1)
