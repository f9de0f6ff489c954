"""Test-time augmentation for `--aug-smooth`: flips and zooms, and mapping the maps back.

Each augmented copy of an image is explained for the same class as the original; its map is then
warped back onto the original's grid and the maps are averaged (the smoothing pytorch-grad-cam
offers through ttach, here with geometric zooms). numpy and scipy only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# (horizontal flip, zoom): the identity first. A zoom above 1 crops into the centre; below 1 it
# shrinks the image and pads the border with 0, the preprocessed "no signal" value.
AUGMENTATIONS: tuple[tuple[bool, float], ...] = (
    (False, 1.0), (True, 1.0), (False, 0.9), (True, 0.9), (False, 1.1), (True, 1.1),
)


def _zoom_matrix(shape: tuple[int, ...], scale: float, axes: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and offset that sample input coordinate c + (o - c) * scale for output coordinate o."""
    diagonal = np.ones(len(shape))
    offset = np.zeros(len(shape))
    for axis in axes:
        centre = (shape[axis] - 1) / 2.0
        diagonal[axis] = scale
        offset[axis] = centre - centre * scale
    return diagonal, offset


def augment_batch(batch: np.ndarray, flip: bool, zoom: float) -> np.ndarray:
    """A preprocessed (B, H, W, 3) batch flipped left-right and zoomed about the centre by `zoom`."""
    out = batch[:, :, ::-1] if flip else batch
    if zoom != 1.0:
        diagonal, offset = _zoom_matrix(out.shape, 1.0 / zoom, axes=(1, 2))
        out = ndimage.affine_transform(out, diagonal, offset=offset, order=1, mode="constant", cval=0.0)
    return np.ascontiguousarray(out, dtype=np.float32)


def restore_map(unit_map: np.ndarray, flip: bool, zoom: float) -> np.ndarray:
    """Warp a (h, w) map of an augmented copy back onto the original's grid; NaN where it saw nothing."""
    out = np.asarray(unit_map, dtype=np.float64)
    if zoom != 1.0:
        diagonal, offset = _zoom_matrix(out.shape, zoom, axes=(0, 1))
        out = ndimage.affine_transform(out, diagonal, offset=offset, order=1, mode="constant", cval=np.nan)
    return out[:, ::-1] if flip else out


def average_maps(maps: list[np.ndarray]) -> np.ndarray:
    """Per-pixel mean over the maps that cover the pixel (the identity map covers every pixel)."""
    stack = np.stack(maps)
    covered = np.isfinite(stack)
    total = np.where(covered, stack, 0.0).sum(axis=0)
    count = covered.sum(axis=0)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)
