"""Weakly supervised segmentation from class activation maps: label maps, VOC masks and mIoU.

A class activation map says where a class is, not where it ends. Turning K maps into a label map
(background or one of the K classes per pixel) and scoring it against VOC's `SegmentationClass` masks
is the standard benchmark of weakly supervised semantic segmentation (PSA: Ahn & Kwak, CVPR 2018;
IRN: Ahn, Cho & Kwak, CVPR 2019; AMN: Lee, Kim & Shim, CVPR 2022). Numpy, and Pillow to resize label
maps; the mask files are read and written by camcli.runs.label_files.
"""

import numpy as np
from PIL import Image

from camcli.maps.label_settings import DEFAULT_BG_THRESHOLD

IGNORE = 255  # VOC masks mark object borders and unlabelled pixels with 255 ("void"): never scored
MAX_CLASSES = 254  # label values 1..254 for the maps; 0 is background and 255 is IGNORE
__all__ = ["DEFAULT_BG_THRESHOLD", "DEFAULT_SWEEP", "IGNORE", "MAX_CLASSES", "confusion_matrix", "iou_per_class",
           "label_map", "labels_at_size", "mean_iou", "normalise_maps", "voc_palette"]
# The background thresholds a sweep tries: the best one differs between methods and models.
DEFAULT_SWEEP = tuple(float(t) for t in np.round(np.arange(0.05, 0.96, 0.05), 2))


def voc_palette() -> np.ndarray:
    """The PASCAL VOC colour map, (256, 3) uint8.

    VOC's devkit (VOClabelcolormap) spreads the bits of each index over red, green and blue: bit 0
    of the index goes to the highest bit of red, bit 1 to the highest of green, bit 2 to the highest
    of blue, then bits 3-5 to the next lower bits of the three, and so on down.
    """
    index = np.arange(256)
    palette = np.zeros((256, 3), dtype=np.int64)
    for level in range(8):  # three bits of the index per level, from the colours' high bit down
        for channel in range(3):
            bit = (index >> (3 * level + channel)) & 1
            palette[:, channel] |= bit << (7 - level)
    return palette.astype(np.uint8)


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Each map of (K, H, W) `maps` divided by its own maximum, negatives clipped to 0. A map with no
    positive value comes out all zero (it is not divided); NaN or infinity is a ValueError."""
    maps = np.asarray(maps)
    dtype = maps.dtype if np.issubdtype(maps.dtype, np.floating) else np.float64
    clipped = np.clip(maps.astype(dtype, copy=False), 0, None)
    if clipped.ndim != 3:
        raise ValueError(f"expected maps of shape (K, H, W), got shape {clipped.shape}")
    if not np.isfinite(clipped).all():
        raise ValueError("the maps contain NaN or infinity: cannot normalise them")
    peak = clipped.max(axis=(1, 2), keepdims=True) if clipped.size else np.zeros((clipped.shape[0], 1, 1), dtype)
    return np.divide(clipped, peak, out=np.zeros_like(clipped), where=peak > 0)


def label_map(maps: np.ndarray, bg_threshold: float) -> np.ndarray:
    """The (H, W) uint8 label map of (K, H, W) normalised `maps`: 0 for background, k for the k-th map.

    Each pixel takes the argmax over [bg_threshold, map_1, ..., map_K] (PSA and IRN score CAMs this
    way). Ties go to the earlier entry: a map equal to the threshold is background, and of two equal
    maps the lower label wins.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"expected maps of shape (K, H, W), got shape {maps.shape}")
    if maps.shape[0] > MAX_CLASSES:
        raise ValueError(f"at most {MAX_CLASSES} maps can be labelled (255 means ignore), got {maps.shape[0]}")
    if np.isnan(maps).any():
        raise ValueError("the maps contain NaN: cannot label them")
    if maps.shape[0] == 0:
        return np.zeros(maps.shape[1:], dtype=np.uint8)
    best = np.argmax(maps, axis=0)  # the first of equal maps wins
    # Strictly above the threshold: a pixel equal to it stays background.
    foreground = np.take_along_axis(maps, best[None], axis=0)[0] > bg_threshold
    return np.where(foreground, best + 1, 0).astype(np.uint8)


def labels_at_size(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 `labels` resized to (height, width) by nearest neighbour, so that every pixel keeps
    one class; the array itself when it has that size already."""
    if labels.shape == (height, width):
        return labels
    return np.asarray(Image.fromarray(labels).resize((width, height), Image.Resampling.NEAREST))


# --- VOC masks ---------------------------------------------------------------------------------------


# --- scoring -------------------------------------------------------------------------------------------


def confusion_matrix(predicted: np.ndarray, truth: np.ndarray, classes: int, ignore: int = IGNORE) -> np.ndarray:
    """The (classes, classes) int64 pixel counts of `truth` (rows) against `predicted` (columns).

    Pixels whose truth is `ignore` are left out. Any other value of `truth`, or of `predicted` on a
    counted pixel, must lie in 0..classes-1 (a prediction may not be `ignore`: that would let a model
    skip the pixels it gets wrong).
    """
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    if predicted.shape != truth.shape:
        raise ValueError(f"predicted {predicted.shape} and truth {truth.shape} differ in shape")
    counted = truth != ignore
    truth_values, predicted_values = truth[counted].astype(np.int64), predicted[counted].astype(np.int64)
    for name, values in (("truth", truth_values), ("predicted", predicted_values)):
        bad = values[(values < 0) | (values >= classes)]
        if bad.size:
            raise ValueError(f"{name} value {bad[0]} is not a class (0..{classes - 1}) nor ignore ({ignore})")
    # One bincount over truth * classes + predicted: cell (t, p) of the matrix, flattened.
    counts = np.bincount(truth_values * classes + predicted_values, minlength=classes * classes)
    return counts.reshape(classes, classes)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """TP / (TP + FP + FN) for each class of a confusion matrix (rows truth, columns predicted);
    NaN for a class that is neither in the truth nor predicted."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive  # TP + FP + FN
    return np.divide(true_positive, union, out=np.full_like(true_positive, np.nan), where=union > 0)


def mean_iou(confusion: np.ndarray) -> float | None:
    """The mean IoU over the classes present, or None when no class is.

    As in PSA, IRN and AMN's VOC evaluation, the confusion matrix is accumulated over the whole data
    set first and the IoU computed once from it, not averaged over images.
    """
    iou = iou_per_class(confusion)
    if np.isnan(iou).all():
        return None
    return float(np.nanmean(iou))
