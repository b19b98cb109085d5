"""Architectures, data checks and splits (no services)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from flywheel.errors import InputError
from flywheel.splits import is_holdout
from flywheel.training.data import DeviceBatches, prepare
from flywheel.training.model import ARCHS, Probabilities, build_model

CLASSES = [str(d) for d in range(10)]


@pytest.mark.parametrize("arch", ARCHS)
def test_architectures_take_flat_pixels(arch):
    model = build_model(arch, 10, 8, width=4 if arch != "cnn" else None)
    probs = Probabilities(model).eval()(torch.rand(3, 64))
    assert probs.shape == (3, 10)
    assert torch.allclose(probs.sum(dim=1), torch.ones(3))


def test_resnet50_is_resnet50_sized():
    model = build_model("resnet50", 1000, 224, in_channels=3)
    assert sum(p.numel() for p in model.parameters()) == 25_557_032  # as torchvision's


def test_unknown_arch_is_an_input_error():
    with pytest.raises(InputError, match="unknown model architecture 'vgg'"):
        build_model("vgg", 10, 8)


def test_splits_follow_the_fixed_holdout(digits):
    splits = prepare(digits, CLASSES, 64, 0.2, 0.1)
    assert all(is_holdout(i, 0.2) for i in splits.holdout.item_ids)
    assert not any(is_holdout(i, 0.2) for i in splits.train.item_ids + splits.val.item_ids)
    assert len(splits.train) + len(splits.val) + len(splits.holdout) == len(digits)
    assert 0.15 < len(splits.holdout) / len(digits) < 0.25
    again = prepare(digits.sample(frac=1.0, random_state=1), CLASSES, 64, 0.2, 0.1)
    assert set(again.val.item_ids) == set(splits.val.item_ids)


def test_class_weights_balance_a_skewed_set(digits):
    skewed = digits[(digits.label != "1") | (digits.index % 10 == 0)]
    w = prepare(skewed, CLASSES, 64, 0.2, 0.1).class_weights()
    assert w[1] > 3 * w[0]


def test_ddp_shards_have_equal_length(digits):
    split = prepare(digits, CLASSES, 64, 0.2, 0.1).train
    shards = [list(DeviceBatches(split, 64, True, 0, rank, 3)) for rank in range(3)]
    assert len({len(s) for s in shards}) == 1
    assert len({sum(len(b[1]) for b in s) for s in shards}) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.iloc[:0], "empty"),
        (lambda f: f.assign(label="3"), "only one class"),
        (lambda f: f.assign(label=f.label.where(f.index != 5, "cat")), "'cat'"),
        (
            lambda f: f.assign(
                pixels=[
                    np.full(64, np.nan, np.float32) if i == 7 else p for i, p in enumerate(f.pixels)
                ]
            ),
            "NaN .* digits-0007",
        ),
        (lambda f: f.assign(pixels=[p[:60] for p in f.pixels]), "length 64"),
        (lambda f: f.drop(columns="pixels"), "lacks column"),
        (lambda f: f.iloc[:3], "holdout"),
        (lambda f: f.assign(item_id="same"), "more than once"),
    ],
)
def test_bad_training_data_is_refused(digits, change, message):
    with pytest.raises(InputError, match=message):
        prepare(change(digits), CLASSES, 64, 0.2, 0.1)


def test_core_imports_without_the_platform_stack():
    """The GPU image has torch + Lightning only: the entry point's core must not need
    mlflow, feast, kfp, kserve, pydantic(-settings), typer, pandas or sklearn (rich
    is left alone: Lightning decides itself whether it has it)."""
    code = """
import sys
for name in ("mlflow", "feast", "kfp", "kserve", "pydantic_settings", "pydantic", "typer",
             "pandas", "sklearn"):
    sys.modules[name] = None  # makes `import name` fail, as if not installed
from flywheel.training.run import main
assert main(["--synthetic", "64", "--arch", "resnet18", "--width", "4", "--no-track",
             "--max-steps", "3", "--warmup", "1", "--batch-size", "16"]) == 0
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"mlflow_imported": false' in out.stdout
