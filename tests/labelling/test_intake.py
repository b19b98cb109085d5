"""Intake of what collections hold: formats, colour modes, rejected files, re-runs, copies,
near-duplicate groups (files the tests write; no Label Studio needed)."""

import json
import os

import numpy as np
import pytest
from PIL import Image, ImageCms

from flywheel.errors import InputError
from flywheel.labelling.acquisition import spread_near_duplicates
from flywheel.labelling.collection import add_collection, read_catalogue
from flywheel.labelling.intake import Limits, is_safe_id, make_card, pages_of

RED, BLUE = (200, 30, 30), (30, 30, 200)


def _rgb(width=200, height=120):
    """Left half red, right half blue: colours and orientation are both checkable."""
    a = np.zeros((height, width, 3), np.uint8)
    a[:, : width // 2] = RED
    a[:, width // 2 :] = BLUE
    return a


def _write_formats(folder):
    im = Image.fromarray(_rgb())
    im.save(folder / "jpeg.jpg", quality=95)
    im.save(folder / "png.png")
    im.save(folder / "webp.webp", lossless=True)
    im.save(folder / "bmp.bmp")
    im.save(folder / "jp2.jp2")
    im.quantize(8).save(folder / "gif.gif")
    im.save(folder / "tif-lzw.tif", compression="tiff_lzw")
    im.save(folder / "tif-deflate.tif", compression="tiff_adobe_deflate")
    im.save(folder / "tif-jpeg.tif", compression="jpeg", quality=95)
    import pyvips

    rgb16 = pyvips.Image.new_from_array(_rgb().astype(np.uint16) * 257)
    rgb16.copy(interpretation="rgb16").tiffsave(str(folder / "tif-16bit.tif"), compression="lzw")


def _write_modes(folder):
    im = Image.fromarray(_rgb())
    im.convert("CMYK").save(folder / "cmyk.jpg")
    im.convert("CMYK").save(folder / "cmyk-tif.tif")
    grey16 = np.tile(np.linspace(0, 65535, 200), (120, 1)).astype(np.uint16)
    Image.fromarray(grey16).save(folder / "grey16.png")
    Image.fromarray(grey16).save(folder / "grey16-tif.tif")
    im.quantize(16).save(folder / "palette.png")
    alpha = np.dstack([_rgb(), np.zeros((120, 200), np.uint8)])
    alpha[:, :100, 3] = 255  # left half opaque red, right half transparent
    Image.fromarray(alpha).save(folder / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(folder / "exif-rotated.jpg", exif=exif.tobytes(), quality=95)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    im.save(folder / "icc.jpg", icc_profile=srgb, quality=95)


def _close(pixel, colour, tol=12):
    return all(abs(int(a) - b) <= tol for a, b in zip(pixel, colour, strict=True))


def test_every_format_and_colour_mode_becomes_an_srgb_card(settings, tmp_path):
    src = tmp_path / "Scans"
    src.mkdir()
    _write_formats(src)
    _write_modes(src)
    result = add_collection(settings, src, register=False)
    assert result.rejected == [], [(o.file, o.reason) for o in result.rejected]
    cat = read_catalogue(settings).set_index("item_id")
    assert len(cat) == 18
    for item_id, row in cat.iterrows():
        card = Image.open(row.image_path)
        assert card.format == "PNG" and card.mode in ("RGB", "L"), item_id
        assert max(card.size) <= settings.card_size
        assert row.source.startswith(str(src)) and row.phash and len(row.image_sha256) == 64
        px = np.asarray(card.convert("RGB"))
        if "grey16" in item_id:
            assert card.mode == "L" and px[0, 0, 0] < 10 and px[0, -1, 0] > 245
        elif "exif" in item_id:
            assert card.size == (120, 200)  # turned upright
            assert _close(px[5, 60], RED) and _close(px[-5, 60], BLUE)
        elif "cmyk" in item_id:
            assert px[5, 5, 0] > px[5, 5, 2] and px[5, -5, 2] > px[5, -5, 0]  # red | blue
        elif "alpha" in item_id:
            assert _close(px[5, 5], RED) and _close(px[5, -5], (255, 255, 255), 1)
        else:
            assert _close(px[5, 5], RED, 16) and _close(px[5, -5], BLUE, 16), item_id
    # masters stay where they were: only cards under the home
    assert not list((settings.data_dir / "items").rglob("*.jp2"))


def test_multipage_tiff_first_page_or_one_item_per_page(settings, tmp_path):
    src = tmp_path / "pages"
    src.mkdir()
    pages = [Image.new("RGB", (90, 60), c) for c in ("red", "green", "blue")]
    pages[0].save(src / "book.tif", save_all=True, append_images=pages[1:], compression="tiff_lzw")
    add_collection(settings, src, register=False)
    assert list(read_catalogue(settings).item_id) == ["pages-book"]
    each = settings.model_copy(update={"intake_pages": "each", "home": settings.home / "each"})
    add_collection(each, src, register=False)
    cat = read_catalogue(each)
    assert list(cat.item_id) == ["pages-book-p001", "pages-book-p002", "pages-book-p003"]
    colours = [np.asarray(Image.open(p).convert("RGB"))[0, 0] for p in cat.image_path]
    assert [int(np.argmax(c)) for c in colours] == [0, 1, 2]
    assert len(set(cat.dup_group)) == 1 and cat.dup_group.iloc[0]  # pages of one master


def _bad_folder(tmp_path):
    src = tmp_path / "batch"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(_rgb()).save(src / "good.jpg")
    Image.fromarray(_rgb()).save(src / "sub" / "good2.png")
    (src / "empty.tif").write_bytes(b"")
    (src / "notanimage.png").write_text("hello, I am text")
    data = (src / "good.jpg").read_bytes()
    (src / "truncated.jpg").write_bytes(data[: len(data) * 2 // 3])
    os.symlink("/etc/passwd", src / "passwd.png")
    os.symlink(src / "good.jpg", src / "inside-link.jpg")  # stays in the folder: allowed
    Image.fromarray(_rgb()).save(src / "a b.png")
    Image.fromarray(_rgb()).save(src / "a-b.png")  # same id as "a b.png"
    (src / "notes.txt").write_text("not an image")
    return src


def test_bad_files_are_rejected_by_name_and_the_rest_added(settings, tmp_path):
    src = _bad_folder(tmp_path)
    meta = tmp_path / "meta.csv"
    meta.write_text("file,item_id\nsub/good2.png,../../escape\n")
    result = add_collection(settings, src, meta, register=False)
    reasons = {o.file: o.reason for o in result.rejected}
    assert set(reasons) == {
        "empty.tif",
        "notanimage.png",
        "truncated.jpg",
        "passwd.png",
        "a-b.png",
        "sub/good2.png",
    }
    assert reasons["empty.tif"] == "an empty file"
    assert "not a readable image" in reasons["notanimage.png"]
    assert "premature end" in reasons["truncated.jpg"]
    assert "outside the folder" in reasons["passwd.png"]
    assert "a b.png" in reasons["a-b.png"]  # a collision names both files
    assert "unsafe item id" in reasons["sub/good2.png"]
    assert sorted(read_catalogue(settings).item_id) == [
        "batch-a-b",
        "batch-good",
        "batch-inside-link",
    ]
    report = json.loads(result.report_path.read_text())
    assert {f["file"] for f in report["files"] if f["status"] == "rejected"} == set(reasons)
    csv_rows = result.report_path.with_suffix(".csv").read_text().splitlines()
    assert sum(",rejected," in line for line in csv_rows) == 6
    again = add_collection(settings, src, meta, register=False)  # links included
    assert again.count("added") == again.count("changed") == 0 and again.count("unchanged") == 3
    # nothing written outside the items folder
    written = {p.name for p in (settings.data_dir / "items").rglob("*") if p.is_file()}
    assert written == {"batch-a-b.png", "batch-good.png", "batch-inside-link.png"}


def test_nothing_added_is_an_error_naming_each_file(settings, tmp_path):
    src = tmp_path / "junk"
    src.mkdir()
    (src / "x.png").write_bytes(b"")
    (src / "y.jpg").write_text("text")
    with pytest.raises(InputError) as info:
        add_collection(settings, src, register=False)
    assert "x.png: an empty file" in str(info.value) and "y.jpg: not a readable" in str(info.value)


def test_safe_ids():
    assert is_safe_id("box-1_a.b") and not is_safe_id("../x") and not is_safe_id("/etc")
    assert not is_safe_id("a..b") and not is_safe_id("a/b") and not is_safe_id(".hidden")


def test_rerun_adds_nothing_and_a_change_is_seen(settings, tmp_path):
    src = tmp_path / "run"
    src.mkdir()
    for i in range(20):
        Image.fromarray(np.full((40, 40, 3), i * 10, np.uint8)).save(src / f"{i:02d}.png")
    first = add_collection(settings, src, register=False)
    assert first.count("added") == 20
    before = read_catalogue(settings)
    again = add_collection(settings, src, register=False)
    assert again.count("unchanged") == 20 and again.count("added") == again.count("changed") == 0
    assert read_catalogue(settings).equals(before)
    Image.fromarray(np.full((40, 40, 3), 255, np.uint8)).save(src / "03.png")
    third = add_collection(settings, src, register=False)
    assert [o.file for o in third.outcomes if o.status == "changed"] == ["03.png"]


def test_copy_mode_keeps_a_copy_of_each_master(settings, tmp_path):
    src = tmp_path / "moving"
    src.mkdir()
    Image.fromarray(_rgb()).save(src / "m.tif")
    copying = settings.model_copy(update={"intake_copy_masters": True})
    add_collection(copying, src, register=False)
    row = read_catalogue(copying).iloc[0]
    assert row.source == str(copying.data_dir / "masters" / "moving" / "moving-m.tif")
    assert open(row.source, "rb").read() == (src / "m.tif").read_bytes()


def test_decompression_bomb_limit_is_a_setting(settings, tmp_path):
    src = tmp_path / "big"
    src.mkdir()
    Image.new("L", (300, 300)).save(src / "big.png")
    Image.new("L", (300, 300)).save(src / "big.jp2")
    small = settings.model_copy(update={"intake_max_pixels": 50_000})
    with pytest.raises(InputError, match="decompression-bomb limit of 50,000"):
        add_collection(small, src, register=False)
    limits = Limits(64, 50_000, "first")
    with pytest.raises(Exception, match="FLYWHEEL_INTAKE_MAX_PIXELS"):
        pages_of(src / "big.jp2", limits)


def test_large_master_card_is_small(tmp_path):
    path = tmp_path / "master.tif"
    Image.new("RGB", (4000, 3000), "white").save(path, compression="tiff_lzw")
    card = make_card(path, 0, Limits(480, 10**9, "first"))
    assert card.size == (480, 360)


def test_near_duplicates_are_grouped_and_kept_out_of_one_batch(settings, tmp_path):
    src = tmp_path / "dups"
    src.mkdir()
    rng = np.random.default_rng(0)
    base = (rng.random((64, 64)) * 255).astype(np.uint8)
    Image.fromarray(base).resize((256, 256)).save(src / "scan.png")
    Image.fromarray(base).resize((256, 256)).save(src / "rescan.jpg", quality=80)  # again
    other = (rng.random((64, 64)) * 255).astype(np.uint8)
    Image.fromarray(other).resize((256, 256)).save(src / "card7_recto.png")
    Image.fromarray(255 - other.T).resize((256, 256)).save(src / "card7_verso.png")
    Image.fromarray((rng.random((64, 64)) * 255).astype(np.uint8)).save(src / "alone.png")
    add_collection(settings, src, register=False)
    cat = read_catalogue(settings).set_index("item_id")
    groups = cat.dup_group.to_dict()
    assert groups["dups-scan"] == groups["dups-rescan"] != ""
    assert groups["dups-card7_recto"] == groups["dups-card7_verso"] != ""
    assert groups["dups-scan"] != groups["dups-card7_recto"] and groups["dups-alone"] == ""
    ranked = ["dups-rescan", "dups-card7_verso", "dups-scan", "dups-card7_recto", "dups-alone"]
    batch = spread_near_duplicates(ranked, {k: v for k, v in groups.items() if v}, 5)
    assert batch == ["dups-rescan", "dups-card7_verso", "dups-alone"]


def test_quarantine_store(settings):
    from flywheel.labelling import quarantine as q

    assert q.read(settings) == {} and q.quarantined_ids(settings) == set()
    q.quarantine(settings, "a", "features", "OSError: image file is truncated", "h1")
    q.add_many(settings, [("b", "scoring", "UnknownItemsError: b", "")])
    assert q.quarantined_ids(settings) == {"a", "b"}
    assert q.read(settings)["a"]["reason"] == "OSError: image file is truncated"
    assert q.release(settings, ["a", "zzz"]) == 1 and q.quarantined_ids(settings) == {"b"}
    q.store_path(settings).write_text("{broken")  # a damaged store never stops the loop
    assert q.read(settings) == {}
