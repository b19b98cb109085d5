"""Reading features back: training sets (offline, point in time) and online lookups.

- `training_set(snapshot_frame, settings)`: each label row gets the features of its item
  as they were at `annotated_at` (Feast's point-in-time join over the offline history),
  in the snapshot's own row order (Feast does not keep it: a row number restores it).
- `online_features(item_ids, settings)`: the `pixels` matrix for serving, in the order
  asked; `online_lookup` selects any features by name. Unknown ids raise
  `UnknownItemsError` naming them (Feast itself answers None, which must not become zeros).

Stores are built once per configuration and kept: building one reads the registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from flywheel.errors import InputError
from flywheel.features.store import feast_env, feature_store, yaml_path
from flywheel.settings import Settings

VIEW = "item_features"
ROW = "_flywheel_row"


class UnknownItemsError(InputError):
    """Item ids the feature store has no features for."""

    def __init__(self, item_ids: Sequence[str], detail: str = "") -> None:
        self.item_ids = list(item_ids)
        shown = ", ".join(self.item_ids[:10]) + (" ..." if len(self.item_ids) > 10 else "")
        super().__init__(
            f"no features for {len(self.item_ids)} item(s): {shown}{detail}; "
            f"run `flywheel features build` after adding them to the catalogue"
        )


_STORES: dict[tuple, object] = {}


def store_for(settings: Settings):
    """A FeatureStore shared by every call with the same configuration."""
    key = (str(yaml_path(settings)), tuple(sorted(feast_env(settings).items())))
    if key not in _STORES:
        _STORES[key] = feature_store(settings)
    return _STORES[key]


_FEATURES: dict[int, set[str]] = {}


def forget_stores() -> None:
    """Drop the kept stores (and their connections), e.g. before dropping a database."""
    _STORES.clear()
    _FEATURES.clear()


def _view_features(store) -> set[str]:
    # reading a view from the registry costs milliseconds: keep its feature names
    if id(store) not in _FEATURES:
        _FEATURES[id(store)] = {f.name for f in _feature_view(store).features}
    return _FEATURES[id(store)]


def _feature_view(store):
    from feast.errors import FeatureViewNotFoundException

    try:
        return store.get_feature_view(VIEW)
    except FeatureViewNotFoundException:
        store.refresh_registry()  # applied since this store cached the registry?
    try:
        return store.get_feature_view(VIEW)
    except FeatureViewNotFoundException:
        raise InputError(
            f"feature view {VIEW} is not registered: run `flywheel features build`"
        ) from None


def feature_names(settings: Settings) -> list[str]:
    """The features the model's feature service serves (for the demo: ["pixels"])."""
    service = store_for(settings).get_feature_service(settings.feature_service)
    return [f.name for proj in service.feature_view_projections for f in proj.features]


def training_set(snapshot_frame, settings: Settings):
    """The snapshot's rows and columns plus the feature service's features (point in time).

    `pixels` holds one float32 vector per row. Rows whose item had no features at
    `annotated_at` raise UnknownItemsError. With FLYWHEEL_REPRESENTATION=embedding the
    rows get `embedding` (the configured backbone's vectors) and `representation` instead.
    """
    import pandas as pd

    if settings.representation == "embedding":
        from flywheel.features.embedding import backbone_for
        from flywheel.features.vectors import embedding_training_set

        rep = backbone_for(settings).representation_id
        return embedding_training_set(snapshot_frame, settings, rep)

    missing = [c for c in ("item_id", "annotated_at") if c not in snapshot_frame.columns]
    if missing:
        raise InputError(f"label snapshot lacks column(s) {', '.join(missing)}")
    frame = snapshot_frame.reset_index(drop=True)
    entity_df = pd.DataFrame(
        {
            "item_id": frame["item_id"].astype(str),
            "event_timestamp": pd.to_datetime(frame["annotated_at"], utc=True),
            ROW: np.arange(len(frame)),
        }
    )
    store = store_for(settings)
    service = store.get_feature_service(settings.feature_service)
    names = feature_names(settings)
    joined = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    joined = joined.sort_values(ROW).set_index(ROW).reindex(range(len(frame)))
    absent = joined[names[0]].isna() if len(frame) else pd.Series([], dtype=bool)
    if absent.any():
        raise UnknownItemsError(
            sorted(set(frame.loc[absent.to_numpy(), "item_id"].astype(str))),
            " as of their annotated_at",
        )
    out = frame.copy()
    for name in names:
        values = joined[name].tolist()
        if name == "pixels":
            values = [np.asarray(v, dtype=np.float32) for v in values]
        out[name] = values
    return out


def online_lookup(
    item_ids: Iterable[str], settings: Settings, features: Sequence[str] = ("pixels",)
) -> dict[str, list]:
    """Online values of the named features for each id, in order; unknown ids raise."""
    ids = [str(i) for i in item_ids]
    store = store_for(settings)
    wrong = [f for f in features if f not in _view_features(store)]
    if wrong:  # the registry may have changed since: look again
        _FEATURES.pop(id(store), None)
        wrong = [f for f in features if f not in _view_features(store)]
    if wrong or not features:
        raise InputError(
            f"unknown feature(s) {', '.join(wrong) or '(none asked)'}; "
            f"{VIEW} has {', '.join(sorted(_view_features(store)))}"
        )
    if not ids:
        return {"item_id": [], **{f: [] for f in features}}
    result = store.get_online_features(
        features=[f"{VIEW}:{f}" for f in features],
        entity_rows=[{"item_id": i} for i in ids],
    ).to_dict()
    unknown = [i for i, v in zip(ids, result[features[0]], strict=True) if v is None]
    if unknown:
        raise UnknownItemsError(unknown)
    return {"item_id": ids, **{f: result[f] for f in features}}


def online_features(item_ids: Iterable[str], settings: Settings) -> np.ndarray:
    """The `pixels` matrix [n, d] (float32) for serving; unknown ids raise UnknownItemsError."""
    rows = online_lookup(item_ids, settings, ["pixels"])["pixels"]
    if not rows:
        return np.zeros((0, settings.image_size**2), dtype=np.float32)
    return np.asarray(rows, dtype=np.float32)
