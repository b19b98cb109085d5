"""Round trips through the real stores: offline rows, apply, materialize, online and
point-in-time reads, on the dev box and (where Postgres and Redis run) the cluster setup."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from flywheel.errors import InputError
from flywheel.features import (
    UnknownItemsError,
    online_features,
    online_lookup,
    representation,
    training_set,
)
from flywheel.features.build import read_offline
from tests.features.catalogue import digit_image
from tests.features.conftest import CHANGED, N_ITEMS


def old(i):
    return representation(digit_image(i))


def new(i):
    return representation(digit_image(i, invert=True))


def test_build_is_idempotent_and_appends_changed_images(built):
    settings, (first, rerun, changed) = built
    assert (first.items, first.new_rows, first.total_rows) == (N_ITEMS, N_ITEMS, N_ITEMS)
    assert (rerun.new_rows, rerun.total_rows) == (0, N_ITEMS)
    assert (changed.new_rows, changed.total_rows) == (len(CHANGED), N_ITEMS + len(CHANGED))
    rows = read_offline(settings)
    assert rows.groupby("item_id").size()[CHANGED].tolist() == [2, 2]
    assert rows["pixels"].map(len).eq(64).all()


def test_online_round_trip_keeps_the_order_asked(built):
    settings, _ = built
    ids = ["digits-0007", "digits-0001", "digits-0000", "digits-0007"]
    matrix = online_features(ids, settings)
    assert matrix.dtype == np.float32 and matrix.shape == (4, 64)
    for row, expected in zip(matrix, [old(7), new(1), old(0), old(7)], strict=True):
        np.testing.assert_allclose(row, expected, atol=1e-6)


def test_online_lookup_selects_features_by_name(built):
    settings, _ = built
    rows = online_lookup(["digits-0003", "digits-0004"], settings, ["image_sha256", "collection"])
    assert rows["collection"] == ["digits", "digits"]
    assert all(len(sha) == 64 for sha in rows["image_sha256"])
    with pytest.raises(InputError, match="unknown feature.*colour.*has accession_date"):
        online_lookup(["digits-0003"], settings, ["colour"])


def test_unknown_ids_are_named_not_zeros(built):
    settings, _ = built
    with pytest.raises(UnknownItemsError, match="2 item.*nope-1, nope-2") as info:
        online_features(["digits-0001", "nope-1", "nope-2"], settings)
    assert info.value.item_ids == ["nope-1", "nope-2"]
    assert online_features([], settings).shape == (0, 64)


def test_training_set_is_point_in_time_and_in_snapshot_order(built):
    settings, _ = built
    at = pd.to_datetime
    snapshot = pd.DataFrame(
        {
            "item_id": ["digits-0001", "digits-0005", "digits-0001", "digits-0002", "digits-0005"],
            "label": ["1", "5", "1", "2", "5"],
            "annotated_at": at(
                ["2026-04-01", "2026-01-05", "2026-02-01", "2026-02-15", "2026-01-05"], utc=True
            ),
            "task_id": [10, 11, 12, 13, 14],
        },
        index=[9, 8, 7, 6, 5],
    )
    frame = training_set(snapshot, settings)
    assert list(frame.columns) == ["item_id", "label", "annotated_at", "task_id", "pixels"]
    assert frame["task_id"].tolist() == [10, 11, 12, 13, 14]
    # digits-0001 changed on 2026-03-01: the February label trains on the old image
    for got, want in zip(frame["pixels"], [new(1), old(5), old(1), old(2), old(5)], strict=True):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_training_set_rejects_labels_without_features(built):
    settings, _ = built
    early = pd.DataFrame(
        {
            "item_id": ["digits-0003", "nope"],
            "label": ["3", "0"],
            "annotated_at": [datetime(2025, 6, 1, tzinfo=UTC)] * 2,
        }
    )
    with pytest.raises(UnknownItemsError, match="digits-0003, nope.*annotated_at"):
        training_set(early, settings)
    with pytest.raises(InputError, match="lacks column.*annotated_at"):
        training_set(early.drop(columns="annotated_at"), settings)


def test_each_mode_uses_its_stores(built):
    from flywheel.features import store_for

    settings, _ = built
    config = store_for(settings).config
    expected = {"local": ("sqlite", "sqlite"), "cluster": ("postgresql", "redis")}
    registry_scheme = config.registry.path.split(":")[0].split("+")[0]
    assert (registry_scheme, config.online_store.type) == expected[settings.mode]


def test_a_store_opened_before_the_first_build_catches_up(tmp_path):
    from flywheel.features import build_features
    from tests.conftest import make_settings
    from tests.features.catalogue import write_catalogue

    settings = make_settings(tmp_path / "home")
    with pytest.raises(InputError, match="not registered.*flywheel features build"):
        online_features(["digits-0000"], settings)
    write_catalogue(settings, 3)
    build_features(settings)
    np.testing.assert_allclose(online_features(["digits-0000"], settings)[0], old(0), atol=1e-6)
