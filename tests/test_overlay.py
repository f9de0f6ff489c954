"""Overlay maths: normalising, resizing and colouring maps, with numpy and Pillow only."""

import numpy as np
import pytest

from camcli.errors import UsageError
from camcli.maps.boxes import peak_xy
from camcli.maps.overlay import blend, colormap_lut, colormap_names, normalize_map, upsample


def test_normalize_scales_positive_evidence_to_one():
    unit, raw_max, empty = normalize_map([[-2.0, 0.0], [1.0, 4.0]])
    assert unit.dtype == np.float32
    np.testing.assert_allclose(unit, [[0.0, 0.0], [0.25, 1.0]])
    assert raw_max == 4.0 and empty is False


@pytest.mark.parametrize(
    "raw",
    [
        np.zeros((3, 3)),
        -np.ones((2, 4)),  # only negative evidence: nothing for the class
        [[1.0, np.nan], [2.0, 3.0]],
        [[1.0, np.inf], [2.0, 3.0]],
        [[-np.inf, 1.0]],
        np.full((2, 2), np.nan),
    ],
)
def test_normalize_empty_maps_are_zeros_without_nan(raw):
    unit, raw_max, empty = normalize_map(raw)
    assert empty is True and raw_max == 0.0
    assert unit.shape == np.shape(raw) and unit.dtype == np.float32
    assert not np.isnan(unit).any() and not unit.any()


def test_normalize_tiny_maximum_does_not_overflow():
    unit, raw_max, empty = normalize_map(np.array([[1e-40, 0.0]], dtype=np.float32))
    assert not empty and raw_max > 0
    np.testing.assert_allclose(unit, [[1.0, 0.0]])


def test_normalize_rejects_non_2d():
    with pytest.raises(ValueError, match="2-D"):
        normalize_map(np.zeros((2, 2, 2)))


def test_upsample_shape_and_range():
    unit = np.array([[0.0, 1.0], [0.5, 0.25]], dtype=np.float32)
    big = upsample(unit, height=20, width=30)
    assert big.shape == (20, 30) and big.dtype == np.float32
    assert big.min() >= 0.0 and big.max() <= 1.0
    assert big[0, -1] == pytest.approx(1.0) and big[0, 0] == pytest.approx(0.0)


def test_peak_is_x_y_of_first_maximum():
    heat = np.zeros((4, 5), dtype=np.float32)
    heat[1, 3] = heat[2, 0] = 0.9
    assert peak_xy(heat) == (3, 1)
    assert peak_xy(np.zeros((4, 5))) is None


def test_blend_mixes_image_and_colour():
    rgb = np.full((2, 2, 3), 100, dtype=np.uint8)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[255] = (255, 0, 0)
    heat = np.array([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    out = blend(rgb, heat, 0.4, lut)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [162, 60, 60]  # 0.6 * 100 + 0.4 * 255 = 162
    assert out[1, 1].tolist() == [60, 60, 60]


def test_blend_of_empty_map_returns_the_image_unchanged():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    out = blend(rgb, np.zeros((5, 6), np.float32), 0.5, colormap_lut("jet"))
    np.testing.assert_array_equal(out, rgb)
    assert out is not rgb


def test_blend_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="does not match"):
        blend(np.zeros((2, 2, 3), np.uint8), np.ones((3, 3), np.float32), 0.5, colormap_lut("jet"))


def test_colormap_lut_is_a_cached_read_only_table():
    lut = colormap_lut("viridis")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert colormap_lut("viridis") is lut
    assert not lut.flags.writeable
    assert colormap_lut("gray")[0].tolist() == [0, 0, 0]
    assert colormap_lut("gray")[255].tolist() == [255, 255, 255]


def test_colormap_names_lists_matplotlib_maps():
    names = colormap_names()
    assert {"jet", "viridis", "turbo", "gray"} <= set(names)
    assert names == sorted(names)


def test_unknown_colormap_suggests_close_names():
    with pytest.raises(UsageError) as info:
        colormap_lut("jte")
    message = str(info.value)
    assert message.startswith("unknown colormap 'jte'; did you mean ")
    assert "jet" in message
    assert "see `camcli explain --help`" in message


def test_unknown_colormap_without_close_names():
    with pytest.raises(UsageError, match=r"^unknown colormap 'zzzzzzzz' \(see `camcli explain --help`\)$"):
        colormap_lut("zzzzzzzz")


def test_upsample_takes_its_size_by_keyword_only():
    """numpy's (h, w) and Pillow's (w, h) cannot be passed in the wrong order without a word."""
    unit = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(TypeError):
        upsample(unit, (30, 20))
    assert upsample(unit, height=20, width=30).shape == (20, 30)
