"""evaluate: score the challenger and the champion on the same fixed holdout (never cached)."""

from typing import NamedTuple

from kfp.dsl import Metrics, Output

from components.base import component


@component
def evaluate(model_version: str, metrics: Output[Metrics]) -> NamedTuple(
    "Evaluation", [("challenger_accuracy", float), ("champion_accuracy", float)]
):
    from flywheel.loop import steps

    result = steps.evaluate(model_version)
    for key, value in result.items():
        if isinstance(value, (int, float)):
            metrics.log_metric(key, value)
    return (result["challenger_accuracy"], result["champion_accuracy"])
