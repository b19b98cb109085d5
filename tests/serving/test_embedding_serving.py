"""A head on embeddings served by the real model servers (predictor + transformer, KServe
processes) against a real MLflow and Feast: item ids read the champion's stored vectors,
inline images are embedded by the same function as the feature build, and a backbone
change does not reach the champion trained on the old one."""

from __future__ import annotations

import base64
import uuid

import httpx
import numpy as np
import pytest

from flywheel import services
from flywheel.features import embedding as E
from tests.conftest import make_settings
from tests.features import backbones
from tests.features.catalogue import write_catalogue
from tests.training.test_heads import _snapshot

N_ITEMS = 60


@pytest.fixture(scope="module")
def served(tmp_path_factory, stack):
    """The session's MLflow, a head trained on a tiny backbone's vectors as champion, and
    both model servers supervised from a home of their own."""
    from flywheel.features import build_features, training_set
    from flywheel.registry import promote
    from flywheel.training.run import TrainConfig, train

    root = tmp_path_factory.mktemp("embedding-serving")
    E.load_backbone.cache_clear()
    settings = make_settings(
        root / "home",
        model_name=f"emb-serving-{uuid.uuid4().hex[:6]}",
        champion_poll_s=1.0,
        mlflow_tracking_uri=stack.tracking_uri,
        **backbones.embedding_overrides(root / "bb"),
    )
    catalogue = write_catalogue(settings, N_ITEMS)
    try:
        build_features(settings)
        frame = training_set(_snapshot(N_ITEMS), settings)
        result = train(frame, settings, TrainConfig(max_epochs=5, cpu_threads=1))
        promote(settings, result.version)
        services.up(settings, ["predictor", "transformer"])
        yield settings, result.version, catalogue, root
    finally:
        services.down(settings)


def _predict(settings, instances) -> dict:
    url = f"{settings.url(settings.transformer_port)}/v1/models/{settings.model_name}:predict"
    for _ in range(100):  # until the predictor has loaded the champion
        answer = httpx.post(url, json={"instances": instances}, timeout=60)
        if answer.status_code != 503:
            break
    assert answer.status_code == 200, answer.text
    return answer.json()


def _head(settings, version):
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    return mlflow.pytorch.load_model(f"models:/{settings.model_name}/{version}")


def test_ids_and_inline_images_get_the_same_answer(served):
    import torch

    from flywheel.features.vectors import online_embeddings

    settings, version, catalogue, _ = served
    rep = E.backbone_for(settings).representation_id
    item, path = catalogue["item_id"][5], catalogue["image_path"][5]
    image = base64.b64encode(open(path, "rb").read()).decode()
    answer = _predict(settings, [item, {"image": image}])
    assert answer["model_version"] == version
    by_id, by_image = (np.asarray(p["probabilities"]) for p in answer["predictions"])
    np.testing.assert_allclose(by_id, by_image, atol=1e-5)
    stored = online_embeddings([item], settings, rep)
    with torch.no_grad():
        want = _head(settings, version)(torch.from_numpy(stored)).numpy()[0]
    np.testing.assert_allclose(by_id, want, atol=1e-5)


def test_a_new_backbone_does_not_reach_the_old_champion(served):
    from flywheel.features import build_features

    settings, version, catalogue, root = served
    item, path = catalogue["item_id"][7], catalogue["image_path"][7]
    image = base64.b64encode(open(path, "rb").read()).decode()
    before = _predict(settings, [item, {"image": image}])
    changed = settings.model_copy(update=backbones.embedding_overrides(root / "bb2", seed=11))
    assert build_features(changed).embedding_rows == N_ITEMS
    after = _predict(settings, [item, {"image": image}])
    assert after["model_version"] == version
    for old, new in zip(before["predictions"], after["predictions"], strict=True):
        np.testing.assert_allclose(old["probabilities"], new["probabilities"], atol=1e-6)
