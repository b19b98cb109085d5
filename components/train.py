"""train: the training set -> a registered model version (alias `challenger`).

Locally it trains in the step's process (or under torchrun); on the cluster the step
launches a Kubeflow Trainer TrainJob running the same entry point and waits for it."""

from typing import NamedTuple

from kfp.dsl import Dataset, Input, Model, Output

from components.base import component


@component
def train(
    training_set: Input[Dataset],
    model: Output[Model],
    snapshot_id: str,
    params_json: str = "{}",
) -> NamedTuple("Trained", [("model_version", str), ("run_id", str), ("val_accuracy", float)]):
    import json

    from flywheel.loop import steps

    result = steps.train(
        training_set.path, snapshot_id, json.loads(params_json), training_set_uri=training_set.uri
    )
    # The model lives in the MLflow registry; the artifact records where (a file, so that
    # the step can be served from cache).
    with open(model.path, "w") as fh:
        json.dump(result, fh)
    model.metadata.update(result)
    return (result["model_version"], result["run_id"], result["val_accuracy"])


@component
def pick_best(versions: list, scores: list) -> str:
    """The sweep's winner: the version with the best validation score."""
    best = max(range(len(scores)), key=lambda i: (float(scores[i]), -i))
    return str(versions[best])
