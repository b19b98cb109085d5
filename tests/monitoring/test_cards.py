"""The cards as pure functions: every section, counts per class and collection, annotators
as pseudonyms, rights statements where the catalogue has them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flywheel.cards import (
    DATASET_SECTIONS,
    MODEL_SECTIONS,
    ModelFacts,
    dataset_card,
    model_card,
    pseudonym,
)

CLASSES = ["cat", "dog"]


def _inputs():
    snapshot = pd.DataFrame(
        {
            "item_id": ["a1", "a2", "a3", "b1", "b2"],
            "label": ["cat", "dog", "cat", "dog", "dog"],
            "annotator": [
                "ann@museum.org",
                "ann@museum.org",
                "bo@museum.org",
                "bo@museum.org",
                "bo@museum.org",
            ],
            "annotated_at": pd.to_datetime(
                ["2026-01-02", "2026-01-03", "2026-01-04", "2026-02-01", "2026-03-05"], utc=True
            ),
            "snapshot_id": "abc123",
        }
    )
    catalogue = pd.DataFrame(
        {
            "item_id": ["a1", "a2", "a3", "b1", "b2"],
            "collection": ["prints", "prints", "prints", "maps", "maps"],
            "rights": [
                "http://rightsstatements.org/vocab/InC/1.0/",
                None,
                None,
                "http://rightsstatements.org/vocab/NoC-US/1.0/",
                None,
            ],
        }
    )
    return snapshot, catalogue


def test_dataset_card_sections_and_counts():
    snapshot, catalogue = _inputs()
    card = dataset_card(snapshot, catalogue, CLASSES)
    for section in DATASET_SECTIONS:
        assert f"\n## {section}\n" in card
    assert "| cat | 2 |" in card and "| dog | 3 |" in card
    assert "| maps | 2 | 0 | 2 |" in card and "| prints | 3 | 2 | 1 |" in card
    assert "@" not in card and f"| {pseudonym('bo@museum.org')} | 3 |" in card
    assert "2026-01-02" in card and "2026-03-05" in card
    assert "| http://rightsstatements.org/vocab/InC/1.0/ | 1 |" in card
    assert "3 items have no rights statement" in card


def test_model_card_sections_and_holdout_metrics():
    snapshot, catalogue = _inputs()
    facts = ModelFacts(
        "m",
        "7",
        "run1",
        CLASSES,
        "pixels (8x8)",
        "cnn",
        "trained from scratch",
        "CPU",
        "32-true",
        1,
        "Suggest labels.",
        "Two classes only.",
    )
    card = model_card(facts, snapshot, ["a3", "b2"], np.array([0, 1]), np.array([0, 0]), catalogue)
    for section in MODEL_SECTIONS:
        assert f"\n## {section}\n" in card, section
    assert "accuracy 0.5000" in card
    assert "| prints | 1 | 1.0000 |" in card and "| maps | 1 | 0.0000 |" in card
    assert "| cat | 1 | 1.000 | 0.500 |" in card and "| dog | 1 | 0.000 | - |" in card
    assert "| cat | 1 | 0 |" in card and "| dog | 1 | 0 |" in card  # confusion rows
    assert "Suggest labels." in card and "Two classes only." in card
