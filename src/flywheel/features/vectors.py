"""Embedding rows in Feast: build, join for training, look up for serving.

The vectors of a backbone live in the feature view `item_embeddings`, keyed by
`item_rep = "<representation id>/<item id>"` (see feature_repo/definitions.py and
flywheel.features.embedding). So:

- `append_embedding_rows` embeds, with the configured backbone, each catalogue item whose
  image content has no row under that backbone's representation id yet (batched, through
  `embed_images`), stamped like the pixel rows with the catalogue's `updated_at`; rows of
  other backbones stay as they are. `flywheel features build` calls it when
  FLYWHEEL_REPRESENTATION=embedding, then materializes the new rows.
- `embedding_training_set(snapshot, settings, rep)`: the point-in-time join of the label
  snapshot with the vectors of ONE representation (column `embedding`, with
  `representation`, `backbone` and `weights_digest` columns that training records).
- `online_embeddings(item_ids, settings, rep)`: the serving matrix of one representation;
  unknown ids raise UnknownItemsError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import numpy as np

from flywheel.errors import InputError
from flywheel.settings import Settings

VIEW = "item_embeddings"
SERVICE = "item_embedding"
ROW = "_flywheel_row"


def item_rep(rep: str, item_id: str) -> str:
    return f"{rep}/{item_id}"


def _schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("item_rep", pa.string()),
            ("event_timestamp", pa.timestamp("us", tz="UTC")),
            ("created", pa.timestamp("us", tz="UTC")),
            ("embedding", pa.list_(pa.float32())),
            ("representation", pa.string()),
            ("backbone", pa.string()),
            ("weights_digest", pa.string()),
            ("image_sha256", pa.string()),
        ]
    )


def _read(settings: Settings):
    import pyarrow.parquet as pq
    from pyarrow import fs

    from flywheel.features.build import _filesystem
    from flywheel.features.store import embeddings_uri

    filesystem, path = _filesystem(settings, embeddings_uri(settings))
    if filesystem.get_file_info(path).type == fs.FileType.NotFound:
        return _schema().empty_table()
    return pq.read_table(path, filesystem=filesystem).cast(_schema())


def _write(settings: Settings, table) -> None:
    import pyarrow.parquet as pq

    from flywheel.features.build import _filesystem
    from flywheel.features.store import embeddings_uri

    filesystem, path = _filesystem(settings, embeddings_uri(settings))
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, f"{path}.tmp", filesystem=filesystem)
    filesystem.move(f"{path}.tmp", path)  # readers never see half a file


def ensure_source(settings: Settings) -> None:
    """An empty embeddings file, so the view's source exists before the first embedding."""
    from pyarrow import fs

    from flywheel.features.build import _filesystem
    from flywheel.features.store import embeddings_uri

    filesystem, path = _filesystem(settings, embeddings_uri(settings))
    if filesystem.get_file_info(path).type == fs.FileType.NotFound:
        _write(settings, _schema().empty_table())


def append_embedding_rows(
    settings: Settings, catalogue, on_progress: Callable[[int, int], None] | None = None
) -> tuple[int, str, object]:
    """Embed items without a row for this backbone and image content; returns (new rows,
    representation id, earliest new event time or None)."""
    import pyarrow as pa

    from flywheel.features.embedding import backbone_for, embed_images

    backbone = backbone_for(settings)
    rep = backbone.representation_id
    catalogue = catalogue.sort_values("updated_at").drop_duplicates("item_id", keep="last")
    old = _read(settings)
    keys = old.select(["item_rep", "event_timestamp", "image_sha256"]).to_pandas()
    latest = keys.sort_values("event_timestamp").groupby("item_rep")["image_sha256"].last()
    reps = catalogue["item_id"].astype(str).map(lambda i: item_rep(rep, i))
    todo = catalogue[catalogue["image_sha256"].to_numpy() != reps.map(latest).to_numpy()]
    if todo.empty:
        return 0, rep, None
    vectors = embed_images(list(todo["image_path"]), settings, on_progress, backbone)
    n = len(todo)
    new = pa.table(
        {
            "item_rep": [item_rep(rep, str(i)) for i in todo["item_id"]],
            "event_timestamp": todo["updated_at"].tolist(),
            "created": [datetime.now(UTC)] * n,
            "embedding": list(vectors),
            "representation": [rep] * n,
            "backbone": [backbone.spec.name] * n,
            "weights_digest": [backbone.digest] * n,
            "image_sha256": todo["image_sha256"].astype(str).tolist(),
        },
        schema=_schema(),
    )
    _write(settings, pa.concat_tables([old, new]))
    return n, rep, min(todo["updated_at"]).to_pydatetime()


def materialize_embeddings(settings: Settings, start: datetime) -> None:
    from flywheel.features.store import feature_store

    store = feature_store(settings)
    store.materialize(start_date=start, end_date=datetime.now(UTC), feature_views=[VIEW])


def representations(settings: Settings) -> dict[str, dict]:
    """The representation ids with rows: {id: {backbone, weights_digest, rows}}."""
    frame = _read(settings).select(["representation", "backbone", "weights_digest"]).to_pandas()
    out = {}
    for rep, group in frame.groupby("representation"):
        first = group.iloc[0]
        out[str(rep)] = {
            "backbone": first["backbone"],
            "weights_digest": first["weights_digest"],
            "rows": len(group),
        }
    return out


def embedding_training_set(snapshot_frame, settings: Settings, rep: str):
    """The snapshot's rows plus `embedding` (float32 vectors of representation `rep`) as of
    each row's annotated_at, in the snapshot's order, and a `representation` column."""
    import pandas as pd

    from flywheel.features.retrieval import UnknownItemsError, store_for

    missing = [c for c in ("item_id", "annotated_at") if c not in snapshot_frame.columns]
    if missing:
        raise InputError(f"label snapshot lacks column(s) {', '.join(missing)}")
    frame = snapshot_frame.reset_index(drop=True)
    entity_df = pd.DataFrame(
        {
            "item_rep": [item_rep(rep, str(i)) for i in frame["item_id"]],
            "event_timestamp": pd.to_datetime(frame["annotated_at"], utc=True),
            ROW: np.arange(len(frame)),
        }
    )
    store = store_for(settings)
    refs = [f"{VIEW}:{f}" for f in ("embedding", "backbone", "weights_digest")]
    joined = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
    joined = joined.sort_values(ROW).set_index(ROW).reindex(range(len(frame)))
    absent = joined["embedding"].isna() if len(frame) else pd.Series([], dtype=bool)
    if absent.any():
        raise UnknownItemsError(
            sorted(set(frame.loc[absent.to_numpy(), "item_id"].astype(str))),
            f" under representation {rep} as of their annotated_at",
        )
    out = frame.copy()
    out["embedding"] = [np.asarray(v, dtype=np.float32) for v in joined["embedding"]]
    out["representation"] = rep
    out["backbone"] = joined["backbone"].astype(str).to_numpy()
    out["weights_digest"] = joined["weights_digest"].astype(str).to_numpy()
    return out


def online_embeddings(item_ids: Iterable[str], settings: Settings, rep: str) -> np.ndarray:
    """The vectors [n, d] of representation `rep` for the ids, in order."""
    from flywheel.features.retrieval import UnknownItemsError, store_for

    ids = [str(i) for i in item_ids]
    if not ids:
        return np.zeros((0, 0), dtype=np.float32)
    result = (
        store_for(settings)
        .get_online_features(
            features=[f"{VIEW}:embedding"],
            entity_rows=[{"item_rep": item_rep(rep, i)} for i in ids],
        )
        .to_dict()
    )
    unknown = [i for i, v in zip(ids, result["embedding"], strict=True) if v is None]
    if unknown:
        raise UnknownItemsError(unknown, f" under representation {rep}")
    return np.asarray(result["embedding"], dtype=np.float32)


def vectors_for(item_ids: Iterable[str], settings: Settings, representation: str) -> np.ndarray:
    """The online vectors a model trained on `representation` reads: `pixels` (the
    item_features view) or a backbone's representation id (item_embeddings)."""
    if representation in ("pixels", "", None):
        from flywheel.features.retrieval import online_features

        return online_features(item_ids, settings)
    return online_embeddings(item_ids, settings, representation)
