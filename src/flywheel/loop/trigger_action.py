"""What the trigger service does when enough new labels have arrived: run one turn.

The default `FLYWHEEL_TRIGGER_ACTION` (`flywheel.loop.trigger_action:run_turn_now`). The
turn runs as `flywheel loop run --no-wait` in a child process (the trigger stays light and
keeps answering webhooks), its output appended to `<home>/logs/loop.log`. When a turn is
already running (the demo, or an earlier trigger), the child starts nothing: those labels
are exported by the next turn.
"""

from __future__ import annotations

import subprocess
import sys

from flywheel.errors import FlywheelError
from flywheel.settings import Settings


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
