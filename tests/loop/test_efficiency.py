"""The label-efficiency report: power-law extrapolation and the stopping rule (pure)."""

import pytest

from flywheel.loop.efficiency import fit_curve, next_batch_gain, should_stop


def curve(ns, b=2.0, c=0.5):
    return [(n, 1 - b * n ** (-c)) for n in ns]


def test_fit_recovers_a_power_law():
    b, c = fit_curve(curve([50, 100, 200, 400]))
    assert b == pytest.approx(2.0) and c == pytest.approx(0.5)
    after, gain = next_batch_gain(curve([50, 100, 200]), 200)
    assert after == pytest.approx(1 - 2 * 400**-0.5)
    assert gain == pytest.approx(2 * 200**-0.5 - 2 * 400**-0.5)


def test_stopping_rule():
    early = should_stop(curve([50, 100]), 50)
    assert not early.stop and early.gain is None and "3 turns" in early.reason
    steep = should_stop(curve([50, 100, 150]), 50)
    assert not steep.stop and steep.gain > 0.01
    flat = should_stop(curve([5000, 10000, 20000]), 50)
    assert flat.stop and flat.gain < 0.01 and "<" in flat.reason
    reached = should_stop([(50, 0.8), (100, 0.9), (150, 0.95)], 50, target=0.9)
    assert reached.stop and "target" in reached.reason


def test_a_curve_that_gets_worse_predicts_no_gain():
    _, gain = next_batch_gain([(50, 0.9), (100, 0.85), (150, 0.8)], 50)
    assert gain == pytest.approx(0.0)
