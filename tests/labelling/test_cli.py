"""`flywheel collection ...` / `flywheel labels ...` as a person runs them (subprocess)."""

import subprocess
import sys

import numpy as np

from tests.conftest import settings_env

FLYWHEEL = [sys.executable, "-m", "flywheel.cli"]


def run(settings, *args, **env):
    return subprocess.run(
        [*FLYWHEEL, *args],
        env={**settings_env(settings), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bad_folder_is_one_clear_line(settings, tmp_path):
    out = run(settings, "collection", "add", str(tmp_path / "nowhere"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere'} is not a folder of images"
    ]


def test_select_prints_the_most_uncertain(settings, tmp_path):
    path = tmp_path / "pool.npz"
    np.savez(
        path,
        item_ids=np.array(["x", "y", "z"]),
        probabilities=np.array([[0.9, 0.1], [0.5, 0.5], [0.6, 0.4]]),
    )
    out = run(
        settings,
        "labels",
        "select",
        "--probabilities",
        str(path),
        "-k",
        "2",
        "--strategy",
        "margin",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["y", "z"]
    out = run(settings, "labels", "select", "--probabilities", str(path), "--strategy", "bald")
    assert out.returncode == 2 and "unknown acquisition strategy 'bald'" in out.stderr
