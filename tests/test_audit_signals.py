"""The audit's shortcut signals (camcli.audit.signals) and the rule that reads them (issue 30): a shortcut that
most of a class relies on, or one in the middle of the picture, is flagged; an object that moves, or varied
content in one fixed place, is not; the thresholds hold at their bounds."""

import numpy as np
import pytest

from camcli.audit.rule import MIN_MEMBERS, FlagRule
from camcli.audit.signals import (
    MIN_PILE,
    SHIFT,
    SmallPictures,
    Template,
    evidence_share,
    find_mark,
    mark_extent,
    peak_spread,
    search_mark,
)
from camcli.audit.spray import GRID, Cluster, apply_rule, cluster_class, find_pile_ups

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
    """The images of the flagged pile-ups: what the audit says carries a shortcut."""
    return {int(i) for pile in result.pile_ups if pile.flagged for i in pile.members}


@pytest.mark.parametrize("place", [(4, 4), ((SIDE - TAG) // 2, (SIDE - TAG) // 2)], ids=["corner", "centre"])
def test_a_shortcut_most_of_the_class_relies_on_is_flagged(place):
    """80% of the class's maps sit on the tag: the tag's cluster is most of the class, and still flagged."""
    rng = np.random.default_rng(1)
    pairs = [_tagged(rng, place) for _ in range(40)] + [_object(rng) for _ in range(10)]
    result = _audit(pairs)
    flagged = _flagged_members(result)
    tagged = set(range(40))
    precision, recall = len(flagged & tagged) / max(1, len(flagged)), len(flagged & tagged) / len(tagged)
    assert precision >= 0.95 and recall >= 0.9, (precision, recall)
    reasons = [pile.reason for pile in result.pile_ups if pile.flagged]
    assert reasons and all("peak on the same pattern at" in reason and "a possible shortcut" in reason
                           for reason in reasons)
    for cluster in result.clusters:  # a SpRAy cluster shows the flag when most of its maps are flagged
        assert cluster.flagged == (len(set(cluster.members.tolist()) & flagged) * 2 >= len(cluster.members) >= 3)


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
    assert _flagged_members(result) == set() and not any(c.flagged for c in result.clusters)
    assert result.pile_ups and all(any(why in pile.reason for why in ("not a repeated mark", "fewer than",
                                                                        "an object's look varies"))
                                   for pile in result.pile_ups)


def test_signals_measure_what_they_say():
    same_place = np.stack([_blob((0.2, 0.2)) for _ in range(5)])
    assert peak_spread(same_place) == 0.0
    moving = np.stack([_blob((x, 0.5)) for x in (0.1, 0.3, 0.5, 0.7, 0.9)])
    assert peak_spread(moving) == pytest.approx(0.1875, abs=0.04)  # median distance 6 cells of 32
    assert evidence_share(same_place) == pytest.approx(float((_blob((0.2, 0.2)) >= 0.5).mean()))
    rng = np.random.default_rng(4)
    tag = _with_tag(np.zeros((SIDE, SIDE, 3), np.uint8), 40, 40)
    mean_map = _blob(((40 + TAG / 2) / SIDE, (40 + TAG / 2) / SIDE))
    copies = [np.clip(tag.astype(int) + rng.integers(-20, 20, tag.shape), 0, 255).astype(np.uint8) for _ in range(6)]
    found = find_mark(SmallPictures([(lambda c=c: c) for c in copies]), np.arange(6), mean_map, 0.8, seed=0)
    assert found.compared == 6 and found.figure > 0.95 and found.matching.tolist() == list(range(6))
    assert abs(found.where[0] - (40 + TAG / 2) / SIDE) < 0.1 and abs(found.where[1] - (40 + TAG / 2) / SIDE) < 0.1
    varied = [_background(rng) for _ in range(20)]
    # varied content: the block edges of the backgrounds (every 24 pixels) match in a few pictures by chance (which
    # `distinct` and the model's answer judge, below); the copies match in all, and more closely
    unlike = find_mark(SmallPictures([(lambda c=c: c) for c in varied]), np.arange(20), mean_map, 0.8, seed=0)
    assert len(unlike.matching) <= 10 and unlike.figure < found.figure - 0.05, unlike
    nothing = find_mark(SmallPictures([lambda: None] * 4), np.arange(4), mean_map, 0.8, seed=0)
    assert nothing.figure is None and nothing.compared == 0 and nothing.template is None  # no picture could be read


def _cluster(**figures):
    base = {"id": 0, "members": np.arange(10), "share": 0.2, "mean_map": np.zeros((GRID, GRID), np.float32),
            "focus": 0.5, "border_share": 0.7, "corner_share": 0.0, "tightness": 0.9, "rest_border_share": 0.1}
    return Cluster(**{**base, **figures})


@pytest.mark.parametrize(("figures", "flagged", "reason"), [
    ({}, True, "border rule"),
    ({"share": 0.3}, True, "border rule"),  # exactly max_share
    ({"share": 0.3001}, False, "not small"),
    ({"border_share": 0.35}, True, "border rule"),  # exactly min_away above the rest
    ({"border_share": 0.3499}, False, "looks where the rest of the class looks"),
    ({"tightness": 0.8499}, False, "not tight"),
    ({"members": np.arange(MIN_MEMBERS - 1)}, False, "never one image"),
    ({"rest_border_share": None}, False, "nothing to compare with"),
])
def test_the_border_rule_judges_where_the_images_cannot_be_read(figures, flagged, reason):
    cluster = _cluster(**figures)
    apply_rule([cluster], FlagRule(max_share=0.3, min_tightness=0.85, min_away=0.25))
    assert cluster.flagged is flagged and reason in cluster.reason
    assert "the images cannot be read" in cluster.reason or not flagged


@pytest.mark.parametrize(("copies", "inverted", "min_pattern", "flagged"), [
    (MIN_PILE, False, 0.8, True),
    (MIN_PILE - 1, False, 0.8, None),  # too few pictures carry the mark: never flagged
    (MIN_PILE + 1, True, 0.8, None),  # half the tags are wiped out (a flat colour): three carry the mark
])
def test_a_pile_up_at_its_bounds(copies, inverted, min_pattern, flagged):
    rng = np.random.default_rng(5)
    pairs = [_tagged(rng, (4, 4)) for _ in range(copies)] + [_object(rng) for _ in range(20)]
    if inverted:
        for _, picture in pairs[:copies:2]:
            picture[4:4 + TAG, 4:4 + TAG] = rng.integers(0, 256, 3)
    maps = np.stack([m for m, _ in pairs])
    pictures = [(lambda p=p: p) for _, p in pairs]
    piles = find_pile_ups(maps, np.arange(len(maps)), pictures, FlagRule(min_pattern=min_pattern))
    if flagged is None:
        assert not any(pile.flagged for pile in piles)
        assert any("fewer than 5" in pile.reason for pile in piles)
    else:
        [pile] = [pile for pile in piles if set(range(copies)) <= set(pile.members.tolist())]
        assert pile.flagged is flagged and set(pile.members.tolist()) == set(range(copies))
        assert "possible shortcut" in pile.reason


class _FakeModel:
    """Answers class 0 when the picture's top-left corner holds a high-contrast mark (`follows`), else by the
    mean colour; `preprocess` keeps the pictures as they are."""

    def __init__(self, follows: bool):
        self.follows = follows

    def preprocess(self, pictures):
        return list(pictures)

    def class_scores(self, batch):
        scores = []
        for picture in batch:
            if self.follows:
                marked = picture[4:4 + TAG, 4:4 + TAG].mean(axis=-1).std() > 60  # grey levels: the checker's
            else:
                marked = True  # answers from the rest of the picture: always class 0 here
            scores.append([1.0, 0.0] if marked else [0.0, 1.0])
        return np.asarray(scores)


@pytest.mark.parametrize(("follows", "others", "flagged"), [(True, False, True), (False, False, False),
                                                         (True, True, True), (False, True, False)])
def test_the_model_tells_a_shortcut_from_a_glance(follows, others, flagged):
    """The maps pile up on the mark either way; only a model whose answer follows it is flagged: pasted into
    pictures of other classes it gives the class (transfer), or, with no other class, covering it changes the
    answer (reliance)."""
    from camcli.audit.reliance import covered
    from camcli.audit.spray import check_reliance

    rng = np.random.default_rng(6)
    pairs = [_tagged(rng, (4, 4)) for _ in range(8)] + [_object(rng) for _ in range(20)]
    maps = np.stack([m for m, _ in pairs])
    pictures = [(lambda p=p: p) for _, p in pairs]
    result = cluster_class(maps, pictures=pictures, seed=0, embed=False)
    assert any(pile.flagged for pile in result.pile_ups)  # the pattern alone flags it
    unmarked = [(lambda p=p: p) for _, p in (_object(rng) for _ in range(6))] if others else ()
    check_reliance(result.pile_ups, result.clusters, _FakeModel(follows), pictures, 0, FlagRule(), seed=0,
                   others=unmarked)
    pile = next(pile for pile in result.pile_ups if set(range(8)) <= set(pile.members.tolist()))
    assert pile.flagged is flagged and pile.reliance == (1.0 if follows else 0.0)
    # the fake model that does not follow the mark calls everything class 0: no picture of another class to test
    assert pile.transfer == (1.0 if follows and others else None)
    assert ("the answer follows it" in pile.reason) if flagged else ("does not follow it" in pile.reason)
    assert any(cluster.flagged for cluster in result.clusters) is flagged
    picture = pairs[0][1]
    hidden = covered(picture, (0.1, 0.1))
    assert hidden[4:4 + TAG, 4:4 + TAG].std(axis=(0, 1)).max() == 0 and np.array_equal(hidden[60:], picture[60:])


def test_a_mark_in_the_four_corners_is_one_mark():
    """A tag in any of the four corners, two or three pictures a corner: too few at any one place, one mark."""
    rng = np.random.default_rng(8)
    corners = [(4, 4), (SIDE - TAG - 4, 4), (4, SIDE - TAG - 4), (SIDE - TAG - 4, SIDE - TAG - 4)]
    pairs = [_tagged(rng, corners[i % 4]) for i in range(10)] + [_object(rng) for _ in range(30)]
    result = _audit(pairs)
    assert _flagged_members(result) == set(range(10))
    [pile] = [pile for pile in result.pile_ups if pile.flagged]
    assert "at 4 places" in pile.reason or "at 3 places" in pile.reason or "at 2 places" in pile.reason
    # each carrier's place sits on its own corner's tag
    for k, i in enumerate(pile.members):
        x, y = pile.place_of(k)
        cx, cy = corners[i % 4]
        assert abs(x * SIDE - (cx + TAG / 2)) <= 6 and abs(y * SIDE - (cy + TAG / 2)) <= 6


def test_a_one_colour_stripe_on_any_background_is_one_mark():
    """A magenta bar on backgrounds of every colour: its contrast with the background changes with the background
    in each channel, its sign does not. Compared colour-free too, every copy matches; plain, some fall below 0.8."""
    rng = np.random.default_rng(5)
    pairs = []
    for _ in range(30):
        background = np.full((SIDE, SIDE, 3), rng.uniform(0, 255, 3)) + rng.normal(0, 8, (SIDE, SIDE, 3))
        picture = _with_object(np.clip(background, 0, 255).astype(np.uint8), rng, *rng.uniform(40, 70, 2))
        picture[4:9, 4:4 + TAG] = (255, 0, 255)
        pairs.append((_blob(((4 + TAG / 2) / SIDE, 6.5 / SIDE), width=rng.uniform(2.2, 2.8)), picture))
    pairs += [_object(rng) for _ in range(10)]
    assert _flagged_members(_audit(pairs)) == set(range(30))
    smalls = SmallPictures([(lambda p=p: p) for _, p in pairs])
    mark = find_mark(smalls, np.arange(30), np.stack([m for m, _ in pairs[:30]]).mean(axis=0), 0.8, 0)
    places = np.tile(mark.where, (30, 1))
    blank = np.zeros_like(mark.template.plain)
    plain = search_mark(smalls, np.arange(30), places, Template(mark.template.plain, blank), SHIFT)
    both = search_mark(smalls, np.arange(30), places, mark.template, SHIFT)
    assert plain.min() < 0.8 <= both.min()
    assert np.median(both) > np.median(plain)


def test_mark_extent_measures_the_tag():
    """The carriers' mean keeps the tag and averages the rest out: the box is the tag's, to a cell or two."""
    rng = np.random.default_rng(9)
    pictures = [_with_tag(_background(rng), 40, 30) for _ in range(12)]
    smalls = SmallPictures([(lambda p=p: p) for p in pictures])
    centre = ((40 + TAG / 2) / SIDE, (30 + TAG / 2) / SIDE)
    left, top, right, bottom = mark_extent(smalls, np.arange(12), np.tile(centre, (12, 1)))
    cell = 1 / 48
    assert right - left == pytest.approx(TAG / SIDE, abs=2.5 * cell)
    assert bottom - top == pytest.approx(TAG / SIDE, abs=2.5 * cell)
    assert (left + right) / 2 == pytest.approx(0, abs=1.5 * cell)
    assert (top + bottom) / 2 == pytest.approx(0, abs=1.5 * cell)
    assert mark_extent(smalls, np.arange(2), np.tile(centre, (2, 1))) is None  # two pictures: too few to tell


@pytest.mark.parametrize(("min_distinct", "flagged"), [(0.9, True), (1.0, False)])
def test_min_distinct_at_its_bound(min_distinct, flagged, monkeypatch):
    """A mark carried by 9 pictures, with one more of the class coming near it: distinct 9 / 10 = 0.9."""
    from camcli.audit import spray

    rng = np.random.default_rng(10)
    pairs = [_tagged(rng, (4, 4)) for _ in range(9)] + [_object(rng) for _ in range(20)]
    maps = np.stack([m for m, _ in pairs])
    pictures = [(lambda p=p: p) for _, p in pairs]
    real = spray._carried_pile

    def one_near(squares, carriers, joined, near, moving, rule):
        return real(squares, carriers, joined, 1, moving, rule)

    monkeypatch.setattr(spray, "_carried_pile", one_near)
    piles = find_pile_ups(maps, np.arange(len(maps)), pictures, FlagRule(min_distinct=min_distinct))
    [pile] = [pile for pile in piles if pile.candidate]
    assert pile.distinct == 0.9 and pile.flagged is flagged
    assert ("possible shortcut" in pile.reason) if flagged else ("an object's look varies" in pile.reason)


class _HalfFollows(_FakeModel):
    """Follows the mark only in pictures whose top-right pixel is dark."""

    def class_scores(self, batch):
        scores = super().class_scores(batch)
        for row, picture in zip(scores, batch, strict=True):
            if picture[0, -1].sum() >= 300:  # bright corner: the mark does not count
                row[:] = [0.0, 1.0]
        return scores


def _transfer_test(dark: int, rule: FlagRule, near: int | None = None, monkeypatch=None):
    """The mark of 8 carriers tested with _HalfFollows: `dark` of 8 pictures of other classes answer the class once the
    mark is pasted in, none once the same place of the class's other pictures is (the control). `near`: this many
    pictures of the class come near the mark instead of the real count. Its candidate pile-up, after the test."""
    from camcli.audit import spray

    rng = np.random.default_rng(11)
    pairs = [_tagged(rng, (4, 4)) for _ in range(8)] + [_object(rng) for _ in range(20)]
    maps = np.stack([m for m, _ in pairs])
    pictures = [(lambda p=p: p) for _, p in pairs]
    if near is not None:
        real = spray._carried_pile
        monkeypatch.setattr(spray, "_carried_pile", lambda squares, carriers, joined, _, moving, rule:
                            real(squares, carriers, joined, near, moving, rule))
    result = cluster_class(maps, pictures=pictures, seed=0, embed=False, rule=rule)
    grey = [np.clip(128 + rng.normal(0, 5, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8) for _ in range(8)]
    for k, picture in enumerate(grey):
        picture[0, -1] = 0 if k < dark else 255
    for member in result.pile_ups[0].members:  # the carriers keep a dark corner: covering tells
        pictures[member]()[0, -1] = 0
    spray.check_reliance(result.pile_ups, result.clusters, _HalfFollows(True), pictures, 0, rule, seed=0,
                         others=[(lambda p=p: p) for p in grey])
    return next(pile for pile in result.pile_ups if pile.candidate)


@pytest.mark.parametrize(("dark", "flagged"), [(4, True), (3, False)])
def test_min_reliance_at_its_bound(dark, flagged):
    """Transfer 4/8 is exactly min_reliance 0.5; 3/8 is below."""
    pile = _transfer_test(dark, FlagRule(min_reliance=0.5))
    assert pile.distinct == 1.0 and not pile.model_decides
    assert pile.transfer == dark / 8 and pile.flagged is flagged


@pytest.mark.parametrize(("dark", "flagged"), [(4, True), (3, False)])
def test_min_reliance_not_distinct_at_its_bound(dark, flagged, monkeypatch):
    """A mark whose pattern is not distinct (8 carriers, 8 more of the class come near: 0.5) is not flagged by its
    pattern; the model flags it at min_reliance_not_distinct (0.5 here: 4/8 is exactly that), and min_reliance
    (0.1) is not enough."""
    pile = _transfer_test(dark, FlagRule(min_reliance=0.1, min_reliance_not_distinct=0.5), near=8,
                          monkeypatch=monkeypatch)
    assert pile.distinct == 0.5 and pile.model_decides
    assert pile.transfer == dark / 8 and pile.flagged is flagged
    assert ("yet pasted into pictures" in pile.reason) if flagged else ("below 0.5" in pile.reason)


def test_alike_pixels_at_places_of_their_own_are_left_out():
    """A tag at one fixed place in 6 pictures, and the same tag at a place of its own in 6 more (as alike parts of
    moving objects are): the mark is found in all 12, but only the 6 that share its place carry it."""
    rng = np.random.default_rng(12)
    own = [(60, 8), (8, 60), (70, 70), (40, 74), (74, 36), (24, 40)]
    pairs = [_tagged(rng, (4, 4)) for _ in range(6)] + [_tagged(rng, place) for place in own]
    pairs += [_object(rng) for _ in range(20)]
    result = _audit(pairs)
    [pile] = [pile for pile in result.pile_ups if pile.candidate]
    assert set(pile.members.tolist()) == set(range(6)) and pile.moving == 6
    assert "6 more match it each at a place of its own" in pile.reason
    assert _flagged_members(result) == set(range(6))


@pytest.mark.parametrize(("max_spread", "piles"), [(0.0625, 0), (0.1, 1)])
def test_max_spread_sets_how_close_maps_pile_up(max_spread, piles):
    """Six maps peaking at two places 5 cells (of 32) apart: two groups of three (too few to judge) within
    2 cells, one pile-up of six within 3.2."""
    maps = np.stack([_blob(((10.5 + 5 * (i % 2)) / GRID, 16.5 / GRID)) for i in range(6)])
    found = find_pile_ups(maps, np.arange(6), [lambda: None] * 6, FlagRule(max_spread=max_spread))
    assert len(found) == piles and all(len(pile.members) == 6 and pile.pattern is None for pile in found)


def test_the_transfer_takes_off_what_any_patch_does():
    """A model that answers the class whenever a piece of another picture covers the top-left corner of a flat
    picture: pasting the mark turns the other pictures into the class, and so does pasting the same place of other
    pictures (the control); the mark's transfer is at most 0, and it is not flagged."""
    from camcli.audit.spray import check_reliance

    rng = np.random.default_rng(12)
    pairs = [_tagged(rng, (4, 4)) for _ in range(8)] + [_object(rng) for _ in range(20)]
    maps = np.stack([m for m, _ in pairs])
    pictures = [(lambda p=p: p) for _, p in pairs]
    result = cluster_class(maps, pictures=pictures, seed=0, embed=False)
    flat = [np.full((SIDE, SIDE, 3), level, np.uint8) for level in (40, 80, 120, 160, 200, 240)]

    class AnyPatch(_FakeModel):
        def class_scores(self, batch):
            corner = [float(picture[4:4 + TAG, 4:4 + TAG].mean()) - float(picture[60:].mean()) for picture in batch]
            return np.asarray([[1.0, 0.0] if abs(change) > 20 else [0.0, 1.0] for change in corner])

    check_reliance(result.pile_ups, result.clusters, AnyPatch(True), pictures, 0, FlagRule(), seed=0,
                   others=[(lambda p=p: p) for p in flat])
    pile = next(pile for pile in result.pile_ups if set(range(8)) <= set(pile.members.tolist()))
    assert pile.transfer <= 0.0 and not pile.flagged and "does not follow it" in pile.reason


def test_a_copy_over_other_content_joins_at_the_marks_place():
    """Tags at one fixed place, some of them half hidden by noise (as a glyph drawn over an object is): at the place
    the carriers share, a picture carries the mark from min_pattern - AT_PLACE_BAND up; one whose map peaks there
    over other content does not."""
    from camcli.audit.spray import AT_PLACE_BAND

    rng = np.random.default_rng(13)
    pairs = [_tagged(rng, (4, 4)) for _ in range(8)]
    for noise in (100, 220, 260, 320, 500, 800):  # similar at the place: about 0.94, 0.73, 0.67, 0.58, 0.41, 0.24
        m, picture = _tagged(rng, (4, 4))
        picture[4:4 + TAG, 4:4 + TAG] = np.clip(picture[4:4 + TAG, 4:4 + TAG] + rng.normal(0, noise, (TAG, TAG, 3)),
                                                0, 255)
        pairs.append((m, picture))
    for _ in range(3):  # maps that peak at the place, over an object
        m, picture = _tagged(rng, (4, 4))
        pairs.append((m, _with_object(_background(rng), rng, 11, 11)))
    pairs += [_object(rng) for _ in range(20)]
    result = _audit(pairs)
    [pile] = [pile for pile in result.pile_ups if pile.candidate]
    threshold = FlagRule().min_pattern - AT_PLACE_BAND
    smalls = SmallPictures([(lambda p=p: p) for _, p in pairs])
    template = find_mark(smalls, np.arange(8), pairs[0][0], FlagRule().min_pattern, 0).template
    at_place = search_mark(smalls, np.arange(8, 17), np.tile(pile.place_of(0), (9, 1)), template, 1)
    members = set(pile.members.tolist())
    joined = {8 + k for k, figure in enumerate(at_place) if figure >= threshold}
    assert joined & {9, 10} and {12, 13, 14, 15, 16}.isdisjoint(joined)  # the noise sets them apart
    assert members & set(range(8, 17)) == joined and set(range(8)) <= members
    assert any(figure < FlagRule().min_pattern for figure in pile.fit)  # joined below min_pattern, at the place


def test_same_places_near_the_edges_fold_onto_one_corner():
    """Within 1.5 cells (of 48) each way, or at the same distances from the edges within the border band (a logo in
    any corner, a stamp on either side); inner places never fold."""
    from camcli.audit.spray import SAME_PLACE, same_places

    places = np.array([[0.07, 0.07], [0.93, 0.07], [0.07, 0.93], [0.93, 0.93],  # the four corners
                       [0.5, 0.07], [0.5, 0.93],  # the top and bottom edges' middles
                       [0.3, 0.3], [0.7, 0.7], [0.3 + SAME_PLACE * 0.9, 0.3]])  # inside: only the near one
    same = same_places(places)
    assert same[:4, :4].all() and same[4, 5] and not same[:4, 4:].any()
    assert not same[6, 7] and same[6, 8] and not same[:6, 6:].any()
    assert same_places(np.array([[0.07, 0.07], [0.07 + SAME_PLACE * 1.1, 0.07]]))[0, 1] == np.False_
