"""Hybrid acquisition (uncertainty within diversity) and the diverse cold-start seed set:
pure functions on known vectors and probabilities."""

import numpy as np
import pytest

from flywheel.errors import InputError
from flywheel.labelling import select_for_labelling
from flywheel.labelling.acquisition import DUPLICATE_SIMILARITY, diverse_seed, select_hybrid


def _pool(seed: int = 0):
    """60 items in 6 well-separated groups; items 0-4 are near-duplicates of one another
    (a print scanned five times) and the most uncertain of the whole pool."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, 16)) * 5
    groups = np.repeat(np.arange(6), 10)
    vectors = centres[groups] + rng.normal(size=(60, 16))
    vectors[1:5] = vectors[0] + rng.normal(scale=1e-3, size=(4, 16))
    top = rng.uniform(0.5, 0.9, size=60)
    probs = np.stack([top, (1 - top) * 0.6, (1 - top) * 0.4], axis=1)
    probs[:5] = [0.34, 0.33, 0.33]  # near-uniform: the most uncertain
    probs[:5, 0] += rng.uniform(0, 1e-3, size=5)
    ids = [f"item-{i:03d}" for i in range(60)]
    return probs, vectors, ids, groups


def _cosines(vectors, chosen_rows):
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sub = unit[chosen_rows]
    sims = sub @ sub.T
    return sims[~np.eye(len(sub), dtype=bool)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hybrid_never_picks_two_near_duplicates(seed):
    probs, vectors, ids, groups = _pool(seed)
    index = {i: n for n, i in enumerate(ids)}
    by_margin = select_for_labelling(probs, ids, 6, "margin")
    assert len({*by_margin[:5]} & {f"item-{i:03d}" for i in range(5)}) == 5  # the trap
    chosen = select_hybrid(probs, vectors, ids, 6, seed=seed)
    rows = [index[i] for i in chosen]
    assert len(chosen) == 6 and len(set(chosen)) == 6
    assert (_cosines(vectors, rows) < DUPLICATE_SIMILARITY).all()
    assert sum(r < 5 for r in rows) == 1  # one of the duplicates, the most uncertain
    assert len(set(groups[rows])) == 6  # one per group
    assert chosen == select_hybrid(probs, vectors, ids, 6, seed=seed)  # deterministic


def test_hybrid_fills_from_the_ranking_and_checks_input():
    probs, vectors, ids, _ = _pool()
    many = select_hybrid(probs, vectors, ids, 20)
    index = {i: n for n, i in enumerate(ids)}
    assert len(many) == 20
    assert (_cosines(vectors, [index[i] for i in many]) < DUPLICATE_SIMILARITY).all()
    assert select_hybrid(probs, vectors, ids, 0) == []
    with pytest.raises(InputError, match="one row per item"):
        select_hybrid(probs, vectors[:10], ids, 5)
    with pytest.raises(InputError, match="unique"):
        select_hybrid(probs, vectors, ids[:-1] + ids[:1], 5)


def test_cold_start_seed_is_spread_and_has_no_duplicates():
    _, vectors, ids, groups = _pool()
    index = {i: n for n, i in enumerate(ids)}
    seed_set = diverse_seed(vectors, ids, 6)
    rows = [index[i] for i in seed_set]
    assert len(set(groups[rows])) == 6  # every group, where random often misses one
    assert (_cosines(vectors, rows) < DUPLICATE_SIMILARITY).all()
    assert seed_set == diverse_seed(vectors, ids, 6)
    dupes = np.repeat(vectors[:1], 5, axis=0)  # five copies: one of them is all there is
    assert len(diverse_seed(dupes, ids[:5], 3)) == 1
