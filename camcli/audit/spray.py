"""Spectral Relevance Analysis (SpRAy): the strategies a model uses for one class, found from its maps.

Lapuschkin et al. (2019, "Unmasking Clever Hans predictors and assessing what machines really
learn", Nature Communications) found a horse classifier that read a source tag in the images'
corner by clustering the maps of every horse image, not by looking at single maps. Their recipe,
which this module follows:

1. shrink every map of the class to one small grid and normalise it;
2. connect each map to its nearest neighbours (a sparse, symmetric affinity graph);
3. read the number of strategies off the eigengap of the graph's normalised Laplacian: with c
   well-separated groups, the c smallest eigenvalues are near 0 and the next one is not;
4. cluster spectrally into that many groups;
5. look at the small, tight clusters whose maps sit somewhere the rest of the class does not look.

The linear algebra is scikit-learn's and SciPy's (nearest neighbours, spectral clustering, t-SNE,
eigenvalues); this module only arranges it and computes each cluster's figures. Numpy in, numpy out:
no TensorFlow, and nothing here reads files (camcli.audit.folder does).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from camcli.audit.rule import BORDER_BAND, CORNER_SIDE, DEFAULT_RULE, MIN_MEMBERS, FlagRule
from camcli.audit.signals import MIN_PILE, PICTURE_CELLS, evidence_share, peak_cells, peak_spread
from camcli.errors import UsageError
from camcli.options import AuditOptions, field_default

GRID = 32  # maps are shrunk to GRID x GRID cells (SpRAy's maps were downscaled likewise, to 32 x 32)
NEIGHBOURS = field_default(AuditOptions, "neighbours")  # k of the k-nearest-neighbour affinity graph
SEED = field_default(AuditOptions, "seed")  # of the clustering and the t-SNE picture
MIN_CLUSTERS, MAX_CLUSTERS = 2, 10  # the eigengap chooses within this range
MIN_IMAGES = 12  # fewer maps than this in a class: too few to find strategies; one cluster
SAMPLES = 6  # images shown per cluster
_TINY = 1e-12
AUDIT_EXTRA_HINT = "pip install 'keras-camcli[audit]'"


@dataclass
class Cluster:
    """One strategy of a class: its members (indexes into the class's maps) and figures."""

    id: int
    members: np.ndarray
    share: float
    mean_map: np.ndarray  # (GRID, GRID), the mean of the members' maps, max 1 (all zero when they are)
    focus: float  # 1 - the normalised entropy of the mean map: 1 = one cell, 0 = uniform
    border_share: float  # of the mean map's mass, in the border band
    corner_share: float  # of the mean map's mass, in the four corner squares
    tightness: float  # mean cosine similarity of the members' maps to their mean
    rest_border_share: float | None  # the border share of the rest of the class
    peak_spread: float = 1.0  # how far apart its maps peak, a fraction of the map's side (camcli.audit.signals)
    pattern: float | None = None  # how alike the pixels under its maps' relevant regions are; None: no pictures
    pattern_compared: int = 0  # crops compared for `pattern`
    evidence: float = 0.0  # the mean share of its maps' cells at or above half their maximum
    purity: float | None = None  # with truth labels: the share of the commonest label
    purity_label: str | None = None
    main: bool = False  # the largest cluster
    flagged: bool = False
    reason: str = ""


@dataclass
class ClassClusters:
    """The result for one class: the clusters, the eigenvalues that chose their number, the embedding."""

    cluster_of: np.ndarray  # (n,) cluster id per map
    clusters: list[Cluster]
    eigenvalues: list[float]
    embedding: np.ndarray | None  # (n, 2) in [0, 1], or None for too few maps
    note: str = ""
    pile_ups: list[PileUp] = field(default_factory=list)  # where maps pile up in one place (with pictures)


@dataclass
class PileUp:
    """Maps of a class that peak in one place (camcli.audit.signals.pile_ups), and what lies there."""

    members: np.ndarray  # indexes into the class's maps
    place: tuple[float, float]  # (x, y) of their median peak, fractions of the picture
    share: float  # of the class's maps
    peak_spread: float
    pattern: float | None  # how alike the pixels are there (None: fewer than two pictures could be read)
    pattern_compared: int
    evidence: float
    flagged: bool = False
    reason: str = ""
    reliance: float | None = None  # covering the mark changes this share of its answers (None: not tested)
    mark: tuple[float, float] | None = None  # (x, y) of the pattern's best window at its first place
    marks: np.ndarray | None = None  # (n, 2): where each member carries the pattern, (x, y) fractions
    transfer: float | None = None  # pasting the mark turns this share of other classes' pictures into the class
    fit: np.ndarray | None = None  # (n,): how closely each member's pixels match the mark's template
    distinct: float | None = None  # members / (members + the class's pictures that come near the mark)
    extent: tuple | None = None  # the mark's box around each member's place: (left, top, right, bottom) offsets,
    # shares of the short side (signals.mark_extent); None: a square of reliance.COVER_SPAN
    near: int = 0  # pictures of the class whose best match to the mark is just below min_pattern
    moving: int = 0  # pictures that match the mark at a place no other carrier shares (left out: _at_fixed_places)
    model_decides: bool = False  # a candidate whose pattern is not distinct: only the model's answer can flag it

    @property
    def candidate(self) -> bool:
        """A mark (its carriers' fit is known) that at least MIN_PILE pictures carry: one that can be flagged."""
        return self.fit is not None and len(self.members) >= MIN_PILE

    def best_carriers(self, count: int) -> list[int]:
        """Positions (into `members`) of the `count` members whose pixels match the mark best."""
        if self.fit is None:
            return list(range(min(count, len(self.members))))
        return [int(k) for k in np.argsort(-self.fit, kind="stable")[:count]]

    def place_of(self, position: int) -> tuple[float, float]:
        """Where member `position` (into `members`) carries the mark."""
        return tuple(self.marks[position]) if self.marks is not None else (self.mark or self.place)


def require_audit_libraries() -> None:
    """UsageError with one line when scikit-learn or SciPy is missing."""
    try:
        import scipy  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as error:
        raise UsageError(f"camcli audit needs scikit-learn and SciPy ({error.name} is missing): "
                         f"{AUDIT_EXTRA_HINT}") from None


def shrink(heatmap: np.ndarray, grid: int = GRID) -> np.ndarray:
    """A (h, w) map as (grid, grid) float32 cells, each the mean of the pixels it covers (area
    averaging, as Pillow's BOX filter does). Maps smaller than the grid are spread over it."""
    from PIL import Image

    values = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"expected a non-empty 2-D map, got shape {values.shape}")
    return np.asarray(Image.fromarray(np.maximum(values, 0.0), mode="F").resize((grid, grid), Image.BOX))


def region_masks(grid: int = GRID) -> tuple[np.ndarray, np.ndarray]:
    """(border, corners): boolean (grid, grid) masks of the border band and the four corner squares."""
    rows, cols = np.mgrid[0:grid, 0:grid]
    from_edge_y = np.minimum(rows, grid - 1 - rows)
    from_edge_x = np.minimum(cols, grid - 1 - cols)
    band = max(1, round(grid * BORDER_BAND))
    side = max(1, round(grid * CORNER_SIDE))
    return np.minimum(from_edge_y, from_edge_x) < band, (from_edge_y < side) & (from_edge_x < side)


def unit_rows(maps: np.ndarray) -> np.ndarray:
    """Each map (a row) divided by its Euclidean length; all-zero rows stay zero."""
    norms = np.linalg.norm(maps, axis=1, keepdims=True)
    return np.divide(maps, norms, out=np.zeros_like(maps), where=norms > _TINY)


def mass_rows(maps: np.ndarray) -> np.ndarray:
    """Each map (a row) divided by its sum: where its mass sits; all-zero rows stay zero."""
    sums = maps.sum(axis=1, keepdims=True)
    return np.divide(maps, sums, out=np.zeros_like(maps), where=sums > _TINY)


def affinity_graph(unit_maps: np.ndarray, neighbours: int = NEIGHBOURS):
    """A sparse symmetric affinity: each map linked to its `neighbours` nearest (Euclidean distance of
    unit-length maps, i.e. cosine), weighted by a Gaussian of the distance whose width is the median
    neighbour distance; a link in either direction counts (the maximum of A and its transpose)."""
    from sklearn.neighbors import kneighbors_graph

    k = min(neighbours, len(unit_maps) - 1)
    graph = kneighbors_graph(unit_maps, k, mode="distance", include_self=False)
    positive = graph.data[graph.data > 0]
    width = float(np.median(positive)) if positive.size else 1.0
    graph.data = np.exp(-(graph.data ** 2) / (2.0 * width ** 2))
    return graph.maximum(graph.T).tocsr()


def laplacian_eigenvalues(affinity, count: int = MAX_CLUSTERS + 1) -> np.ndarray:
    """The `count` smallest eigenvalues of the graph's normalised Laplacian L = I - D^-1/2 A D^-1/2,
    ascending. They are 1 minus the largest eigenvalues of D^-1/2 A D^-1/2, which ARPACK finds fast."""
    from scipy.sparse import diags
    from scipy.sparse.linalg import eigsh

    degrees = np.asarray(affinity.sum(axis=1)).ravel()
    scale = np.divide(1.0, np.sqrt(degrees), out=np.zeros_like(degrees), where=degrees > 0)
    normalised = diags(scale) @ affinity @ diags(scale)
    n = affinity.shape[0]
    count = min(count, n)
    if n <= 400 or count >= n - 1:
        values = np.linalg.eigvalsh(normalised.toarray())[::-1][:count]
    else:
        values = np.sort(eigsh(normalised, k=count, which="LA", return_eigenvectors=False))[::-1]
    return np.clip(1.0 - values, 0.0, 2.0)


def choose_cluster_count(eigenvalues: Sequence[float], low: int = MIN_CLUSTERS, high: int = MAX_CLUSTERS) -> int:
    """The eigengap heuristic: the c in [low, high] with the largest gap between the c-th and the
    (c+1)-th smallest eigenvalue (von Luxburg 2007, "A tutorial on spectral clustering", section 8.3)."""
    values = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    high = min(high, len(values) - 1)
    if high < low:
        return max(1, min(low, len(values)))
    gaps = values[low:high + 1] - values[low - 1:high]  # gaps[i]: eigenvalue c+1 minus eigenvalue c, c = low + i
    return low + int(np.argmax(gaps))


def spectral_labels(affinity, count: int, seed: int = SEED) -> np.ndarray:
    """scikit-learn's spectral clustering of a precomputed affinity into `count` groups."""
    from sklearn.cluster import SpectralClustering

    with warnings.catch_warnings():
        # A graph in several pieces is what well-separated strategies give; sklearn warns about it.
        warnings.simplefilter("ignore", UserWarning)
        model = SpectralClustering(count, affinity="precomputed", assign_labels="cluster_qr", random_state=seed)
        return model.fit_predict(affinity)


def distinct_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the rows that differ (to 6 decimals), in their first order; for each row, the index of its copy
    among them)."""
    _, first, inverse = np.unique(np.round(rows, 6), axis=0, return_index=True, return_inverse=True)
    keep = np.sort(first)
    return rows[keep], np.searchsorted(keep, first)[np.ravel(inverse)]


def embed_2d(maps: np.ndarray, seed: int = SEED) -> np.ndarray | None:
    """A t-SNE picture of the maps, scaled into [0, 1] x [0, 1] (PCA to at most 30 dimensions first,
    as van der Maaten recommends for speed); None for fewer than 5 distinct maps.

    Identical maps share one point: only the distinct maps are embedded. t-SNE's PCA start divides by
    the spread of the first component, which is zero when every map is the same, and scikit-learn's
    Barnes-Hut code then crashes the process on the NaNs (a segmentation fault, not an exception).
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    values = np.nan_to_num(np.asarray(maps, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    distinct, inverse = distinct_rows(values)
    n = len(distinct)
    if n < 5:
        return None
    reduced = PCA(n_components=min(30, n - 1, values.shape[1]), random_state=seed).fit_transform(distinct)
    if not np.isfinite(reduced).all() or float(np.std(reduced[:, 0])) <= _TINY:
        return None
    perplexity = float(min(30.0, (n - 1) / 3.0))
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                  max_iter=500).fit_transform(reduced)
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high - low > _TINY, high - low, 1.0)
    return np.round((points - low) / span, 4)[inverse]


def _focus(mass: np.ndarray) -> float:
    total = mass.sum()
    if total <= _TINY:
        return 0.0
    p = mass[mass > _TINY] / total
    return float(1.0 - (-(p * np.log(p)).sum()) / np.log(mass.size))


def _purity(truth: Sequence[str | None] | None, members: np.ndarray) -> tuple[float | None, str | None]:
    if truth is None:
        return None, None
    known = [truth[i] for i in members if truth[i] is not None]
    if not known:
        return None, None
    labels, counts = np.unique(np.asarray(known, dtype=object), return_counts=True)
    best = int(np.argmax(counts))
    return round(float(counts[best]) / len(known), 4), str(labels[best])


def cluster_figures(maps: np.ndarray, cluster_of: np.ndarray, truth: Sequence[str | None] | None = None,
                    grid: int = GRID) -> list[Cluster]:
    """Each cluster's figures (see Cluster), from the class's flattened (n, grid*grid) maps."""
    border, corners = (mask.ravel() for mask in region_masks(grid))
    unit, mass = unit_rows(maps), mass_rows(maps)
    squares = maps.reshape(len(maps), grid, grid)
    clusters = []
    for cluster_id in np.unique(cluster_of):
        inside = cluster_of == cluster_id
        members = np.flatnonzero(inside)
        mean_mass = mass[inside].mean(axis=0)
        centre = unit[inside].mean(axis=0)
        length = np.linalg.norm(centre)
        tightness = float((unit[inside] @ (centre / length)).mean()) if length > _TINY else 0.0
        rest = mass[~inside]
        rest_border = float(rest.mean(axis=0)[border].sum()) if len(rest) else None
        peak = mean_mass.max()
        mean_map = (mean_mass / peak if peak > _TINY else mean_mass).reshape(grid, grid).astype(np.float32)
        purity, purity_label = _purity(truth, members)
        clusters.append(Cluster(
            id=int(cluster_id), members=members, share=round(len(members) / len(maps), 4), mean_map=mean_map,
            focus=round(_focus(mean_mass), 4), border_share=round(float(mean_mass[border].sum()), 4),
            corner_share=round(float(mean_mass[corners].sum()), 4), tightness=round(tightness, 4),
            rest_border_share=None if rest_border is None else round(rest_border, 4), purity=purity,
            purity_label=purity_label, peak_spread=round(peak_spread(squares[members]), 4),
            evidence=round(evidence_share(squares[members]), 4)))
    if clusters:
        max(clusters, key=lambda c: (len(c.members), -c.id)).main = True
    return clusters


def apply_rule(clusters: list[Cluster], rule: FlagRule) -> None:
    """The rule without the images' pixels (an output folder whose images have moved): set each cluster's
    `flagged` and `reason` by the border rule (FlagRule), quoting its figures or the first test it fails."""
    for cluster in clusters:
        if len(cluster.members) < MIN_MEMBERS:
            cluster.flagged, cluster.reason = False, _too_few(cluster)
        elif cluster.tightness < rule.min_tightness:
            cluster.flagged, cluster.reason = False, (f"not tight: its maps differ (tightness {cluster.tightness:.3f}"
                                                      f", below {rule.min_tightness:g})")
        else:
            _border_rule(cluster, rule)


def _too_few(cluster: Cluster) -> str:
    size = len(cluster.members)
    return f"{size} image{'s' if size != 1 else ''}: a flag judges a cluster of at least {MIN_MEMBERS}, never one image"


def find_pile_ups(squares: np.ndarray, live: np.ndarray, pictures: Sequence, rule: FlagRule,
                  seed: int = SEED) -> list[PileUp]:
    """The class's marks: maps that pile up on one repeated pattern, wherever it sits, each judged.

    1. Places: groups of at least MIN_MEMBERS maps that peak within `max_spread` of the map's side of one
       another (camcli.audit.signals.pile_ups), at most MAX_PLACES of them, the most crowded first.
    2. At each place, the pattern that part of its pictures share (signals.find_mark): the pictures whose
       patch there matches the others' at `min_pattern` or above carry it. Objects that happen to peak
       there do not.
    3. Places whose carriers' patterns match one another are one mark (a tag in any of the four corners).
    4. The mark is looked for in every other map of the class, where the map peaks and where the mark sits in
       the others (signals.search_mark): a carrier alone at its place still joins.
    A mark of at least MIN_PILE pictures is flagged (fewer can match by chance: camcli.audit.signals); a
    place of at least MIN_PILE maps with no mark is recorded, not flagged."""
    from camcli.audit.signals import (
        MAX_PATTERN_MEMBERS,
        SEARCH_SHIFT,
        SHIFT,
        SmallPictures,
        find_mark,
        mark_extent,
        pile_ups,
        search_mark,
    )

    grid = squares.shape[1]
    smalls = SmallPictures(pictures)
    peaks = peak_cells(squares)
    points = np.stack([(peaks[:, 1] + 0.5) / grid, (peaks[:, 0] + 0.5) / grid], axis=1)
    places = pile_ups(squares[live], rule.max_spread * grid, MIN_MEMBERS)[:MAX_PLACES]
    marks, plain = [], []
    for group in places:
        members = live[group]
        mark = find_mark(smalls, members, squares[members].mean(axis=0), rule.min_pattern, seed)
        if mark.template is not None and len(mark.matching) >= MIN_MEMBERS:
            marks.append((members, mark))
        elif len(members) >= MIN_PILE:
            plain.append((members, mark))
    found = [_mark_pile(squares, members, mark, rule) for members, mark in plain]
    for joined in _join_marks(marks, smalls, rule.min_pattern):
        carriers = {int(members[k]): (mark.where, float(mark.scores[k])) for members, mark in joined
                    for k in mark.matching}
        template = joined[0][1].template  # the most crowded place's (templates of other places sit a cell or two off)
        rest = np.setdiff1d(live, np.fromiter(carriers, dtype=np.int64, count=len(carriers)))
        # looked for where each map peaks (a coarse map's peak sits a few cells from the mark: SEARCH_SHIFT) and where
        # the mark sits in the others (a map may peak beside the mark; those places are exact: SHIFT)
        where = [points[rest]] + [np.tile(mark.where, (len(rest), 1)) for _, mark in joined]
        tried = np.stack([search_mark(smalls, rest, at, template, SEARCH_SHIFT if j == 0 else SHIFT)
                          for j, at in enumerate(where)])
        scores = tried.max(axis=0)
        places_found = [tuple(where[j][k]) for k, j in enumerate(np.argmax(tried, axis=0))]
        for k, (index, score) in enumerate(zip(rest, scores, strict=True)):
            if score >= rule.min_pattern:
                carriers[int(index)] = (places_found[k], float(score))
        # near: judged where each map peaks only (looking in more places finds more by chance)
        near_at_peak = (tried[0] >= rule.min_pattern - NEAR_BAND) & (scores < rule.min_pattern)
        carriers, moving = _at_fixed_places(smalls, carriers, template)
        if not carriers:  # every match sits at a place of its own: alike parts of moving objects, no mark
            continue
        carriers.update(_at_the_marks_places(smalls, np.setdiff1d(live, list(carriers)), carriers, template,
                                             rule.min_pattern - AT_PLACE_BAND))
        near = int(np.sum(near_at_peak & ~np.isin(rest, list(carriers))))
        pile = _carried_pile(squares, carriers, joined, near, moving, rule)
        if pile.candidate:  # the mark's box measured around the carriers that match it best
            best = pile.best_carriers(MAX_PATTERN_MEMBERS)
            pile.extent = mark_extent(smalls, pile.members[best], pile.marks[best])
        found.append(pile)
    return sorted(found, key=lambda pile: -len(pile.members))


MAX_PLACES = 24  # places examined per class, the most crowded first: the cost stays flat
# A picture "comes near" a mark when its best similarity to it is within this of min_pattern, below it: copies of a
# mark match or do not (on generated scenes, 9 of 693 other pictures came near the tag's mark, which 485 carried);
# instances of an object's edge make a continuum (as many near as matching, or more).
NEAR_BAND = 0.2


# A copied mark sits at a fixed place: a carrier's mark (moved onto its best match, signals.align_mark) lies within
# this share of the picture's side (1.5 cells of signals.PICTURE_CELLS, each way) of another carrier's. Alike pixels
# under a moving object do not: on generated scenes, the top edges of circles matched a stripe's template at up to
# 0.98, each at its own place, while the stripes' carriers shared four places (make bench-audit).
SAME_PLACE = 1.5 / PICTURE_CELLS


def same_places(places: np.ndarray) -> np.ndarray:
    """(n, n) booleans: the places ((x, y) fractions) that lie within SAME_PLACE of each other each way, or, both within
    BORDER_BAND of the picture's edges, at the same distances from its edges (a logo or a stamp kept at a fixed distance
    from a corner or an edge, in whichever corner or on whichever edge: a dataset that mixes sources mixes them)."""
    places = np.asarray(places, dtype=np.float64).reshape(-1, 2)
    from_edges = np.minimum(places, 1.0 - places)
    edged = from_edges.min(axis=1) < BORDER_BAND
    return _close(places) | (_close(from_edges) & edged[:, np.newaxis] & edged[np.newaxis, :])


def _close(places: np.ndarray) -> np.ndarray:
    """(n, n) booleans: the (n, 2) places that lie within SAME_PLACE of each other each way."""
    return np.abs(places[:, np.newaxis, :] - places[np.newaxis, :, :]).max(axis=2) <= SAME_PLACE


def _at_fixed_places(smalls, carriers: dict, template) -> tuple[dict, int]:
    """(the carriers whose mark, moved onto its best match, shares its place with another carrier's (same_places),
    with their places moved; how many were left out: alike pixels at a place of their own)."""
    from camcli.audit.signals import align_mark

    if not carriers:
        return carriers, 0
    indexes = np.fromiter(carriers, dtype=np.int64, count=len(carriers))
    places = align_mark(smalls, indexes, np.asarray([carriers[int(i)][0] for i in indexes]), template)
    shared = (same_places(places).sum(axis=1) - 1) >= 1
    kept = {int(i): (tuple(places[k]), carriers[int(i)][1]) for k, i in enumerate(indexes) if shared[k]}
    return kept, int((~shared).sum())


# At a place its carriers share, a picture carries the mark when it comes within this of min_pattern: what lies
# around a copy differs from picture to picture (a glyph drawn over an object), which lowers its figure. On generated
# scenes, the tagged pictures missed at a fixed place scored 0.66-0.79 there, the others mostly below 0.6.
AT_PLACE_BAND = 0.15
MAX_MARK_PLACES = 8  # the places a mark is looked for at (the most carried first): the cost stays flat


def _at_the_marks_places(smalls, indexes: np.ndarray, carriers: dict, template, threshold: float) -> dict:
    """{index: (place, figure)} of the pictures (`indexes`) whose window at one of the places the carriers share
    (within SAME_PLACE; at most MAX_MARK_PLACES, the most carried first) matches `template` at `threshold` or
    above, moved by up to a cell."""
    from camcli.audit.signals import search_mark

    if not len(indexes):
        return {}
    places = np.asarray([place for place, _ in carriers.values()])
    close = _close(places)
    remaining = np.ones(len(places), dtype=bool)
    shared = []
    while remaining.any() and len(shared) < MAX_MARK_PLACES:
        crowd = (close & remaining[np.newaxis, :]).sum(axis=1) * remaining
        centre = int(np.argmax(crowd))
        shared.append(places[centre])
        remaining &= ~close[centre]
    tried = np.stack([search_mark(smalls, indexes, np.tile(place, (len(indexes), 1)), template, 1)
                      for place in shared])
    best = np.argmax(tried, axis=0)
    return {int(index): (tuple(shared[best[k]]), float(tried[best[k], k])) for k, index in enumerate(indexes)
            if tried[best[k], k] >= threshold}


def _join_marks(marks: list, smalls, threshold: float) -> list[list]:
    """The marks found at several places, grouped when they are one pattern: when most of a mark's carriers
    match the template of a group's first (most crowded) mark, at their own place (signals.search_mark, on every
    grid of signals.PHASES: the same tag, a half cell off, matches itself)."""
    from camcli.audit.signals import SHIFT, search_mark

    groups: list[list] = []
    for members, mark in marks:
        carriers = members[mark.matching]
        places = np.tile(mark.where, (len(carriers), 1))
        home = next((group for group in groups
                     if np.median(search_mark(smalls, carriers, places, group[0][1].template, SHIFT)) >= threshold),
                    None)
        if home is None:
            groups.append([(members, mark)])
        else:
            home.append((members, mark))
    return groups


def _carried_pile(squares, carriers: dict[int, tuple[tuple[float, float], float]], joined: list, near: int,
                  moving: int, rule: FlagRule) -> PileUp:
    """The mark's pile-up: its carriers ({index: (place, fit)}), found at the places of `joined` (`moving` more
    matched it at places of their own and were left out), judged by its pattern alone (MIN_PILE carriers,
    distinct; below min_distinct, the model decides: PileUp.model_decides)."""
    members = np.asarray(sorted(carriers), dtype=np.int64)
    figures = [mark.figure for _, mark in joined if mark.figure is not None]
    pattern = float(np.median(figures)) if figures else None
    compared = sum(mark.compared for _, mark in joined)
    places = len(joined)
    pile = PileUp(**_place_figures(squares, members), pattern=None if pattern is None else round(pattern, 4),
                  pattern_compared=compared, mark=joined[0][1].where,
                  marks=np.asarray([carriers[int(i)][0] for i in members]),
                  fit=np.asarray([carriers[int(i)][1] for i in members]),
                  distinct=round(len(members) / (len(members) + near), 4), near=near,
                  moving=moving)
    where = (f"at ({pile.mark[0]:.2f}, {pile.mark[1]:.2f}) of the picture" if places == 1
             else f"at {places} places")
    if moving:
        where += f" ({moving} more match it each at a place of its own: left out, a copied mark stays put)"
    if len(members) < MIN_PILE:
        pile.reason = (f"{len(members)} maps peak on one pattern {where}: fewer than {MIN_PILE}, which can "
                       "match by chance")
        return pile
    if pile.distinct < rule.min_distinct:
        pile.model_decides = True
        pile.reason = (f"{len(members)} maps peak on alike pixels {where} (similarity {pattern:.2f}), but {near} "
                       f"more of the class come near them ({rule.min_pattern - NEAR_BAND:.2f} to {rule.min_pattern:g}; "
                       f"distinct {pile.distinct:.2f}, below {rule.min_distinct:g}): an object's look varies, a "
                       f"copied mark does not; only the model's answer (at least {rule.min_reliance_not_distinct:g}) "
                       "can flag it")
        return pile
    pile.flagged, pile.reason = True, (
        f"{len(members)} maps ({pile.share:.0%} of the class) peak on the same pattern {where} (similarity "
        f"{pattern:.2f} over {compared} pictures; {near} more come near it, distinct {pile.distinct:.2f}), "
        f"{pile.evidence:.0%} of each map hot: a possible shortcut")
    return pile


def _place_figures(squares: np.ndarray, members: np.ndarray) -> dict:
    """PileUp's figures of where `members`' maps (of the class's `squares`) peak: members, place (their median
    peak, (x, y) fractions), share of the class, peak spread and evidence."""
    grid = squares.shape[1]
    maps = squares[members]
    rows, cols = np.median(peak_cells(maps), axis=0)
    return {"members": members, "place": (round((cols + 0.5) / grid, 4), round((rows + 0.5) / grid, 4)),
            "share": round(len(members) / len(squares), 4), "peak_spread": round(peak_spread(maps), 4),
            "evidence": round(evidence_share(maps), 4)}


def _mark_pile(squares, members: np.ndarray, mark, rule: FlagRule) -> PileUp:
    """A place of many maps with no repeated pattern under them: recorded, not flagged."""
    pile = PileUp(**_place_figures(squares, members), pattern=None if mark.figure is None else round(mark.figure, 4),
                  pattern_compared=mark.compared, mark=mark.where)
    where = f"at ({pile.place[0]:.2f}, {pile.place[1]:.2f}) of the picture"
    if mark.figure is None:
        pile.reason = f"{len(members)} maps peak {where}; their images cannot be read to compare"
    else:
        pile.reason = (f"{len(members)} maps peak {where}, over pixels that differ from image to image "
                       f"({len(mark.matching)} of {mark.compared} alike at {rule.min_pattern:g} or above): "
                       "not a repeated mark")
    return pile


def check_reliance(piles: list[PileUp], clusters: list[Cluster], explainer, pictures: Sequence, class_index: int,
                   rule: FlagRule, seed: int = SEED, others: Sequence = ()) -> None:
    """With the model, does the answer follow each mark that the pattern flags, or that it leaves to the model
    (PileUp.model_decides: not distinct) (camcli.audit.reliance)?
    - transfer: the mark, cut from the pictures that carry it best, pasted into pictures of other classes
      (`others`, callables) at its place: how much more often their top-1 becomes the class than with the same
      place of other pictures of other classes pasted (the control: pasting anything there hides part of a
      picture). The mark is flagged when this reaches `rule.min_reliance` (`rule.min_reliance_not_distinct` for a
      mark that is not distinct): the model's answer decides.
    - reliance: each carrier with its mark covered: the share whose top-1 leaves the class. Reported; it decides
      only where there are no pictures of other classes to paste into. Covering alone cannot tell a shortcut
      where a mark sits on or beside the object (a tag in the middle of the picture): it hides the object too.
    At most MODEL_TESTS marks per class are tested: those the pattern flags first, the most distinct first. The
    clusters are judged again."""
    from camcli.audit.reliance import reliance, transfer

    tested = sorted((pile for pile in piles if pile.flagged or pile.model_decides),
                    key=lambda pile: (pile.model_decides, -(pile.distinct or 0.0), -len(pile.members)))
    for pile in tested[:MODEL_TESTS]:
        places = [pile.place_of(k) for k in range(len(pile.members))]
        pile.reliance = reliance(explainer, [pictures[i] for i in pile.members], places, class_index, seed,
                                 pile.extent)
        donors = pile.best_carriers(DONORS)
        pile.transfer = transfer(explainer, [pictures[pile.members[k]] for k in donors], [places[k] for k in donors],
                                 list(others), class_index, seed, pile.extent, controls=list(others))
        figure = pile.transfer if pile.transfer is not None else pile.reliance
        if figure is None:
            continue
        needed = rule.min_reliance_not_distinct if pile.model_decides else rule.min_reliance
        told = []
        if pile.transfer is not None:
            told.append(f"pasted into pictures of other classes it turns {pile.transfer:.0%} more of them into this "
                        "class than the same place of other pictures does")
        if pile.reliance is not None:
            told.append(f"covering it changes the answer of {pile.reliance:.0%} of its images")
        said = "; ".join(told)
        found = pile.reason.split(": a possible shortcut")[0].split("; only the model's answer")[0]
        pile.flagged = figure >= needed
        if pile.flagged:
            yet = "yet " if pile.model_decides else ""
            pile.reason = f"{found}; {yet}{said}: the answer follows it, a likely shortcut"
        else:
            pile.reason = f"{found}; but {said} (below {needed:g}): the model's answer does not follow it"
    judge_by_pile_ups(clusters, piles, rule)


MODEL_TESTS = 8  # marks tested with the model per class, the most distinct first: the cost stays bounded
DONORS = 4  # the carriers a mark is cut from for the transfer test, used in turn


def judge_by_pile_ups(clusters: list[Cluster], piles: list[PileUp], rule: FlagRule) -> None:
    """A SpRAy cluster is flagged when at least half of its maps carry flagged marks: the mark judges a group of
    images (in one place or several), and the cluster shows it."""
    flagged = [pile for pile in piles if pile.flagged]
    for cluster in clusters:
        inside = [pile for pile in flagged if np.isin(pile.members, cluster.members).any()]
        covered = np.isin(cluster.members, np.concatenate([p.members for p in inside])).sum() if inside else 0
        if len(cluster.members) < MIN_MEMBERS:
            cluster.flagged, cluster.reason = False, _too_few(cluster)
        elif covered * 2 >= len(cluster.members):
            best = max(inside, key=lambda pile: np.isin(pile.members, cluster.members).sum())
            cluster.pattern, cluster.pattern_compared = best.pattern, best.pattern_compared
            cluster.flagged, cluster.reason = True, (f"{covered} of its {len(cluster.members)} maps carry flagged "
                                                     f"marks; {best.reason}")
        else:
            cluster.flagged = False
            cluster.reason = (f"{covered} of its {len(cluster.members)} maps carry flagged marks"
                              if covered else "no repeated mark where its maps peak")


def _border_rule(cluster: Cluster, rule: FlagRule) -> None:
    """The rule without the images' pixels: small, (tight,) and away at the border."""
    unread = "the images cannot be read, so the border rule judges: "
    if cluster.rest_border_share is None:
        cluster.flagged, cluster.reason = False, unread + "the only cluster of the class, nothing to compare with"
    elif cluster.share > rule.max_share:
        cluster.flagged, cluster.reason = False, unread + (f"not small: {cluster.share:.1%} of the class "
                                                           f"(above {rule.max_share:.0%})")
    elif cluster.border_share < cluster.rest_border_share + rule.min_away:
        cluster.flagged, cluster.reason = False, unread + (
            f"looks where the rest of the class looks (border share {cluster.border_share:.3f} against "
            f"{cluster.rest_border_share:.3f}, less than {rule.min_away:g} above it)")
    else:
        cluster.flagged, cluster.reason = True, unread + (
            f"small ({cluster.share:.0%} of the class), tight ({cluster.tightness:.2f}), its mass sits at the "
            f"border ({cluster.border_share:.2f} against {cluster.rest_border_share:.2f} for the rest of the class; "
            f"corners {cluster.corner_share:.2f}): a possible shortcut")


def _strategies(unit_maps: np.ndarray, neighbours: int, seed: int) -> tuple[np.ndarray, list[float], str]:
    """(cluster id per map, eigenvalues, note) for the live maps of a class, unit length. Identical maps
    are clustered once and share their cluster: copies of one map would otherwise fill each other's
    neighbour lists at distance 0 and be split arbitrarily."""
    distinct, inverse = distinct_rows(unit_maps)
    if len(distinct) < MIN_IMAGES:
        copies = "" if len(distinct) == len(unit_maps) else f", {len(distinct)} distinct"
        note = f"{len(unit_maps)} maps{copies}: too few to find strategies (at least {MIN_IMAGES}); one cluster"
        return np.zeros(len(unit_maps), dtype=np.int64), [], note
    affinity = affinity_graph(distinct, neighbours)
    values = laplacian_eigenvalues(affinity)
    labels = spectral_labels(affinity, choose_cluster_count(values), seed)
    return np.asarray(labels, dtype=np.int64)[inverse], [round(float(v), 6) for v in values], ""


def cluster_class(maps: np.ndarray, truth: Sequence[str | None] | None = None, *, rule: FlagRule = DEFAULT_RULE,
                  neighbours: int = NEIGHBOURS, seed: int = SEED, embed: bool = True,
                  grid: int = GRID, pictures: Sequence | None = None) -> ClassClusters:
    """SpRAy on one class's maps, (n, grid, grid) or (n, grid*grid), each scaled to max 1 (or all zero).

    All-zero maps take no part in the clustering (they have no direction): they form a cluster of their
    own, never flagged, and the note counts them. NaN and infinite values count as zero. Identical maps
    always share a cluster, and fewer than MIN_IMAGES distinct maps are one cluster.
    """
    flat = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1) if len(maps) else np.zeros((0, grid * grid))
    flat = np.maximum(np.nan_to_num(flat, nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    empty = flat.max(axis=1, initial=0.0) <= _TINY
    live = np.flatnonzero(~empty)
    cluster_of = np.zeros(len(flat), dtype=np.int64)
    eigenvalues: list[float] = []
    note = ""
    if len(live):
        cluster_of[live], eigenvalues, note = _strategies(unit_rows(flat[live]), neighbours, seed)
    if empty.any():
        cluster_of[empty] = cluster_of.max(initial=-1) + 1 if len(live) else 0
        note = "; ".join(filter(None, [note, f"{int(empty.sum())} all-zero maps form a cluster of their own"]))
    clusters = cluster_figures(flat, cluster_of, truth, grid)
    pile_up_list = []
    if pictures is None:
        apply_rule(clusters, rule)
    else:
        squares = flat.reshape(len(flat), grid, grid)
        pile_up_list = find_pile_ups(squares, live, pictures, rule, seed)
        judge_by_pile_ups(clusters, pile_up_list, rule)
    for cluster in clusters:
        if empty[cluster.members].all():
            cluster.flagged, cluster.reason = False, "all-zero maps: the method found no evidence for the class"
    embedding = embed_2d(unit_rows(flat), seed) if embed else None
    return ClassClusters(cluster_of=cluster_of, clusters=clusters, eigenvalues=eigenvalues, embedding=embedding,
                         note=note, pile_ups=pile_up_list)
