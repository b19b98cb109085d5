"""After the demo, a person finds work waiting: the last turn's picks unlabelled in the
"flywheel queue" tab, most uncertain first, each with the champion's guess and score; and
the labelling view shows the card and all ten choices on one screen (headless chromium).

Real Label Studio and MLflow (the session stack); a small collection and two direct turns.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from flywheel.labelling import client as lsc
from flywheel.labelling import predictions_of
from flywheel.labelling.predictions import _labelled
from flywheel.loop.demo import run_demo

N_ITEMS, K = 150, 10
CHROMIUM = Path("/usr/bin/chromium")
SCREEN = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def demo(stack):
    settings = stack.model_copy(
        update={
            "home": stack.data_dir / "demo-queue-home",
            "label_studio_project": "demo-queue",
            "label_studio_token": SecretStr(stack.ls_token),
            "model_name": "demo-queue-model",
            "mlflow_experiment": "demo-queue",
            "labels_per_turn": K,
        }
    )
    history = run_demo(settings, turns=2, engine="direct", seed_labels=30, limit=N_ITEMS)
    return settings, history


def test_demo_leaves_the_last_picks_queued_for_a_person(demo):
    settings, history = demo
    first, last = history[0]["selected"], history[-1]["selected"]
    assert len(last) == K and len(first) == K
    tasks = lsc.tasks_by_item(lsc.project_tasks(settings))
    assert all(_labelled(tasks[i]) for i in first)  # the demo annotator did turn 1's picks
    champion = history[-1]["champion_version"]
    for rank, item in enumerate(last):
        task = tasks[item]
        assert not _labelled(task), f"{item} was labelled: it should wait for a person"
        assert task["data"]["priority"] == K - rank  # the queue tab sorts on this
        guesses = predictions_of(settings, item)
        assert f"{settings.model_name}-v{champion}" in [g["model_version"] for g in guesses]
        assert all(0 < g["score"] <= 1 for g in guesses)
    # the tab exists, lists unlabelled tasks by priority and keeps the guess columns in view
    ls = lsc.client(settings)
    project = lsc.get_project(settings, ls)
    [view] = [v for v in ls.views.list(project=project.id) if v.data["title"] == lsc.QUEUE_VIEW]
    assert view.data["ordering"] == ["-tasks:data.priority"]
    hidden = view.data["hiddenColumns"]["explore"]
    assert "tasks:predictions_score" not in hidden and "tasks:predictions_results" not in hidden


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_labelling_view_fits_one_screen(demo, tmp_path):
    from playwright.sync_api import sync_playwright

    settings, history = demo
    item = history[-1]["selected"][0]
    task = lsc.tasks_by_item(lsc.project_tasks(settings))[item]
    project = lsc.get_project(settings)
    base = settings.label_studio_base_url
    shot = tmp_path / "labelling.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport=SCREEN)
        page.goto(f"{base}/user/login/")
        page.fill("input[name=email]", settings.label_studio_username)
        page.fill("input[name=password]", settings.ls_password)
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_load_state("networkidle")
        page.goto(f"{base}/projects/{project.id}/data?task={task['id']}")
        page.wait_for_selector("img", timeout=60_000)
        page.get_by_text(settings.label_classes[-1], exact=True).first.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(shot))
        print("screenshot:", shot)
        boxes = []
        for label in settings.label_classes:
            box = page.get_by_text(label, exact=True).last.bounding_box()
            assert box is not None, f"choice {label} is not shown"
            boxes.append(box)
        images = [b for b in (i.bounding_box() for i in page.locator("img").all()) if b]
        card = max(images, key=lambda b: b["width"] * b["height"])
        browser.close()
    for box in [card, *boxes]:
        assert box["y"] >= 0 and box["y"] + box["height"] <= SCREEN["height"], box
        assert box["x"] >= 0 and box["x"] + box["width"] <= SCREEN["width"], box
    assert card["width"] >= 64  # the card is shown, not a thumbnail
