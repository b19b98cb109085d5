"""Fixtures for the training and registry tests: the digits as a training frame, and
settings on the session's real MLflow server with a model name of the test's own."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest


def digits_frame() -> pd.DataFrame:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return pd.DataFrame(
        {
            "item_id": [f"digits-{i:04d}" for i in range(len(digits.target))],
            "label": [str(t) for t in digits.target],
            "pixels": list((digits.data / 16.0).astype(np.float32)),
            "snapshot_id": "snap-test",
        }
    )


@pytest.fixture(scope="session")
def digits() -> pd.DataFrame:
    return digits_frame()


@pytest.fixture()
def tracked(stack, tmp_path):
    """The session stack's settings with a fresh registered-model name and experiment."""
    tag = uuid.uuid4().hex[:8]
    return stack.model_copy(
        update={
            "model_name": f"test-model-{tag}",
            "mlflow_experiment": f"test-{tag}",
            "home": tmp_path / "home",
        }
    )
