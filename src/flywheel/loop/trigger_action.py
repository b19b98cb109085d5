"""What the trigger service does when enough new labels have arrived.

Two actions (`FLYWHEEL_TRIGGER_ACTION`):

- `flywheel.loop.trigger_action:run_turn_now` (the dev box default): the turn runs as
  `flywheel loop run --no-wait` in a child process (the trigger stays light and keeps
  answering webhooks), its output appended to `<home>/logs/loop.log`. When a turn is
  already running, the child starts nothing: those labels are exported by the next turn.
- `flywheel.loop.trigger_action:submit_run` (the chart's default): submits the compiled
  turn pipeline as a Kubeflow Pipelines run, one at a time: while a run of the experiment
  is unfinished, nothing is submitted (the next turn exports the new labels). The turn
  runs in the pipeline's pods, never in the trigger's.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from flywheel.errors import FlywheelError
from flywheel.settings import Settings


class Submitter(Protocol):
    """A pipelines endpoint: its unfinished runs, and a new run of a compiled package."""

    def active_runs(self) -> list[str]: ...

    def submit(self, package: Path, run_name: str) -> str: ...


def run_turn_now(settings: Settings, annotation_ids: list[int]) -> None:
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    log = settings.log_dir / "loop.log"
    with log.open("a") as out:
        out.write(f"--- {len(annotation_ids)} new labels: starting a turn\n")
        out.flush()
        done = subprocess.run(
            [sys.executable, "-m", "flywheel.cli", "loop", "run", "--no-wait"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=settings.to_env(base=True),
        )
    from flywheel.loop.lock import BUSY_EXIT, Busy

    if done.returncode == BUSY_EXIT:  # the trigger re-arms these labels for the next turn
        raise Busy(f"a turn is already running; see {log}")
    if done.returncode != 0:
        raise FlywheelError(f"the turn failed (exit {done.returncode}); see {log}")


def submit_run(
    settings: Settings,
    annotation_ids: list[int],
    submitter: Submitter | None = None,
    compile_turn: Callable[[Path], Path] | None = None,
) -> str | None:
    """Submit one turn as a pipeline run; None (and nothing submitted) while one runs."""
    from flywheel import engines

    submitter = submitter or engines.kfp_submitter(settings)
    active = submitter.active_runs()
    if active:
        print(f"a turn is running ({', '.join(active)}): the next one takes these labels")
        return None
    package = (compile_turn or engines.compile_turn)(settings.home / "kfp" / "compiled")
    run_id = submitter.submit(package, f"flywheel-turn-{len(annotation_ids)}-labels")
    print(f"{len(annotation_ids)} new labels: submitted turn run {run_id}")
    return run_id
