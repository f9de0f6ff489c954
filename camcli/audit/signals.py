"""What a shortcut looks like in a cluster of maps, measured without boxes.

A person who looks at an audit page sees a shortcut at once: a tight cluster whose maps sit in one fixed
place while the pictures under them differ everywhere else, and what lies under that place is the same
thing in every picture (a tag, a logo, a ruler, a watermark). An object moves from picture to picture and
its instances differ. These functions put numbers on what the person sees; camcli.audit.rule decides.

- `peak_spread`: where the members' maps peak, and how far apart: the median distance of each member's
  hottest cell from the members' median peak, as a fraction of the map's side (0: every map peaks in the
  same cell). A fixed place gives a few hundredths; an object that moves, a tenth or more.
- `hot_box`: a map's relevant region, the box of the largest connected region at or above half its
  maximum, as fractions of the picture (the report crops it).
- `pattern_similarity`: the pixels under the cluster's relevant region, compared across the members: the
  best window of the region where most members' patches agree (a repeated pattern: near 1; instances of
  an object, or varied content under a fixed place: far lower).
- `evidence_share`: the share of a map's cells at or above half its maximum (the member's mean): a
  shortcut is a small share of the picture.

Numpy and Pillow only; nothing here reads the maps' files (camcli.audit.folder does), and the pictures
come in as a callable, so that a missing picture is the caller's to report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

PICTURE_CELLS = 32  # pattern_similarity compares the pictures shrunk to this many cells a side
WINDOW = 4  # cells a side of the windows it compares (1/8 of the picture's side)
MAX_PATTERN_MEMBERS = 48  # crops compared per cluster (a seeded sample of larger clusters): the cost stays flat
HOT = 0.5  # the relevant region: cells at or above this fraction of the maximum
_TINY = 1e-12


def peak_cells(cells: np.ndarray) -> np.ndarray:
    """(n, 2) row and column of each map's hottest cell; maps are (n, grid, grid)."""
    flat = cells.reshape(len(cells), -1)
    index = np.argmax(flat, axis=1)
    return np.stack(np.unravel_index(index, cells.shape[1:]), axis=1).astype(np.float64)


def peak_spread(cells: np.ndarray) -> float:
    """The median distance of the members' peaks from their median peak, as a fraction of the map's side."""
    if len(cells) == 0:
        return 1.0
    peaks = peak_cells(cells)
    centre = np.median(peaks, axis=0)
    return float(np.median(np.linalg.norm(peaks - centre, axis=1)) / cells.shape[1])


def evidence_share(cells: np.ndarray) -> float:
    """The members' mean share of cells at or above HOT times their map's maximum (all-zero maps: 0)."""
    flat = cells.reshape(len(cells), -1)
    peaks = flat.max(axis=1, keepdims=True)
    hot = (flat >= HOT * peaks) & (peaks > _TINY)
    return float(hot.mean()) if len(flat) else 0.0


def hot_box(cells: np.ndarray) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) as fractions of the picture: the box around the largest connected region of a map
    at or above HOT times its maximum; None for an all-zero map."""
    from camcli.maps.boxes import box_from_map

    height, width = cells.shape
    box = box_from_map(np.asarray(cells, dtype=np.float32), HOT)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    return x0 / width, y0 / height, x1 / width, y1 / height


def small_picture(picture: np.ndarray, side: int = PICTURE_CELLS) -> np.ndarray:
    """An (H, W, 3) picture as (side, side, 3) float64, each cell the mean of the pixels it covers."""
    from PIL import Image

    small = Image.fromarray(np.ascontiguousarray(picture[..., :3])).resize((side, side), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float64)


def pattern_similarity(pictures: Sequence[Callable[[], np.ndarray | None]], mean_map: np.ndarray,
                       seed: int = 0) -> tuple[float | None, int]:
    """(how alike the members' pixels are somewhere in the cluster's relevant region, pictures compared).

    Every member's picture (`pictures[i]()`, RGB, None when it cannot be read) is shrunk to PICTURE_CELLS
    cells a side. For each WINDOW x WINDOW window centred in the relevant region (the mean map's cells at or
    above HOT times its maximum), each member's patch has its colour channels centred (a brighter or darker
    copy of a pattern still matches) and is scaled to unit length (a flat patch, no pattern at all, is a
    zero vector, unlike anything); the window's figure is the median over the members of each one's mean
    cosine similarity to the others (what most of the cluster's pictures share: a few pictures of something
    else in a cluster of marks lower it little). The result is the best window's: a mark repeated in the
    pictures somewhere under the maps scores near 1 however much of the region around it varies; instances
    of an object, or varied content in a fixed place, score far lower. None when fewer than two pictures
    could be read."""
    order = np.arange(len(pictures))
    if len(order) > MAX_PATTERN_MEMBERS:
        order = np.sort(np.random.default_rng(seed).choice(order, MAX_PATTERN_MEMBERS, replace=False))
    smalls = [small_picture(picture) for picture in (pictures[i]() for i in order) if picture is not None]
    if len(smalls) < 2:
        return None, len(smalls)
    stack = np.stack(smalls)  # (n, cells, cells, 3)
    n, cells = len(stack), stack.shape[1]
    region = small_picture_map(mean_map, cells) >= HOT * max(float(np.max(mean_map)), _TINY)
    half = WINDOW // 2
    best = 0.0
    for row, col in zip(*np.nonzero(region), strict=True):
        top, left = min(max(0, row - half), cells - WINDOW), min(max(0, col - half), cells - WINDOW)
        patches = stack[:, top:top + WINDOW, left:left + WINDOW, :].reshape(n, -1, 3)
        patches = (patches - patches.mean(axis=1, keepdims=True)).reshape(n, -1)
        lengths = np.linalg.norm(patches, axis=1, keepdims=True)
        units = np.divide(patches, lengths, out=np.zeros_like(patches), where=lengths > _TINY)
        gram = units @ units.T
        each = (gram.sum(axis=1) - np.diag(gram)) / (n - 1)  # each member's mean similarity to the others
        best = max(best, float(np.median(each)))
    return best, n


def small_picture_map(mean_map: np.ndarray, cells: int) -> np.ndarray:
    """A (grid, grid) map resized to (cells, cells) by area averaging."""
    from PIL import Image

    values = np.asarray(mean_map, dtype=np.float32)
    return np.asarray(Image.fromarray(values, mode="F").resize((cells, cells), Image.Resampling.BOX))
