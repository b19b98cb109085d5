"""The active-learning experiment's summary: censoring, intervals, paired test, JSON schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flywheel.errors import InputError
from flywheel.loop.experiment import (
    ExperimentConfig,
    auc,
    kaplan_meier,
    labels_to_reach,
    run_curve,
    summarise,
)

ROOT = Path(__file__).resolve().parents[2]
RESULT = ROOT / "docs" / "results" / "active_vs_random.json"


def _curve(accs, start=20, step=20):
    return [(start + i * step, a) for i, a in enumerate(accs)]


def test_censored_runs_are_counted_not_dropped():
    # budget 100: labels 20..100; seed 2 never reaches 0.9
    cfg = ExperimentConfig(arms=["random", "margin"], seeds=[0, 1, 2], budget=100, target=0.9)
    curves = {
        "random": {
            0: _curve([0.5, 0.7, 0.91, 0.92, 0.93]),  # reaches at 60
            1: _curve([0.5, 0.6, 0.8, 0.9, 0.95]),  # reaches at 80
            2: _curve([0.5, 0.6, 0.7, 0.8, 0.85]),  # censored at 100
        },
        "margin": {
            0: _curve([0.5, 0.92, 0.93, 0.94, 0.95]),  # 40
            1: _curve([0.5, 0.8, 0.9, 0.95, 0.95]),  # 60
            2: _curve([0.5, 0.8, 0.85, 0.91, 0.95]),  # 80
        },
    }
    out = summarise(curves, cfg)
    rnd = out["arms"]["random"]["labels_to_target"]
    assert rnd["per_seed"] == [60, 80, None]
    assert rnd["censored"] == 1 and rnd["censored_at"] == 100
    # dropping the censored run would say 70; it is not dropped
    assert rnd["mean_of_reached"] == 70
    assert rnd["mean_if_all_reached"] is None
    # KM: S=1 on [0,60), 2/3 on [60,80), 1/3 on [80,100] -> 60 + 40/3 + 20/3 = 80
    assert rnd["restricted_mean"] == pytest.approx(80.0, abs=0.1)
    assert rnd["restricted_mean"] > rnd["mean_of_reached"]
    assert rnd["km_median"] == 80
    mar = out["arms"]["margin"]["labels_to_target"]
    assert mar["censored"] == 0 and mar["mean_if_all_reached"] == 60
    # all reached: the restricted mean is the plain mean
    assert mar["restricted_mean"] == pytest.approx(60.0)
    test = out["paired_tests"]["margin"]
    assert test["vs"] == "random" and test["auc_wins"] == "3/3"
    assert 0 < test["auc_p"] <= 1 and test["auc_diff_mean"] > 0


def test_kaplan_meier_all_censored_has_no_median():
    km = kaplan_meier([None, None, None], horizon=200)
    assert km["median"] is None and km["restricted_mean"] == 200
    assert kaplan_meier([], horizon=50)["restricted_mean"] == 50


def test_labels_to_reach_and_auc():
    assert labels_to_reach(_curve([0.1, 0.95, 0.5]), 0.9) == 40
    assert labels_to_reach(_curve([0.1, 0.5]), 0.9) is None
    # normalised trapezoid: a flat curve's AUC is its accuracy
    assert auc(_curve([0.8, 0.8, 0.8])) == pytest.approx(0.8)
    assert auc(_curve([0.0, 1.0])) == pytest.approx(0.5)


def test_summary_needs_every_seed_in_every_arm():
    cfg = ExperimentConfig(arms=["random", "margin"], seeds=[0, 1])
    with pytest.raises(InputError, match="lacks curves"):
        summarise({"random": {0: _curve([0.5]), 1: _curve([0.6])}, "margin": {0: []}}, cfg)


def test_config_rejects_unknown_arm_and_one_seed():
    with pytest.raises(InputError, match="unknown arm"):
        ExperimentConfig(arms=["random", "psychic"]).check()
    with pytest.raises(InputError, match="two seeds"):
        ExperimentConfig(seeds=[0]).check()


def _check_schema(result: dict, min_seeds: int) -> None:
    assert isinstance(result["seeds"], list) and len(result["seeds"]) >= min_seeds
    assert "random" in result["arms"]
    for arm, data in result["arms"].items():
        curve = data["curve"]
        assert len(curve["labels"]) == len(curve["mean"]) == len(curve["ci95"])
        for (lo, hi), m in zip(curve["ci95"], curve["mean"], strict=True):
            assert lo <= m + 1e-9 and m <= hi + 1e-9
        assert set(data["per_seed"]) == {str(s) for s in result["seeds"]}
        a = data["auc"]
        assert len(a["per_seed"]) == len(result["seeds"])
        assert a["ci95"][0] <= a["mean"] <= a["ci95"][1]
        ltt = data["labels_to_target"]
        assert len(ltt["per_seed"]) == len(result["seeds"])
        assert ltt["censored"] == sum(n is None for n in ltt["per_seed"])
        if arm != "random":
            t = result["paired_tests"][arm]
            assert t["vs"] == "random" and (t["auc_p"] is None or 0 <= t["auc_p"] <= 1)


def test_summary_json_schema_roundtrips():
    cfg = ExperimentConfig(arms=["random", "entropy"], seeds=[3, 4], budget=60)
    curves = {
        "random": {3: _curve([0.5, 0.7, 0.8]), 4: _curve([0.4, 0.75, 0.85])},
        "entropy": {3: _curve([0.5, 0.8, 0.9]), 4: _curve([0.4, 0.7, 0.95])},
    }
    result = json.loads(json.dumps(summarise(curves, cfg)))
    _check_schema(result, 2)
    assert result["seeds"] == [3, 4]


def test_committed_result_follows_the_schema():
    if not RESULT.exists():
        pytest.fail(f"{RESULT} is missing: run `flywheel loop experiment --out docs/results`")
    result = json.loads(RESULT.read_text())
    _check_schema(result, 10)
    assert RESULT.with_suffix(".png").exists()


def test_one_round_trains_and_scores(settings):
    """A tiny real run: 2 rounds, the loop's training code, the demo features."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    classes = list(settings.label_classes)
    ids = [f"x{i:04d}" for i in range(300)]
    y = [classes[i % len(classes)] for i in range(300)]
    x = np.stack([rng.normal(classes.index(c), 0.3, settings.image_size**2) for c in y]).astype(
        np.float32
    )
    cfg = ExperimentConfig(
        arms=["random", "margin"], seeds=[0, 1], start=40, step=20, budget=60, max_steps=40
    )
    curve = run_curve(settings, (ids, x, pd.Series(y, index=ids)), "margin", 0, cfg.check())
    assert [n for n, _ in curve] == [40, 60]
    assert all(0 <= a <= 1 for _, a in curve)
