"""register: promote the challenger to `champion` only if it wins (never cached).

One boolean output, the condition of the deploy branch."""

from components.base import component


@component
def register(model_version: str) -> bool:
    from flywheel.loop import steps

    return steps.register(model_version)["promoted"]
