"""Drift statistics: is what the model is served now like what it was trained on?

Pure functions on arrays; `flywheel.monitoring.drift_check` gathers the data and acts.

Three tests, each a p-value; drift is found when any is below `alpha / 3` (Bonferroni over
the three, so a batch from the training distribution raises no alarm more often than
`alpha` in all):

- representation: MMD with an RBF kernel (median-distance bandwidth) and a permutation
  p-value; the champion's training items against the served items;
- confidence: two-sample Kolmogorov-Smirnov on the top probability; the champion on its
  snapshot's holdout items (never trained on) against the champion on the served items;
- class mix: chi-square on predicted-class counts; the champion on the training items
  against the champion on the served items.

MMD: with labels a_i = 1/n_x for reference rows and -1/n_y for current rows, the (biased)
squared MMD is a^T K a; a permutation shuffles the labels. The witness of a current row,
mean k(row, current) - mean k(row, reference), is large where current rows crowd in a
region the reference does not cover: the "most drifted" items are those with the largest
witness. The representation is whatever `settings.representation` computes (pixels today,
embeddings tomorrow): these functions only see vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class MMDResult:
    mmd2: float
    p_value: float
    n_reference: int
    n_current: int
    bandwidth: float
    witness: np.ndarray = field(repr=False)  # one per current row (all rows, not subsampled)


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= n else x[np.sort(rng.choice(len(x), n, replace=False))]


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def mmd_test(
    reference: np.ndarray,
    current: np.ndarray,
    n_permutations: int = 500,
    seed: int = 0,
    max_rows: int = 1000,
) -> MMDResult:
    """Two-sample MMD test of `current` [m, d] against `reference` [n, d] (float arrays).

    Each side is subsampled (seeded) to at most `max_rows` for the test itself; the witness
    is computed for every current row. p-value = (1 + #{perm >= observed}) / (1 + perms).
    """
    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(current, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"reference {x.shape} and current {y.shape} must be [n, d] alike")
    if len(x) < 2 or len(y) < 2:
        raise ValueError("the MMD test needs at least two rows on each side")
    rng = np.random.default_rng(seed)
    xs, ys = _subsample(x, max_rows, rng), _subsample(y, max_rows, rng)
    z = np.vstack([xs, ys])
    d = _sq_dists(z, z)
    off = d[np.triu_indices(len(z), 1)]
    bandwidth = float(np.median(off[off > 0])) if np.any(off > 0) else 1.0
    k = np.exp(-d / bandwidth)
    nx, ny = len(xs), len(ys)
    a = np.concatenate([np.full(nx, 1.0 / nx), np.full(ny, -1.0 / ny)])
    observed = float(a @ k @ a)
    perms = np.stack([rng.permutation(a) for _ in range(n_permutations)])  # [P, n]
    null = np.einsum("pi,ij,pj->p", perms, k, perms)
    p_value = float((1 + np.sum(null >= observed)) / (1 + n_permutations))
    k_yx = np.exp(-_sq_dists(y, xs) / bandwidth)
    k_yy = np.exp(-_sq_dists(y, ys) / bandwidth)
    witness = k_yy.mean(1) - k_yx.mean(1)
    return MMDResult(max(observed, 0.0), p_value, len(x), len(y), bandwidth, witness)


def confidence_test(reference_conf: np.ndarray, current_conf: np.ndarray) -> tuple[float, float]:
    """Kolmogorov-Smirnov statistic and p-value of two samples of top probabilities."""
    from scipy.stats import ks_2samp

    result = ks_2samp(np.asarray(reference_conf), np.asarray(current_conf))
    return float(result.statistic), float(result.pvalue)


def class_mix_test(
    reference_pred: np.ndarray, current_pred: np.ndarray, n_classes: int
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Chi-square test of predicted-class counts; returns (chi2, p, ref counts, cur counts)."""
    from scipy.stats import chi2_contingency

    ref = np.bincount(np.asarray(reference_pred, dtype=int), minlength=n_classes)
    cur = np.bincount(np.asarray(current_pred, dtype=int), minlength=n_classes)
    keep = (ref + cur) > 0
    if keep.sum() < 2:
        return 0.0, 1.0, ref, cur
    chi2, p, _, _ = chi2_contingency(np.stack([ref[keep], cur[keep]]))
    return float(chi2), float(p), ref, cur


def is_drift(p_values: dict[str, float], alpha: float) -> bool:
    """Any p-value below alpha divided by the number of tests (Bonferroni)."""
    return any(p < alpha / len(p_values) for p in p_values.values())
