"""A small demo catalogue for the feature tests and the benchmark (docs/interfaces.md 1).

Digits from sklearn.datasets.load_digits rendered as PNGs upscaled by an integer factor
with nearest-neighbour, so the box-filtered representation gives back the 8x8 grey levels.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

FACTOR = 4


def digit_image(index: int, factor: int = FACTOR, invert: bool = False) -> Image.Image:
    from sklearn.datasets import load_digits

    grey = load_digits().images[index % 1797] * (255.0 / 16.0)
    if invert:
        grey = 255.0 - grey
    img = Image.fromarray(np.round(grey).astype(np.uint8), mode="L")
    return img.resize((8 * factor, 8 * factor), Image.Resampling.NEAREST)


def write_item(images: Path, item_id: str, img: Image.Image) -> tuple[str, str]:
    images.mkdir(parents=True, exist_ok=True)
    data_path = images / f"{item_id}.png"
    img.save(data_path)
    return str(data_path), hashlib.sha256(data_path.read_bytes()).hexdigest()


def write_catalogue(
    settings, n: int, updated_at: datetime | None = None, changed: dict[str, datetime] | None = None
) -> pd.DataFrame:
    """Write n digit items; items in `changed` get an inverted image seen at that time."""
    updated_at = updated_at or datetime(2026, 1, 1, tzinfo=UTC)
    changed = changed or {}
    rows = []
    for i in range(n):
        item_id = f"digits-{i:04d}"
        img = digit_image(i, invert=item_id in changed)
        path, sha = write_item(settings.data_dir / "images", item_id, img)
        rows.append(
            {
                "item_id": item_id,
                "image_path": path,
                "collection": "digits",
                "accession_date": f"2020-01-{1 + i % 28:02d}",
                "image_sha256": sha,
                "updated_at": changed.get(item_id, updated_at),
            }
        )
    frame = pd.DataFrame(rows)
    frame["updated_at"] = pd.to_datetime(frame["updated_at"], utc=True)
    settings.catalogue_path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(settings.catalogue_path, index=False)
    return frame
