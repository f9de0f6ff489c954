"""Boxes, masks and metrics from heatmaps, on tiny maps whose answers are worked out by hand."""

import numpy as np
import pytest
from scipy import ndimage

from camcli.evaluate.metrics import (
    area_under_curve,
    average_drop_increase,
    best_iou,
    box_iou,
    deletion_insertion_curves,
    energy_in_boxes,
    multiply_by_map,
    pointing_hit,
)
from camcli.maps.boxes import box_from_map, draw_box, threshold_mask


def block_map(shape, *blocks):
    """A float32 map that is 0 except for (x0, y0, x1, y1, value) rectangles."""
    heatmap = np.zeros(shape, dtype=np.float32)
    for x0, y0, x1, y1, value in blocks:
        heatmap[y0:y1, x0:x1] = value
    return heatmap


# --- threshold_mask ---------------------------------------------------------------------------------


def test_threshold_keeps_pixels_at_or_above_the_fraction_of_the_maximum():
    heatmap = np.array([[0.0, 0.1, 0.2], [0.3, 0.5, 1.0]], dtype=np.float32)
    assert threshold_mask(heatmap, 0.2).tolist() == [[False, False, True], [True, True, True]]
    assert threshold_mask(heatmap * 4, 0.2).tolist() == [[False, False, True], [True, True, True]]  # relative
    assert threshold_mask(heatmap, 1.0).tolist() == [[False, False, False], [False, False, True]]


def test_threshold_zero_never_keeps_zero_pixels():
    heatmap = np.array([[0.0, 0.5]], dtype=np.float32)
    assert threshold_mask(heatmap, 0.0).tolist() == [[False, True]]


@pytest.mark.parametrize("heatmap", [np.zeros((3, 4)), np.zeros((0, 0)), np.full((2, 2), np.nan)])
def test_empty_map_gives_an_empty_mask_without_warnings(heatmap):
    with np.errstate(all="raise"):
        mask = threshold_mask(heatmap)
    assert mask.dtype == bool and mask.shape == heatmap.shape and not mask.any()


def test_threshold_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match=r"threshold must lie in \[0, 1\]"):
        threshold_mask(np.ones((2, 2)), 1.5)


# --- box_from_map -----------------------------------------------------------------------------------


def test_box_of_the_largest_component_exclusive_ends():
    # A 3x2 block (6 px) and a brighter 1x1 dot: the box covers the larger block, not the peak.
    heatmap = block_map((8, 10), (1, 2, 4, 4, 0.5), (8, 6, 9, 7, 1.0))
    assert box_from_map(heatmap, 0.2) == (1, 2, 4, 4)
    x0, y0, x1, y1 = box_from_map(heatmap, 0.2)
    assert heatmap[y0:y1, x0:x1].min() == 0.5  # slicing with the box gives exactly the block


def test_threshold_decides_which_pixels_form_components():
    heatmap = block_map((6, 6), (0, 0, 3, 3, 0.3), (4, 4, 5, 5, 1.0))
    assert box_from_map(heatmap, 0.2) == (0, 0, 3, 3)  # 0.3 >= 0.2: the 3x3 block is the largest
    assert box_from_map(heatmap, 0.5) == (4, 4, 5, 5)  # 0.3 < 0.5: only the peak is left


def test_diagonal_neighbours_are_connected():
    heatmap = np.eye(4, dtype=np.float32)  # one diagonal line: a single 8-connected component
    heatmap[0, 3] = 1.0  # an isolated pixel (touches nothing diagonally)
    assert box_from_map(heatmap) == (0, 0, 4, 4)


def test_equal_components_prefer_the_one_with_the_peak():
    heatmap = block_map((6, 8), (0, 0, 2, 2, 0.5), (5, 3, 7, 5, 0.5))
    heatmap[4, 6] = 1.0  # the peak lies in the second block
    assert box_from_map(heatmap) == (5, 3, 7, 5)


def test_equal_components_without_the_peak_take_the_first_in_row_major_order():
    heatmap = block_map((6, 8), (5, 0, 7, 2, 0.5), (0, 3, 2, 5, 0.5), (4, 5, 5, 6, 1.0))
    assert box_from_map(heatmap) == (5, 0, 7, 2)


def test_empty_map_has_no_box():
    assert box_from_map(np.zeros((5, 5))) is None


def test_full_map_gives_the_whole_image():
    assert box_from_map(np.ones((3, 7))) == (0, 0, 7, 3)


# --- draw_box -------------------------------------------------------------------------------------


def test_draw_box_outlines_inside_the_box_and_copies():
    image = np.zeros((10, 12, 3), dtype=np.uint8)
    drawn = draw_box(image, (2, 3, 8, 7), color=(0, 255, 0), width=1)
    assert not image.any()  # the input is untouched
    green = drawn[..., 1] == 255
    expected = np.zeros((10, 12), dtype=bool)
    expected[3:7, 2:8] = True
    expected[4:6, 3:7] = False  # the inside stays
    assert (green == expected).all()
    assert (drawn[..., 0] == 0).all() and (drawn[..., 2] == 0).all()


def test_draw_box_auto_width_clipping_and_none():
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    drawn = draw_box(image, (-10, -10, 50, 50), color=(255, 0, 0))
    assert drawn[0:3, 0:50, 0].all() and not drawn[3, 3:47, 0].any()  # 1% of 300 px: 3 px lines
    assert np.array_equal(draw_box(image, None), image)


# --- localization metrics -------------------------------------------------------------------------


def test_a_map_that_is_one_inside_the_box_scores_perfectly():
    box = (2, 1, 6, 4)
    heatmap = block_map((8, 10), (*box, 1.0))
    assert pointing_hit(heatmap, [box])
    assert energy_in_boxes(heatmap, [box]) == 1.0
    assert box_from_map(heatmap) == box
    assert box_iou(box_from_map(heatmap), box) == 1.0


def test_pointing_uses_the_peak_pixel_and_the_tolerance():
    heatmap = block_map((10, 10), (7, 7, 8, 8, 1.0))  # peak at x=7, y=7
    assert not pointing_hit(heatmap, [(0, 0, 7, 7)])  # x1, y1 are exclusive
    assert pointing_hit(heatmap, [(0, 0, 8, 8)])
    assert pointing_hit(heatmap, [(0, 0, 1, 1), (7, 7, 9, 9)])  # any of the boxes
    # The pixel's centre (7.5, 7.5) is 0.5 px right of and below the box (0, 0, 7, 7): hypot = 0.707.
    assert not pointing_hit(heatmap, [(0, 0, 7, 7)], tolerance=0.7)
    assert pointing_hit(heatmap, [(0, 0, 7, 7)], tolerance=0.71)
    assert not pointing_hit(np.zeros((10, 10)), [(0, 0, 10, 10)])  # an empty map never hits


def test_energy_is_the_share_of_mass_in_the_union_of_boxes():
    heatmap = block_map((4, 4), (0, 0, 2, 2, 1.0), (2, 2, 4, 4, 0.5))  # mass 4 + 2 = 6
    assert energy_in_boxes(heatmap, [(0, 0, 2, 2)]) == pytest.approx(4 / 6)
    assert energy_in_boxes(heatmap, [(0, 0, 2, 2), (0, 0, 1, 1)]) == pytest.approx(4 / 6)  # overlap counted once
    assert energy_in_boxes(heatmap, [(0, 0, 2, 2), (3, 3, 4, 4)]) == pytest.approx(4.5 / 6)
    assert energy_in_boxes(heatmap, [(-5, -5, 50, 50)]) == pytest.approx(1.0)  # clipped to the map
    assert energy_in_boxes(heatmap, [(0.4, 0, 1.6, 1)]) == pytest.approx(2 / 6)  # centres 0.5 and 1.5 inside
    assert energy_in_boxes(np.zeros((4, 4)), [(0, 0, 2, 2)]) is None


def test_box_iou_by_hand():
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)  # 1 shared pixel of 4 + 4 - 1
    assert box_iou((0, 0, 4, 2), (0, 0, 2, 2)) == pytest.approx(0.5)
    assert box_iou((0, 0, 1, 1), (1, 1, 2, 2)) == 0.0  # touching corners share nothing
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_best_iou_takes_the_best_box():
    assert best_iou((0, 0, 2, 2), [(5, 5, 6, 6), (0, 0, 4, 2), (1, 1, 3, 3)]) == pytest.approx(0.5)
    assert best_iou(None, [(0, 0, 2, 2)]) == 0.0
    assert best_iou((0, 0, 2, 2), []) == 0.0


# --- faithfulness ---------------------------------------------------------------------------------


def region_score(mask):
    """A fake classifier: class 0's score is the mean of channel 0 over `mask`, class 1 is 1 - that."""
    def score(batch):
        assert batch.dtype == np.float32 and batch.ndim == 4
        value = batch[:, mask, 0].mean(axis=1)
        return np.stack([value, 1.0 - value], axis=1)
    return score


def test_area_under_curve_is_the_trapezoid_rule():
    assert area_under_curve(np.array([0, 0.5, 1.0]), np.array([1.0, 0.0, 0.0])) == pytest.approx(0.25)
    assert area_under_curve(np.linspace(0, 1, 5), np.ones(5)) == pytest.approx(1.0)


def test_deletion_of_the_region_first_drops_the_score_at_the_first_step():
    image = np.ones((4, 4, 3), dtype=np.float32)
    region = np.zeros((4, 4), dtype=bool)
    region[:, 0] = True  # the left column: 4 of the 16 pixels
    saliency = region * 1.0 + 0.1  # the region first, then the rest in row-major order
    curves = deletion_insertion_curves(region_score(region), image, saliency, 0, steps=4, batch_size=3)
    assert curves.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curves.deletion.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert curves.deletion_auc == pytest.approx(0.125)  # one triangle, 0.25 x 1 / 2
    # The blurred start of a constant image is the image: every insertion step scores 1.
    assert curves.insertion.tolist() == pytest.approx([1.0] * 5)
    assert curves.insertion_auc == pytest.approx(1.0)


def test_deletion_of_the_region_last_keeps_the_score_until_the_end():
    image = np.ones((4, 4, 3), dtype=np.float32)
    region = np.zeros((4, 4), dtype=bool)
    region[:, 0] = True
    curves = deletion_insertion_curves(region_score(region), image, 1.0 - region, 0, steps=4)
    assert curves.deletion.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert curves.deletion_auc == pytest.approx(0.875)  # 3 x 0.25 + 0.25 / 2
    # Class 1 is 1 - class 0: the curves follow the class asked for.
    other = deletion_insertion_curves(region_score(region), image, 1.0 - region, 1, steps=4)
    assert other.deletion.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]


def test_insertion_starts_from_the_blurred_image_and_restores_the_region_first():
    image = np.zeros((6, 6, 3), dtype=np.float32)
    region = np.zeros((6, 6), dtype=bool)
    region[2:4, 2:5] = True  # 6 of 36 pixels, so step 1 of 6 inserts exactly the region
    image[region] = 1.0
    start = ndimage.gaussian_filter(image, sigma=(1.5, 1.5, 0))[region, 0].mean()  # the blurred region's mean
    assert 0.1 < start < 0.9
    curves = deletion_insertion_curves(region_score(region), image, region * 1.0, 0, steps=6, blur_sigma=1.5,
                                       baseline=0.0)
    assert curves.insertion[0] == pytest.approx(start, rel=1e-5)
    assert curves.insertion[1:].tolist() == pytest.approx([1.0] * 6)
    assert curves.insertion_auc == pytest.approx((start + 1) / 2 / 6 + 5 / 6, rel=1e-5)
    assert curves.deletion.tolist() == pytest.approx([1.0] + [0.0] * 6)


def test_deletion_uses_the_baseline_value():
    image = np.ones((2, 2, 3), dtype=np.float32)
    region = np.ones((2, 2), dtype=bool)
    curves = deletion_insertion_curves(region_score(region), image, np.ones((2, 2)), 0, steps=2, baseline=0.5)
    assert curves.deletion.tolist() == [1.0, 0.75, 0.5]


def test_curves_refuse_a_saliency_of_the_wrong_size():
    with pytest.raises(ValueError, match="does not match"):
        deletion_insertion_curves(region_score(np.ones((2, 2), bool)), np.ones((2, 2, 3)), np.ones((3, 3)), 0)


def test_average_drop_and_increase_by_hand():
    # Drops: (0.8 - 0.4) / 0.8 = 0.5; 0 (the score rose); (0.5 - 0.5) / 0.5 = 0; (1.0 - 0.0) / 1.0 = 1.
    drop, increase = average_drop_increase([0.8, 0.5, 0.5, 1.0], [0.4, 0.9, 0.5, 0.0])
    assert drop == pytest.approx((0.5 + 0 + 0 + 1) / 4)
    assert increase == pytest.approx(1 / 4)  # only the second rose; equal does not count


def test_average_drop_of_a_zero_score_is_zero_and_no_images_is_an_error():
    assert average_drop_increase([0.0], [0.3]) == (0.0, 1.0)
    with pytest.raises(ValueError, match="at least one image"):
        average_drop_increase([], [])


def test_multiply_by_map_scales_each_pixel():
    rgb = np.full((2, 2, 3), 200, dtype=np.uint8)
    masked = multiply_by_map(rgb, np.array([[1.0, 0.5], [0.0, 0.25]]))
    assert masked.dtype == np.uint8
    assert masked[..., 0].tolist() == [[200, 100], [0, 50]]
