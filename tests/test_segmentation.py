"""Segmentation from class activation maps: label maps, VOC masks, mIoU and edge-aware refinements."""

import math

import numpy as np
import pytest
from PIL import Image

from camcli.errors import UsageError
from camcli.maps.refine import REFINEMENTS, refine, seed_labels, segment_means
from camcli.maps.segmentation import (
    DEFAULT_SWEEP,
    confusion_matrix,
    iou_per_class,
    label_map,
    mean_iou,
    normalise_maps,
    voc_palette,
)
from camcli.runs.label_files import read_palette_mask, save_label_map
from camcli.runs.layout import is_camcli_png


def _has_pydensecrf():
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


HAS_CRF = _has_pydensecrf()
needs_crf = pytest.mark.skipif(not HAS_CRF, reason="pydensecrf2 is not installed (pip install 'keras-camcli[crf]')")
AVAILABLE = [how for how in REFINEMENTS if how != "crf" or HAS_CRF]

# --- label maps -----------------------------------------------------------------------------------------


def test_label_map_takes_the_argmax_over_threshold_and_maps():
    maps = np.array([[[0.9, 0.2, 0.6],
                      [0.1, 0.0, 0.8]],
                     [[0.3, 0.7, 0.6],
                      [0.2, 0.5, 0.9]]])
    labels = label_map(maps, 0.4)
    assert labels.dtype == np.uint8
    # (0, 2): both maps are 0.6, the lower label wins; (1, 0): both below 0.4; (1, 1): map 2 is 0.5.
    np.testing.assert_array_equal(labels, [[1, 2, 1],
                                           [0, 2, 2]])


def test_label_map_pixel_equal_to_the_threshold_is_background():
    maps = np.array([[[0.5, 0.50001]]])
    np.testing.assert_array_equal(label_map(maps, 0.5), [[0, 1]])


def test_label_map_without_maps_is_all_background():
    labels = label_map(np.zeros((0, 2, 3)), 0.2)
    assert labels.shape == (2, 3) and labels.dtype == np.uint8 and not labels.any()


def test_label_map_refuses_nan_and_too_many_maps():
    with pytest.raises(ValueError, match="NaN"):
        label_map(np.array([[[0.2, np.nan]]]), 0.1)
    with pytest.raises(ValueError, match="at most 254"):
        label_map(np.zeros((255, 1, 1)), 0.1)
    assert label_map(np.ones((254, 1, 1)), 0.1)[0, 0] == 1


def test_normalise_maps_divides_each_map_by_its_own_max():
    maps = np.array([[[2.0, -1.0], [1.0, 4.0]],
                     [[0.0, 0.0], [0.0, 0.0]],
                     [[-3.0, -1.0], [-2.0, 0.0]],
                     [[0.0, 0.5], [0.25, 0.0]]])
    with np.errstate(all="raise"):  # no division by zero for the empty maps
        unit = normalise_maps(maps)
    np.testing.assert_array_equal(unit, [[[0.5, 0.0], [0.25, 1.0]],
                                         [[0.0, 0.0], [0.0, 0.0]],
                                         [[0.0, 0.0], [0.0, 0.0]],
                                         [[0.0, 1.0], [0.5, 0.0]]])
    with pytest.raises(ValueError, match="NaN or infinity"):
        normalise_maps(np.array([[[1.0, np.inf]]]))


def test_default_sweep_runs_from_005_to_095():
    assert len(DEFAULT_SWEEP) == 19
    assert DEFAULT_SWEEP[0] == 0.05 and DEFAULT_SWEEP[9] == 0.5 and DEFAULT_SWEEP[-1] == 0.95


# --- scores --------------------------------------------------------------------------------------------------


TRUTH = np.array([[0, 0, 1, 1],
                  [0, 2, 2, 255],
                  [255, 1, 1, 2]], dtype=np.uint8)
PREDICTED = np.array([[0, 1, 1, 1],
                      [0, 2, 1, 0],
                      [2, 1, 0, 2]], dtype=np.uint8)


def test_confusion_matrix_counts_truth_rows_against_predicted_columns():
    confusion = confusion_matrix(PREDICTED, TRUTH, classes=3)
    assert confusion.dtype == np.int64
    # The two pixels whose truth is 255 are left out, whatever was predicted there.
    np.testing.assert_array_equal(confusion, [[2, 1, 0],
                                              [1, 3, 0],
                                              [0, 1, 2]])


def test_iou_and_mean_iou_from_the_confusion_matrix():
    confusion = confusion_matrix(PREDICTED, TRUTH, classes=4)  # class 3: neither in truth nor predicted
    with np.errstate(all="raise"):  # the absent class is NaN without a 0 / 0
        iou = iou_per_class(confusion)
    # Class 0: TP 2, FP 1, FN 1; class 1: TP 3, FP 2, FN 1; class 2: TP 2, FP 0, FN 1.
    np.testing.assert_allclose(iou[:3], [2 / 4, 3 / 6, 2 / 3])
    assert math.isnan(iou[3])
    assert mean_iou(confusion) == pytest.approx((2 / 4 + 3 / 6 + 2 / 3) / 3)


def test_mean_iou_is_none_without_any_class():
    confusion = confusion_matrix(np.zeros((2, 2)), np.full((2, 2), 255), classes=3)
    assert not confusion.any()
    assert mean_iou(confusion) is None


def test_confusion_matrix_names_a_value_out_of_range():
    with pytest.raises(ValueError, match="truth value 3 "):
        confusion_matrix(np.zeros((1, 2)), np.array([[0, 3]]), classes=3)
    with pytest.raises(ValueError, match="predicted value 7 "):
        confusion_matrix(np.array([[7, 0]]), np.zeros((1, 2)), classes=3)
    with pytest.raises(ValueError, match="predicted value 255 "):  # a prediction may not skip a pixel
        confusion_matrix(np.array([[255, 0]]), np.zeros((1, 2)), classes=3)
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), classes=3)


# --- VOC masks --------------------------------------------------------------------------------------------


def test_voc_palette_colours():
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert [tuple(int(v) for v in palette[i]) for i in (0, 1, 2, 15, 255)] == [
        (0, 0, 0), (128, 0, 0), (0, 128, 0), (192, 128, 128), (224, 224, 192)]


def test_label_map_round_trip_through_a_marked_palette_png(tmp_path):
    labels = np.arange(7 * 9, dtype=np.uint8).reshape(7, 9) % 21
    labels[0, :3] = 255
    path = tmp_path / "masks" / "a.png"
    save_label_map(path, labels)
    assert is_camcli_png(path)
    with Image.open(path) as image:
        assert image.mode == "P"
        assert image.getpalette()[15 * 3:15 * 3 + 3] == [192, 128, 128]
    read = read_palette_mask(path)
    assert read.dtype == np.uint8
    np.testing.assert_array_equal(read, labels)
    assert [p.name for p in path.parent.iterdir()] == ["a.png"]  # no temporary file left


def test_greyscale_mask_is_read_as_is(tmp_path):
    values = np.array([[0, 1, 2], [15, 20, 255]], dtype=np.uint8)
    Image.fromarray(values).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_palette_mask(tmp_path / "grey.png"), values)


def _one_line_usage_error(path):
    with pytest.raises(UsageError) as caught:
        read_palette_mask(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def test_rgb_png_mask_is_refused_with_one_line(tmp_path):
    path = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path)
    assert "this is PNG in mode RGB;" in _one_line_usage_error(path)


def test_corrupt_or_missing_mask_is_refused_with_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert "cannot read it as a segmentation mask" in _one_line_usage_error(corrupt)
    truncated = tmp_path / "truncated.png"
    save_label_map(truncated, np.ones((40, 40), np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:-30])
    assert "cannot read it as a segmentation mask" in _one_line_usage_error(truncated)
    assert "cannot read it as a segmentation mask" in _one_line_usage_error(tmp_path / "missing.png")


# --- refinements -----------------------------------------------------------------------------------------


def _two_halves(size=64):
    """A dark left half and a bright right half (with a little noise), and the right half as truth."""
    rng = np.random.default_rng(0)
    rgb = np.full((size, size, 3), 40.0)
    rgb[:, size // 2:] = 200
    rgb = np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
    truth = np.zeros((size, size), np.uint8)
    truth[:, size // 2:] = 1
    return rgb, truth


def _columns_map(values):
    return np.broadcast_to(values / values.max(), (len(values), len(values)))[None].copy()


def _foreground_iou(maps, truth):
    return iou_per_class(confusion_matrix(label_map(maps, 0.5), truth, classes=2))[1]


# A blurry bump over the right half: above 0.5 only on columns 36..59 (of the true 32..63), and leaking
# into the left half below IRN's seed threshold (0.25 at column 31).
BUMP = _columns_map(np.exp(-(np.arange(64) - 47.5) ** 2 / (2 * 10 ** 2)))
# A blurry step that leaks across the edge: above 0.5 from column 28 on (four columns too early).
LEAK = _columns_map(1 / (1 + np.exp(-(np.arange(64) - 28) / 2.0)))


@pytest.mark.parametrize("how", ["slic", "randomwalk", pytest.param("crf", marks=needs_crf)])
def test_refinement_snaps_a_blurry_map_to_the_edge(how):
    rgb, truth = _two_halves()
    assert _foreground_iou(BUMP, truth) == 24 / 32
    assert _foreground_iou(refine(BUMP, rgb, how), truth) >= 0.9


@pytest.mark.parametrize("how", ["slic", pytest.param("crf", marks=needs_crf)])
def test_refinement_takes_back_a_leak_across_the_edge(how):
    # The random walk cannot: its foreground seeds (map >= 0.30) already cover the leak.
    rgb, truth = _two_halves()
    assert _foreground_iou(LEAK, truth) == 32 / 36
    assert _foreground_iou(refine(LEAK, rgb, how), truth) >= 0.97


@pytest.mark.parametrize("how", AVAILABLE)
def test_refinements_keep_shape_and_range(how):
    rgb, _ = _two_halves(48)
    maps = np.stack([BUMP[0, :48, :48], LEAK[0, :48, :48].T]).astype(np.float32)
    refined = refine(maps, rgb, how)
    assert refined.shape == maps.shape and refined.dtype == np.float32
    assert refined.min() >= 0 and refined.max() <= 1
    assert refine(np.zeros((0, 48, 48)), rgb, how).shape == (0, 48, 48)


def test_none_returns_the_maps_unchanged():
    rgb, _ = _two_halves(8)
    maps = np.linspace(0, 1, 64).reshape(1, 8, 8)
    np.testing.assert_array_equal(refine(maps, rgb, "none"), maps)


def test_a_zero_map_stays_zero_under_slic():
    rgb, _ = _two_halves()
    refined = refine(np.stack([BUMP[0], np.zeros((64, 64))]), rgb, "slic")
    assert refined[0].max() == 1.0 and not refined[1].any()


def test_segment_means_average_each_map_inside_each_segment():
    segments = np.array([[0, 0, 1],
                         [2, 2, 1]])
    maps = np.array([[[1.0, 3.0, 4.0],
                      [0.0, 1.0, 0.0]],
                     [[0.0, 0.0, 0.0],
                      [6.0, 0.0, 0.0]]])
    np.testing.assert_array_equal(segment_means(maps, segments), [[[2.0, 2.0, 2.0],
                                                                   [0.5, 0.5, 2.0]],
                                                                  [[0.0, 0.0, 0.0],
                                                                   [3.0, 3.0, 0.0]]])


def test_seeds_follow_the_confidence_thresholds():
    maps = np.array([[[1.0, 0.80, 0.79, 0.19, 0.6, 0.5]],
                     [[0.0, 0.10, 0.00, 0.19, 0.9, 0.2]]])
    # 1 = confident background (every map < 0.20), k + 1 = confident map k (>= 0.80 and highest), 0 = open.
    np.testing.assert_array_equal(seed_labels(maps), [[2, 2, 0, 1, 3, 0]])


def test_without_confident_background_the_coldest_pixels_are_background_seeds():
    maps = (0.3 + 0.7 * np.arange(100) / 99).reshape(1, 10, 10)  # everywhere >= 0.3
    seeds = seed_labels(maps)
    np.testing.assert_array_equal(np.flatnonzero(seeds == 1), [0, 1, 2, 3, 4])  # 5% of 100 pixels
    assert (seeds[maps[0] >= 0.80] == 2).all()


def test_random_walk_gives_a_class_without_seeds_an_empty_map():
    rgb, truth = _two_halves()
    maps = np.stack([BUMP[0], BUMP[0]])  # equal maps: the first always wins, the second has no seed
    refined = refine(maps, rgb, "randomwalk")
    assert not refined[1].any()
    assert _foreground_iou(refined[:1], truth) >= 0.9


def test_unknown_refinement_lists_the_choices():
    rgb, _ = _two_halves(4)
    with pytest.raises(UsageError, match="unknown refinement 'blur'; choose one of none, slic, randomwalk, crf"):
        refine(np.zeros((1, 4, 4)), rgb, "blur")


def test_crf_without_pydensecrf_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pydensecrf", None)  # makes the import fail
    monkeypatch.setitem(__import__("sys").modules, "pydensecrf.densecrf", None)
    rgb, _ = _two_halves(4)
    with pytest.raises(UsageError, match=r"pip install 'keras-camcli\[crf\]'"):
        refine(np.ones((1, 4, 4)), rgb, "crf")
