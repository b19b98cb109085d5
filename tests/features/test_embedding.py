"""The embedding representation: loading a backbone offline (cache, file, random init),
one embedding function for the feature build and for inline images, and rows of two
backbones kept apart in Feast."""

from __future__ import annotations

import io

import numpy as np
import pytest

from flywheel.errors import InputError, SettingsError
from flywheel.features import embedding as E
from tests.conftest import make_settings
from tests.features import backbones
from tests.features.catalogue import digit_image, write_catalogue


@pytest.fixture(autouse=True)
def _fresh_backbones():
    E.load_backbone.cache_clear()
    yield
    E.load_backbone.cache_clear()


def _png(index: int) -> bytes:
    buf = io.BytesIO()
    digit_image(index).save(buf, format="PNG")
    return buf.getvalue()


def test_pretrained_reads_the_cache_offline(tmp_path, monkeypatch):
    """`pretrained` loads the copy kept in the cache, without the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "cache"
    model = backbones.tiny_model(seed=7)
    model.save_pretrained(cache / "test-org--tiny-resnet")  # as the one download leaves it
    settings = make_settings(
        tmp_path / "home",
        representation="embedding",
        backbone="test-org/tiny-resnet",
        backbone_weights="pretrained",
        backbone_image_size=backbones.SIDE,
        backbone_cache=cache,
    )
    backbone = E.backbone_for(settings)
    assert backbone.digest == E.weights_digest(model)
    assert backbone.representation_id == f"test-org--tiny-resnet-32-{backbone.digest[:12]}"
    vectors = E.embed_images([_png(1), _png(2)], settings)
    assert vectors.shape == (2, 64) and vectors.dtype == np.float32
    # nothing cached and no network: a clear settings error naming what to do
    E.load_backbone.cache_clear()
    missing = settings.model_copy(update={"backbone": "test-org/not-there"})
    with pytest.raises(SettingsError, match="FLYWHEEL_BACKBONE_WEIGHTS"):
        E.backbone_for(missing)


def test_path_loads_a_weights_file(tmp_path):
    """PATH: a safetensors file or a torch state dict for the named architecture."""
    import torch

    path, model = backbones.weights_file(tmp_path, seed=3)
    overrides = backbones.embedding_overrides(tmp_path)
    settings = make_settings(tmp_path / "home", **{**overrides, "backbone_weights": str(path)})
    backbone = E.backbone_for(settings)
    assert backbone.digest == E.weights_digest(model)
    x = E.preprocess(digit_image(5), backbones.SIDE, backbone.mean, backbone.std)[None]
    with torch.inference_mode():
        want = model(pixel_values=torch.from_numpy(x)).pooler_output.reshape(1, -1).numpy()
    np.testing.assert_allclose(E.embed_images([digit_image(5)], settings), want, atol=1e-5)

    pt = tmp_path / "state.pt"
    torch.save({f"resnet.{k}": v for k, v in model.state_dict().items()}, pt)  # prefixed keys
    E.load_backbone.cache_clear()
    same = E.backbone_for(settings.model_copy(update={"backbone_weights": str(pt)}))
    assert same.digest == backbone.digest

    other = backbones.tiny_config(width=48)
    from safetensors.torch import save_file
    from transformers import AutoModel

    wrong = tmp_path / "wrong.safetensors"
    save_file(AutoModel.from_config(other).state_dict(), str(wrong))
    for bad, message in [(wrong, "does not fit"), (tmp_path / "nope.pt", "no such file")]:
        E.load_backbone.cache_clear()
        with pytest.raises(SettingsError, match=message):
            E.backbone_for(settings.model_copy(update={"backbone_weights": str(bad)}))


def test_none_is_the_same_random_backbone_in_every_process(tmp_path):
    settings = make_settings(tmp_path / "home", **backbones.embedding_overrides(tmp_path))
    first = E.backbone_for(settings)
    E.load_backbone.cache_clear()
    assert E.backbone_for(settings).digest == first.digest


def test_unreadable_images_are_input_errors(tmp_path):
    settings = make_settings(tmp_path / "home", **backbones.embedding_overrides(tmp_path))
    with pytest.raises(InputError, match="cannot read"):
        E.embed_images([_png(1), b"not an image"], settings)
    with pytest.raises(InputError, match="cannot read"):
        E.embed_images([_png(1)[:60]], settings)  # truncated: fails at decode


def test_build_stores_the_vector_that_serving_computes(tmp_path):
    """The representation contract: the vector stored by the feature build equals the one
    computed for the same image sent inline (bytes), and a second backbone adds its own
    rows without touching the first's."""
    from flywheel.features import build_features, representation
    from flywheel.features.vectors import online_embeddings, representations

    settings = make_settings(tmp_path / "home", **backbones.embedding_overrides(tmp_path))
    catalogue = write_catalogue(settings, 12)
    first = build_features(settings)
    assert (first.embedding_rows, first.new_rows) == (12, 12)
    rep_a = first.representation_id
    stored = online_embeddings(["digits-0003", "digits-0007"], settings, rep_a)
    paths = dict(zip(catalogue["item_id"], catalogue["image_path"], strict=True))
    inline = [open(paths[i], "rb").read() for i in ("digits-0003", "digits-0007")]
    np.testing.assert_allclose(E.embed_images(inline, settings), stored, atol=1e-6)
    np.testing.assert_allclose(representation(inline[0], settings), stored[0], atol=1e-6)
    assert build_features(settings).embedding_rows == 0  # idempotent

    changed = settings.model_copy(update=backbones.embedding_overrides(tmp_path, seed=11))
    second = build_features(changed)
    rep_b = second.representation_id
    assert rep_b != rep_a and second.embedding_rows == 12 and second.new_rows == 0
    assert set(representations(settings)) == {rep_a, rep_b}
    np.testing.assert_array_equal(
        online_embeddings(["digits-0003", "digits-0007"], settings, rep_a), stored
    )
    assert not np.allclose(online_embeddings(["digits-0003"], settings, rep_b), stored[0])


def test_features_get_json_prints_the_stored_vectors(tmp_path):
    """`flywheel features get ITEM... --json`: pixels, metadata and, with embeddings, the
    configured backbone's vector and representation id; unknown ids: exit 2, one line."""
    import json
    import subprocess
    import sys

    from flywheel.features import build_features
    from flywheel.features.vectors import online_embeddings
    from tests.conftest import ROOT, settings_env

    settings = make_settings(tmp_path / "home", **backbones.embedding_overrides(tmp_path))
    write_catalogue(settings, 4)
    rep = build_features(settings).representation_id
    flywheel = [sys.executable, "-m", "flywheel.cli", "features", "get"]
    env = settings_env(settings)
    out = subprocess.run(
        [*flywheel, "digits-0001", "digits-0002", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert list(rows) == ["digits-0001", "digits-0002"]
    assert rows["digits-0001"]["representation"] == rep
    assert len(rows["digits-0001"]["pixels"]) == 64 and rows["digits-0001"]["collection"]
    np.testing.assert_allclose(
        rows["digits-0002"]["embedding"], online_embeddings(["digits-0002"], settings, rep)[0]
    )
    bad = subprocess.run(
        [*flywheel, "nope-1", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert bad.returncode != 0 and "nope-1" in bad.stdout + bad.stderr
