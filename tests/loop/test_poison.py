"""Poison items never stop the loop: a card that went bad after intake (one labelled, one in
the pool) and a task whose item has no features run through a real turn (Label Studio and
MLflow of the session stack, Feast embedded, real training): they are quarantined with
their reason, shown by `flywheel collection report` and `flywheel status`, and the turn
trains, selects and serves the others. Also: `flywheel collection add` exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydantic import SecretStr

from flywheel.features import online_features
from flywheel.labelling import DemoAnnotator, init_demo
from flywheel.labelling import quarantine as q
from flywheel.labelling.collection import read_catalogue, register_tasks
from flywheel.loop.turn import run_turn
from flywheel.splits import is_holdout
from tests.conftest import settings_env

N_ITEMS, SEED, K = 80, 30, 12
FLYWHEEL = [sys.executable, "-m", "flywheel.cli"]


@pytest.fixture(scope="module")
def poisoned(stack):
    settings = stack.model_copy(
        update={
            "home": stack.items_dir / "poison-home",  # LS serves files under items only
            "label_studio_project": "poison",
            "label_studio_token": SecretStr(stack.ls_token),
            "model_name": "poison-model",
            "mlflow_experiment": "poison",
            "labels_per_turn": K,
        }
    )
    init_demo(settings, limit=N_ITEMS)
    items = [f"digits-{i:04d}" for i in range(N_ITEMS)]
    holdout = [i for i in items if is_holdout(i, settings.holdout_fraction)]
    rest = [i for i in items if i not in holdout]
    seed, pool = rest[:SEED], rest[SEED:]
    bad = {"labelled": seed[3], "pool": pool[2]}
    cards = read_catalogue(settings).set_index("item_id").image_path
    for item_id in bad.values():  # the derivative went bad after intake (disk, sync, ...)
        data = open(cards[item_id], "rb").read()
        open(cards[item_id], "wb").write(data[: len(data) // 3])
    ghost = pd.DataFrame(
        [{"item_id": "digits-ghost", "image_path": cards[pool[0]], "collection": "digits"}]
    )
    register_tasks(settings, ghost)  # a task whose item has no features
    DemoAnnotator(settings).label(holdout + seed)
    report = run_turn(settings, engine="direct")
    return settings, report, bad, pool


def test_poison_items_are_quarantined_and_the_turn_goes_on(poisoned):
    settings, report, bad, pool = poisoned
    held = q.read(settings)
    assert held[bad["labelled"]]["stage"] == "features"
    assert held[bad["pool"]]["stage"] == "features"
    assert (
        "not a readable image" in held[bad["pool"]]["reason"]
        or "truncated" in (held[bad["pool"]]["reason"])
    )
    assert held["digits-ghost"]["stage"] == "scoring"
    assert report.model_version == "1" and report.promoted
    # selection: the others, never the quarantined ones, no two near-duplicates together
    assert len(report.selected) == K and not set(report.selected) & set(held)
    groups = read_catalogue(settings).set_index("item_id").dup_group
    chosen_groups = [groups[i] for i in report.selected if groups[i]]
    assert len(chosen_groups) == len(set(chosen_groups))
    # served: the others have online features, the poison ones are not made up as zeros
    others = [i for i in pool if i not in held][:5]
    assert online_features(others, settings).shape == (5, settings.image_size**2)


def test_a_second_turn_does_not_retry_or_stumble(poisoned):
    settings, _, bad, _ = poisoned
    before = q.read(settings)
    selection = json.loads((settings.data_dir / "loop" / "last_selection.json").read_text())
    DemoAnnotator(settings).label(selection["item_ids"])
    report = run_turn(settings, engine="direct")
    assert report.model_version == "2"
    after = q.read(settings)
    assert after[bad["pool"]]["at"] == before[bad["pool"]]["at"]  # not tried again


def _run(settings, *args):
    return subprocess.run(
        [*FLYWHEEL, *args], env=settings_env(settings), capture_output=True, text=True, timeout=300
    )


def test_report_and_status_show_the_quarantine(poisoned):
    settings, _, bad, _ = poisoned
    out = _run(settings, "collection", "report")
    assert out.returncode == 0, out.stderr
    assert bad["pool"] in out.stdout and "digits-ghost" in out.stdout and "scoring" in out.stdout
    status = _run(settings, "status")
    assert "quarantine" in status.stdout and "collection report" in status.stdout


def test_collection_add_exit_codes(poisoned, tmp_path):
    settings, *_ = poisoned
    src = tmp_path / "mixed"
    src.mkdir()
    Image.fromarray(np.full((30, 30), 90, np.uint8)).save(src / "ok.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    out = _run(settings, "collection", "add", str(src))
    assert out.returncode == 0, out.stderr
    assert "broken.jpg" in out.stdout and "1 added" in out.stdout and "1 rejected" in out.stdout
    strict = _run(settings, "collection", "add", str(src), "--strict")
    assert strict.returncode == 1 and "1 unchanged" in strict.stdout
    assert "--strict: 1 file(s) rejected" in strict.stderr
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.png").write_bytes(b"")
    nothing = _run(settings, "collection", "add", str(junk))
    assert nothing.returncode != 0 and "x.png: an empty file" in nothing.stderr


def test_cards_leave_the_choices_in_view(stack, tmp_path):
    """In a real browser (1366x768, a common laptop), a portrait and a landscape card from
    large masters show with all ten choices visible without scrolling."""
    from playwright.sync_api import sync_playwright

    from flywheel.labelling import client as lsc
    from flywheel.labelling.collection import add_collection

    settings = stack.model_copy(update={"label_studio_project": "ui-cards"})
    src = tmp_path / "ui-cards"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in (("portrait", (3000, 2000, 3)), ("landscape", (2000, 3000, 3))):
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(src / f"{name}.jpg")
    add_collection(settings, src)
    tasks = lsc.tasks_by_item(lsc.project_tasks(settings))
    project = lsc.get_project(settings)
    base = settings.label_studio_base_url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(f"{base}/user/login/")
            page.fill("input[name=email]", settings.label_studio_username)
            page.fill("input[name=password]", stack.ls_password)
            page.click("button[type=submit]")
            page.wait_for_load_state("networkidle")
            for item in ("ui-cards-portrait", "ui-cards-landscape"):
                page.goto(f"{base}/projects/{project.id}/data?task={tasks[item]['id']}")
                page.wait_for_function(  # the card itself, shown in the labelling panel
                    "() => [...document.images].some(i => i.naturalWidth > 0 && "
                    "i.getBoundingClientRect().width > 200 && i.getBoundingClientRect().x < 1366)",
                    timeout=120_000,
                )
                for choice in settings.label_classes:
                    name = json.dumps(choice)
                    box = page.locator(
                        f"label.lsf-choice__checkbox:has(input[name={name}])"
                    ).bounding_box()
                    assert box is not None, f"choice {choice} not shown for {item}"
                    assert box["y"] + box["height"] <= 768, f"choice {choice} below the fold"
                page.screenshot(path=str(tmp_path / f"{item}.png"))
        finally:
            browser.close()
