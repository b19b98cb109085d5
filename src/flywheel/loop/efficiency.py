"""Label efficiency per turn: what the next batch of labels is likely to buy, and when to stop.

Learning curves of classifiers follow a power law in the number of labels closely enough to
extrapolate one batch ahead: holdout error e(n) ~ b * n^(-c). `fit_curve` fits log e against
log n by least squares over the turns so far (at least three, with error > 0), and
`next_batch_gain` is the predicted accuracy after `k` more labels minus the fitted accuracy
now. Stopping rule (`should_stop`): stop labelling for accuracy when the predicted gain of
the next batch is below `min_gain` (default one percentage point), or the target is reached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_POINTS = 3


@dataclass(frozen=True)
class Efficiency:
    n_labels: int
    accuracy: float
    predicted_next: float | None  # accuracy expected after the next batch
    gain: float | None  # predicted_next - fitted accuracy now
    stop: bool
    reason: str


def fit_curve(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    """(b, c) of error = b * n^(-c) by least squares in log-log; None with too few points."""
    usable = [(n, 1.0 - a) for n, a in points if n > 0 and 0.0 < 1.0 - a < 1.0]
    if len(usable) < MIN_POINTS or len({n for n, _ in usable}) < 2:
        return None
    xs = [math.log(n) for n, _ in usable]
    ys = [math.log(e) for _, e in usable]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    c = max(0.0, -slope)  # a curve that gets worse with labels predicts no gain
    b = math.exp(my + c * mx)
    return b, c


def next_batch_gain(points: list[tuple[int, float]], k: int) -> tuple[float, float] | None:
    """(predicted accuracy after k more labels, its gain over the fitted accuracy now)."""
    fitted = fit_curve(points)
    if fitted is None:
        return None
    b, c = fitted
    n = max(p[0] for p in points)
    now = 1.0 - min(1.0, b * n ** (-c))
    after = 1.0 - min(1.0, b * (n + k) ** (-c))
    return after, after - now


def should_stop(
    points: list[tuple[int, float]], k: int, target: float | None = None, min_gain: float = 0.01
) -> Efficiency:
    """The label-efficiency report for the latest turn (see the module docstring)."""
    n, acc = max(points)
    est = next_batch_gain(points, k)
    predicted, gain = est if est else (None, None)
    if target is not None and acc >= target:
        return Efficiency(n, acc, predicted, gain, True, f"target {target:.0%} reached")
    if gain is None:
        return Efficiency(n, acc, None, None, False, f"need {MIN_POINTS} turns to estimate")
    if gain < min_gain:
        return Efficiency(
            n, acc, predicted, gain, True, f"next {k} labels add ~{gain:.1%} < {min_gain:.1%}"
        )
    return Efficiency(n, acc, predicted, gain, False, f"next {k} labels add ~{gain:.1%}")
