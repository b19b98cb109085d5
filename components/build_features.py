"""build_features: item images -> Feast (apply + materialize) -> the training set.

Keyed on the snapshot id, so the same labels give a cached training set."""

from kfp.dsl import Dataset, Output

from components.base import component


@component
def build_features(snapshot_id: str, training_set: Output[Dataset]) -> int:
    from flywheel.loop import steps

    result = steps.build_features(snapshot_id, training_set.path)
    training_set.metadata.update(result)
    return result["n_rows"]
