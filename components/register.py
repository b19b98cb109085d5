"""register: promote the challenger to `champion` only if it wins (never cached)."""

from typing import NamedTuple

from components.base import component


@component
def register(model_version: str) -> NamedTuple(
    "Decision", [("promoted", bool), ("champion_version", str)]
):
    from flywheel.loop import steps

    result = steps.register(model_version)
    return (result["promoted"], result["champion_version"])
