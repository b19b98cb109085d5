"""select_for_labelling: the champion scores the unlabelled pool; the least certain items
become Label Studio tasks first in the queue, with the model's guess attached."""

from components.base import component


@component
def select_for_labelling(k: int, strategy: str) -> int:
    from flywheel.loop import steps

    return steps.select_for_labelling(None, k, strategy)["n_selected"]
