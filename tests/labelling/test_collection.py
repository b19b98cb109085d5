"""The demo cards, the catalogue and `add_images` on disk (no Label Studio needed)."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from flywheel.errors import InputError
from flywheel.labelling import add_images, init_demo, read_answers, read_catalogue, render_card
from flywheel.labelling.collection import CATALOGUE_COLUMNS


def test_card_downscales_back_to_the_digit():
    digits = load_digits()
    for i in range(0, 1797, 97):
        card = render_card(digits.images[i])
        assert card.size == (64, 64) and card.mode == "L"
        back = np.asarray(card.resize((8, 8), Image.Resampling.BOX), dtype=np.float32) / 255
        np.testing.assert_allclose(back, digits.images[i] / 16, atol=1 / 510)


def test_demo_catalogue_and_answer_key(settings):
    rows = init_demo(settings, limit=25, register=False)
    cat = read_catalogue(settings)
    assert list(cat.columns) == CATALOGUE_COLUMNS
    assert list(cat.item_id) == [f"digits-{i:04d}" for i in range(25)] == list(rows.item_id)
    assert str(cat.updated_at.dtype) == "datetime64[ns, UTC]"
    assert set(cat.collection) == {"digits"}
    assert all(
        settings.data_dir / "items" / "digits" in p.parents
        for p in map(__import__("pathlib").Path, cat.image_path)
    )
    pd.to_datetime(cat.accession_date, format="%Y-%m-%d")  # ISO dates
    answers = read_answers(settings)
    assert answers["digits-0000"] == "0" and len(answers) == 25
    # a second run keeps the first-seen time of unchanged images
    init_demo(settings, limit=25, register=False)
    again = read_catalogue(settings)
    assert (again.updated_at == cat.updated_at).all() and len(again) == 25


def _png(path, value):
    Image.fromarray(np.full((16, 16), value, dtype=np.uint8), mode="L").save(path)


def test_add_folder_with_metadata(settings, tmp_path):
    src = tmp_path / "My Scans"
    (src / "box1").mkdir(parents=True)
    _png(src / "a.png", 10)
    _png(src / "box1" / "b.PNG", 20)
    Image.new("RGB", (10, 10), "red").save(src / "c.jpg")
    (src / "notes.txt").write_text("not an image")
    meta = tmp_path / "meta.csv"
    meta.write_text("file,item_id,accession_date\nbox1/b.PNG,scan-b,1999-12-31\n")
    rows = add_images(settings, src, meta, register=False)
    assert sorted(rows.item_id) == ["My-Scans-a", "My-Scans-c", "scan-b"]
    cat = read_catalogue(settings).set_index("item_id")
    assert cat.at["scan-b", "accession_date"] == "1999-12-31"
    assert set(cat.collection) == {"My-Scans"}
    # a changed image keeps its id and gets a new hash and time
    before = cat.loc["My-Scans-a"]
    _png(src / "a.png", 99)
    add_images(settings, src, meta, register=False)
    after = read_catalogue(settings).set_index("item_id").loc["My-Scans-a"]
    assert after.image_sha256 != before.image_sha256 and after.updated_at > before.updated_at


def test_bad_folders_are_named(settings, tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        add_images(settings, tmp_path / "missing", register=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        add_images(settings, tmp_path / "empty", register=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="x.png: not a readable image"):
        add_images(settings, broken, register=False)
    good = tmp_path / "good"
    good.mkdir()
    _png(good / "a.png", 1)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("name\na.png\n")
    with pytest.raises(InputError, match="needs a `file` column"):
        add_images(settings, good, bad_csv, register=False)
    bad_csv.write_text("file,accession_date\nzzz.png,2020-01-01\n")
    with pytest.raises(InputError, match="'zzz.png', which is not an image"):
        add_images(settings, good, bad_csv, register=False)
    bad_csv.write_text("file,accession_date\na.png,yesterday\n")
    with pytest.raises(InputError, match="not an ISO date"):
        add_images(settings, good, bad_csv, register=False)


def test_read_catalogue_without_one(settings):
    with pytest.raises(InputError, match="flywheel collection init"):
        read_catalogue(settings)
