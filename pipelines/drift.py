"""`flywheel-drift`: one drift check as its own small pipeline (scheduled on the cluster with
`flywheel loop submit --pipeline drift --schedule "$FLYWHEEL_DRIFT_SCHEDULE"`).

    monitor_drift (never cached: the prediction log and the champion change)
"""

from pathlib import Path
from typing import NamedTuple

from kfp import dsl

from components.monitor_drift import monitor_drift
from pipelines.flywheel import _configure


class DriftOutputs(NamedTuple):
    drift_found: bool
    tagged: int


def build_drift(cluster: bool = False):
    @dsl.pipeline(name="flywheel-drift", description="Drift of served inputs vs training set.")
    def flywheel_drift(hours: float = 0.0) -> DriftOutputs:
        task = _configure(monitor_drift(hours=hours), cluster).set_caching_options(False)
        task.set_display_name("monitor-drift")
        return DriftOutputs(drift_found=task.outputs["drift_found"], tagged=task.outputs["tagged"])

    return flywheel_drift


def compile_drift(out_dir: Path) -> Path:
    """IR YAML of the drift pipeline for the cluster (`flywheel loop submit --pipeline drift`)."""
    from kfp import compiler

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "flywheel-drift.yaml"
    compiler.Compiler().compile(build_drift(cluster=True), package_path=str(path))
    return path
