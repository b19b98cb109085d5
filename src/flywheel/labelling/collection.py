"""The item collection: images on disk, the catalogue, and their Label Studio tasks.

`init_demo(settings)` renders scikit-learn's bundled 8x8 digits (1,797 images, no download)
as 64x64 grey PNG index cards under `<home>/data/items/digits/`, writes the demo answer key
(`<home>/data/demo_answers.parquet`: item_id, label) and then takes the same path as a
person's own images: `add_images(settings, directory, metadata_csv, collection)`.

Card rendering: grey level = round(value * 255 / 16) (white ink on black), upscaled 8x by
nearest neighbour, so a box-filter resize back to 8x8 divided by 255 gives exactly
`load_digits().images / 16` (to within 1/510).

`add_collection` takes every image of a folder (recursively, sorted; formats and colour
handling in `intake.py`): masters stay where they are (the catalogue's `source` and
`image_sha256` name the original and its content); only the derivative card is written to
`<home>/data/items/<collection>/` (Label Studio serves that folder as local-files storage;
the card is also the model's input). With `settings.intake_copy_masters` the master is
copied to `<home>/data/masters/<collection>/` first. Each file gets an outcome (added,
changed, unchanged, rejected with its reason, skipped); the outcomes are written to
`<home>/data/intake/<collection>.json` (and .csv). A re-run reads only new or changed files
(size and modification time differ from the catalogue's). It upserts the catalogue, groups
near-duplicates (`duplicates.py`), makes sure the project exists and imports a task for
each item that has none, in batches. Running it twice creates nothing twice; a changed
image keeps its item id and gets a new hash and `updated_at`.

Metadata CSV (optional): a `file` column (path relative to DIR) and any of `item_id`,
`accession_date` (ISO date). Without one, item ids are `<collection>-<file stem>` and the
accession date is the day the image was added. A metadata `item_id` must be safe (letters,
digits, `.`, `_`, `-`, no `..`); an optional `group` column puts items in one
near-duplicate group (e.g. the recto and verso of a card).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from flywheel import objectstore
from flywheel.errors import InputError
from flywheel.settings import Settings

CATALOGUE_COLUMNS = [
    "item_id",
    "image_path",
    "collection",
    "accession_date",
    "image_sha256",
    "updated_at",
    # since intake took real collections (older catalogues get defaults when read)
    "source",
    "source_size",
    "source_mtime_ns",
    "page",
    "phash",
    "dup_group",
    "title",
    "metadata",
    "rights",
]
REQUIRED_COLUMNS = CATALOGUE_COLUMNS[:6]
INT_COLUMNS = ("source_size", "source_mtime_ns", "page")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
DEMO_COLLECTION = "digits"
CARD_SCALE = 8  # 8x8 -> 64x64
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def answers_path(settings: Settings) -> Path:
    return settings.data_dir / "demo_answers.parquet"


def items_dir(settings: Settings, collection: str) -> Path:
    return settings.data_dir / "items" / collection


def catalogue_uri(settings: Settings) -> str:
    """The catalogue: `settings.catalogue_path`, or `<state_uri>/catalogue.parquet`."""
    if settings.state_uri:
        return objectstore.state_uri(settings, "catalogue.parquet")
    return str(settings.catalogue_path)


def slug(text: str) -> str:
    return _SLUG.sub("-", text).strip("-._") or "items"


# --- the catalogue ---------------------------------------------------------------------------


def empty_catalogue():
    import pandas as pd

    frame = pd.DataFrame({c: pd.Series(dtype="object") for c in CATALOGUE_COLUMNS})
    for column in INT_COLUMNS:
        frame[column] = pd.Series(dtype="int64")
    frame["updated_at"] = pd.Series(dtype="datetime64[ns, UTC]")
    return frame


def read_catalogue(settings: Settings):
    """The catalogue as a DataFrame (columns in docs/interfaces.md), one row per item."""
    import pandas as pd

    path = catalogue_uri(settings)
    if not objectstore.exists(settings, path):
        raise InputError(
            f"no catalogue at {path}; run `flywheel collection init` (the demo digits) "
            "or `flywheel collection add DIR`"
        )
    frame = objectstore.read_parquet(settings, path)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"catalogue {path} lacks column(s) {', '.join(missing)}")
    _fill_optional(frame)
    frame["updated_at"] = pd.to_datetime(frame["updated_at"], utc=True).astype(
        "datetime64[ns, UTC]"
    )
    return frame


def _fill_optional(frame) -> None:
    for column in CATALOGUE_COLUMNS[6:]:
        if column not in frame.columns:
            frame[column] = -1 if column in INT_COLUMNS else ""
        if column == "source":
            frame[column] = frame[column].where(frame[column] != "", frame["image_path"])
        if column in INT_COLUMNS:
            frame[column] = frame[column].fillna(-1).astype("int64")
        else:
            frame[column] = frame[column].fillna("").astype(str)


def _write_parquet(frame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.parquet")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def upsert_catalogue(settings: Settings, rows):
    """Merge `rows` into the catalogue; an unchanged image keeps its `updated_at`."""
    import pandas as pd

    exists = objectstore.exists(settings, catalogue_uri(settings))
    old = read_catalogue(settings) if exists else empty_catalogue()
    known = old.set_index("item_id")
    rows = rows.copy()
    _fill_optional(rows)
    for i, row in rows.iterrows():
        if row.item_id in known.index and known.at[row.item_id, "image_sha256"] == row.image_sha256:
            rows.at[i, "updated_at"] = known.at[row.item_id, "updated_at"]
    merged = pd.concat([old[~old.item_id.isin(rows.item_id)], rows], ignore_index=True)
    merged = merged.sort_values("item_id", kind="stable").reset_index(drop=True)
    merged["updated_at"] = pd.to_datetime(merged["updated_at"], utc=True).astype(
        "datetime64[ns, UTC]"
    )
    objectstore.write_parquet(settings, merged[CATALOGUE_COLUMNS], catalogue_uri(settings))
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


@dataclass
class IntakeResult:
    """What `add_collection` did: the folder's catalogue rows and one outcome per file."""

    rows: object  # DataFrame: catalogue rows of every item the folder holds now
    outcomes: list = field(default_factory=list)  # intake.Outcome
    report_path: Path | None = None

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def rejected(self) -> list:
        return [o for o in self.outcomes if o.status == "rejected"]


def limits(settings: Settings):
    from flywheel.labelling.intake import Limits

    return Limits(settings.card_size, settings.intake_max_pixels, settings.intake_pages)


def add_images(
    settings: Settings,
    directory: Path,
    metadata_csv: Path | None = None,
    collection: str | None = None,
    register: bool = True,
    progress=None,
):
    """`add_collection`, returning the catalogue rows; InputError when nothing was added."""
    return add_collection(
        settings, directory, metadata_csv, collection, register=register, progress=progress
    ).rows


def add_collection(
    settings: Settings,
    directory: Path,
    metadata_csv: Path | None = None,
    collection: str | None = None,
    register: bool = True,
    progress=None,
) -> IntakeResult:
    """Take every image under `directory`; bad files are rejected with their reason.

    Raises InputError for a missing folder, a bad metadata CSV, or when the folder yields
    no item at all (the message names every rejected file and why).
    """
    import pandas as pd

    from flywheel.labelling import intake

    directory = Path(directory).expanduser().resolve()
    if not directory.is_dir():
        raise InputError(f"{directory} is not a folder of images")
    files, outcomes = intake.scan(directory)
    collection = slug(collection or directory.name)
    meta = _read_metadata(directory, metadata_csv)
    dest_dir = items_dir(settings, collection)
    cards = set(os.listdir(dest_dir)) if dest_dir.is_dir() else set()
    exists = objectstore.exists(settings, catalogue_uri(settings))
    catalogue = read_catalogue(settings) if exists else None
    known = _known_sources(catalogue)
    owner = {r.item_id: source for source, rows in known.items() for r in rows}
    today = date.today().isoformat()
    now = pd.Timestamp(datetime.now(UTC))
    jobs, unchanged, seen, info_of = [], [], {}, {}
    for found in files:
        rel = found.rel
        info = meta.get(rel, {})
        item_id = info.get("item_id") or f"{collection}-{intake.safe_id(found.stem)}"
        if not intake.is_safe_id(item_id):
            outcomes.append(
                intake.Outcome(
                    rel, "rejected", f"unsafe item id {item_id!r} (letters, digits, . _ -; no ..)"
                )
            )
            continue
        if item_id in seen:
            outcomes.append(
                intake.Outcome(
                    rel, "rejected", f"item id {item_id!r} is also the id of {seen[item_id]}"
                )
            )
            continue
        source = found.path
        if _taken(settings, owner.get(item_id), source):
            outcomes.append(
                intake.Outcome(
                    rel,
                    "rejected",
                    f"item id {item_id!r} is already the id of {owner[item_id]} in the catalogue",
                )
            )
            continue
        seen[item_id] = rel
        info_of[rel] = info
        old = [  # this file's rows (several for the pages of a multi-page master)
            r
            for r in known.get(source, [])
            if r.item_id == item_id or r.item_id.startswith(f"{item_id}-p")
        ]
        if old and all(
            (r.source_size, r.source_mtime_ns) == (found.size, found.mtime_ns)
            and os.path.basename(r.image_path) in cards
            for r in old
        ):
            unchanged.extend(old)
            outcomes.append(intake.Outcome(rel, "unchanged", item_id=item_id))
            if progress:
                progress()
            continue
        copy_to = ""
        if settings.intake_copy_masters:
            copy_to = str(settings.data_dir / "masters" / collection / f"{item_id}{found.suffix}")
        jobs.append(intake.Job(source, rel, item_id, str(dest_dir), limits(settings), copy_to))
    results = intake.run_jobs(jobs, intake.workers(settings), progress)
    rows = []
    for result in results:
        for outcome in result:
            if outcome.status == "added":
                previous = owner.get(outcome.item_id)
                if outcome.item_id in {r["item_id"] for r in rows}:
                    outcome.status, outcome.reason = (
                        "rejected",
                        f"page item id {outcome.item_id!r} is taken by another file",
                    )
                    continue
                outcome.status = "changed" if previous else "added"
                info = info_of.get(outcome.file, {})
                image_path = outcome.info["image_path"]
                if objectstore.is_remote(settings.state_uri or ""):  # cluster: cards in S3
                    card = Path(image_path)
                    image_path = objectstore.state_uri(settings, "items", collection, card.name)
                    objectstore.write_bytes(settings, image_path, card.read_bytes())
                rows.append(
                    {
                        "item_id": outcome.item_id,
                        "image_path": image_path,
                        "collection": collection,
                        "accession_date": info.get("accession_date") or today,
                        "image_sha256": outcome.info["image_sha256"],
                        "updated_at": now,
                        "source": outcome.info["source"],
                        "source_size": outcome.info["source_size"],
                        "source_mtime_ns": outcome.info["source_mtime_ns"],
                        "page": outcome.page,
                        "phash": outcome.info["phash"],
                        "dup_group": "",
                        "title": info.get("title", ""),
                        "metadata": _extra_metadata(info),
                        "rights": info.get("rights", ""),
                    }
                )
            outcomes.append(outcome)
    outcomes.sort(key=lambda o: (o.file, o.page))
    return _finish(settings, collection, rows, unchanged, outcomes, register, directory, catalogue)


def _finish(
    settings, collection, rows, unchanged, outcomes, register, source, catalogue=None
) -> IntakeResult:
    """Upsert the new rows, group near-duplicates, register tasks, write the report."""
    import pandas as pd

    from flywheel.labelling.duplicates import assign_groups

    report = write_report(settings, collection, outcomes)
    if not rows and not unchanged:
        lines = [f"  {o.file}: {o.reason}" for o in outcomes if o.status == "rejected"]
        raise InputError(
            f"nothing could be added from {source}"
            + (":\n" + "\n".join(lines) if lines else ": it holds no images")
            + f"\n(report: {report})"
        )
    frame = pd.DataFrame(rows, columns=CATALOGUE_COLUMNS)
    if rows or catalogue is None:
        catalogue = upsert_catalogue(settings, frame) if rows else read_catalogue(settings)
    if rows:
        grouped = assign_groups(catalogue, settings.near_duplicate_bits)
        if not grouped["dup_group"].equals(catalogue["dup_group"]):
            objectstore.write_parquet(settings, grouped[CATALOGUE_COLUMNS], catalogue_uri(settings))
            catalogue = grouped
    ids = {r["item_id"] for r in rows} | {r.item_id for r in unchanged}
    mine = catalogue[catalogue.item_id.isin(ids)].reset_index(drop=True)
    if register:
        register_tasks(settings, mine)
    return IntakeResult(mine, outcomes, report)


def write_report(settings: Settings, collection: str, outcomes) -> Path:
    """The outcomes as `<home>/data/intake/<collection>.json` and `.csv`; returns the JSON."""
    import csv
    import json

    folder = settings.data_dir / "intake"
    folder.mkdir(parents=True, exist_ok=True)
    records = [
        {"file": o.file, "status": o.status, "item_id": o.item_id, "reason": o.reason}
        for o in outcomes
    ]
    path = folder / f"{collection}.json"
    path.write_text(json.dumps({"collection": collection, "files": records}))
    with open(path.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["file", "status", "item_id", "reason"])
        writer.writeheader()
        writer.writerows(records)
    return path


def _known_sources(catalogue) -> dict[str, list]:
    """Catalogue rows by their master's path (for the incremental re-run)."""
    out: dict[str, list] = {}
    if catalogue is None:
        return out
    for row in catalogue.itertuples(index=False):
        out.setdefault(row.source, []).append(row)
    return out


def _extra_metadata(info: dict) -> str:
    """Metadata CSV columns beyond the known ones, as JSON (`group` among them)."""
    import json

    extra = {
        k: v
        for k, v in info.items()
        if k not in ("file", "item_id", "accession_date", "title", "rights") and v != ""
    }
    return json.dumps(extra, sort_keys=True) if extra else ""


def _taken(settings: Settings, owner: str | None, source: str) -> bool:
    """Whether an item id already belongs to another master that still exists."""
    if owner is None or owner == source:
        return False
    if owner.startswith(("http://", "https://")):
        return True
    path = Path(owner)
    return path.exists() and not path.resolve().is_relative_to(
        (settings.data_dir / "items").resolve()
    )


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
            "image": task_url(settings, r.image_path),
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


def task_url(settings: Settings, image_path: Path | str) -> str:
    """The local-files URL Label Studio serves `image_path` under (relative to its
    document root, `settings.items_dir`: Label Studio may serve nothing else); an s3:// URI
    stays as it is (Label Studio resolves it through its S3 storage)."""
    from urllib.parse import quote

    if objectstore.is_remote(image_path):
        return str(image_path)
    rel = Path(image_path).resolve().relative_to(settings.items_dir.resolve()).as_posix()
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
