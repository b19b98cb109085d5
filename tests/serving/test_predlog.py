"""The prediction log under faults: a full disk (a file-size limit on a real child process)
is counted and recorded, never raised; readers skip the torn line; files rotate by size and
by age."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from flywheel.serving.predlog import PredictionLog, Record, log_dir, read_predictions, write_errors
from tests.conftest import ROOT, settings_env

WRITER = """
import resource, sys
from flywheel.settings import load
from flywheel.serving.predlog import PredictionLog, Record
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # `ulimit -f`: the disk is full
plog = PredictionLog.for_settings(load())
ok = [plog.write([Record(f"item-{n}", "3", [0.25, 0.75], 1.5)]) for n in range(200)]
print(sum(ok), plog.errors, plog.lost)
"""


def test_full_disk_is_counted_never_raised_and_lines_stay_whole(settings):
    out = subprocess.run(
        [sys.executable, "-c", WRITER, "4000"],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    written, errors, lost = map(int, out.stdout.split())
    assert written > 10 and errors > 0 and written + lost == 200
    assert "cannot write the prediction log" in out.stderr  # logged, not silent
    [state] = write_errors(settings)  # what `flywheel status` shows
    assert state["write_errors"] == errors and state["records_lost"] == lost
    assert "File too large" in state["last_error"] or "short write" in state["last_error"]
    frame = read_predictions(settings)
    assert len(frame) == written  # every whole record, none of the torn one
    assert frame.attrs["skipped_lines"] <= 1
    assert list(frame["item_id"]) == [f"item-{n}" for n in range(written)]


def test_status_cli_shows_write_errors(settings):
    plog = PredictionLog.for_settings(settings)
    plog.folder = settings.home / "no-such-dir" / "file-not-dir"
    (settings.home / "no-such-dir").mkdir(parents=True)
    (settings.home / "no-such-dir" / "file-not-dir").write_text("a file where a folder goes")
    assert plog.write([Record("a", "1", [1.0], 1.0)]) is False
    out = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "status", "trigger"],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "prediction log" in out.stdout and "1 failed writes, 1 records lost" in out.stdout


def test_rotation_by_size_and_age(settings):
    folder = log_dir(settings)
    folder.mkdir(parents=True)
    old = datetime.now(UTC) - timedelta(days=10)
    (folder / f"predictions-{old:%Y-%m-%d}.jsonl").write_text(
        json.dumps({"ts": old.isoformat(), "item_id": "old"}) + "\n"
    )
    (folder / f"predictions-{old:%Y-%m-%d}.1.jsonl").write_text("")
    plog = PredictionLog(folder, max_bytes=4096, keep_days=3)
    for n in range(100):
        assert plog.write([Record(f"item-{n}", "1", [0.5, 0.5], 1.0)])
    files = sorted(p.name for p in folder.glob("*.jsonl"))
    assert all(f"{old:%Y-%m-%d}" not in f for f in files)  # older than 3 days: gone
    assert len(files) > 2 and all(p.stat().st_size <= 4096 for p in folder.glob("*.jsonl"))
    frame = read_predictions(settings)
    assert sorted(frame["item_id"]) == sorted(f"item-{n}" for n in range(100))
    # a new writer (a restart) continues in the newest part, not the first
    again = PredictionLog(folder, max_bytes=4096, keep_days=3)
    again.write([Record("after-restart", "1", [0.5, 0.5], 1.0)])
    assert len(set(folder.glob("*.jsonl"))) in (len(files), len(files) + 1)
    assert len(read_predictions(settings)) == 101
