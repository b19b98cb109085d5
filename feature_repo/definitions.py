"""flywheel's feature definitions: what an item is and which features describe it.

`flywheel features apply` registers these objects (so does `feast apply`, run in this
directory with the environment `flywheel features env` prints). The offline rows are
written by `flywheel features build`: one row per item and image content, stamped with
the time that content was first seen, so a training set joins each label with the
features as they were when the label was made.
"""

import os
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float32, String


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run `eval $(flywheel features env)` first")
    return value


# An item of the collection (one image), joined on its stable catalogue id.
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING)

# The feature history: parquet on local disk (dev box) or S3/MinIO (cluster).
item_source = FileSource(
    name="item_source",
    path=_env("FLYWHEEL_FEAST_OFFLINE_URI"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    s3_endpoint_override=os.environ.get("FLYWHEEL_FEAST_S3_ENDPOINT") or None,
)

# The image representation as ONE array feature (10-20x faster online than one feature
# per pixel) plus catalogue metadata. ttl=0: a row stays valid until a newer one replaces it.
item_features = FeatureView(
    name="item_features",
    entities=[item],
    ttl=timedelta(0),
    schema=[
        Field(name="pixels", dtype=Array(Float32)),
        Field(name="collection", dtype=String),
        Field(name="accession_date", dtype=String),
        Field(name="image_sha256", dtype=String),
    ],
    online=True,
    source=item_source,
)

# What the classifier consumes; each registered model version names this service.
item_classifier = FeatureService(
    name=os.environ.get("FLYWHEEL_FEATURE_SERVICE") or "item_classifier",
    features=[item_features[["pixels"]]],
)


# --- embeddings: one view for the vectors of every backbone ---------------------------------
# A row is keyed by `item_rep` = "<representation id>/<item id>" (flywheel.features.embedding:
# the backbone, its input side and its weights digest), so vectors of two backbones are
# never mixed: a new backbone adds rows under its own id and a model trained on the old
# one keeps reading its own. `representation`, `backbone` and `weights_digest` travel with
# every vector.
item_representation = Entity(
    name="item_representation", join_keys=["item_rep"], value_type=ValueType.STRING
)

embedding_source = FileSource(
    name="embedding_source",
    path=os.environ.get("FLYWHEEL_FEAST_EMBEDDINGS_URI")
    or _env("FLYWHEEL_FEAST_OFFLINE_URI").rsplit("/", 1)[0] + "/embeddings.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    s3_endpoint_override=os.environ.get("FLYWHEEL_FEAST_S3_ENDPOINT") or None,
)

item_embeddings = FeatureView(
    name="item_embeddings",
    entities=[item_representation],
    ttl=timedelta(0),
    schema=[
        Field(name="embedding", dtype=Array(Float32)),
        Field(name="representation", dtype=String),
        Field(name="backbone", dtype=String),
        Field(name="weights_digest", dtype=String),
        Field(name="image_sha256", dtype=String),
    ],
    online=True,
    source=embedding_source,
)

# What a head trained on embeddings consumes (its representation id picks the rows).
item_embedding = FeatureService(name="item_embedding", features=[item_embeddings[["embedding"]]])
