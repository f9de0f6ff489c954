"""Masks, boxes and peaks taken from a heatmap: numpy and scipy.ndimage only.

A box is `(x0, y0, x1, y1)` in pixels of the array it was measured on, x to the right and y down,
x0 and y0 inclusive, x1 and y1 exclusive, so `heatmap[y0:y1, x0:x1]` is the box. Nothing here
divides by zero: an all-zero ("empty") map has no mask, no box and no peak.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from camcli.maps.label_settings import DEFAULT_BOX_THRESHOLD  # the CAM paper's 20% of the map's maximum

Box = tuple[int, int, int, int]

_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)  # diagonal neighbours count as connected


def threshold_mask(heatmap: np.ndarray, threshold: float = DEFAULT_BOX_THRESHOLD) -> np.ndarray:
    """Pixels whose value is at least `threshold` times the map's maximum, as a bool (h, w) array.

    Zero pixels are never kept (not even with threshold 0): they carry no evidence. An empty map
    (maximum 0, or not finite) gives an all-False mask.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    heatmap = np.asarray(heatmap, dtype=np.float64)
    peak = float(heatmap.max()) if heatmap.size else 0.0
    if not (math.isfinite(peak) and peak > 0.0):
        return np.zeros(heatmap.shape, dtype=bool)
    return (heatmap >= threshold * peak) & (heatmap > 0.0)


def box_from_map(heatmap: np.ndarray, threshold: float = DEFAULT_BOX_THRESHOLD) -> Box | None:
    """The CAM paper's box (Zhou et al. 2016, Sec. 4.1): `(x0, y0, x1, y1)`, x1 and y1 exclusive.

    Keep the pixels at or above `threshold` x the map's maximum, split them into connected components
    (8-connectivity), and return the bounding box of the largest one. Between components of the same
    size, the one holding the map's peak wins, else the first in row-major order. None for an empty map.
    """
    mask = threshold_mask(heatmap, threshold)
    if not mask.any():
        return None
    components, count = ndimage.label(mask, structure=_EIGHT_NEIGHBOURS)
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    sizes[0] = 0  # label 0 is the background
    largest = np.flatnonzero(sizes == sizes.max())  # labels are numbered in row-major order of their first pixel
    chosen = int(largest[0])
    peak_label = int(components.flat[int(np.argmax(heatmap))])
    if peak_label in largest:
        chosen = peak_label
    rows, cols = ndimage.find_objects(components, max_label=chosen)[chosen - 1]  # one pass, no copy
    return int(cols.start), int(rows.start), int(cols.stop), int(rows.stop)


# An object detector's detection, drawn on each of its maps' overlays: magenta, which no common colour map holds
# (a map's own box, --draw-box, is draw_box's green).
DETECTION_COLOUR = (255, 0, 255)


def draw_box(rgb_uint8: np.ndarray, box: Sequence[float] | None, color: Sequence[int] = (0, 255, 0),
             width: int | None = None) -> np.ndarray:
    """A copy of the RGB image with the box's outline drawn inside its edges.

    width: line width in pixels; None picks about 1% of the image's short side (at least 1).
    A box partly outside the image is clipped; None (no box) returns an unchanged copy.
    """
    image = np.array(rgb_uint8, dtype=np.uint8, copy=True)
    if box is None:
        return image
    height, width_px = image.shape[:2]
    if width is None:
        width = max(1, min(height, width_px) // 100)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = max(0, x0), min(width_px, x1)
    y0, y1 = max(0, y0), min(height, y1)
    if x1 <= x0 or y1 <= y0:
        return image
    colour = np.asarray(color, dtype=np.uint8)
    image[y0:min(y1, y0 + width), x0:x1] = colour  # top edge
    image[max(y0, y1 - width):y1, x0:x1] = colour  # bottom edge
    image[y0:y1, x0:min(x1, x0 + width)] = colour  # left edge
    image[y0:y1, max(x0, x1 - width):x1] = colour  # right edge
    return image


def peak_xy(heatmap: np.ndarray) -> tuple[int, int] | None:
    """(x, y) of the hottest pixel, the first in row-major order; None for an empty map (all zero or not
    finite). The one peak rule: the JSON's `peak`, the pointing game and the tests all use it."""
    heatmap = np.asarray(heatmap)
    peak = float(heatmap.max()) if heatmap.size else 0.0
    if not (math.isfinite(peak) and peak > 0.0):
        return None
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(x), int(y)
