"""What a shortcut looks like in a cluster of maps, measured without boxes.

A person who looks at an audit page sees a shortcut at once: a tight cluster whose maps sit in one fixed
place while the pictures under them differ everywhere else, and what lies under that place is the same
thing in every picture (a tag, a logo, a ruler, a watermark). An object moves from picture to picture and
its instances differ. These functions put numbers on what the person sees; camcli.audit.rule decides.

- `peak_spread`: where the members' maps peak, and how far apart: the median distance of each member's
  hottest cell from the members' median peak, as a fraction of the map's side (0: every map peaks in the
  same cell). A fixed place gives a few hundredths; an object that moves, a tenth or more.
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
from typing import NamedTuple

import numpy as np

PICTURE_CELLS = 48  # pattern_similarity compares the pictures shrunk to this many cells a side
WINDOW = 6  # cells a side of the windows it compares (1/8 of the picture's side)
SHIFT = 2  # cells a member's window may move to meet the others'
# The fewest maps a pile-up is judged on. A few maps that happen to peak together, over instances of one
# shape, can match by chance (the best of many windows and shifts): on generated scenes, pile-ups of 3 or 4
# such maps scored up to 0.87, and none of 5 or more formed; tags' pile-ups scored 0.84-0.97 (make bench-audit).
MIN_PILE = 5
MAX_PATTERN_MEMBERS = 48  # crops compared per cluster (a seeded sample of larger clusters): the cost stays flat
HOT = 0.5  # the relevant region: cells at or above this fraction of the maximum
_FLAT = 1e-12  # below this a vector, a map or a patch counts as zero


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
    hot = (flat >= HOT * peaks) & (peaks > _FLAT)
    return float(hot.mean()) if len(flat) else 0.0


class Pattern(NamedTuple):
    """What pattern_similarity found: the figure (None: fewer than two pictures), how many pictures it
    compared, and where its best window is, (x, y) fractions of the picture (the mark)."""

    figure: float | None
    compared: int
    where: tuple[float, float] | None


def small_picture(picture: np.ndarray, side: int = PICTURE_CELLS) -> np.ndarray:
    """An (H, W, 3) picture shrunk so that its short side is `side` cells (its shape kept, so that a mark of
    a fixed share of the short side is the same size in every picture), float64, each cell the mean of the
    pixels it covers, padded by SHIFT cells of its edge values on every side."""
    from PIL import Image

    height, width = picture.shape[:2]
    short = min(height, width)
    size = (max(1, round(side * width / short)), max(1, round(side * height / short)))
    small = Image.fromarray(np.ascontiguousarray(picture[..., :3])).resize(size, Image.Resampling.BOX)
    return np.pad(np.asarray(small, dtype=np.float64), ((SHIFT, SHIFT), (SHIFT, SHIFT), (0, 0)), mode="edge")


def _blocks(smalls: list[np.ndarray], x: float, y: float) -> np.ndarray:
    """Each padded small picture's block of WINDOW + 2 * SHIFT cells a side around (x, y) (fractions of the
    picture), (n, block, block, 3): the window and every shift of it."""
    block = WINDOW + 2 * SHIFT
    out = np.empty((len(smalls), block, block, 3))
    for i, small in enumerate(smalls):
        height, width = small.shape[0] - 2 * SHIFT, small.shape[1] - 2 * SHIFT
        top = min(max(0, round(y * height - WINDOW / 2)), max(0, height - WINDOW))
        left = min(max(0, round(x * width - WINDOW / 2)), max(0, width - WINDOW))
        piece = small[top: top + block, left: left + block]
        out[i] = np.pad(piece, ((0, block - piece.shape[0]), (0, block - piece.shape[1]), (0, 0)), mode="edge")
    return out


def _unit_patches(patches: np.ndarray) -> np.ndarray:
    """(n, ..., 3) patches as (n, d) unit vectors, each colour channel centred (a mark on a brighter or
    darker picture, or in another tint, still matches); a flat patch is all zero."""
    n = len(patches)
    flat = patches.reshape(n, -1, 3)
    flat = (flat - flat.mean(axis=1, keepdims=True)).reshape(n, -1)
    lengths = np.linalg.norm(flat, axis=1, keepdims=True)
    return np.divide(flat, lengths, out=np.zeros_like(flat), where=lengths > _FLAT)


def pattern_similarity(pictures: Sequence[Callable[[], np.ndarray | None]], mean_map: np.ndarray,
                       seed: int) -> Pattern:
    """(how alike the members' pixels are somewhere in the cluster's relevant region, pictures compared).

    Every member's picture (`pictures[i]()`, RGB, None when it cannot be read) is shrunk to PICTURE_CELLS cells on
    its short side, its shape kept. For each WINDOW x WINDOW window centred in the relevant region (the mean map's
    cells at or above HOT times its maximum), the members' patches are compared with their mean: each patch has its
    colour channels centred (a brighter or darker copy of a pattern still matches) and is scaled to unit length (a
    flat patch, no pattern at all, is a zero vector, unlike anything), and may move by up to SHIFT cells to meet the
    mean (pictures of other sizes put a mark a cell or two apart). The window's figure is the median over the
    members of their patch's cosine similarity to the mean of the others' (what most of the cluster's pictures
    share). The result is the best window's: a mark repeated in the pictures under the maps scores near 1 however
    much of the region around it varies; instances of an object, or varied content in a fixed place, score far
    lower. None when fewer than two pictures could be read."""
    order = np.arange(len(pictures))
    if len(order) > MAX_PATTERN_MEMBERS:
        order = np.sort(np.random.default_rng(seed).choice(order, MAX_PATTERN_MEMBERS, replace=False))
    smalls = [small_picture(picture) for picture in (pictures[i]() for i in order) if picture is not None]
    if len(smalls) < 2:
        return Pattern(None, len(smalls), None)
    n, cells = len(smalls), PICTURE_CELLS
    region = small_picture_map(mean_map, cells) >= HOT * max(float(np.max(mean_map)), _FLAT)
    shifts = [(dy, dx) for dy in range(2 * SHIFT + 1) for dx in range(2 * SHIFT + 1)]
    best, where = 0.0, None
    for row, col in zip(*np.nonzero(region), strict=True):
        blocks = _blocks(smalls, (col + 0.5) / cells, (row + 0.5) / cells)
        # every member's window at every shift: (shifts, n, d)
        moved = np.stack([_unit_patches(blocks[:, dy: dy + WINDOW, dx: dx + WINDOW]) for dy, dx in shifts])
        aligned = moved[shifts.index((SHIFT, SHIFT))]
        for _ in range(2):  # align each member to the others' mean, then once more to the aligned mean
            total = aligned.sum(axis=0)
            others = total[np.newaxis, :] - aligned  # (n, d): the others' sum, per member
            lengths = np.linalg.norm(others, axis=1, keepdims=True)
            others = np.divide(others, lengths, out=np.zeros_like(others), where=lengths > _FLAT)
            scores = np.einsum("snd,nd->sn", moved, others)  # each member's cosine to the others, at each shift
            pick = np.argmax(scores, axis=0)
            aligned = moved[pick, np.arange(n)]
        figure = float(np.median(scores[pick, np.arange(n)]))
        if where is None or figure > best:
            best, where = figure, ((col + 0.5) / cells, (row + 0.5) / cells)
    return Pattern(best, n, where)


def small_picture_map(mean_map: np.ndarray, cells: int) -> np.ndarray:
    """A (grid, grid) map resized to (cells, cells) by area averaging."""
    from PIL import Image

    values = np.asarray(mean_map, dtype=np.float32)
    return np.asarray(Image.fromarray(values, mode="F").resize((cells, cells), Image.Resampling.BOX))


def pile_ups(cells: np.ndarray, radius: float, minimum: int) -> list[np.ndarray]:
    """Groups of maps that peak in one place, most crowded first: index arrays into `cells` (n, grid, grid).

    Repeatedly, the cell with the most remaining maps peaking within `radius` cells of it takes those maps,
    while it takes at least `minimum`. The peaks are counted on the grid (a histogram smoothed by a disc),
    so a class of thousands of maps costs a few grid-sized sums per group."""
    from scipy import ndimage

    if len(cells) < minimum:
        return []
    grid = cells.shape[1]
    peaks = peak_cells(cells).astype(int)
    span = int(np.floor(radius))
    ys, xs = np.mgrid[-span:span + 1, -span:span + 1]
    disc = (ys ** 2 + xs ** 2 <= radius ** 2).astype(np.float64)
    remaining = np.ones(len(cells), dtype=bool)
    groups = []
    while remaining.sum() >= minimum:
        counts = np.zeros((grid, grid))
        np.add.at(counts, (peaks[remaining, 0], peaks[remaining, 1]), 1.0)
        crowd = ndimage.convolve(counts, disc, mode="constant")
        row, col = np.unravel_index(int(np.argmax(crowd)), crowd.shape)
        near = remaining & (((peaks[:, 0] - row) ** 2 + (peaks[:, 1] - col) ** 2) <= radius ** 2)
        if near.sum() < minimum:
            break
        groups.append(np.flatnonzero(near))
        remaining &= ~near
    return groups
