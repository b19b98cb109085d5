"""Acquisition functions: which unlabelled items a person should label next.

`select_for_labelling(probabilities, item_ids, k, strategy, seed)` is a pure function over
a model's class probabilities `[n, n_classes]` for the unlabelled pool:

| strategy | uncertainty score (higher = label sooner) |
|---|---|
| `least_confidence` | 1 - max_c p_c |
| `margin` | 1 - (p_top1 - p_top2) |
| `entropy` | -sum_c p_c log p_c |
| `random` | a uniform draw from `numpy.random.default_rng(seed)` (the baseline) |

The k items with the highest score are returned, most uncertain first; equal scores are
broken by item id (ascending), so the same inputs always give the same list.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flywheel.errors import InputError

STRATEGIES = ("least_confidence", "margin", "entropy", "random")


def uncertainty(probabilities, strategy: str = "least_confidence", seed: int = 0) -> np.ndarray:
    """One uncertainty score per row (higher = more uncertain), see the module table."""
    if strategy not in STRATEGIES:
        raise InputError(
            f"unknown acquisition strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise InputError(
            f"probabilities must be a 2-d array [items, classes>=2], got shape {p.shape}"
        )
    if not np.isfinite(p).all() or (p < 0).any():
        raise InputError("probabilities must be finite and non-negative")
    if strategy == "random":
        return np.random.default_rng(seed).random(len(p))
    if strategy == "least_confidence":
        return 1.0 - p.max(axis=1)
    if strategy == "margin":
        top2 = np.sort(p, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(p > 0, np.log(p), 0.0)
    return -(p * logs).sum(axis=1)


def select_for_labelling(
    probabilities,
    item_ids: Sequence[str],
    k: int,
    strategy: str = "least_confidence",
    seed: int = 0,
) -> list[str]:
    """The `k` most uncertain item ids under `strategy`, most uncertain first."""
    item_ids = [str(i) for i in item_ids]
    scores = uncertainty(probabilities, strategy, seed)
    if len(scores) != len(item_ids):
        raise InputError(f"{len(scores)} probability rows for {len(item_ids)} item ids")
    if len(set(item_ids)) != len(item_ids):
        raise InputError("item ids must be unique")
    if k < 0:
        raise InputError(f"k must be >= 0, got {k}")
    # lexsort: the last key is primary -> score descending, then item id ascending
    order = np.lexsort((np.array(item_ids, dtype=object).astype(str), -scores))
    return [item_ids[i] for i in order[:k]]


def spread_near_duplicates(ranked: Sequence[str], groups: dict[str, str], k: int) -> list[str]:
    """The first `k` of `ranked` with at most one item per near-duplicate group.

    Applied after any strategy's ranking: an item whose group (`groups[item_id]`, from the
    catalogue's `dup_group`) already has a member in the batch is passed over; items
    without a group are never passed over. Order is kept, so ties stay deterministic.
    """
    if k < 0:
        raise InputError(f"k must be >= 0, got {k}")
    chosen, taken = [], set()
    for item_id in ranked:
        if len(chosen) == k:
            break
        group = groups.get(item_id)
        if group:
            if group in taken:
                continue
            taken.add(group)
        chosen.append(item_id)
    return chosen
