"""Acquisition functions on known probability matrices (pure, no services)."""

import numpy as np
import pytest

from flywheel.errors import InputError
from flywheel.labelling import select_for_labelling, uncertainty

IDS = ["a", "b", "c", "d"]
P = np.array(
    [
        [0.90, 0.05, 0.05],  # a: confident
        [0.40, 0.35, 0.25],  # b: top two close, low max
        [0.50, 0.50, 0.00],  # c: margin 0, but entropy lower than d
        [0.34, 0.33, 0.33],  # d: nearly uniform
    ]
)


def test_least_confidence():
    assert select_for_labelling(P, IDS, 4, "least_confidence") == ["d", "b", "c", "a"]
    np.testing.assert_allclose(uncertainty(P, "least_confidence"), [0.1, 0.6, 0.5, 0.66])


def test_margin():
    # margins: a .85, b .05, c 0, d .01 -> uncertainty 1 - margin
    assert select_for_labelling(P, IDS, 4, "margin") == ["c", "d", "b", "a"]


def test_entropy():
    assert select_for_labelling(P, IDS, 2, "entropy") == ["d", "b"]
    assert uncertainty(P, "entropy")[2] == pytest.approx(np.log(2))  # 0 log 0 counts as 0


def test_random_is_seeded_baseline():
    ids = [f"i{n:03d}" for n in range(100)]
    probs = np.full((100, 3), 1 / 3)
    first = select_for_labelling(probs, ids, 10, "random", seed=7)
    assert first == select_for_labelling(probs, ids, 10, "random", seed=7)
    assert first != select_for_labelling(probs, ids, 10, "random", seed=8)
    assert len(set(first)) == 10


def test_ties_broken_by_item_id():
    probs = np.full((5, 2), 0.5)
    ids = ["e", "c", "a", "d", "b"]
    for strategy in ("least_confidence", "margin", "entropy"):
        assert select_for_labelling(probs, ids, 3, strategy) == ["a", "b", "c"]


def test_k_bounds():
    assert select_for_labelling(P, IDS, 0) == []
    assert len(select_for_labelling(P, IDS, 10)) == 4


@pytest.mark.parametrize(
    "args, message",
    [
        ((P, IDS, 2, "bald"), "unknown acquisition strategy"),
        ((P[:, :1], IDS, 2), "2-d array"),
        ((P, IDS[:3], 2), "4 probability rows for 3 item ids"),
        ((P, ["a", "a", "b", "c"], 2), "unique"),
        ((P, IDS, -1), "k must be"),
        ((np.full((4, 3), np.nan), IDS, 2), "finite"),
    ],
)
def test_bad_input_is_named(args, message):
    with pytest.raises(InputError, match=message):
        select_for_labelling(*args)
