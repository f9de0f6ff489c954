"""The audit's shortcut signals (camcli.audit.signals) and the rule that reads them (issue 30): a shortcut that
most of a class relies on, or one in the middle of the picture, is flagged; an object that moves, or varied
content in one fixed place, is not; the thresholds hold at their bounds."""

import numpy as np
import pytest

from camcli.audit.rule import MIN_MEMBERS, FlagRule
from camcli.audit.signals import evidence_share, hot_box, pattern_similarity, peak_spread
from camcli.audit.spray import GRID, Cluster, apply_rule, cluster_class

pytest.importorskip("sklearn", reason="the audit extra (scikit-learn) is not installed")

SIDE = 96  # pixels of the synthetic pictures
TAG = 14  # the tag's side in pixels


def _blob(centre_xy, grid=GRID, width=2.5):
    """A map with one Gaussian blob at (x, y) in picture fractions, on the audit's grid, max 1."""
    ys, xs = np.mgrid[0:grid, 0:grid] + 0.5
    x, y = centre_xy[0] * grid, centre_xy[1] * grid
    return np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * width ** 2)).astype(np.float32)


def _background(rng):
    """A picture unlike any other: smooth random colours plus noise."""
    base = rng.uniform(40, 215, (4, 4, 3))
    picture = np.kron(base, np.ones((SIDE // 4, SIDE // 4, 1)))
    return np.clip(picture + rng.normal(0, 10, picture.shape), 0, 255).astype(np.uint8)


def _with_tag(picture, x, y):
    """A black and white 3x3 checkerboard of TAG pixels with its top-left corner at (x, y)."""
    cell = TAG // 3
    for row in range(3):
        for col in range(3):
            value = 255 if (row + col) % 2 == 0 else 0
            picture[y + row * cell: y + (row + 1) * cell, x + col * cell: x + (col + 1) * cell] = value
    return picture


def _with_object(picture, rng, x, y):
    """A disc of a random colour, centred at (x, y), radius 12 to 20 pixels."""
    ys, xs = np.mgrid[0:SIDE, 0:SIDE]
    radius = rng.uniform(12, 20)
    picture[(xs - x) ** 2 + (ys - y) ** 2 <= radius ** 2] = rng.integers(0, 256, 3)
    return picture


def _tagged(rng, place):
    """(map, picture): the map peaks on a tag at `place` ((x, y) pixels of the tag's corner); no two maps
    are quite the same (as no two real maps are)."""
    x, y = place
    picture = _with_tag(_with_object(_background(rng), rng, *rng.uniform(25, 70, 2)), x, y)
    blob = _blob(((x + TAG / 2) / SIDE, (y + TAG / 2) / SIDE), width=rng.uniform(2.2, 2.8))
    return np.maximum(blob + rng.uniform(0, 0.05, blob.shape).astype(np.float32), 0), picture


def _object(rng):
    """(map, picture): the map peaks on an object that sits anywhere."""
    x, y = rng.uniform(20, 76, 2)
    return _blob((x / SIDE, y / SIDE)), _with_object(_background(rng), rng, x, y)


def _audit(pairs, seed=0):
    maps = np.stack([m for m, _ in pairs])
    pictures = [(lambda p=p: p) for _, p in pairs]
    return cluster_class(maps, pictures=pictures, seed=seed, embed=False)


def _flagged_members(result):
    return {int(i) for cluster in result.clusters if cluster.flagged for i in cluster.members}


@pytest.mark.parametrize("place", [(4, 4), ((SIDE - TAG) // 2, (SIDE - TAG) // 2)], ids=["corner", "centre"])
def test_a_shortcut_most_of_the_class_relies_on_is_flagged(place):
    """80% of the class's maps sit on the tag: the tag's cluster is most of the class, and still flagged."""
    rng = np.random.default_rng(1)
    pairs = [_tagged(rng, place) for _ in range(40)] + [_object(rng) for _ in range(10)]
    result = _audit(pairs)
    flagged = _flagged_members(result)
    tagged = set(range(40))
    assert len(flagged & tagged) >= 36 and not flagged - tagged
    reasons = [c.reason for c in result.clusters if c.flagged]
    assert all("pile up in one place" in reason and "same pattern" in reason for reason in reasons)


def test_a_moving_object_is_not_flagged():
    rng = np.random.default_rng(2)
    result = _audit([_object(rng) for _ in range(50)])
    assert _flagged_members(result) == set()
    assert all(c.peak_spread > FlagRule().max_spread or (c.pattern or 0) < FlagRule().min_pattern
               for c in result.clusters)


def test_varied_content_in_one_fixed_place_is_not_flagged():
    """Objects always centred, as in many photo datasets: one place, but the pixels there differ."""
    rng = np.random.default_rng(3)
    pairs = []
    for _ in range(40):
        picture = _with_object(_background(rng), rng, SIDE / 2, SIDE / 2)
        picture[34:62, 34:62] = np.clip(picture[34:62, 34:62] + rng.normal(0, 60, (28, 28, 3)), 0, 255)
        pairs.append((_blob((0.5, 0.5)), picture))
    result = _audit(pairs)
    assert _flagged_members(result) == set()
    assert any("not a repeated mark" in c.reason for c in result.clusters)


def test_signals_measure_what_they_say():
    same_place = np.stack([_blob((0.2, 0.2)) for _ in range(5)])
    assert peak_spread(same_place) == 0.0
    moving = np.stack([_blob((x, 0.5)) for x in (0.1, 0.3, 0.5, 0.7, 0.9)])
    assert peak_spread(moving) == pytest.approx(0.1875, abs=0.04)  # median distance 6 cells of 32
    assert evidence_share(same_place) == pytest.approx(float((_blob((0.2, 0.2)) >= 0.5).mean()))
    x0, y0, x1, y1 = hot_box(_blob((0.5, 0.5)))
    assert x0 < 0.5 < x1 and y0 < 0.5 < y1 and x1 - x0 < 0.3
    assert hot_box(np.zeros((GRID, GRID), np.float32)) is None
    rng = np.random.default_rng(4)
    tag = _with_tag(np.zeros((SIDE, SIDE, 3), np.uint8), 40, 40)
    box = (40 / SIDE, 40 / SIDE, (40 + TAG) / SIDE, (40 + TAG) / SIDE)
    copies = [np.clip(tag.astype(int) + rng.integers(-20, 20, tag.shape), 0, 255).astype(np.uint8) for _ in range(6)]
    similarity, compared = pattern_similarity([(lambda c=c: c) for c in copies], [box] * 6)
    assert compared == 6 and similarity > 0.95
    varied = [_background(rng) for _ in range(6)]
    similarity, _ = pattern_similarity([(lambda c=c: c) for c in varied], [box] * 6)
    assert similarity < 0.5
    assert pattern_similarity([lambda: None] * 4, [box] * 4) == (None, 0)  # no picture could be read


def _cluster(**figures):
    base = {"id": 0, "members": np.arange(10), "share": 0.5, "mean_map": np.zeros((GRID, GRID), np.float32),
            "focus": 0.5, "border_share": 0.1, "corner_share": 0.0, "tightness": 0.9, "rest_border_share": 0.1,
            "peak_spread": 0.05, "pattern": 0.8, "pattern_compared": 10, "evidence": 0.05}
    return Cluster(**{**base, **figures})


@pytest.mark.parametrize(("figures", "flagged", "reason"), [
    ({}, True, "possible shortcut"),
    ({"peak_spread": 0.06}, True, "possible shortcut"),  # exactly max_spread
    ({"peak_spread": 0.0601}, False, "peak in different places"),
    ({"pattern": 0.75}, True, "possible shortcut"),  # exactly min_pattern
    ({"pattern": 0.7499}, False, "not a repeated mark"),
    ({"tightness": 0.8499}, False, "not tight"),
    ({"members": np.arange(MIN_MEMBERS - 1)}, False, "never one image"),
    ({"members": np.arange(MIN_MEMBERS)}, True, "possible shortcut"),
    ({"share": 1.0, "rest_border_share": None}, True, "possible shortcut"),  # the whole class: still judged
    ({"pattern": None}, False, "the images cannot be read, so the border rule judges"),
    ({"pattern": None, "share": 0.2, "border_share": 0.7, "rest_border_share": 0.1}, True, "border rule"),
])
def test_the_rule_at_its_bounds(figures, flagged, reason):
    cluster = _cluster(**figures)
    apply_rule([cluster], FlagRule(max_share=0.3, min_tightness=0.85, min_away=0.25, max_spread=0.06,
                                   min_pattern=0.75))
    assert cluster.flagged is flagged and reason in cluster.reason
