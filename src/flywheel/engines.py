"""How a turn is run, by name, and how the cluster gets one.

    direct   the steps in this process (flywheel.loop.turn.run_direct)
    kfp      the turn pipeline on the local Kubeflow runner (pipelines.run.run_turn_local)

and, for the cluster, the compiled turn pipeline (`compile_turn`) and the Kubeflow
Pipelines submitter (`kfp_submitter`). The KFP side lives in `pipelines/` because flywheel
never imports kfp; this module is the one place in flywheel that loads it, by module name.
The `loop` package itself only ever receives a runner or a submitter.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from flywheel.errors import InputError

PIPELINES = "pipelines.run"
ENGINES = ("kfp", "direct")


def pipelines():
    """The KFP side (compile, local runs, submit)."""
    return importlib.import_module(PIPELINES)


def runner(engine: str):
    """The turn runner for an engine name: `(settings, params, k, strategy) -> outputs`."""
    if engine == "direct":
        from flywheel.loop.turn import run_direct

        return run_direct
    if engine == "kfp":
        return pipelines().run_turn_local
    raise InputError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")


def compile_turn(out_dir: Path) -> Path:
    """The turn pipeline compiled for the cluster (IR YAML); returns its path."""
    return pipelines().compile_all(out_dir)["flywheel-turn"]


def kfp_submitter(settings):
    """Submits compiled pipelines to FLYWHEEL_KFP_HOST (see loop.trigger_action.Submitter)."""
    return pipelines().KfpSubmitter(settings)
