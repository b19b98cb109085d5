"""deploy: make the serving side answer with the new champion (only after a promotion)."""

from components.base import component


@component
def deploy(champion_version: str) -> str:
    from flywheel.loop import steps

    return steps.deploy(champion_version)["served_version"]
