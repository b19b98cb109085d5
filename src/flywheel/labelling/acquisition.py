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

`select_hybrid` (FLYWHEEL_ACQUISITION=hybrid) also looks at each item's vector: margin
uncertainty within k-means clusters, never two near-duplicates in a batch; `diverse_seed`
picks a cold-start seed set spread over the collection (see the section below).
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


# --- hybrid: uncertainty within diversity (needs each item's vector) -------------------------
#
# `select_hybrid(probabilities, vectors, item_ids, k)` (FLYWHEEL_ACQUISITION=hybrid):
# 1. the pool's vectors (embeddings, or pixels), L2-normalised, are split into k clusters
#    by k-means (scikit-learn, seeded);
# 2. from each cluster the item with the highest margin uncertainty is proposed; the
#    proposals are ranked by that score (ties by item id);
# 3. walking down that ranking (then down the rest of the pool by score, if clusters ran
#    out), an item is taken only if its cosine similarity to every item already taken is
#    below `duplicate_similarity`: near-duplicates (two scans of one print, a re-upload)
#    are never both in one batch.
# `diverse_seed(vectors, item_ids, k)` is the cold start, before any model: greedy k-center
# (a core-set) from the item nearest the centroid, each next item the one farthest from
# those chosen, under the same near-duplicate rule.

HYBRID = "hybrid"
DUPLICATE_SIMILARITY = 0.98


def _unit_rows(vectors, n: int) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) != n:
        raise InputError(f"vectors must be a 2-d array with one row per item ({n}), got {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("vectors must be finite")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _check_ids(item_ids: Sequence[str], k: int) -> list[str]:
    ids = [str(i) for i in item_ids]
    if len(set(ids)) != len(ids):
        raise InputError("item ids must be unique")
    if k < 0:
        raise InputError(f"k must be >= 0, got {k}")
    return ids


def _take(order, unit: np.ndarray, k: int, threshold: float, taken: list[int]) -> list[int]:
    """Walk `order`, keeping items not near-duplicates of any kept one, up to k."""
    for i in order:
        if len(taken) >= k:
            break
        i = int(i)
        if i in taken:
            continue
        if taken and float((unit[taken] @ unit[i]).max()) >= threshold:
            continue
        taken.append(i)
    return taken


def select_hybrid(
    probabilities,
    vectors,
    item_ids: Sequence[str],
    k: int,
    seed: int = 0,
    duplicate_similarity: float = DUPLICATE_SIMILARITY,
) -> list[str]:
    """Up to `k` items: the most uncertain of each k-means cluster, no near-duplicates."""
    from sklearn.cluster import KMeans

    ids = _check_ids(item_ids, k)
    scores = uncertainty(probabilities, "margin")
    if len(scores) != len(ids):
        raise InputError(f"{len(scores)} probability rows for {len(ids)} item ids")
    unit = _unit_rows(vectors, len(ids))
    if k == 0 or not ids:
        return []
    rank = np.lexsort((np.array(ids, dtype=object).astype(str), -scores))  # best first
    n_clusters = min(k, len(ids))
    labels = KMeans(n_clusters, n_init=1, random_state=seed).fit_predict(unit)
    best: dict[int, int] = {}
    for i in rank:  # the first seen in each cluster is its most uncertain item
        best.setdefault(int(labels[i]), int(i))
    proposals = sorted(best.values(), key=lambda i: (-scores[i], ids[i]))
    taken = _take(proposals, unit, k, duplicate_similarity, [])
    taken = _take(rank, unit, k, duplicate_similarity, taken)
    return [ids[i] for i in taken]


def diverse_seed(
    vectors,
    item_ids: Sequence[str],
    k: int,
    duplicate_similarity: float = DUPLICATE_SIMILARITY,
) -> list[str]:
    """A cold-start seed set of up to `k` items spread over the collection (k-center)."""
    ids = _check_ids(item_ids, k)
    unit = _unit_rows(vectors, len(ids))
    if k == 0 or not ids:
        return []
    centre = unit.mean(axis=0)
    first = int(np.argmax(unit @ centre))
    taken = [first]
    distance = 1.0 - unit @ unit[first]
    while len(taken) < min(k, len(ids)):
        order = np.lexsort((np.array(ids, dtype=object).astype(str), -distance))
        nxt = next((int(i) for i in order if distance[i] > 1.0 - duplicate_similarity), None)
        if nxt is None:
            break  # the rest are near-duplicates of items already chosen
        taken.append(nxt)
        distance = np.minimum(distance, 1.0 - unit @ unit[nxt])
    return [ids[i] for i in taken]
