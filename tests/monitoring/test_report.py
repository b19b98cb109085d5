"""`flywheel report` rendered by a real headless browser (Debian's chromium): the figures
load, the numbers on the page are the ones in the step timings and the last drift check,
and unreachable services show as unavailable instead of breaking the page."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flywheel.loop.timings import timed
from tests.conftest import settings_env

CHROMIUM = Path("/usr/bin/chromium")
TURNS = [(60, "1", 0.71, "promoted"), (110, "2", 0.84, "promoted"), (160, "3", 0.83, "kept")]


def _turns(settings):
    """Three turns' step records, written by the loop's own timing recorder."""
    for n_labels, version, acc, action in TURNS:
        with timed(settings, "export_labels") as rec:
            rec.update(n_labels=n_labels, snapshot_id=f"snap{version}")
        with timed(settings, "build_features"):
            time.sleep(0.02)
        with timed(settings, "train") as rec:
            time.sleep(0.05)
            rec.update(model_version=version, holdout_accuracy=acc)
        with timed(settings, "register") as rec:
            rec.update(action=action, promoted=action == "promoted")
        with timed(settings, "select_for_labelling"):
            pass


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_report_in_headless_chromium(settings, tmp_path):
    from playwright.sync_api import sync_playwright

    _turns(settings)
    latest = settings.data_dir / "monitoring" / "latest.json"
    latest.parent.mkdir(parents=True)
    latest.write_text(
        json.dumps(
            {
                "drift_found": True,
                "champion_version": "2",
                "n_current": 140,
                "window_start": "2026-11-28T10:00:00",
                "tagged": 15,
            }
        )
    )
    out = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "report", "--out", str(out)],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    shot = tmp_path / "report.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(out.as_uri())
        text = {
            key: page.inner_text(f"#{key}")
            for key in (
                "turns",
                "labels",
                "accuracy",
                "served-version",
                "queue-size",
                "drift-status",
            )
        }
        widths = [
            page.eval_on_selector(f"#{f}", "img => img.naturalWidth")
            for f in ("fig-accuracy", "fig-labels", "fig-latency")
        ]
        rows = page.eval_on_selector_all("#turn-table tr", "rows => rows.length")
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert text["turns"] == "3"
    assert text["labels"] == "160" and text["accuracy"] == "0.830"
    assert text["drift-status"].startswith("DRIFT FOUND") and "15 tagged" in text["drift-status"]
    assert text["served-version"].startswith("unavailable")  # no predictor in this home
    assert text["queue-size"].startswith("unavailable")  # no Label Studio either
    assert all(w > 100 for w in widths), widths  # the three figures decoded and drawn
    assert rows == 1 + len(TURNS)
    assert shot.stat().st_size > 20_000
