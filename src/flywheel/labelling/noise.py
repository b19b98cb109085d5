"""Label-noise review: which stored labels are probably wrong (confident learning).

Written here after Northcutt, Jiang & Chuang, "Confident Learning" (JAIR 2021); Cleanlab
itself is AGPL-licensed, so it is not a dependency.

1. `out_of_fold_probabilities(x, y, classes, folds)`: every labelled item gets class
   probabilities from a model that did *not* train on it (k stratified folds, the loop's
   training code with a fixed number of steps; no MLflow).
2. `suspect_label_errors(labels, probabilities, classes)`: per class j, the threshold t_j is
   the mean predicted probability of j over the items labelled j (the model's typical
   self-confidence for that class). An item's *confident class* is the class with the
   highest probability among those reaching their threshold. An item whose confident class
   differs from its label is a suspected error (the off-diagonal of the confident joint);
   suspects are ranked by how little probability the model gives the given label.
3. `precision_recall(suspects, injected)`: against known wrong labels (the demo annotator's
   `FLYWHEEL_DEMO_NOISE_RATE`), how many suspects are real errors and how many errors are found.

Suspects go to Label Studio's "label review" tab with the model's suggestion attached
(`flywheel labels quality --review`); a reviewer's correction is a newer annotation, which
the export's rules make the label of the next snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flywheel.errors import InputError


@dataclass(frozen=True)
class Suspect:
    item_id: str
    label: str  # the stored label
    suggestion: str  # the confident class
    label_probability: float  # out-of-fold p(label)
    suggestion_probability: float


def confident_thresholds(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """t_j = mean p_j over items labelled j (classes nobody used get 1.0: never confident)."""
    t = np.ones(p.shape[1])
    for j in range(p.shape[1]):
        mask = y == j
        if mask.any():
            t[j] = p[mask, j].mean()
    return t


def suspect_label_errors(labels, probabilities, classes, item_ids=None) -> list[Suspect]:
    """Suspected label errors, most suspicious first (see the module docstring)."""
    p = np.asarray(probabilities, dtype=np.float64)
    labels = [str(label) for label in labels]
    if p.ndim != 2 or p.shape != (len(labels), len(classes)):
        raise InputError(
            f"probabilities must have shape [{len(labels)}, {len(classes)}], got {p.shape}"
        )
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise InputError(f"labels not among the classes {classes}: {unknown[:5]}")
    ids = [str(i) for i in (item_ids if item_ids is not None else range(len(labels)))]
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    t = confident_thresholds(y, p)
    above = p >= t - 1e-12
    masked = np.where(above, p, -1.0)
    confident = masked.argmax(axis=1)
    has = above.any(axis=1)
    out = []
    for i in np.flatnonzero(has & (confident != y)):
        out.append(
            Suspect(
                ids[i],
                labels[i],
                classes[confident[i]],
                float(p[i, y[i]]),
                float(p[i, confident[i]]),
            )
        )
    return sorted(out, key=lambda s: (s.label_probability, s.item_id))


def out_of_fold_probabilities(
    x, labels, classes, folds: int = 5, seed: int = 0, max_steps: int = 300, image_size=None
):
    """Class probabilities for every item from models that never saw it (k folds)."""
    import tempfile

    import torch

    from flywheel.training import TrainConfig
    from flywheel.training.data import Split, Splits
    from flywheel.training.model import Probabilities
    from flywheel.training.run import fit

    x = np.asarray(x, dtype=np.float32)
    labels = [str(label) for label in labels]
    n = len(labels)
    if n < 2 * folds:
        raise InputError(f"noise review needs at least {2 * folds} labelled items, got {n}")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    size = image_size or int(round(np.sqrt(x.shape[1])))
    # stratified: each class spread evenly over the folds
    rng = np.random.default_rng(seed)
    fold = np.empty(n, dtype=np.int64)
    for j in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == j))
        fold[members] = np.arange(len(members)) % folds
    probs = np.zeros((n, len(classes)), dtype=np.float64)
    empty = Split(torch.zeros((0, x.shape[1])), torch.zeros(0, dtype=torch.int64), [])
    scratch = tempfile.TemporaryDirectory(prefix="flywheel-noise-")
    for k in range(folds):
        train, test = fold != k, fold == k
        splits = Splits(
            Split(torch.from_numpy(x[train]), torch.from_numpy(y[train]), []),
            empty,
            empty,
            list(classes),
        )
        config = TrainConfig(
            seed=seed + k,
            max_epochs=100_000,
            max_steps=max_steps,
            val_fraction=0.0,
            track=False,
            accelerator="cpu",
            cpu_threads=1,  # small models on a busy CPU: one thread beats spinning ones
        )
        fitted = fit(splits, config, size, root_dir=scratch.name)
        model = Probabilities(fitted.module.model.float().cpu().eval())
        with torch.no_grad():
            probs[test] = model(torch.from_numpy(x[test])).numpy()
    scratch.cleanup()
    return probs


def precision_recall(suspects, injected) -> dict:
    """How well the suspects match the known wrong labels."""
    found = {s.item_id if isinstance(s, Suspect) else str(s) for s in suspects}
    injected = {str(i) for i in injected}
    hit = len(found & injected)
    return {
        "suspects": len(found),
        "injected": len(injected),
        "found": hit,
        "precision": hit / len(found) if found else None,
        "recall": hit / len(injected) if injected else None,
    }


def class_balance(labels) -> dict[str, int]:
    from collections import Counter

    return dict(sorted(Counter(str(label) for label in labels).items()))
