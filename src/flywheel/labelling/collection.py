"""The item collection: images on disk, the catalogue, and their Label Studio tasks.

`init_demo(settings)` renders scikit-learn's bundled 8x8 digits (1,797 images, no download)
as 64x64 grey PNG index cards under `<home>/data/items/digits/`, writes the demo answer key
(`<home>/data/demo_answers.parquet`: item_id, label) and then takes the same path as a
person's own images: `add_images(settings, directory, metadata_csv, collection)`.

Card rendering: grey level = round(value * 255 / 16) (white ink on black), upscaled 8x by
nearest neighbour, so a box-filter resize back to 8x8 divided by 255 gives exactly
`load_digits().images / 16` (to within 1/510).

`add_images` copies every PNG/JPEG of a folder (recursively, sorted) into
`<home>/data/items/<collection>/` (Label Studio serves that folder as local-files storage),
upserts the catalogue (`settings.catalogue_path`, columns in docs/interfaces.md), makes
sure the project exists and imports a task for each item that has none. Running it twice
creates nothing twice; a changed image keeps its item id and gets a new hash and
`updated_at`.

Metadata CSV (optional): a `file` column (path relative to DIR) and any of `item_id`,
`accession_date` (ISO date). Without one, item ids are `<collection>-<file stem>` and the
accession date is the day the image was added.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from flywheel.errors import InputError
from flywheel.settings import Settings

CATALOGUE_COLUMNS = [
    "item_id",
    "image_path",
    "collection",
    "accession_date",
    "image_sha256",
    "updated_at",
]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
DEMO_COLLECTION = "digits"
CARD_SCALE = 8  # 8x8 -> 64x64
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def answers_path(settings: Settings) -> Path:
    return settings.data_dir / "demo_answers.parquet"


def items_dir(settings: Settings, collection: str) -> Path:
    return settings.data_dir / "items" / collection


def slug(text: str) -> str:
    return _SLUG.sub("-", text).strip("-._") or "items"


# --- the catalogue ---------------------------------------------------------------------------


def empty_catalogue():
    import pandas as pd

    frame = pd.DataFrame({c: pd.Series(dtype="object") for c in CATALOGUE_COLUMNS})
    frame["updated_at"] = pd.Series(dtype="datetime64[ns, UTC]")
    return frame


def read_catalogue(settings: Settings):
    """The catalogue as a DataFrame (columns in docs/interfaces.md), one row per item."""
    import pandas as pd

    path = settings.catalogue_path
    if not path.exists():
        raise InputError(
            f"no catalogue at {path}; run `flywheel collection init` (the demo digits) "
            "or `flywheel collection add DIR`"
        )
    frame = pd.read_parquet(path)
    missing = [c for c in CATALOGUE_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"catalogue {path} lacks column(s) {', '.join(missing)}")
    frame["updated_at"] = pd.to_datetime(frame["updated_at"], utc=True).astype(
        "datetime64[ns, UTC]"
    )
    return frame


def _write_parquet(frame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.parquet")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def upsert_catalogue(settings: Settings, rows):
    """Merge `rows` into the catalogue; an unchanged image keeps its `updated_at`."""
    import pandas as pd

    old = read_catalogue(settings) if settings.catalogue_path.exists() else empty_catalogue()
    known = old.set_index("item_id")
    rows = rows.copy()
    for i, row in rows.iterrows():
        if row.item_id in known.index and known.at[row.item_id, "image_sha256"] == row.image_sha256:
            rows.at[i, "updated_at"] = known.at[row.item_id, "updated_at"]
    merged = pd.concat([old[~old.item_id.isin(rows.item_id)], rows], ignore_index=True)
    merged = merged.sort_values("item_id", kind="stable").reset_index(drop=True)
    merged["updated_at"] = pd.to_datetime(merged["updated_at"], utc=True).astype(
        "datetime64[ns, UTC]"
    )
    _write_parquet(merged[CATALOGUE_COLUMNS], settings.catalogue_path)
    return merged


# --- adding images ---------------------------------------------------------------------------


def _read_metadata(directory: Path, metadata_csv: Path | None) -> dict[str, dict]:
    import pandas as pd

    if metadata_csv is None:
        return {}
    if not metadata_csv.exists():
        raise InputError(f"metadata file {metadata_csv} does not exist")
    meta = pd.read_csv(metadata_csv, dtype=str).fillna("")
    if "file" not in meta.columns:
        raise InputError(
            f"metadata file {metadata_csv} needs a `file` column (image path relative to "
            f"{directory}); it has {', '.join(meta.columns)}"
        )
    out = {}
    for _, row in meta.iterrows():
        if not (directory / row["file"]).is_file():
            raise InputError(
                f"metadata file {metadata_csv} names {row['file']!r}, "
                f"which is not an image in {directory}"
            )
        date_text = row.get("accession_date", "")
        if date_text:
            try:
                date.fromisoformat(date_text)
            except ValueError:
                raise InputError(
                    f"metadata file {metadata_csv}: accession_date {date_text!r} "
                    f"of {row['file']!r} is not an ISO date (YYYY-MM-DD)"
                ) from None
        out[Path(row["file"]).as_posix()] = dict(row)
    return out


def add_images(
    settings: Settings,
    directory: Path,
    metadata_csv: Path | None = None,
    collection: str | None = None,
    register: bool = True,
    progress=None,
):
    """Add every PNG/JPEG under `directory` as an item; returns the catalogue rows added.

    Raises InputError for a missing/empty folder, an unreadable image, a bad metadata CSV
    or duplicate item ids.
    """
    import pandas as pd
    from PIL import Image, UnidentifiedImageError

    directory = Path(directory).expanduser().resolve()
    if not directory.is_dir():
        raise InputError(f"{directory} is not a folder of images")
    files = sorted(
        p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise InputError(f"{directory} holds no PNG or JPEG images")
    collection = slug(collection or directory.name)
    meta = _read_metadata(directory, metadata_csv)
    dest_dir = items_dir(settings, collection)
    dest_dir.mkdir(parents=True, exist_ok=True)
    today = date.today().isoformat()
    now = pd.Timestamp(datetime.now(UTC))
    rows, seen = [], {}
    for path in files:
        rel = path.relative_to(directory).as_posix()
        info = meta.get(rel, {})
        stem = path.with_suffix("").relative_to(directory).as_posix()
        item_id = info.get("item_id") or f"{collection}-{slug(stem)}"
        if item_id in seen:
            raise InputError(f"item id {item_id!r} is used by both {seen[item_id]} and {rel}")
        seen[item_id] = rel
        try:
            with Image.open(path) as img:
                img.verify()
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"{path} is not a readable image ({exc})") from None
        data = path.read_bytes()
        dest = dest_dir / f"{item_id}{path.suffix.lower()}"
        if dest != path and (not dest.exists() or dest.read_bytes() != data):
            shutil.copyfile(path, dest)
        rows.append(
            {
                "item_id": item_id,
                "image_path": str(dest),
                "collection": collection,
                "accession_date": info.get("accession_date") or today,
                "image_sha256": hashlib.sha256(data).hexdigest(),
                "updated_at": now,
            }
        )
        if progress:
            progress()
    frame = pd.DataFrame(rows, columns=CATALOGUE_COLUMNS)
    upsert_catalogue(settings, frame)
    if register:
        register_tasks(settings, frame)
    return frame


def register_tasks(settings: Settings, rows) -> int:
    """Import a Label Studio task for each catalogue row that has none; returns how many."""
    from flywheel.labelling import client as lsc

    ls = lsc.client(settings)
    project = lsc.ensure_project(settings, ls)
    for collection in sorted(set(rows.collection)):
        lsc.ensure_storage(settings, project, collection, ls)
    existing = set(lsc.tasks_by_item(lsc.project_tasks(settings, project, ls)))
    new = [
        {
            "image": task_url(settings, Path(r.image_path)),
            "item_id": r.item_id,
            "collection": r.collection,
            "priority": 0,
        }
        for r in rows.itertuples()
        if r.item_id not in existing
    ]
    for start in range(0, len(new), 1000):
        lsc._call(
            "import tasks",
            settings,
            ls.projects.import_tasks,
            project.id,
            request=new[start : start + 1000],
            commit_to_project=True,
        )
    return len(new)


def task_url(settings: Settings, image_path: Path) -> str:
    """The local-files URL Label Studio serves `image_path` under (relative to its
    document root, `settings.items_dir`: Label Studio may serve nothing else)."""
    from urllib.parse import quote

    rel = image_path.resolve().relative_to(settings.items_dir.resolve()).as_posix()
    return f"/data/local-files/?d={quote(rel)}"


# --- the demo digits -------------------------------------------------------------------------


def render_card(values):
    """An 8x8 digit (values 0..16) as a 64x64 grey PIL image, white ink on black."""
    import numpy as np
    from PIL import Image

    grey = np.rint(np.asarray(values, dtype=np.float64) * 255.0 / 16.0).astype(np.uint8)
    img = Image.fromarray(grey, mode="L")
    return img.resize(
        (grey.shape[1] * CARD_SCALE, grey.shape[0] * CARD_SCALE), Image.Resampling.NEAREST
    )


def demo_item_id(index: int) -> str:
    return f"{DEMO_COLLECTION}-{index:04d}"


def init_demo(settings: Settings, limit: int | None = None, register: bool = True, progress=None):
    """Render the demo digits, write the answer key, add them as the `digits` collection."""
    import pandas as pd
    from sklearn.datasets import load_digits

    digits = load_digits()
    n = len(digits.images) if limit is None else min(limit, len(digits.images))
    source = settings.data_dir / "demo-source" / DEMO_COLLECTION
    source.mkdir(parents=True, exist_ok=True)
    rows, answers = [], []
    start = date(2024, 1, 1)
    for i in range(n):
        item_id = demo_item_id(i)
        path = source / f"{item_id}.png"
        if not path.exists():
            render_card(digits.images[i]).save(path, optimize=True)
        rows.append(
            {
                "file": path.name,
                "item_id": item_id,
                "accession_date": (start + timedelta(days=i // 60)).isoformat(),
            }
        )
        answers.append({"item_id": item_id, "label": str(int(digits.target[i]))})
    # only the first n cards: a smaller demo leaves older, larger renders out of the catalogue
    keep = {r["file"] for r in rows}
    for stale in source.glob("*.png"):
        if stale.name not in keep:
            stale.unlink()
    metadata = source.parent / f"{DEMO_COLLECTION}-metadata.csv"
    pd.DataFrame(rows).to_csv(metadata, index=False)
    _write_parquet(pd.DataFrame(answers), answers_path(settings))
    return add_images(
        settings, source, metadata, DEMO_COLLECTION, register=register, progress=progress
    )


def read_answers(settings: Settings) -> dict[str, str]:
    """The demo answer key: item_id -> true label (for the demo annotator only)."""
    import pandas as pd

    path = answers_path(settings)
    if not path.exists():
        raise InputError(f"no demo answer key at {path}; run `flywheel collection init`")
    frame = pd.read_parquet(path)
    return dict(zip(frame.item_id, frame.label, strict=True))
