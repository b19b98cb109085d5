"""Drift against real services (the session's MLflow and Label Studio, a Feast store of
its own): a champion trained on 200 labelled demo digits; a held-back batch of the same
distribution raises no alarm; the same items inverted (white ink on black becomes black on
white, as a new scanner setting would) are found, reported, logged to MLflow and the most
drifted ones tagged "drift review" in Label Studio.

The served rows are written with the prediction log's own writer (the transformer writes
the same lines; tests/serving covers that path): item-id rows for the held-back batch,
inline-image rows with their representation for the shifted batch."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import pytest

from flywheel.loop import steps
from flywheel.serving.predlog import PredictionLog, Record, log_dir
from tests.monitoring.conftest import N_LABELLED, train_version


@pytest.fixture(scope="module")
def champion(demo):
    """A champion trained on the demo's snapshot, under a model name of its own."""
    settings = demo.settings.model_copy(
        update={"model_name": "drift-model", "drift_review_max": 15}
    )
    version = train_version(demo, settings)
    assert steps.register(version, settings=settings)["promoted"]
    return settings, version, demo.held_back


def _serve(settings, version, rows):
    PredictionLog(log_dir(settings)).write(
        Record(item_id, version, [0.1] * 10, 1.0, source, features)
        for item_id, source, features in rows
    )


def test_held_back_batch_is_not_drift(champion):
    from flywheel.monitoring.drift_check import check_drift

    settings, version, held_back = champion
    since = datetime.now(UTC)
    _serve(settings, version, [(i, "store", None) for i in held_back])
    report = check_drift(settings, since=since)
    assert report.n_current == len(held_back) and report.n_reference == N_LABELLED
    assert not report.drift_found, report.p_values
    assert report.p_values["representation"] > 0.05
    assert report.tagged == 0
    assert "no drift" in open(report.html_path).read()


def test_inverted_batch_is_drift_and_tagged_for_review(champion):
    import mlflow
    from mlflow import MlflowClient

    from flywheel.features import online_features
    from flywheel.labelling import client as lsc
    from flywheel.labelling.review import tagged
    from flywheel.monitoring.drift_check import REVIEW_FIELD, REVIEW_VIEW, check_drift

    settings, version, held_back = champion
    time.sleep(0.01)
    since = datetime.now(UTC)
    inverted = 1.0 - online_features(held_back, settings)
    _serve(
        settings,
        version,
        [(i, "image", v.tolist()) for i, v in zip(held_back, inverted, strict=True)],
    )
    report = check_drift(settings, since=since)
    assert report.drift_found
    assert report.p_values["representation"] < 0.01
    assert [s["slice"] for s in report.slices] == ["(inline images)"]
    # the most drifted items, capped, tagged in Label Studio and listed in the review tab
    assert report.tagged == settings.drift_review_max == len(report.top_items)
    marked = tagged(settings, REVIEW_FIELD)
    assert sorted(marked) == sorted(t["item_id"] for t in report.top_items)
    assert all(tag.startswith("drift-") for tag in marked.values())
    ls = lsc.client(settings)
    project = lsc.get_project(settings, ls)
    assert REVIEW_VIEW in [(v.data or {}).get("title") for v in ls.views.list(project=project.id)]
    # the report and the MLflow run
    page = open(report.html_path).read()
    assert "DRIFT FOUND" in page and page.count("data:image/png;base64,") == 3
    run = MlflowClient(settings.tracking_uri).get_run(report.run_id)
    assert run.data.tags["drift_found"] == "True"
    assert run.data.metrics["p_representation"] < 0.01
    html = mlflow.artifacts.list_artifacts(run_id=report.run_id, tracking_uri=settings.tracking_uri)
    assert any(a.path.endswith(".html") for a in html)


def test_too_few_served_items_is_a_clear_error(champion):
    from flywheel.errors import InputError
    from flywheel.monitoring.drift_check import check_drift

    settings, _, _ = champion
    with pytest.raises(InputError, match="FLYWHEEL_DRIFT_MIN_ITEMS"):
        check_drift(settings, since=datetime.now(UTC))


def test_mmd_finds_a_shift_and_not_a_resample():
    from flywheel.monitoring.drift import mmd_test

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(150, 16)), rng.normal(size=(120, 16))
    assert mmd_test(a, b).p_value > 0.05
    shifted = mmd_test(a, b + 0.5)
    assert shifted.p_value < 0.01 and shifted.witness.shape == (120,)


def test_drift_pipeline_runs_locally(champion):
    """The drift pipeline (kfp.local) over the whole window: both batches, drift found."""
    import json

    from pipelines.run import run_local

    settings, _, held_back = champion
    outputs = run_local(settings, "drift", cache=False)
    assert outputs["drift_found"] is True
    latest = json.loads((settings.data_dir / "monitoring" / "latest.json").read_text())
    assert latest["drift_found"] and latest["n_current"] == 2 * len(held_back)
