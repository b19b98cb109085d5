"""Feature rows from item images, into the offline store, registered and materialized.

`build_features` is one idempotent step of the loop:

1. read the catalogue (one row per item image, with `image_sha256` and `updated_at`);
2. for each item whose image content is new (no row yet, or a different hash than its
   latest row), compute the representation and append one offline row stamped with the
   catalogue's `updated_at` as event time: older rows stay, so a point-in-time join
   still finds the features as they were when an earlier label was made;
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
from flywheel.features.representation import representation
from flywheel.features.store import definitions, feature_store, offline_uri
from flywheel.labelling.collection import read_catalogue
from flywheel.settings import Settings

VIEW = "item_features"


@dataclass
class BuildResult:
    items: int  # items in the catalogue
    new_rows: int  # offline rows appended by this run
    total_rows: int  # offline rows after this run
    seconds: float


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


def new_feature_rows(
    settings: Settings,
    catalogue,
    latest: dict[str, str],
    on_progress: Callable[[int, int], None] | None = None,
):
    """Offline rows (a pyarrow table) for catalogue items whose image hash is new."""
    import pyarrow as pa

    todo = catalogue[catalogue["image_sha256"] != catalogue["item_id"].map(latest)]
    created = datetime.now(UTC)
    vectors = []
    for done, path in enumerate(todo["image_path"], start=1):
        image = objectstore.read_bytes(settings, path) if objectstore.is_remote(path) else path
        vectors.append(representation(image, settings))
        if on_progress:
            on_progress(done, len(todo))
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
    apply(settings)
    if new_rows:
        materialize(settings, start=earliest)
    return BuildResult(len(catalogue), new_rows, total, time.monotonic() - began)
