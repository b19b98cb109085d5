"""State crossing pods through a real S3 server: what one home writes, another reads.

Each `home` stands for a pod with its own empty disk; only `state_uri` (s3://) is shared."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flywheel import objectstore
from flywheel.errors import InputError
from flywheel.features import build_features, training_set
from flywheel.labelling import collection, read_snapshot
from flywheel.labelling.export import snapshot_frame, snapshot_uri, write_snapshot
from flywheel.training.data import prepare, read_frame
from tests.features.catalogue import digit_image

N = 30


def _images(folder):
    folder.mkdir(parents=True)
    for i in range(N):
        digit_image(i).save(folder / f"card-{i:02d}.png")
    return folder


def test_bytes_and_parquet_round_trip(s3_settings):
    s = s3_settings("a")
    uri = objectstore.state_uri(s, "x", "y.bin")
    assert uri.startswith("s3://") and not objectstore.exists(s, uri)
    objectstore.write_bytes(s, uri, b"\x00flywheel")
    assert objectstore.read_bytes(s3_settings("b", state_uri=s.state_uri), uri) == b"\x00flywheel"
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    objectstore.write_parquet(s, frame, uri + ".parquet")
    pd.testing.assert_frame_equal(objectstore.read_parquet(s, uri + ".parquet"), frame)
    with pytest.raises(InputError, match="no object at s3://"):
        objectstore.read_bytes(s, objectstore.state_uri(s, "missing"))


def test_snapshot_and_training_set_cross_homes(s3_settings, tmp_path):
    export_home = s3_settings("export")  # adds the collection, exports the labels
    features_home = s3_settings("features", state_uri=export_home.state_uri)
    train_home = s3_settings("train", state_uri=export_home.state_uri)

    # the collection: images and catalogue go to S3, nothing under the home
    added = collection.add_images(export_home, _images(tmp_path / "cards"), register=False)
    assert all(p.startswith("s3://") for p in added.image_path)
    assert not export_home.catalogue_path.exists()

    # the snapshot: written from one home...
    rows = [
        {
            "item_id": item,
            "label": str(i % 10),
            "annotator": "a@b.c",
            "annotated_at": "2030-01-01T00:00:00Z",
            "task_id": i,
        }
        for i, item in enumerate(added.item_id)
    ]
    frame, sid = snapshot_frame(rows)
    uri = write_snapshot(export_home, frame, sid)
    assert uri == snapshot_uri(features_home, sid) and uri.startswith("s3://")
    assert not export_home.snapshot_dir.exists()  # (intake's scratch cards may be there)

    # ...read in another: features from the S3 catalogue and images, training set to S3
    snap = read_snapshot(features_home, sid)
    pd.testing.assert_frame_equal(snap, frame)
    built = build_features(features_home)
    assert built.items == N and built.new_rows == N
    train_set = training_set(snap, features_home)
    train_uri = objectstore.state_uri(features_home, "runs", "r1", "training_set.parquet")
    objectstore.write_parquet(features_home, train_set, train_uri)

    # ...and the training pod reads it by URI, with nothing on its own disk
    got = read_frame(train_home, train_uri)
    assert list(got.item_id) == list(train_set.item_id)
    assert got["pixels"].iloc[0].dtype == np.float32
    np.testing.assert_allclose(np.stack(got.pixels), np.stack(train_set.pixels))
    splits = prepare(got, train_home.label_classes, 64, train_home.holdout_fraction)
    assert len(splits.train) + len(splits.val) + len(splits.holdout) == N
    assert not train_home.home.exists() or not any(train_home.data_dir.rglob("*.parquet"))


def test_missing_training_set_names_the_uri(s3_settings):
    s = s3_settings("a")
    with pytest.raises(InputError, match="no such file: s3://"):
        read_frame(s, objectstore.state_uri(s, "nope.parquet"))
