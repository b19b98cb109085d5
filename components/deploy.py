"""deploy: make the serving side answer with the new champion (only after a promotion)."""

from components.base import component


@component
def deploy() -> str:
    from flywheel.loop import steps

    return steps.deploy()["served_version"]
