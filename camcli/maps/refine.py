"""Refining class activation maps along the image's edges before they are turned into label maps.

A CAM is computed at the resolution of the last convolution (7x7 for a 224 px MobileNet), so once
upsampled it is blurry and leaks across object boundaries. Each refinement pulls the maps back onto
the edges of the image:

    none        the maps as they are
    slic        each map averaged inside SLIC superpixels (Achanta et al., TPAMI 2012)
    randomwalk  a random walk from confident seeds (Grady, TPAMI 2006), seeded as IRN does
    crf         a fully connected CRF (Kraehenbuehl & Koltun, NeurIPS 2011), with PSA's parameters

`none` and `slic` give normalised maps (each with maximum 1, or all zero), as `label_map` expects.
`randomwalk` and `crf` give probabilities: each class's map is the probability of that class and the
background takes the rest, so with one class a background threshold of 0.5 picks the most likely label.

scikit-image (and, for `crf`, pydensecrf2) are imported inside the functions, so that importing this
module costs nothing.
"""

import numpy as np

from camcli.errors import UsageError
from camcli.maps.label_settings import REFINEMENTS
from camcli.maps.segmentation import DEFAULT_BG_THRESHOLD, label_map, normalise_maps

# SLIC: about one superpixel per 16x16 pixels (196 on a 224 px image). That is about the area one
# cell of a 14x14 feature map covers, so superpixels are finer than the CAM itself; compactness 10 is
# scikit-image's default for colour images (in CIELAB).
SLIC_PIXELS_PER_SEGMENT = 16 * 16
SLIC_COMPACTNESS = 10

# Random walk seeds, mined from the maps as IRN mines its confident labels from CAMs (Ahn, Cho & Kwak,
# CVPR 2019, "Weakly Supervised Learning of Instance Segmentation with Inter-pixel Relations"): a
# pixel is a confident seed of the class whose map is highest there when that map is at least
# CONFIDENT_FOREGROUND, and a confident background seed when every map is below CONFIDENT_BACKGROUND.
# Every other pixel is left to the walk. IRN's own values (run_sample.py: 0.30 and 0.05) suit its
# sharper CAMs; on camcli's maps, upsampled from a 12x12 grid, they seed far outside the object. The
# values here were chosen on the demo's validation scenes (seed 8101, 40 scenes, gradcam): fg 0.30 /
# bg 0.05 gave a per-image mIoU of 0.55, 0.60 / 0.20 0.68, 0.80 / 0.20 0.74, 0.80 / 0.35 0.71.
CONFIDENT_FOREGROUND = 0.80
CONFIDENT_BACKGROUND = 0.20
# An image with no confident background (a map that covers the whole frame) takes its coldest pixels
# as background seeds: without any, the walk could only share the image among the classes.
FALLBACK_BACKGROUND_SHARE = 0.05
# The walk's edge weights are exp(-beta * |colour difference|^2 / (10 * std of the image)) in scikit-
# image. Its default beta of 130 is kept: the image's own spread scales the differences, so one value
# suits dark and bright images alike, and it holds the walk to the edge in the synthetic tests.
RANDOMWALK_BETA = 130
# The walk runs on a copy whose longest side is at most this (bilinear), and its probabilities are
# resized back. A 224 px photo with 2 maps (on 2 cores) costs 27 ms at 128 px, 40 ms at 160 and 68 ms
# at full size. Maps that come from a 7x7 or 14x14 feature map lose little at 128 px.
RANDOMWALK_SIDE = 128
# "bf" solves the walk's linear system directly (a sparse LU factorisation). At 128 px it is as fast as
# "cg_j" (conjugate gradient, Jacobi preconditioner): 17-20 ms against 19-24 ms on the test photos, and
# exact, where cg_j at its default tolerance strays outside [0, 1] by up to 5e-4 and can warn. At 224 px
# cg_j took 0.4 s on a synthetic image.
RANDOMWALK_MODE = "bf"

# Dense CRF parameters of PSA (Ahn & Kwak, CVPR 2018, tool/imutils.py `crf_inference`; DeepLab's own
# differ): a Gaussian (smoothness) kernel of 3 px with Potts weight 3, a bilateral (appearance)
# kernel of 80 px and 13 colour levels with Potts weight 10, and 10 mean-field iterations. pydensecrf's
# DenseCRF2D names them addPairwiseGaussian(sxy, compat) and addPairwiseBilateral(sxy, srgb, rgbim, compat).
CRF_GAUSSIAN_SXY = 3
CRF_GAUSSIAN_COMPAT = 3
CRF_BILATERAL_SXY = 80
CRF_BILATERAL_SRGB = 13
CRF_BILATERAL_COMPAT = 10
CRF_ITERATIONS = 10
# The background's score in the CRF's unary, against the normalised maps: IRN's CAM evaluation
# threshold (run_sample.py, `--cam_eval_thres 0.15`). It is fixed, not the label map's threshold:
# the CRF's marginals are labelled by the same threshold (and sweep) as the other refinements'
# maps, and a unary that moved with that threshold would make the sweep measure two things at once.
# On 24 demo scenes gradcam's marginals from it gave mIoU 0.90 at a label threshold of 0.15.
CRF_BACKGROUND_SCORE = 0.15
CRF_MIN_PROBABILITY = 1e-5  # the unary is -log(p): p is clipped so that a zero costs 11.5, not infinity
CRF_INSTALL_HINT = "pip install 'keras-camcli[crf]'"
SEGMENT_INSTALL_HINT = "pip install 'keras-camcli[segment]'"


def refine(maps: np.ndarray, rgb: np.ndarray, how: str) -> np.ndarray:
    """(K, H, W) normalised `maps` refined along the edges of (H, W, 3) uint8 `rgb` by `how` (one of
    REFINEMENTS): a (K, H, W) float array in [0, 1]. The background threshold that labels them
    comes after (label_map): every refinement gives maps that one threshold sweep can label.
    """
    if how not in REFINEMENTS:
        raise UsageError(f"unknown refinement {how!r}; choose one of {', '.join(REFINEMENTS)}")
    maps, rgb = _checked(maps, rgb)
    if how == "none" or maps.shape[0] == 0:
        return maps
    if how == "slic":
        return slic_refine(maps, rgb)
    if how == "randomwalk":
        return random_walk_refine(maps, rgb)
    return crf_refine(maps, rgb)


def check_label_settings(bg_threshold: float, how: str) -> None:
    """UsageError, before any work, for a background threshold outside [0, 1] (the maps are scaled to
    maximum 1), an unknown refinement, or one whose package is not installed."""
    import importlib.util

    if not 0.0 <= bg_threshold <= 1.0:
        raise UsageError(f"`bg_threshold={bg_threshold}` must lie in [0, 1] (the maps are scaled to max 1)")
    if how not in REFINEMENTS:
        raise UsageError(f"unknown refinement {how!r}; choose one of {', '.join(REFINEMENTS)}")
    package, module, hint = {"slic": ("scikit-image", "skimage", SEGMENT_INSTALL_HINT),
                             "randomwalk": ("scikit-image", "skimage", SEGMENT_INSTALL_HINT),
                             "crf": ("pydensecrf2", "pydensecrf", CRF_INSTALL_HINT)}.get(how, (None, None, None))
    if module is not None and importlib.util.find_spec(module) is None:
        raise UsageError(f"the {how} refinement needs {package}, which is not installed: {hint}")


def label_image(maps: np.ndarray, rgb: np.ndarray, bg_threshold: float = DEFAULT_BG_THRESHOLD,
                how: str = "none") -> np.ndarray:
    """The (H, W) uint8 label map of one image: its (K, H, W) class maps normalised, refined by `how`
    along the edges of (H, W, 3) uint8 `rgb`, then each pixel the argmax of [bg_threshold, maps]
    (0 background, k for the k-th map)."""
    return label_map(refine(normalise_maps(maps), rgb, how), bg_threshold)


def _checked(maps, rgb):
    maps = np.asarray(maps)
    maps = maps if np.issubdtype(maps.dtype, np.floating) else maps.astype(np.float64)
    rgb = np.asarray(rgb)
    if maps.ndim != 3:
        raise ValueError(f"expected maps of shape (K, H, W), got shape {maps.shape}")
    if rgb.shape != maps.shape[1:] + (3,) or rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image of shape {maps.shape[1:] + (3,)}, got {rgb.dtype} {rgb.shape}")
    return maps, rgb


# --- superpixels -----------------------------------------------------------------------------------------


def slic_refine(maps: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Each map replaced by its mean inside each SLIC superpixel of `rgb`, then normalised again."""
    from skimage.segmentation import slic

    height, width = rgb.shape[:2]
    n_segments = max(1, round(height * width / SLIC_PIXELS_PER_SEGMENT))
    segments = slic(rgb, n_segments=n_segments, compactness=SLIC_COMPACTNESS, start_label=0, channel_axis=-1)
    return normalise_maps(segment_means(maps, segments))


def segment_means(maps: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """(K, H, W) `maps` with every pixel set to its map's mean over the pixel's segment (labels 0..n-1)."""
    count = int(segments.max()) + 1
    sizes = np.bincount(segments.ravel(), minlength=count)
    # One bincount for all maps: map k's segment s is bin k * count + s.
    bins = (np.arange(maps.shape[0])[:, None] * count + segments.ravel()[None]).ravel()
    sums = np.bincount(bins, weights=maps.reshape(-1), minlength=maps.shape[0] * count).reshape(-1, count)
    means = sums / np.maximum(sizes, 1)
    return means[:, segments].astype(maps.dtype, copy=False)


# --- random walk -------------------------------------------------------------------------------------------


def random_walk_refine(maps: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """The probability of each class under a random walk on `rgb` from IRN's confident seeds.

    A class without any confident seed gets an all-zero map.
    """
    from skimage.transform import resize

    height, width = rgb.shape[:2]
    scale = min(1.0, RANDOMWALK_SIDE / max(height, width))
    small_shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    image = resize(rgb, small_shape, order=1, anti_aliasing=scale < 1)  # floats in [0, 1]
    small_maps = resize(normalise_maps(maps), (maps.shape[0],) + small_shape, order=1, anti_aliasing=scale < 1)
    probabilities = _random_walk(image, seed_labels(small_maps), maps.shape[0])
    if scale < 1:
        probabilities = resize(probabilities, maps.shape, order=1, anti_aliasing=False)
    return np.clip(probabilities, 0, 1).astype(maps.dtype, copy=False)


def seed_labels(maps: np.ndarray) -> np.ndarray:
    """The random walk's seeds for (K, H, W) normalised maps: 1 for background, k + 1 for the k-th map,
    0 for the pixels the walk decides."""
    best = np.argmax(maps, axis=0)
    peak = np.take_along_axis(maps, best[None], axis=0)[0]
    foreground = peak >= CONFIDENT_FOREGROUND
    background = (maps < CONFIDENT_BACKGROUND).all(axis=0)
    if not background.any():
        background = _coldest(peak, FALLBACK_BACKGROUND_SHARE) & ~foreground
    seeds = np.zeros(peak.shape, dtype=np.int32)
    seeds[background] = 1
    seeds[foreground] = best[foreground] + 2
    return seeds


def _coldest(score: np.ndarray, share: float) -> np.ndarray:
    """A mask of the `share` of pixels (at least one) with the lowest `score`."""
    count = max(1, int(np.ceil(share * score.size)))
    chosen = np.argpartition(score.ravel(), count - 1)[:count]
    mask = np.zeros(score.size, dtype=bool)
    mask[chosen] = True
    return mask.reshape(score.shape)


def _random_walk(image: np.ndarray, seeds: np.ndarray, classes: int) -> np.ndarray:
    """(classes, H, W) probabilities of labels 2..classes+1 of `seeds` under scikit-image's random walker
    on `image` (floats in [0, 1])."""
    from skimage.segmentation import random_walker

    present = np.unique(seeds[seeds > 0])
    if len(present) < 2 or (seeds > 0).all():
        # Nothing to walk between (one label) or nowhere to walk: each pixel keeps its seed, or the one label.
        full = seeds[None] == present[:, None, None] if (seeds > 0).all() else np.ones((len(present),) + seeds.shape)
    else:
        full = random_walker(image, seeds, beta=RANDOMWALK_BETA, mode=RANDOMWALK_MODE, return_full_prob=True,
                             channel_axis=-1)
    probabilities = np.zeros((classes,) + seeds.shape)
    for row, label in enumerate(present):  # random_walker returns one row per label present, in order
        if label >= 2:
            probabilities[label - 2] = full[row]
    return probabilities


# --- dense CRF -------------------------------------------------------------------------------------------


def crf_refine(maps: np.ndarray, rgb: np.ndarray, background: float = CRF_BACKGROUND_SCORE) -> np.ndarray:
    """The marginal of each class under a dense CRF on `rgb` (pydensecrf2), from a unary of
    -log p with p proportional to [background, map_1, ..., map_K]."""
    try:
        import pydensecrf.densecrf as densecrf
    except ImportError:
        raise UsageError(f"the crf refinement needs pydensecrf2, which is not installed: {CRF_INSTALL_HINT} "
                         "(it builds with a C++ compiler)") from None
    classes = maps.shape[0]
    height, width = rgb.shape[:2]
    scores = np.concatenate([np.full((1, height, width), background), normalise_maps(maps)])
    total = scores.sum(axis=0, keepdims=True)
    # A pixel where every score is zero (a zero threshold over zero maps) knows nothing: uniform.
    probabilities = np.divide(scores, total, out=np.full_like(scores, 1 / (classes + 1)), where=total > 0)
    unary = -np.log(np.clip(probabilities, CRF_MIN_PROBABILITY, 1)).reshape(classes + 1, -1)
    crf = densecrf.DenseCRF2D(width, height, classes + 1)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=CRF_GAUSSIAN_SXY, compat=CRF_GAUSSIAN_COMPAT)
    # pydensecrf takes the image as a writable buffer: a copy, as the caller's may be read-only.
    crf.addPairwiseBilateral(sxy=CRF_BILATERAL_SXY, srgb=CRF_BILATERAL_SRGB, rgbim=np.array(rgb, order="C"),
                             compat=CRF_BILATERAL_COMPAT)
    marginals = np.array(crf.inference(CRF_ITERATIONS)).reshape(classes + 1, height, width)
    return np.clip(marginals[1:], 0, 1).astype(maps.dtype, copy=False)
