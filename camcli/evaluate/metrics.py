"""What a heatmap says about where the object is, and how faithful it is: numpy and scipy.ndimage only.

Coordinates follow the rest of camcli: a box is `(x0, y0, x1, y1)` in pixels of the array it was
measured on, x to the right and y down, with x0, y0 INCLUSIVE and x1, y1 EXCLUSIVE, so
`heatmap[y0:y1, x0:x1]` is the box and its area is `(x1 - x0) * (y1 - y0)`. Truth boxes may hold
floats; a pixel belongs to a box when its centre `(x + 0.5, y + 0.5)` lies inside it, which for
integer boxes is the same as the slice above.

Every function takes a map in [0, 1] (any non-negative map works: only ratios to its maximum
matter) and never divides by zero: an all-zero ("empty") map has no box, no peak and no energy.

Localization
    `pointing_hit` (pointing game), `energy_in_boxes` (energy-based pointing game), `box_iou`,
    `best_iou`, `relevance_rank` (Quantus's relevance rank accuracy); the map's own mask, box and peak
    are in camcli.maps.boxes.
Faithfulness
    `deletion_insertion_curves` (RISE's deletion and insertion), `average_drop_increase`
    (Grad-CAM++'s Average Drop and Increase in Confidence), `multiply_by_map` (the image those score),
    `road_scores` (ROAD's remove-and-debias with `noisy_linear_imputation`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.linalg import spsolve

from camcli.maps.boxes import peak_xy
from camcli.options import MASKED_BATCH, ScoringOptions, field_default

DEFAULT_BLUR_SIGMA = 5.0  # RISE's insertion starts from the image blurred by a Gaussian of sigma 5 pixels
# ROAD (Rong et al. 2022) as pytorch-grad-cam's ROADCombined: the shares of pixels removed, in percent,
# and the noise added to each imputed value (NoisyLinearImputer's std 0.01, in the model's input space).
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
ROAD_NOISE = 0.01
# ROAD's neighbour weights ((dy, dx), weight): 1/6 for the four direct neighbours, 1/12 for the diagonals.
ROAD_NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
                   ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


# --- localization metrics -----------------------------------------------------------------------


def pointing_hit(heatmap: np.ndarray, boxes: Sequence[Sequence[float]], tolerance: float = 0.0) -> bool:
    """Pointing game (Zhang et al. 2018, "Top-down neural attention by excitation backprop", IJCV).

    A hit when the map's peak pixel lies in one of the boxes, or within `tolerance` pixels of one
    (distance from the pixel's centre to the box; the paper allows 15 pixels). An empty map misses.
    """
    peak = peak_xy(np.asarray(heatmap))
    if peak is None:
        return False
    cx, cy = peak[0] + 0.5, peak[1] + 0.5  # the pixel's centre
    for x0, y0, x1, y1 in boxes:
        dx = max(x0 - cx, 0.0, cx - x1)
        dy = max(y0 - cy, 0.0, cy - y1)
        inside = x0 <= cx < x1 and y0 <= cy < y1
        if inside or (tolerance > 0 and math.hypot(dx, dy) <= tolerance):
            return True
    return False


def _pixel_span(low: float, high: float, size: int) -> slice:
    """The pixels (as a slice, clipped to 0..size) whose centres lie in [low, high)."""
    start = max(0, math.ceil(low - 0.5))
    stop = min(size, math.ceil(high - 0.5))
    return slice(start, max(start, stop))


def boxes_mask(shape: tuple[int, int], boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """The union of the boxes as a bool (h, w) mask (pixel centres inside a box)."""
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[_pixel_span(y0, y1, shape[0]), _pixel_span(x0, x1, shape[1])] = True
    return mask


def energy_in_boxes(heatmap: np.ndarray, boxes: Sequence[Sequence[float]]) -> float | None:
    """Energy-based pointing game (Wang et al. 2020, "Score-CAM", CVPR workshops): the share of the map's
    mass that falls inside the union of the boxes, sum(map inside) / sum(map). None for an empty map."""
    return energy_in_mask(heatmap, boxes_mask(np.shape(heatmap), boxes))


def energy_in_mask(heatmap: np.ndarray, inside: np.ndarray, counted: np.ndarray | None = None) -> float | None:
    """The share of the map's mass on the pixels of the bool (h, w) mask `inside` (Quantus's relevance mass
    accuracy, Arras et al. 2022), among the `counted` pixels (default: all; a segmentation mask's ignored
    pixels are left out). None for a map with no mass there."""
    heatmap = np.maximum(np.asarray(heatmap, dtype=np.float64), 0.0)
    if counted is not None:
        heatmap = np.where(counted, heatmap, 0.0)
    total = float(heatmap.sum())
    if not (math.isfinite(total) and total > 0.0):
        return None
    return float(heatmap[inside].sum()) / total


def relevance_rank(heatmap: np.ndarray, boxes: Sequence[Sequence[float]]) -> float:
    """Relevance rank accuracy (Arras et al. 2022, "CLEVR-XAI", Information Fusion; Quantus's
    RelevanceRankAccuracy) against the union of the boxes (`relevance_rank_in_mask`)."""
    return relevance_rank_in_mask(heatmap, boxes_mask(np.shape(heatmap), boxes))


def relevance_rank_in_mask(heatmap: np.ndarray, inside: np.ndarray, counted: np.ndarray | None = None) -> float:
    """Relevance rank accuracy: the share of the K most relevant pixels that lie in the bool (h, w) mask
    `inside`, K its size, ranking only the `counted` pixels (default: all). Pixels are ranked as Quantus
    does (a stable ascending sort, the last K: ties go to the later pixel in row-major order). An empty
    map, or a mask with no pixel, scores 0."""
    heatmap = np.asarray(heatmap, dtype=np.float64).ravel()
    inside = np.asarray(inside, dtype=bool).ravel()
    if counted is not None:
        keep = np.asarray(counted, dtype=bool).ravel()
        heatmap, inside = heatmap[keep], inside[keep]
    count = int(inside.sum())
    if count == 0 or not heatmap.size or not heatmap.max() > 0.0:
        return 0.0
    top = np.argsort(heatmap, kind="stable")[-count:]
    return float(inside[top].sum()) / count


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes; 0.0 when both are empty."""
    overlap_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    overlap_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = overlap_w * overlap_h
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - intersection
    return float(intersection / union) if union > 0 else 0.0


def best_iou(pred_box: Sequence[float] | None, boxes: Sequence[Sequence[float]]) -> float:
    """The highest IoU between the predicted box and any truth box; 0.0 without a prediction or truth."""
    if pred_box is None:
        return 0.0
    return max((box_iou(pred_box, box) for box in boxes), default=0.0)


# --- faithfulness ---------------------------------------------------------------------------------


@dataclass
class FaithfulnessCurves:
    """RISE's two curves for one image and class, sampled at `fractions` of the pixels changed."""

    fractions: np.ndarray  # (steps + 1,) from 0 to 1
    deletion: np.ndarray  # class score as the most salient pixels are removed (lower AUC = more faithful)
    insertion: np.ndarray  # class score as they are put back into a blurred copy (higher AUC = more faithful)
    deletion_auc: float
    insertion_auc: float


def area_under_curve(fractions: np.ndarray, values: np.ndarray) -> float:
    """Trapezoid rule over the fraction axis (0..1), as RISE's `auc` does."""
    fractions = np.asarray(fractions, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    return float(np.sum((fractions[1:] - fractions[:-1]) * (values[1:] + values[:-1]) / 2.0))


def blurred(image: np.ndarray, sigma: float = DEFAULT_BLUR_SIGMA) -> np.ndarray:
    """A Gaussian blur of an (H, W, C) image, each channel on its own."""
    return ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), sigma=(sigma, sigma, 0))


def _scores_of_mixes(score_fn, start, end, rank, counts, class_index, batch_size) -> np.ndarray:
    """The class score of each image that shows `end` on the `counts[k]` top-ranked pixels and
    `start` everywhere else, scored `batch_size` images at a time."""
    height, width = start.shape[:2]
    scores = []
    for first in range(0, len(counts), batch_size):
        chunk = np.asarray(counts[first:first + batch_size])
        switched = (rank[np.newaxis, :] < chunk[:, np.newaxis]).reshape(len(chunk), height, width, 1)
        batch = np.where(switched, end[np.newaxis], start[np.newaxis]).astype(np.float32)
        scores.append(np.asarray(score_fn(batch))[:, class_index])
    return np.concatenate(scores).astype(np.float64)


def _ranked_pixels(image: np.ndarray, saliency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the image as float32, rank): rank[p] is how many pixels come before pixel p (row-major) when they are
    ranked from the most salient down, ties in row-major order. ValueError when the saliency is not (H, W)
    of the (H, W, C) image."""
    image = np.asarray(image, dtype=np.float32)
    saliency = np.asarray(saliency, dtype=np.float64)
    if saliency.shape != image.shape[:2]:
        raise ValueError(f"saliency shape {saliency.shape} does not match image shape {image.shape[:2]}")
    rank = np.empty(saliency.size, dtype=np.int64)
    rank[np.argsort(-saliency.ravel(), kind="stable")] = np.arange(saliency.size)
    return image, rank


def deletion_insertion_curves(score_fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray,
                              saliency: np.ndarray, class_index: int,
                              steps: int = field_default(ScoringOptions, "steps"), batch_size: int = MASKED_BATCH,
                              baseline: float = 0.0, blur_sigma: float = DEFAULT_BLUR_SIGMA) -> FaithfulnessCurves:
    """Deletion and insertion (Petsiuk et al. 2018, "RISE: randomized input sampling", BMVC) for one image and class.

    image: the model's input, (H, W, C) float32 as the model takes it (already preprocessed).
    saliency: (H, W) map at the same resolution; pixels are ranked from the most salient down
    (ties broken in row-major order, so the result is deterministic).
    score_fn: (N, H, W, C) float32 batch -> (N, num_classes) probabilities.
    Deletion replaces the top-ranked pixels (all channels) with `baseline` (0 in the model's input
    space: black for inputs scaled to 0..1, the mean colour for mean-subtracted inputs); insertion
    starts from the image blurred per channel (`blur_sigma` pixels) and puts the original pixels back
    in the same order. Each curve has `steps` + 1 points, 0%, 1/steps, ..., 100% of the pixels, and
    its AUC is the trapezoid area over the fraction axis 0..1.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be at least 1, got {steps} and {batch_size}")
    image, rank = _ranked_pixels(image, saliency)
    pixels = rank.size
    counts = np.rint(np.arange(steps + 1) * pixels / steps).astype(np.int64)  # pixels changed at each step
    fractions = counts / pixels
    removed = np.full_like(image, baseline)
    deletion = _scores_of_mixes(score_fn, image, removed, rank, counts, class_index, batch_size)
    insertion = _scores_of_mixes(score_fn, blurred(image, blur_sigma), image, rank, counts, class_index, batch_size)
    return FaithfulnessCurves(fractions, deletion, insertion, area_under_curve(fractions, deletion),
                              area_under_curve(fractions, insertion))


def multiply_by_map(rgb_uint8: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """The image multiplied pixel-wise by its explanation map in [0, 1] (same height and width),
    as uint8 RGB: what Grad-CAM++'s Average Drop and Increase in Confidence score."""
    heatmap = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    return np.rint(np.asarray(rgb_uint8, dtype=np.float32) * heatmap[..., np.newaxis]).astype(np.uint8)


def average_drop_increase(original_scores: Sequence[float], masked_scores: Sequence[float]) -> tuple[float, float]:
    """Average Drop and Increase in Confidence (Chattopadhyay et al. 2018, Grad-CAM++, Sec. 6.1).

    original_scores: Y, the class score of each image; masked_scores: O, the score of the same
    image multiplied by its explanation map (`multiply_by_map`). Average Drop = mean over images of
    max(0, Y - O) / Y (lower is better); Increase in Confidence = the fraction of images with O > Y
    (higher is better). Both are fractions in [0, 1]; the paper reports them as percentages. An
    image with Y = 0 has no score to drop and counts as no drop. Raises ValueError for no images.
    """
    original = np.asarray(original_scores, dtype=np.float64)
    masked = np.asarray(masked_scores, dtype=np.float64)
    if original.shape != masked.shape:
        raise ValueError(f"{original.shape[0]} original scores but {masked.shape[0]} masked scores")
    if original.size == 0:
        raise ValueError("Average Drop needs at least one image")
    positive = original > 0
    drops = np.where(positive, np.maximum(0.0, original - masked) / np.where(positive, original, 1.0), 0.0)
    return float(drops.mean()), float(np.mean(masked > original))


def noisy_linear_imputation(image: np.ndarray, removed: np.ndarray, noise: float = ROAD_NOISE,
                            rng: np.random.Generator | None = None) -> np.ndarray:
    """ROAD's noisy linear imputation (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy
    for Attribution Methods", ICML, Sec. 4): every removed pixel becomes the weighted mean of its
    neighbours inside the image (ROAD_NEIGHBOURS, weights renormalised over those inside), removed
    neighbours being unknowns too: one sparse linear system per image, all channels at once; then
    Gaussian noise of std `noise` is added to the imputed values (`rng`, default seeded 0).

    image: (H, W, C) in the model's input space; removed: (H, W) bool. At least one pixel must be kept."""
    image = np.asarray(image, dtype=np.float32)
    height, width, channels = image.shape
    flat_removed = np.asarray(removed, dtype=bool).ravel()
    unknown = np.flatnonzero(flat_removed)
    if unknown.size == 0:
        return image.copy()
    if unknown.size == flat_removed.size:
        raise ValueError("noisy linear imputation needs at least one kept pixel")
    variable = np.full(flat_removed.size, -1, dtype=np.int64)
    variable[unknown] = np.arange(unknown.size)
    pixels = image.reshape(-1, channels).astype(np.float64)
    ys, xs = np.divmod(unknown, width)
    weight_sum = np.zeros(unknown.size)
    known_sum = np.zeros((unknown.size, channels))
    rows, columns, values = [np.arange(unknown.size)], [np.arange(unknown.size)], []
    for (dy, dx), weight in ROAD_NEIGHBOURS:
        y, x = ys + dy, xs + dx
        inside = np.flatnonzero((y >= 0) & (y < height) & (x >= 0) & (x < width))
        neighbour = y[inside] * width + x[inside]
        weight_sum[inside] += weight
        is_known = ~flat_removed[neighbour]
        known_sum[inside[is_known]] += weight * pixels[neighbour[is_known]]
        rows.append(inside[~is_known])
        columns.append(variable[neighbour[~is_known]])
        values.append(np.full(int((~is_known).sum()), -weight))
    values.insert(0, weight_sum)
    system = sparse.csc_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))),
                               shape=(unknown.size, unknown.size))
    solved = np.asarray(spsolve(system, known_sum)).reshape(unknown.size, channels)
    rng = np.random.default_rng(0) if rng is None else rng
    filled = pixels.copy()
    filled[unknown] = solved + noise * rng.standard_normal(solved.shape)
    return filled.reshape(image.shape).astype(np.float32)


@dataclass
class RoadScores:
    """ROAD for one image and class, as pytorch-grad-cam reports it: at each share of pixels removed
    (`percentiles`), the class score of the imputed image minus the original image's (`morf`: the most
    relevant pixels removed first, lower is more faithful; `lerf`: the least relevant first, higher is
    more faithful); their means, and `combined` = (lerf - morf) / 2 (ROADCombined)."""

    percentiles: tuple[int, ...]
    score: float  # the original image's class score
    morf_curve: np.ndarray
    lerf_curve: np.ndarray

    @property
    def morf(self) -> float:
        return float(self.morf_curve.mean())

    @property
    def lerf(self) -> float:
        return float(self.lerf_curve.mean())

    @property
    def combined(self) -> float:
        return (self.lerf - self.morf) / 2.0


def road_scores(score_fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, saliency: np.ndarray,
                class_index: int, percentiles: Sequence[int] = ROAD_PERCENTILES, batch_size: int = MASKED_BATCH,
                noise: float = ROAD_NOISE, noise_seed: int = 0) -> RoadScores:
    """ROAD's MoRF and LeRF (Rong et al. 2022) for one image and class, with noisy linear imputation.

    Pixels are ranked as for deletion (most salient first, ties in row-major order); at p percent the
    round(p / 100 x pixels) top-ranked pixels (MoRF) or bottom-ranked ones (LeRF) are imputed. The
    original and the 2 x len(percentiles) imputed images are scored `batch_size` at a time. The noise
    is seeded (`noise_seed`), so a row's scores do not depend on the batch it came in."""
    image, rank = _ranked_pixels(image, saliency)
    pixels = rank.size
    rng = np.random.default_rng(noise_seed)
    copies = [image]
    for first_ranked in (True, False):
        for percentile in percentiles:
            count = int(np.rint(percentile / 100.0 * pixels))
            removed = rank < count if first_ranked else rank >= pixels - count
            copies.append(noisy_linear_imputation(image, removed.reshape(image.shape[:2]), noise, rng))
    scores = np.concatenate([np.asarray(score_fn(np.stack(copies[first:first + batch_size])))[:, class_index]
                             for first in range(0, len(copies), batch_size)]).astype(np.float64)
    steps = len(percentiles)
    return RoadScores(tuple(percentiles), float(scores[0]), scores[1:1 + steps] - scores[0],
                      scores[1 + steps:] - scores[0])
