"""The labelling view as a person meets it, in a real headless browser (Debian's chromium):
the card and all ten choices fit on one 1280x800 screen, with the model's guess shown."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from flywheel.labelling import client as lsc
from flywheel.labelling import init_demo, upload_predictions

CHROMIUM = Path("/usr/bin/chromium")
SCREEN = {"width": 1280, "height": 800}
WAIT_MS = 180_000  # a shared, busy box


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_card_and_choices_fit_one_screen(stack, tmp_path):
    from playwright.sync_api import sync_playwright

    # the stack's own home: Label Studio serves images from its data dir (a nested home's
    # image URLs would not resolve); 30 cards, as tests/labelling/test_project.py uses
    settings = stack.model_copy(update={"label_studio_project": "view-tests"})
    init_demo(settings, limit=30)
    item = "digits-0000"
    probs = np.full((1, 10), 0.02)
    probs[0, 7] = 0.82
    upload_predictions(settings, [item], probs, "view-test-v1")
    task = lsc.tasks_by_item(lsc.project_tasks(settings))[item]
    project = lsc.get_project(settings)
    base = settings.label_studio_base_url
    shot = Path(os.environ.get("FLYWHEEL_SCREENSHOT_DIR", tmp_path)) / "labelling-view.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport=SCREEN)
        page.set_default_timeout(WAIT_MS)
        try:
            page.goto(f"{base}/user/login/")
            page.fill("input[name=email]", settings.label_studio_username)
            page.fill("input[name=password]", settings.ls_password)
            page.locator("button[type=submit], input[type=submit]").first.click()
            page.wait_for_url(lambda url: "/user/login" not in url)
            page.goto(f"{base}/projects/{project.id}/data?task={task['id']}")
            card = page.locator("img[src*='digits-0000'], img[src*='/data/']").first
            card.wait_for(state="visible")
            # each choice's own checkbox label (the digits also appear elsewhere on the page)
            choice = {
                c: page.locator(f"label.lsf-choice__checkbox:has(input[name={json.dumps(c)}])")
                for c in "0123456789"
            }
            choice["9"].wait_for(state="visible")
            page.wait_for_timeout(1500)
            boxes = {c: loc.bounding_box() for c, loc in choice.items()}
            # the card: the largest image on screen (Label Studio also keeps hidden ones)
            shown = [b for b in (i.bounding_box() for i in page.locator("img").all()) if b]
            card_box = max(shown, key=lambda b: b["width"] * b["height"])
        finally:
            page.screenshot(path=str(shot))
            print("screenshot:", shot)
            browser.close()
    assert card_box and card_box["width"] >= 64, card_box  # the card, not a thumbnail
    for name, box in {"card": card_box, **boxes}.items():
        assert box is not None, f"{name} is not shown"
        assert 0 <= box["y"] and box["y"] + box["height"] <= SCREEN["height"], (name, box)
        assert 0 <= box["x"] and box["x"] + box["width"] <= SCREEN["width"], (name, box)
