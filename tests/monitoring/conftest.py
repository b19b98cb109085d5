"""One demo collection for the monitoring tests, on the session's MLflow and Label Studio:
360 demo digits in a project of their own, a random 200 labelled by the demo annotator
(the rest held back), the label snapshot exported and its training set built in Feast."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from pydantic import SecretStr

from flywheel.settings import Settings

N_ITEMS, N_LABELLED = 360, 200


@dataclass
class Demo:
    settings: Settings
    snapshot_id: str
    training_set: str
    held_back: list[str]  # unlabelled items, holdout excluded


@pytest.fixture(scope="session")
def demo(stack) -> Demo:
    from flywheel.labelling import DemoAnnotator, init_demo
    from flywheel.loop import steps
    from flywheel.splits import is_holdout

    settings = stack.model_copy(
        update={
            "home": stack.items_dir / "monitoring-home",  # LS serves files under items only
            "label_studio_project": "monitoring-test",
            "label_studio_token": SecretStr(stack.ls_token),
            "mlflow_experiment": "monitoring-test",
        }
    )
    init_demo(settings, limit=N_ITEMS)
    # A random part is labelled, the rest held back: the demo digits come in blocks by
    # writer, so the first items against the next ones would be a real shift.
    items = [f"digits-{i:04d}" for i in range(N_ITEMS)]
    items = [items[i] for i in np.random.default_rng(0).permutation(N_ITEMS)]
    DemoAnnotator(settings).label(items[:N_LABELLED])
    snap = steps.export_labels(settings=settings)
    path = str(settings.home / "training_set.parquet")
    steps.build_features(snap["snapshot_id"], path, settings=settings)
    held_back = sorted(
        i for i in items[N_LABELLED:] if not is_holdout(i, settings.holdout_fraction)
    )
    return Demo(settings, snap["snapshot_id"], path, held_back)


def train_version(demo: Demo, settings: Settings, **params) -> str:
    """Train and register one version on the demo's training set; returns the version."""
    from flywheel.loop import steps

    params = {"max_epochs": 8, "cpu_threads": 1, **params}
    return steps.train(demo.training_set, demo.snapshot_id, params, settings=settings)[
        "model_version"
    ]
