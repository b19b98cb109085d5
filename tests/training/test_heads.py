"""Heads on a backbone's embeddings, against the real MLflow server and a real Feast store:
training and registering with the representation recorded, and a backbone change that
makes new features while the champion trained on the old ones keeps being served with
them until a model on the new ones wins promotion on the same holdout."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from flywheel.features import embedding as E
from flywheel.training.run import TrainConfig, train
from tests.conftest import make_settings
from tests.features import backbones
from tests.features.catalogue import write_catalogue

N_ITEMS = 150
FAST = TrainConfig(max_epochs=15, patience=5, cpu_threads=1)


def _snapshot(n: int) -> pd.DataFrame:
    from sklearn.datasets import load_digits

    target = load_digits().target
    return pd.DataFrame(
        {
            "item_id": [f"digits-{i:04d}" for i in range(n)],
            "label": [str(t) for t in target[:n]],
            "annotated_at": pd.Timestamp(datetime(2026, 6, 1, tzinfo=UTC)),
            "snapshot_id": "snap-heads",
        }
    )


@pytest.fixture()
def embedded(tracked, tmp_path):
    """The session's MLflow (`tracked`, tests/training/conftest.py) on a tiny random
    backbone, its features built."""
    from flywheel.features import build_features

    E.load_backbone.cache_clear()
    settings = tracked.model_copy(update=backbones.embedding_overrides(tmp_path / "bb"))
    write_catalogue(settings, N_ITEMS)
    build_features(settings)
    return settings


def test_head_trains_and_registers_with_its_representation(embedded):
    from mlflow import MlflowClient

    from flywheel.features import training_set
    from flywheel.registry.representation import model_representation

    settings = embedded
    frame = training_set(_snapshot(N_ITEMS), settings)
    result = train(frame, settings, FAST)
    backbone = E.backbone_for(settings)
    assert result.version == "1" and result.n_holdout > 0
    assert result.holdout_accuracy > 0.2  # 10 classes: chance is 0.1
    run = MlflowClient(settings.tracking_uri).get_run(result.run_id)
    for record in (run.data.params, run.data.tags):
        assert record["representation"] == backbone.representation_id
        assert record["weights_digest"] == backbone.digest
        assert record["backbone"] == settings.backbone
        assert record["train_mode"] == "head"
    assert run.data.params["arch"] == "linear"
    assert run.data.params["warm_start_from"] == "none"  # no champion yet
    assert run.data.params["feature_service"] == "item_embedding"
    meta = model_representation(settings, result.version)
    assert meta["representation"] == backbone.representation_id
    assert meta["backbone_weights"] == "none" and int(meta["backbone_image_size"]) == 32
    assert json.loads(run.data.params["classes"]) == [str(d) for d in range(10)]


def test_mlp_head_and_mode_errors(embedded):
    from flywheel.errors import InputError
    from flywheel.features import training_set

    frame = training_set(_snapshot(N_ITEMS), embedded)
    result = train(frame, embedded, TrainConfig(arch="mlp", max_epochs=3, track=False))
    assert result.n_train > 0
    pixels_only = frame.drop(columns=["embedding"]).assign(pixels=None)
    with pytest.raises(InputError, match="needs embedding vectors"):
        train(pixels_only, embedded, TrainConfig(mode="head", track=False))
    mixed = frame.copy()
    mixed.loc[0, "representation"] = "another-backbone"
    with pytest.raises(InputError, match="mixes vectors"):
        train(mixed, embedded, TrainConfig(track=False))


def test_backbone_change_keeps_the_old_champion_serving(embedded, tmp_path):
    from mlflow import MlflowClient

    from flywheel.features import build_features, training_set
    from flywheel.features.vectors import online_embeddings
    from flywheel.registry import promote, set_alias
    from flywheel.serving.transformer import Transformer
    from tests.features.test_embedding import _png

    old = embedded
    snapshot = _snapshot(N_ITEMS)
    first = train(training_set(snapshot, old), old, FAST)
    assert promote(old, first.version).promoted
    rep_a = E.backbone_for(old).representation_id

    # the team switches backbone: new features, under their own representation id
    new = old.model_copy(update=backbones.embedding_overrides(tmp_path / "bb2", seed=11))
    built = build_features(new)
    rep_b = built.representation_id
    assert rep_b != rep_a and built.embedding_rows == N_ITEMS

    # the transformer (set up with the NEW backbone) still serves the champion's vectors
    server = Transformer(new.model_name, new.model_copy(update={"champion_poll_s": 0}))
    version, meta = server._champion_meta(refresh=True)
    assert (version, meta["representation"]) == (first.version, rep_a)
    ids = [("id", "digits-0003", None), ("id", "digits-0010", None)]
    np.testing.assert_array_equal(
        server._features(ids, meta), online_embeddings(["digits-0003", "digits-0010"], old, rep_a)
    )
    import base64

    inline = [("image", None, base64.b64encode(_png(3)).decode())]
    want = E.embed_images([_png(3)], old)  # backbone A, though settings now name B
    np.testing.assert_allclose(server._features(inline, meta), want, atol=1e-6)

    # a head on the new vectors: the champion is re-scored on ITS vectors, same holdout
    frame_b = training_set(snapshot, new)
    second = train(frame_b, new, FAST)
    run = MlflowClient(new.tracking_uri).get_run(second.run_id)
    assert run.data.params["representation"] == rep_b
    champion_score = run.data.metrics["champion_holdout_accuracy"]
    assert champion_score == pytest.approx(first.holdout_accuracy)
    decision = promote(new, second.version)
    assert decision.promoted == (second.holdout_accuracy > first.holdout_accuracy)
    expect = rep_b if decision.promoted else rep_a
    assert server._champion_meta(refresh=True)[1]["representation"] == expect

    set_alias(new, "champion", second.version)  # once the new one is champion: its vectors
    version, meta = server._champion_meta(refresh=True)
    assert (version, meta["representation"]) == (second.version, rep_b)
    np.testing.assert_array_equal(
        server._features(ids[:1], meta), online_embeddings(["digits-0003"], new, rep_b)
    )
    # the next head on the same vectors starts from the champion's head
    third = train(frame_b, new, FAST)
    params = MlflowClient(new.tracking_uri).get_run(third.run_id).data.params
    assert params["warm_start_from"] == second.version


def test_pixel_training_is_unchanged_with_embeddings_configured(tmp_path):
    """A frame of pixels still trains from scratch (train mode auto)."""
    from flywheel.training.heads import head_setup

    settings = make_settings(tmp_path / "home", **backbones.embedding_overrides(tmp_path))
    frame = pd.DataFrame({"item_id": ["a"], "label": ["1"], "pixels": [np.zeros(64)]})
    config, column, d, info = head_setup(frame, settings, TrainConfig(arch="cnn"))
    assert (config.mode, column, d, info["representation"]) == ("scratch", "pixels", 64, "pixels")


def test_finetune_trains_registers_and_serves_as_a_head(embedded):
    """Backbone + head on images (Lightning); the fine-tuned backbone becomes a new
    representation in Feast and the registered model is the head on its vectors."""
    from pathlib import Path

    from mlflow import MlflowClient

    from flywheel.features import training_set
    from flywheel.features.vectors import online_embeddings, representations
    from flywheel.registry.representation import model_representation

    settings = embedded
    base = E.backbone_for(settings).representation_id
    frame = training_set(_snapshot(N_ITEMS), settings)
    config = TrainConfig(mode="finetune", max_epochs=2, patience=2, cpu_threads=1)
    result = train(frame, settings, config)
    meta = model_representation(settings, result.version)
    assert meta["train_mode"] == "finetune" and meta["representation"] != base
    assert Path(meta["backbone_weights"]).exists()
    assert set(representations(settings)) == {base, meta["representation"]}
    vectors = online_embeddings(["digits-0000", "digits-0149"], settings, meta["representation"])
    assert vectors.shape == (2, 64)
    run = MlflowClient(settings.tracking_uri).get_run(result.run_id)
    assert run.data.params["base_backbone_weights"] == "none"
    assert run.data.tags["representation"] == meta["representation"]
    assert 0.0 <= result.holdout_accuracy <= 1.0 and result.n_holdout > 0
