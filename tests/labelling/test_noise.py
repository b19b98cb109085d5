"""Label-noise review: confident learning finds injected wrong labels (real training)."""

import numpy as np
import pytest

from flywheel.errors import InputError
from flywheel.labelling.noise import (
    class_balance,
    out_of_fold_probabilities,
    precision_recall,
    suspect_label_errors,
)

CLASSES = [str(d) for d in range(10)]


def test_confident_joint_on_crafted_probabilities():
    # items 0-2 labelled "0" with high p0; item 3 labelled "0" but the model is sure of "1"
    p = np.array(
        [
            [0.9, 0.1],
            [0.8, 0.2],
            [0.85, 0.15],
            [0.05, 0.95],
            [0.1, 0.9],
            [0.2, 0.8],
        ]
    )
    labels = ["0", "0", "0", "0", "1", "1"]
    found = suspect_label_errors(labels, p, ["0", "1"], item_ids=list("abcdef"))
    assert [(s.item_id, s.label, s.suggestion) for s in found] == [("d", "0", "1")]
    assert found[0].label_probability == pytest.approx(0.05)
    with pytest.raises(InputError, match="shape"):
        suspect_label_errors(labels, p[:3], ["0", "1"])


def test_noise_detection_recall_on_injected_errors():
    """600 digits, 10 % labels flipped on purpose: most flips are found, few false alarms."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    pick = rng.choice(len(digits.target), 600, replace=False)
    x = (digits.images[pick] / 16.0).reshape(600, 64).astype(np.float32)
    truth = [str(int(t)) for t in digits.target[pick]]
    labels = list(truth)
    flipped = rng.choice(600, 60, replace=False)
    for i in flipped:
        labels[i] = CLASSES[(int(labels[i]) + rng.integers(1, 10)) % 10]
    ids = [f"d{i:04d}" for i in range(600)]
    probs = out_of_fold_probabilities(x, labels, CLASSES, folds=3, seed=0, max_steps=200)
    found = suspect_label_errors(labels, probs, CLASSES, ids)
    score = precision_recall(found, [ids[i] for i in flipped])
    print("noise review on 60 injected errors in 600:", score)
    assert score["injected"] == 60
    assert score["recall"] >= 0.7, score
    assert score["precision"] >= 0.5, score
    assert sum(class_balance(labels).values()) == 600
