"""The representation: box-filtered grey levels in [0, 1], the same from every input form."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from flywheel.errors import InputError, SettingsError
from flywheel.features import representation
from flywheel.features.representation import pixels
from tests.conftest import make_settings
from tests.features.catalogue import digit_image


def test_upscaled_digit_gives_back_its_grey_levels():
    expected = load_digits().images[5].reshape(-1) / 16.0
    vector = pixels(digit_image(5, factor=6))
    assert vector.dtype == np.float32 and vector.shape == (64,)
    assert np.abs(vector - expected).max() <= 1 / 255 + 1e-6


def test_path_bytes_and_image_agree(tmp_path):
    img = digit_image(7)
    img.save(tmp_path / "d.png")
    data = (tmp_path / "d.png").read_bytes()
    forms = [img, data, tmp_path / "d.png", str(tmp_path / "d.png")]
    vectors = [representation(x) for x in forms]
    for v in vectors[1:]:
        np.testing.assert_array_equal(v, vectors[0])


def test_image_size_setting(tmp_path):
    settings = make_settings(tmp_path, image_size=4)
    assert representation(digit_image(1), settings).shape == (16,)


def test_unreadable_image_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="cannot read image bytes"):
        representation(b"not an image")
    with pytest.raises(InputError, match="missing.png"):
        representation(tmp_path / "missing.png")


def test_pluggable_representation(tmp_path):
    settings = make_settings(tmp_path, representation="tests.features.test_representation:mean")
    assert representation(digit_image(3), settings).shape == (1,)
    bad = make_settings(tmp_path, representation="no.such:thing")
    with pytest.raises(SettingsError, match="no.such:thing"):
        representation(digit_image(3), bad)


def mean(image, settings):
    """A stand-in 'embedding model': the mean grey level."""
    return [pixels(image, settings).mean()]
