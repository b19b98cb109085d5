"""Feature rows from item images, into the offline store, registered and materialized.

`build_features` is one idempotent step of the loop:

1. read the catalogue (one row per item image, with `image_sha256` and `updated_at`);
2. for each item whose image content is new (no row yet, or a different hash than its
   latest row), compute the representation and append one offline row stamped with the
   catalogue's `updated_at` as event time: older rows stay, so a point-in-time join
   still finds the features as they were when an earlier label was made. The images
   are sharded over a process pool (`settings.intake_workers`) when there are many; an
   image that fails is quarantined (`labelling/quarantine.py`) and the build goes on;
3. `apply` the feature repo's definitions and `materialize` the new rows into the
   online store.

Re-running on the same images appends nothing and materializes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from flywheel import objectstore
from flywheel.errors import InputError
from flywheel.features.representation import pixels, representation
from flywheel.features.store import definitions, feature_store, offline_uri
from flywheel.labelling.collection import read_catalogue
from flywheel.settings import Settings

VIEW = "item_features"
SHARD_MIN = 512  # fewer images than this are not worth starting a process pool


@dataclass
class BuildResult:
    items: int  # items in the catalogue
    new_rows: int  # offline rows appended by this run
    total_rows: int  # offline rows after this run
    seconds: float
    embedding_rows: int = 0  # embedding rows appended (FLYWHEEL_REPRESENTATION=embedding)
    representation_id: str = ""  # the backbone's representation id, when embedding


# --- the offline parquet (local path or s3://) ---------------------------------------------


def _filesystem(settings: Settings, uri: str):
    return objectstore.filesystem(settings, uri)


def read_offline(settings: Settings, columns: list[str] | None = None):
    """The offline feature rows (a pandas frame; empty when none were written yet)."""
    import pandas as pd
    import pyarrow.parquet as pq
    from pyarrow import fs

    filesystem, path = _filesystem(settings, offline_uri(settings))
    if filesystem.get_file_info(path).type == fs.FileType.NotFound:
        return pd.DataFrame(columns=columns or [])
    return pq.read_table(path, columns=columns, filesystem=filesystem).to_pandas()


def _write_offline(settings: Settings, table) -> None:
    import pyarrow.parquet as pq

    filesystem, path = _filesystem(settings, offline_uri(settings))
    parent = path.rsplit("/", 1)[0]
    filesystem.create_dir(parent, recursive=True)
    tmp = f"{path}.tmp"
    pq.write_table(table, tmp, filesystem=filesystem)
    filesystem.move(tmp, path)  # readers never see half a file


def _schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("item_id", pa.string()),
            ("event_timestamp", pa.timestamp("us", tz="UTC")),
            ("created", pa.timestamp("us", tz="UTC")),
            ("pixels", pa.list_(pa.float32())),
            ("collection", pa.string()),
            ("accession_date", pa.string()),
            ("image_sha256", pa.string()),
        ]
    )


def _one_vector(job: tuple[str, Settings]):
    """(vector, "") or (None, reason) for one image: a failure is a value, not a raise."""
    import numpy as np

    path, settings = job
    # with embeddings, the `pixels` rows keep the pixels; vectors go to item_embeddings
    represent = pixels if settings.representation == "embedding" else representation
    try:
        image = objectstore.read_bytes(settings, path) if objectstore.is_remote(path) else path
        vector = represent(image, settings)
    except Exception as exc:  # noqa: BLE001 - any failure of one item quarantines that item
        return None, f"{type(exc).__name__}: {exc}"
    if not np.isfinite(vector).all():
        return None, "the representation has non-finite values"
    return vector, ""


def _vectors(settings: Settings, paths: list[str], on_progress=None) -> list:
    """`_one_vector` for each path: in a process pool (spawned) for large batches."""
    from flywheel.labelling.intake import workers

    jobs = [(p, settings) for p in paths]
    n = workers(settings)
    out = []
    if n <= 1 or len(jobs) < SHARD_MIN:
        for job in jobs:
            out.append(_one_vector(job))
            if on_progress:
                on_progress(len(out), len(jobs))
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(n, mp_context=context) as pool:
        for result in pool.map(_one_vector, jobs, chunksize=max(1, len(jobs) // (n * 8))):
            out.append(result)
            if on_progress:
                on_progress(len(out), len(jobs))
    return out


def new_feature_rows(
    settings: Settings,
    catalogue,
    latest: dict[str, str],
    on_progress: Callable[[int, int], None] | None = None,
):
    """Offline rows (a pyarrow table) for catalogue items whose image hash is new.

    An item whose image fails (or gives a vector unlike the others) is quarantined with
    its reason and left out; it is tried again only when its image changes.
    """
    import numpy as np
    import pyarrow as pa

    from flywheel.labelling import quarantine

    held = quarantine.read(settings)
    todo = catalogue[catalogue["image_sha256"] != catalogue["item_id"].map(latest)]
    retry = [
        held.get(i, {}).get("image_sha256") != h or held[i].get("stage") != "features"
        for i, h in zip(todo["item_id"], todo["image_sha256"], strict=True)
    ]
    todo = todo[np.array(retry, dtype=bool)]  # a plain empty list would select no columns
    created = datetime.now(UTC)
    results = _vectors(settings, todo["image_path"].astype(str).tolist(), on_progress)
    sizes = [len(v) for v, _ in results if v is not None]
    usual = max(set(sizes), key=sizes.count) if sizes else 0
    keep, poisoned = [], []
    for (vector, reason), row in zip(results, todo.itertuples(index=False), strict=True):
        if vector is not None and len(vector) != usual:
            vector, reason = None, f"a vector of {len(vector)} values, not {usual}"
        if vector is None:
            poisoned.append((row.item_id, "features", reason, row.image_sha256))
        keep.append(vector is not None)
    quarantine.add_many(settings, poisoned)
    quarantine.release(settings, [i for i, ok in zip(todo["item_id"], keep, strict=True) if ok])
    todo = todo[np.array(keep, dtype=bool)]
    vectors = [v for v, _ in results if v is not None and len(v) == usual]
    columns = {
        "item_id": todo["item_id"].astype(str).tolist(),
        "event_timestamp": todo["updated_at"].tolist(),
        "created": [created] * len(todo),
        "pixels": vectors,
        "collection": todo["collection"].astype(str).tolist(),
        "accession_date": todo["accession_date"].astype(str).tolist(),
        "image_sha256": todo["image_sha256"].astype(str).tolist(),
    }
    return pa.table(columns, schema=_schema())


def append_rows(settings: Settings, catalogue, on_progress=None) -> tuple[int, int, object]:
    """Append rows for new image contents; returns (new rows, total rows, earliest new event)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import fs

    catalogue = catalogue.sort_values("updated_at").drop_duplicates("item_id", keep="last")
    filesystem, path = _filesystem(settings, offline_uri(settings))
    exists = filesystem.get_file_info(path).type != fs.FileType.NotFound
    old = pq.read_table(path, filesystem=filesystem) if exists else _schema().empty_table()
    keys = old.select(["item_id", "event_timestamp", "image_sha256"]).to_pandas()
    latest = keys.sort_values("event_timestamp").groupby("item_id")["image_sha256"].last()
    new = new_feature_rows(settings, catalogue, latest.to_dict(), on_progress)
    if new.num_rows:
        _write_offline(settings, pa.concat_tables([old.cast(_schema()), new]))
        earliest = min(new.column("event_timestamp").to_pylist())
        return new.num_rows, old.num_rows + new.num_rows, earliest
    return 0, old.num_rows, None


# --- Feast ------------------------------------------------------------------------------------


def apply(settings: Settings) -> list[str]:
    """Register the feature repo's definitions; returns the names applied."""
    objects = definitions(settings)
    feature_store(settings).apply(objects)
    return [obj.name for obj in objects]


def materialize(settings: Settings, start: datetime | None = None) -> None:
    """Load offline rows into the online store, from `start` (default: incrementally)."""
    store = feature_store(settings)
    end = datetime.now(UTC)
    try:
        view = store.get_feature_view(VIEW)
    except Exception as exc:  # FeatureViewNotFoundException
        raise InputError(
            f"{VIEW} is not registered: run `flywheel features apply` ({exc})"
        ) from None
    if start is None and view.most_recent_end_time is None:
        # ttl=0 would make Feast start a year back: start at the earliest row instead
        events = read_offline(settings, ["event_timestamp"])["event_timestamp"]
        if events.empty:
            raise InputError("no feature rows yet: run `flywheel features build` first")
        start = events.min().to_pydatetime()
    if start is None:
        store.materialize_incremental(end_date=end, feature_views=[VIEW])
    else:
        store.materialize(start_date=start, end_date=end, feature_views=[VIEW])


def build_features(settings: Settings, on_progress=None) -> BuildResult:
    """Catalogue -> new offline rows -> apply -> materialize the new rows. Idempotent."""
    began = time.monotonic()
    catalogue = read_catalogue(settings)
    new_rows, total, earliest = append_rows(settings, catalogue, on_progress)
    embedded, rep, since = 0, "", None
    if settings.representation == "embedding":
        from flywheel.features import vectors

        vectors.ensure_source(settings)
        embedded, rep, since = vectors.append_embedding_rows(settings, catalogue, on_progress)
    apply(settings)
    if new_rows:
        materialize(settings, start=earliest)
    if embedded:
        vectors.materialize_embeddings(settings, since)
    seconds = time.monotonic() - began
    return BuildResult(len(catalogue), new_rows, total, seconds, embedded, rep)
