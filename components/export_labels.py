"""export_labels: Label Studio annotations -> a versioned label snapshot (never cached)."""

from typing import NamedTuple

from kfp.dsl import Dataset, Output

from components.base import component


@component
def export_labels(snapshot: Output[Dataset]) -> NamedTuple(
    "Snapshot", [("snapshot_id", str), ("n_labels", int)]
):
    from flywheel.loop import steps

    result = steps.export_labels(snapshot.path)
    snapshot.metadata.update(result)
    return (result["snapshot_id"], result["n_labels"])
