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
from camcli.audit.signals import evidence_share, pattern_similarity, peak_cells, peak_spread
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
    mark: tuple[float, float] | None = None  # (x, y) of the pattern's best window: what the occlusion test covers


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
    """The class's pile-ups (maps that peak in one place, among the `live` ones), each judged: flagged when
    the pixels there are the same pattern in its images (FlagRule.min_pattern)."""
    from camcli.audit.signals import MIN_PILE, pile_ups

    found = []
    grid = squares.shape[1]
    for group in pile_ups(squares[live], rule.max_spread * grid, max(MIN_PILE, MIN_MEMBERS)):
        members = live[group]
        maps = squares[members]
        pattern, compared, mark = pattern_similarity([pictures[i] for i in members], maps.mean(axis=0), seed)
        rows, cols = np.median(peak_cells(maps), axis=0)
        pile = PileUp(members=members, place=(round((cols + 0.5) / grid, 4), round((rows + 0.5) / grid, 4)),
                      share=round(len(members) / len(squares), 4), peak_spread=round(peak_spread(maps), 4),
                      pattern=None if pattern is None else round(pattern, 4), pattern_compared=compared,
                      evidence=round(evidence_share(maps), 4), mark=mark)
        where = f"at ({pile.place[0]:.2f}, {pile.place[1]:.2f}) of the picture"
        if pattern is None:
            pile.reason = f"{len(members)} maps peak {where}; their images cannot be read to compare"
        elif pattern < rule.min_pattern:
            pile.reason = (f"{len(members)} maps peak {where}, over pixels that differ from image to image "
                           f"(pattern {pattern:.2f}, below {rule.min_pattern:g}): not a repeated mark")
        else:
            pile.flagged, pile.reason = True, (
                f"{len(members)} maps ({pile.share:.0%} of the class) pile up {where} (spread "
                f"{pile.peak_spread:.3f} of the side) over the same pattern in their images (similarity "
                f"{pattern:.2f} over {compared}), {pile.evidence:.0%} of each map hot: a possible shortcut")
        found.append(pile)
    return found


def check_reliance(piles: list[PileUp], clusters: list[Cluster], explainer, pictures: Sequence, class_index: int,
                  rule: FlagRule, seed: int = SEED) -> None:
    """With the model: cover each flagged pile-up's place in its images and score them again
    (camcli.audit.reliance); a pile-up stays flagged only when the answer follows the pattern, the top-1 of at
    least `rule.min_reliance` of its images leaving the class. The clusters are judged again."""
    from camcli.audit.reliance import COVER_SPAN, reliance

    for pile in piles:
        if not pile.flagged:
            continue
        pile.reliance = reliance(explainer, [pictures[i] for i in pile.members], class_index,
                                 pile.mark or pile.place, seed)
        if pile.reliance is None:
            continue
        covered = (f"covering {COVER_SPAN:.0%} of the picture there changes the answer of {pile.reliance:.0%} of "
                   "its images")
        if pile.reliance >= rule.min_reliance:
            pile.reason = pile.reason.replace(": a possible shortcut", f"; {covered}: the answer follows it, a "
                                                                       "likely shortcut")
        else:
            pile.flagged = False
            pile.reason = pile.reason.replace(": a possible shortcut", f"; but {covered} (below "
                                                                       f"{rule.min_reliance:g}): the model looks "
                                                                       "at it and answers from something else")
    judge_by_pile_ups(clusters, piles, rule)


def judge_by_pile_ups(clusters: list[Cluster], piles: list[PileUp], rule: FlagRule) -> None:
    """A SpRAy cluster is flagged when at least half of its maps belong to flagged pile-ups: the pile-up
    judges a group of images in one place, and the cluster shows it."""
    flagged = [pile for pile in piles if pile.flagged]
    for cluster in clusters:
        inside = [pile for pile in flagged if np.isin(pile.members, cluster.members).any()]
        covered = np.isin(cluster.members, np.concatenate([p.members for p in inside])).sum() if inside else 0
        if len(cluster.members) < MIN_MEMBERS:
            cluster.flagged, cluster.reason = False, _too_few(cluster)
        elif covered * 2 >= len(cluster.members):
            best = max(inside, key=lambda pile: np.isin(pile.members, cluster.members).sum())
            cluster.pattern, cluster.pattern_compared = best.pattern, best.pattern_compared
            cluster.flagged, cluster.reason = True, (f"{covered} of its {len(cluster.members)} maps belong to "
                                                     f"shortcut pile-ups; {best.reason}")
        else:
            cluster.flagged = False
            cluster.reason = (f"{covered} of its {len(cluster.members)} maps belong to shortcut pile-ups"
                              if covered else "no repeated pattern where its maps pile up")


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
