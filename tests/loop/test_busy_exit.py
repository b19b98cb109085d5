"""`flywheel loop run --no-wait` while a turn runs: a distinct exit code (75), not success."""

import subprocess
import sys

from flywheel.loop.lock import BUSY_EXIT, loop_lock
from tests.conftest import ROOT, settings_env


def test_no_wait_exits_75_when_a_turn_is_running(settings):
    with loop_lock(settings):  # this test plays the running turn
        out = subprocess.run(
            [sys.executable, "-m", "flywheel.cli", "loop", "run", "--no-wait", "--engine=direct"],
            env=settings_env(settings),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert out.returncode == BUSY_EXIT == 75, out.stderr
    assert "already running" in out.stdout
