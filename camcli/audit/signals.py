"""What a shortcut looks like in a cluster of maps, measured without boxes.

A person who looks at an audit page sees a shortcut at once: a tight cluster whose maps sit in one fixed
place while the pictures under them differ everywhere else, and what lies under that place is the same
thing in every picture (a tag, a logo, a ruler, a watermark). An object moves from picture to picture and
its instances differ. These functions put numbers on what the person sees; camcli.audit.rule decides.

- `peak_spread`: where the members' maps peak, and how far apart: the median distance of each member's
  hottest cell from the members' median peak, as a fraction of the map's side (0: every map peaks in the
  same cell). A fixed place gives a few hundredths; an object that moves, a tenth or more.
- `find_mark`: the pixels under a pile-up's relevant region, compared across its pictures: the window where
  most of them share one pattern (a mark: a tag, a logo, a watermark), which of them carry it, and its template.
  A mark carried by a few of the pictures still stands out of a mean over many that differ (_consensus). Its
  template has two forms (Template): the patch's contrast as it is, and scaled per colour channel, so that a
  mark of one colour matches itself on backgrounds of any colour.
- `search_mark`: each picture's best match to a template where its map peaks (a mark found elsewhere);
  `align_mark` moves each carrier's place onto its mark; `mark_extent` measures the box the mark fills.
- `evidence_share`: the share of a map's cells at or above half its maximum (the member's mean): a
  shortcut is a small share of the picture.

Numpy, Pillow and SciPy's ndimage; nothing here reads the maps' files (camcli.audit.folder does), and the pictures
come in as a callable, so that a missing picture is the caller's to report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

PICTURE_CELLS = 48  # marks are compared on the pictures shrunk to this many cells a side
WINDOW = 6  # cells a side of the windows it compares (1/8 of the picture's side)
SHIFT = 2  # cells a member's window may move to meet the others'
# The fewest pictures a mark is flagged on. A few maps that happen to peak together, over instances of one
# shape, can match by chance (the best of many windows and shifts): on generated scenes, groups of 3 or 4 such
# maps scored up to 0.87 and none of 5 or more did, while tags scored 0.84-0.97 (make bench-audit).
MIN_PILE = 5
SEARCH_SHIFT = 4  # cells a window may move when the mark is looked for at a map's own peak (a coarse map's peak
# sits a few cells from the mark)
PAD = SEARCH_SHIFT + WINDOW  # cells of edge values around each small picture: no window is cut by the picture's edge
MIN_CONSENSUS = 3  # a pattern is formed from at least this many pictures (camcli.audit.rule.MIN_MEMBERS)
MAX_PATTERN_MEMBERS = 48  # pictures find_mark compares per place (a seeded sample of larger ones): the cost stays flat
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


def small_picture(picture: np.ndarray, side: int = PICTURE_CELLS, phase: tuple[float, float] = (0.0, 0.0)
                  ) -> np.ndarray:
    """An (H, W, 3) picture shrunk so that its short side is `side` cells (its shape kept, so that a mark of
    a fixed share of the short side is the same size in every picture), float64, each cell the mean of the
    pixels it covers, padded by PAD cells of its edge values on every side (a window about a mark at the edge
    stays centred on it). `phase`: the cells' grid moved by this share of a cell, (x, y), so that a mark that
    falls between two cells in one picture can be met on a grid where it falls on them (PHASES)."""
    from PIL import Image

    height, width = picture.shape[:2]
    short = min(height, width)
    size = (max(1, round(side * width / short)), max(1, round(side * height / short)))
    cell_x, cell_y = width / size[0], height / size[1]
    left, top = phase[0] * cell_x, phase[1] * cell_y
    region = (left, top, left + width - 0.5 * cell_x, top + height - 0.5 * cell_y)  # the same span for every phase
    small = Image.fromarray(np.ascontiguousarray(picture[..., :3])).resize(size, Image.Resampling.BOX, box=region)
    return np.pad(np.asarray(small, dtype=np.float64), ((PAD, PAD), (PAD, PAD), (0, 0)), mode="edge")


# The grids a picture is shrunk on when a mark is looked for (search_mark): a repeated pattern whose squares are two
# cells wide matches itself a half cell off at a cosine of about 0.7 (a tag in the left and the right corners of
# scenes 96 pixels wide), on one of these grids at about 0.95.
PHASES = ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5))


def _blocks(smalls: list[np.ndarray], x: float, y: float, shift: int = SHIFT) -> np.ndarray:
    """Each padded small picture's block of WINDOW + 2 * shift cells a side around (x, y) (fractions of the
    picture), (n, block, block, 3): the window and every shift of it."""
    block = WINDOW + 2 * shift
    out = np.empty((len(smalls), block, block, 3))
    for i, small in enumerate(smalls):
        height, width = small.shape[0] - 2 * PAD, small.shape[1] - 2 * PAD
        top = round(y * height - WINDOW / 2) + PAD - shift
        left = round(x * width - WINDOW / 2) + PAD - shift
        top, left = max(0, min(top, small.shape[0] - block)), max(0, min(left, small.shape[1] - block))
        piece = small[top: top + block, left: left + block]
        if piece.shape[:2] != (block, block):  # a picture smaller than the block (only a tiny one)
            piece = np.pad(piece, ((0, block - piece.shape[0]), (0, block - piece.shape[1]), (0, 0)), mode="edge")
        out[i] = piece
    return out


def _unit_patches(patches: np.ndarray, colour_free: bool = False) -> np.ndarray:
    """(n, ..., 3) patches as (n, d) unit vectors, each colour channel centred (a mark on a brighter or
    darker picture, or in another tint, still matches); a flat patch is all zero.

    `colour_free`: each centred channel is also scaled to unit contrast (CONTRAST_FLOOR at least) before the
    whole is, so what is compared is the shape of the contrast and its sign in each channel, not its strength.
    A mark of one fixed colour (a black glyph, a magenta stripe) differs from its background by (mark colour -
    background colour) in each channel: plain centring keeps that difference, so the same stripe on two
    backgrounds matched itself at 0.6-0.8 (make bench-audit). Its sign does not change (magenta lies above any
    background in red and blue, below it in green), so scaled per channel it matches at 0.9 or more."""
    n = len(patches)
    flat = patches.reshape(n, -1, 3)
    flat = flat - flat.mean(axis=1, keepdims=True)
    if colour_free:
        flat = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), CONTRAST_FLOOR)
    flat = flat.reshape(n, -1)
    lengths = np.linalg.norm(flat, axis=1, keepdims=True)
    return np.divide(flat, lengths, out=np.zeros_like(flat), where=lengths > _FLAT)


# A channel's contrast in a window (the length of its centred values, 0-255 a cell) is scaled up to unit from this
# much at least: the demo scenes' pixel noise gives a window about 30, an edge a few hundred.
CONTRAST_FLOOR = 60.0


class Template(NamedTuple):
    """A mark's pattern, WINDOW x WINDOW cells as unit vectors: `plain` (channels centred) and `colour_free`
    (each channel also scaled to unit contrast: _unit_patches). A picture's similarity to it is the better of
    the two, so that a mark matches whether its colour or its background changes."""

    plain: np.ndarray
    colour_free: np.ndarray


def seeded_sample(count: int, limit: int, seed: int) -> np.ndarray:
    """Positions 0..count-1, or a seeded sample of `limit` of them in order where there are more."""
    order = np.arange(count)
    if count > limit:
        order = np.sort(np.random.default_rng(seed).choice(order, limit, replace=False))
    return order


def small_picture_map(mean_map: np.ndarray, cells: int) -> np.ndarray:
    """A (grid, grid) map resized to (cells, cells) by area averaging."""
    from PIL import Image

    values = np.asarray(mean_map, dtype=np.float32)
    return np.asarray(Image.fromarray(values, mode="F").resize((cells, cells), Image.Resampling.BOX))


class SmallPictures:
    """Each picture of a class shrunk once on every grid of PHASES (small_picture), on first use, and kept as
    bytes (a 48-cell picture is 17 kB a grid): the pile-ups' marks and the search for them elsewhere read the
    same pictures many times. `pictures[i]()` gives an RGB picture or None."""

    def __init__(self, pictures: Sequence[Callable[[], np.ndarray | None]]):
        self._pictures = pictures
        self._small: dict[int, list[np.ndarray] | None] = {}

    def __call__(self, index: int, phase: int = 0) -> np.ndarray | None:
        """Picture `index` shrunk on grid PHASES[phase] (uint8 cells), None where it cannot be read."""
        if index not in self._small:
            picture = self._pictures[index]()
            self._small[index] = None if picture is None else [
                np.rint(small_picture(picture, phase=phase)).astype(np.uint8) for phase in PHASES]
        grids = self._small[index]
        return None if grids is None else grids[phase]


class Mark(NamedTuple):
    """A pattern repeated under part of a pile-up (find_mark): its figure (the median similarity of the
    matching pictures to the others', None: fewer than two pictures), how many pictures it compared, where
    (x, y fractions of the picture), the template (Template) and which of the given members
    match it (positions into them), with every member's similarity to the template."""

    figure: float | None
    compared: int
    where: tuple[float, float] | None
    template: Template | None
    matching: np.ndarray
    scores: np.ndarray


def _consensus(moved: np.ndarray, threshold: float, rounds: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(each member's best similarity, at its best shift, to the mean of the other members that form the
    pattern; which members form it). moved: (shifts, n, d) unit patches, the unshifted window in the middle.

    The pattern starts as the mean of all members and is then re-formed from those that match it (at least
    MIN_CONSENSUS of the best): a mark carried by a few of the pictures stands out of a mean over many that
    differ (their differences cancel, the mark adds up), and re-formed from its carriers it matches them
    alone. Each member is compared with the others' mean, never with a mean that holds itself."""
    n = moved.shape[1]
    aligned = moved[moved.shape[0] // 2]
    forming = np.ones(n, dtype=bool)
    best = np.zeros(n)
    for _ in range(rounds):
        total = aligned[forming].sum(axis=0)
        others = total[np.newaxis, :] - aligned * forming[:, np.newaxis]
        lengths = np.linalg.norm(others, axis=1, keepdims=True)
        others = np.divide(others, lengths, out=np.zeros_like(others), where=lengths > _FLAT)
        scores = np.einsum("snd,nd->sn", moved, others)
        pick = np.argmax(scores, axis=0)
        aligned = moved[pick, np.arange(n)]
        best = scores[pick, np.arange(n)]
        matching = best >= threshold
        if matching.sum() >= MIN_CONSENSUS:
            forming = matching
        else:
            forming = np.zeros(n, dtype=bool)
            forming[np.argsort(-best, kind="stable")[:MIN_CONSENSUS]] = True
    return best, best >= threshold


def find_mark(smalls: SmallPictures, members: np.ndarray, mean_map: np.ndarray, threshold: float,
              seed: int) -> Mark:
    """The pattern that most of a pile-up's pictures share, in its relevant region (the mean map's cells at
    or above HOT times its maximum): for each WINDOW x WINDOW window there, the members' patches (colour
    channels centred, unit length, moved by up to SHIFT cells) are compared (_consensus); the window where the
    most members match the others at `threshold` or above wins (ties: the higher median). Then every member
    is scored against the winning window's template. A seeded sample of MAX_PATTERN_MEMBERS members chooses
    the window, so that the cost stays flat."""
    members = np.asarray(members)
    sample = seeded_sample(len(members), MAX_PATTERN_MEMBERS, seed)
    readable = [k for k in sample if smalls(int(members[k])) is not None]
    nothing = Mark(None, len(readable), None, None, np.zeros(0, dtype=np.int64), np.zeros(len(members)))
    if len(readable) < 2:
        return nothing
    pictures = [smalls(int(members[k])) for k in readable]
    cells = PICTURE_CELLS
    region = small_picture_map(mean_map, cells) >= HOT * max(float(np.max(mean_map)), _FLAT)
    # every other cell each way: each window is compared at shifts of up to SHIFT cells, which covers the gaps
    lattice = region.copy()
    lattice[1::2, :] = False
    lattice[:, 1::2] = False
    best_key, where = None, None
    for row, col in zip(*np.nonzero(lattice if lattice.any() else region), strict=True):
        point = ((col + 0.5) / cells, (row + 0.5) / cells)
        blocks = _blocks(pictures, *point, SHIFT)
        moved = _shifted_patches(blocks, SHIFT)
        scores, matching = _consensus(moved, threshold)
        key = (int(matching.sum()), float(np.median(scores[matching])) if matching.any() else float(np.median(scores)))
        if best_key is None or key > best_key:
            best_key, where, chosen = key, point, (blocks, moved, scores, matching)
    blocks, moved, scores, matching = chosen
    # the template: the matching members' patches, each at its best shift, summed and scaled to unit length
    centre = moved.shape[0] // 2
    forming = matching if matching.any() else np.ones(len(readable), dtype=bool)
    seed_template = _unit(moved[centre][forming].sum(axis=0))
    best_shift = np.argmax(np.einsum("snd,d->sn", moved, seed_template), axis=0), np.arange(len(readable))
    colour_free = _shifted_patches(blocks, SHIFT, colour_free=True)
    template = Template(_unit(moved[best_shift][forming].sum(axis=0)),
                        _unit(colour_free[best_shift][forming].sum(axis=0)))
    everyone = search_mark(smalls, members, np.tile(where, (len(members), 1)), template, SHIFT)
    sampled = np.asarray(readable)
    # the sampled members keep their leave-one-out figure (plain), or their colour-free one where it is better
    everyone[sampled] = np.maximum(scores, np.einsum("snd,d->sn", colour_free, template.colour_free).max(axis=0))
    figure = float(np.median(scores[matching])) if matching.any() else float(np.median(scores))
    return Mark(figure, len(readable), where, template, np.flatnonzero(everyone >= threshold), everyone)


def search_mark(smalls: SmallPictures, indexes: np.ndarray, points: np.ndarray, template: Template,
                shift: int) -> np.ndarray:
    """Each picture's best similarity to `template` (the better of its plain and colour-free patterns), its window
    centred at its point ((x, y) fractions of the picture) and moved by up to `shift` cells, on each grid of PHASES;
    0 for unreadable pictures."""
    found = np.zeros(len(indexes))
    readable = [k for k, index in enumerate(indexes) if smalls(int(index)) is not None]
    for phase in range(len(PHASES)):
        # the other grids only for the pictures that come close on the first (a half cell moves a mark's
        # similarity from about 0.7 to 0.95, never from below OTHER_GRIDS)
        tried = readable if phase == 0 else [k for k in readable if found[k] >= OTHER_GRIDS]
        for start in range(0, len(tried), SEARCH_BATCH):
            batch = tried[start: start + SEARCH_BATCH]
            blocks = np.concatenate([_blocks([smalls(int(indexes[k]), phase)], float(points[k][0]),
                                             float(points[k][1]), shift) for k in batch])
            best = np.einsum("snd,d->sn", _shifted_patches(blocks, shift), template.plain).max(axis=0)
            # colour-free only where the plain figure comes close (a one-colour mark on another background
            # matched itself at 0.6-0.8 plain): half the cost
            close = best >= OTHER_GRIDS
            if close.any():
                colour_free = _shifted_patches(blocks[close], shift, colour_free=True)
                best[close] = np.maximum(best[close],
                                         np.einsum("snd,d->sn", colour_free, template.colour_free).max(axis=0))
            found[batch] = np.maximum(found[batch], best)
    return found


OTHER_GRIDS = 0.5
SEARCH_BATCH = 256  # pictures compared at once (their windows at every shift: 256 x 81 x 108 numbers)


def align_mark(smalls: SmallPictures, indexes: np.ndarray, points: np.ndarray, template: Template,
               shift: int = SHIFT) -> np.ndarray:
    """Each picture's point ((x, y) fractions) moved to where its window matches `template` best, within `shift`
    cells: (n, 2). Unreadable pictures keep their point."""
    aligned = np.array(points, dtype=np.float64, copy=True).reshape(len(indexes), 2)
    span = 2 * shift + 1
    for k, index in enumerate(indexes):
        small = smalls(int(index))
        if small is None:
            continue
        block = _blocks([small], float(aligned[k][0]), float(aligned[k][1]), shift)
        best = int(np.argmax(np.maximum(_shifted_patches(block, shift)[:, 0] @ template.plain,
                                        _shifted_patches(block, shift, True)[:, 0] @ template.colour_free)))
        height, width = small.shape[0] - 2 * PAD, small.shape[1] - 2 * PAD
        aligned[k] += ((best % span - shift) / width, (best // span - shift) / height)
    return np.clip(aligned, 0.0, 1.0)


EXTENT_CELLS = 16  # the block, in cells of the small pictures, in which mark_extent looks for the mark's edges
STANDS_OUT = 0.25  # a cell belongs to the mark when the carriers' mean stands out this much of its most


def mark_extent(smalls: SmallPictures, indexes: np.ndarray, points: np.ndarray) -> tuple | None:
    """The box that the mark fills around the carriers' (aligned) points: (left, top, right, bottom) offsets from
    the point, as shares of the picture's short side; None with fewer than MIN_CONSENSUS readable carriers.

    A copied mark survives averaging while what surrounds it differs from picture to picture and averages out:
    in a block of EXTENT_CELLS around the points, the carriers' mean picture departs from its own median colour
    where the mark is (colour channels summed). The mark is the connected group of cells departing by at least
    STANDS_OUT of the largest departure (gaps of a cell bridged), nearest the middle; the result is its box."""
    from scipy import ndimage

    half = EXTENT_CELLS // 2
    blocks = []
    for index, point in zip(indexes, points, strict=True):
        small = smalls(int(index))
        if small is None:
            continue
        inner = small[PAD:-PAD, PAD:-PAD]
        height, width = inner.shape[:2]
        row, col = round(float(point[1]) * height), round(float(point[0]) * width)
        padded = np.pad(inner, ((half, half), (half, half), (0, 0)), mode="edge")
        blocks.append(padded[row: row + 2 * half, col: col + 2 * half])
    if len(blocks) < MIN_CONSENSUS:
        return None
    mean = np.stack(blocks).mean(axis=0)
    departure = np.abs(mean - np.median(mean.reshape(-1, 3), axis=0)).sum(axis=-1)
    if float(departure.max()) <= _FLAT:
        return None
    marked = departure >= STANDS_OUT * float(departure.max())
    groups, _ = ndimage.label(ndimage.binary_dilation(marked, iterations=1))  # gaps of a cell bridged
    rows, cols = np.nonzero(groups)
    nearest = np.argmin((rows - half + 0.5) ** 2 + (cols - half + 0.5) ** 2)
    ys, xs = np.nonzero((groups == groups[rows[nearest], cols[nearest]]) & marked)
    cells = float(PICTURE_CELLS)
    return ((xs.min() - half) / cells, (ys.min() - half) / cells, (xs.max() + 1 - half) / cells,
            (ys.max() + 1 - half) / cells)


def _unit(vector: np.ndarray) -> np.ndarray:
    length = float(np.linalg.norm(vector))
    return vector / length if length > _FLAT else np.zeros_like(vector)


def _shifted_patches(blocks: np.ndarray, shift: int, colour_free: bool = False) -> np.ndarray:
    """(shifts, n, d): every member's window at every shift of up to `shift` cells, unit patches; the unshifted
    window is the middle one. The windows are views of the blocks (no copy until the centring)."""
    span = 2 * shift + 1
    n = len(blocks)
    windows = np.lib.stride_tricks.sliding_window_view(blocks, (WINDOW, WINDOW), axis=(1, 2))  # n, S, S, 3, W, W
    windows = windows[:, :span, :span].transpose(1, 2, 0, 4, 5, 3).reshape(span * span * n, WINDOW * WINDOW, 3)
    return _unit_patches(windows, colour_free).reshape(span * span, n, -1)


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
