"""Features: item images -> the Feast feature store -> training sets and online lookups.

    representation(image, settings)       the pluggable image -> float32 vector function
    build_features(settings)              catalogue -> offline rows -> apply -> materialize
    training_set(snapshot_frame, settings) point-in-time join, in the snapshot's row order
    online_features(item_ids, settings)   [n, d] float32 for serving (UnknownItemsError)
    online_lookup(item_ids, settings, features)   any features by name

The Feast repository (definitions and per-mode yaml) is `feature_repo/`; `store` fills
its placeholders from the settings. Feast itself is imported only when a store is built.
"""

from flywheel.features.build import BuildResult, apply, build_features, materialize
from flywheel.features.representation import pixels, representation
from flywheel.features.retrieval import (
    UnknownItemsError,
    feature_names,
    online_features,
    online_lookup,
    store_for,
    training_set,
)
from flywheel.features.store import feast_env, feature_store

__all__ = [
    "BuildResult",
    "UnknownItemsError",
    "apply",
    "build_features",
    "feast_env",
    "feature_names",
    "feature_store",
    "materialize",
    "online_features",
    "online_lookup",
    "pixels",
    "representation",
    "store_for",
    "training_set",
]
