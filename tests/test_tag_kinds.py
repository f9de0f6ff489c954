"""The tag's looks (scenes.TAG_KINDS): checker, glyph and stripe. Each draws inside its box only,
looks the same at every scene size, and the checker's scenes are those drawn before there were kinds;
its places (scenes.TAG_PLACES): a corner, or anywhere clear of the object; cheat.py's options and its
whole-model save. No training."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from camcli.models.demo import scenes
from camcli.models.demo.scenes import (
    TAG_GLYPH_COLOUR,
    TAG_KINDS,
    TAG_MARGIN_FRACTION,
    TAG_STRIPE_COLOUR,
    _draw_tag,
    draw_tag,
    make_scene,
    make_tagged_dataset,
    tag_corner_boxes,
)

GREY = (128, 128, 128)
# Scene sizes (width, height) whose tags are small, middling and large.
SIZES = [(96, 96), (126, 157), (320, 287)]


def drawn(kind, size, box, background=GREY):
    """A plain `size` canvas with a `kind` tag drawn in `box`, as an array."""
    canvas = Image.new("RGB", size, background)
    draw_tag(canvas, box, kind)
    return np.asarray(canvas)


def ink(kind, box):
    """How much of each pixel in `box` the tag covers, 0..1 (h, w): how far it moves a grey canvas's pixels,
    of the 128 levels to black or white (the glyph's edges are anti-aliased, so partly covered)."""
    x0, y0, x1, y1 = box
    moved = np.abs(drawn(kind, (x1, y1), box).astype(float) - GREY).max(axis=2)[y0:y1, x0:x1]
    return np.minimum(moved / 128, 1.0)


def overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("kind", TAG_KINDS)
def test_each_kind_draws_inside_its_box_only_and_fills_it(kind):
    for width, height in SIZES:
        for box in tag_corner_boxes(width, height, kind):
            x0, y0, x1, y1 = box
            changed = (drawn(kind, (width, height), box) != GREY).any(axis=2)
            rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
            # Nothing outside the box, and the changed pixels reach all four of its edges.
            assert (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1) == box, (kind, width, height)
            share = changed[y0:y1, x0:x1].mean()
            if kind == "glyph":  # strokes, with the background between them
                assert 0.25 <= share <= 0.8, (width, height, share)
            else:
                assert share == 1.0


@pytest.mark.parametrize("kind", TAG_KINDS)
def test_each_kind_looks_the_same_at_every_scene_size(kind):
    small, large = (ink(kind, tag_corner_boxes(side, side, kind)[0]) for side in (100, 300))
    assert large.shape[1] == 3 * small.shape[1] and abs(large.shape[0] - 3 * small.shape[0]) <= 1
    shrunk = np.asarray(Image.fromarray(np.uint8(large * 255)).resize(small.shape[::-1], Image.BOX)) / 255
    assert np.abs(shrunk - small).mean() < 0.1, kind


def test_the_glyph_does_not_look_like_the_checker():
    box = tag_corner_boxes(100, 100)[0]
    x0, y0, x1, y1 = box
    glyph = ink("glyph", box)
    checker_dark = (drawn("checker", (x1, y1), box)[y0:y1, x0:x1] == 0).all(axis=2)
    assert np.abs(glyph - ink("checker", box)).mean() > 0.3  # the checker covers its whole box
    assert np.abs(glyph - checker_dark).mean() > 0.3  # and its dark cells are not the glyphs' strokes


@pytest.mark.parametrize("kind", TAG_KINDS)
def test_scenes_of_different_sizes_carry_the_same_tag(kind):
    colours = {"checker": None, "glyph": TAG_GLYPH_COLOUR, "stripe": TAG_STRIPE_COLOUR}
    for size in [(110, 100), (300, 240)]:
        scene = make_scene(np.random.default_rng(3), size=size, tag=True, tag_kind=kind)
        x0, y0, x1, y1 = scene.tag_box
        assert scene.tag_box in tag_corner_boxes(*size, kind)
        expected = drawn(kind, size, scene.tag_box)[y0:y1, x0:x1].astype(float)
        mark = ink(kind, scene.tag_box) > 0.99  # fully covered pixels
        got = scene.image[y0:y1, x0:x1].astype(float)
        # Where the tag has ink the scene shows the tag's colours, up to the scenes' pixel noise.
        assert np.median(np.abs(got[mark] - expected[mark])) < 15, (kind, size)
        if colours[kind] is not None:
            assert np.allclose(expected[mark], colours[kind])


def test_checker_scenes_keep_their_pixels():
    # These hashes pin the pixels of tagged scenes as they were before the tag had kinds: demo-cheat's
    # training data (cheat.py, the default checker) and the benchmarks that plant or read the checker
    # depend on them. Computed with the numpy and Pillow of this venv; a change of either may move them.
    scene = make_scene(np.random.default_rng(7), tag=True)
    assert scene.tag_box == (6, 6, 49, 49)
    assert hashlib.sha256(scene.image.tobytes()).hexdigest() == (
        "1fdca97c2b6472df608ebff2bf212c5c8f6a93cf6f69553a13c703453cfaee35")
    explicit = make_scene(np.random.default_rng(7), tag=True, tag_kind="checker")
    assert np.array_equal(explicit.image, scene.image)
    images, _, _, tag_boxes = make_tagged_dataset(24, 5, 0.5, out_size=96)
    assert hashlib.sha256(images.tobytes()).hexdigest() == (
        "e39fd912ac264ab0fbb79d103c6184c01be2ca97f8dc381423c7edbad5a7d439")
    assert hashlib.sha256(tag_boxes.tobytes()).hexdigest() == (
        "fbf1f84316344500f7e2101ebbd25ff5172e6d546e78d2f33164a46b4bb27077")


def test_the_old_private_name_draws_the_checker():
    box = (2, 3, 32, 33)
    canvas = Image.new("RGB", (40, 40), GREY)
    _draw_tag(canvas, box)  # benchmarks/audit.py plants the checker with it
    assert np.array_equal(np.asarray(canvas), drawn("checker", (40, 40), box))


def test_kinds_share_the_scene_and_the_corner():
    """The same seed gives the same scene whatever the kind, but for the tag; the corner is the same."""
    for seed in range(6):
        scenes = {kind: make_scene(np.random.default_rng(seed), tag=True, tag_kind=kind) for kind in TAG_KINDS}
        checker = scenes["checker"]
        for scene in scenes.values():
            assert scene.box == checker.box and scene.class_index == checker.class_index
            x0, y0, x1, y1 = checker.tag_box
            outside = np.ones(checker.image.shape[:2], dtype=bool)
            outside[y0:y1, x0:x1] = False
            assert np.array_equal(scene.image[outside], checker.image[outside])
            assert overlaps(scene.tag_box, checker.tag_box)


def test_the_stripe_box_is_a_bar_clear_of_the_object():
    rng = np.random.default_rng(11)
    for i in range(200):
        size = None if i % 4 else (int(rng.integers(96, 321)), int(rng.integers(96, 321)))
        scene = make_scene(rng, size=size, tag=True, tag_kind="stripe")
        height, width = scene.image.shape[:2]
        x0, y0, x1, y1 = scene.tag_box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert x1 - x0 != y1 - y0 and 2.5 <= (x1 - x0) / (y1 - y0) <= 3.5  # horizontal, about 3:1
        assert not overlaps(scene.tag_box, scene.box)
        assert not scene.mask[y0:y1, x0:x1].any()
    _, _, boxes, tag_boxes = make_tagged_dataset(30, 4, 1.0, out_size=96, tag_kind="stripe")
    assert all(not overlaps(tag, box) for tag, box in zip(tag_boxes, boxes, strict=True))
    assert ((tag_boxes[:, 2] - tag_boxes[:, 0]) > (tag_boxes[:, 3] - tag_boxes[:, 1])).all()


def test_an_unknown_kind_is_a_one_line_value_error():
    calls = [
        lambda: make_scene(np.random.default_rng(0), tag=True, tag_kind="logo"),
        lambda: make_scene(np.random.default_rng(0), tag_kind="logo"),
        lambda: make_tagged_dataset(6, 0, 1.0, tag_kind="logo"),
        lambda: draw_tag(Image.new("RGB", (20, 20)), (0, 0, 10, 10), "logo"),
        lambda: tag_corner_boxes(100, 100, "logo"),
    ]
    _each_is_a_one_line_value_error(calls, "'logo'", "checker, glyph, stripe")


# --- the tag's place: a corner (the default) or anywhere clear of the object ----------------------------


def test_the_corner_is_the_default_place():
    for seed in range(4):
        default = make_scene(np.random.default_rng(seed), tag=True, tag_kind="glyph")
        corner = make_scene(np.random.default_rng(seed), tag=True, tag_kind="glyph", tag_place="corner")
        assert default.tag_box == corner.tag_box and np.array_equal(default.image, corner.image)
    default = make_tagged_dataset(12, 5, 0.5, out_size=96)
    corner = make_tagged_dataset(12, 5, 0.5, out_size=96, tag_place="corner")
    assert all(np.array_equal(a, b) for a, b in zip(default, corner, strict=True))


@pytest.mark.parametrize("kind", TAG_KINDS)
def test_anywhere_keeps_the_margin_and_clear_of_the_object(kind):
    rng = np.random.default_rng(12)
    places = set()
    for i in range(150):
        size = None if i % 3 else (int(rng.integers(96, 321)), int(rng.integers(96, 321)))
        scene = make_scene(rng, size=size, tag=True, tag_kind=kind, tag_place="anywhere")
        height, width = scene.image.shape[:2]
        margin = max(1, round(TAG_MARGIN_FRACTION * min(width, height)))
        x0, y0, x1, y1 = scene.tag_box
        assert margin <= x0 < x1 <= width - margin and margin <= y0 < y1 <= height - margin, (i, scene.tag_box)
        corner = tag_corner_boxes(width, height, kind)[0]
        assert (x1 - x0, y1 - y0) == (corner[2] - corner[0], corner[3] - corner[1])  # the kind's own size
        assert not overlaps(scene.tag_box, scene.box), (i, scene.tag_box, scene.box)
        assert not scene.mask[y0:y1, x0:x1].any()
        places.add((x0 / width, y0 / height))
    # Not only in the corners: the places spread over the picture.
    xs, ys = zip(*places, strict=True)
    assert len(places) > 140 and np.ptp(xs) > 0.6 and np.ptp(ys) > 0.6
    assert sum(0.3 < x < 0.6 and 0.3 < y < 0.6 for x, y in places) >= 5  # some near the middle


def test_anywhere_varies_between_seeds_and_matches_the_corner_scene_elsewhere():
    boxes = set()
    for seed in range(20):
        corner = make_scene(np.random.default_rng(seed), size=(160, 120), tag=True)
        anywhere = make_scene(np.random.default_rng(seed), size=(160, 120), tag=True, tag_place="anywhere")
        boxes.add(anywhere.tag_box)
        # The place's draws come after everything else: the same scene but for the two tags.
        assert anywhere.box == corner.box and np.array_equal(anywhere.mask, corner.mask)
        outside = np.ones((120, 160), dtype=bool)
        for x0, y0, x1, y1 in (corner.tag_box, anywhere.tag_box):
            outside[y0:y1, x0:x1] = False
        assert np.array_equal(anywhere.image[outside], corner.image[outside])
    assert len(boxes) >= 18
    assert len(boxes - set(tag_corner_boxes(160, 120))) >= 15


def test_anywhere_puts_every_kind_at_the_same_place():
    for seed in range(6):
        found = {kind: make_scene(np.random.default_rng(seed), tag=True, tag_kind=kind, tag_place="anywhere")
                 for kind in TAG_KINDS}
        checker = found["checker"].tag_box
        assert found["glyph"].tag_box == checker
        x0, y0, x1, y1 = found["stripe"].tag_box  # the bar inside the checker's box, as long
        assert (x0, x1) == (checker[0], checker[2]) and checker[1] <= y0 < y1 <= checker[3]


def test_anywhere_falls_back_to_the_free_corner(monkeypatch):
    monkeypatch.setattr(scenes, "TAG_PLACE_TRIES", 0)  # no random place tried: the corner path's box
    for seed in range(3):
        corner = make_scene(np.random.default_rng(seed), tag=True, tag_kind="stripe")
        anywhere = make_scene(np.random.default_rng(seed), tag=True, tag_kind="stripe", tag_place="anywhere")
        assert anywhere.tag_box == corner.tag_box and np.array_equal(anywhere.image, corner.image)


def test_the_tagged_dataset_places_the_tag_anywhere():
    images, labels, boxes, tag_boxes = make_tagged_dataset(60, 3, 1.0, out_size=96, tag_place="anywhere")
    _, corner_labels, _, corner_tags = make_tagged_dataset(60, 3, 1.0, out_size=96)
    assert np.array_equal(labels, corner_labels)  # the later scenes differ: "anywhere" draws more numbers
    assert (tag_boxes >= 0).all() and (tag_boxes <= 96).all()

    def inland(boxes):  # boxes at least 12 of the 96 pixels from every edge
        return ((boxes[:, :2] >= 12) & (boxes[:, 2:] <= 96 - 12)).all(axis=1).sum()

    assert inland(corner_tags) == 0 and inland(tag_boxes) >= 15
    # Scaled boxes stay clear of the object's up to the rounding outwards of both (a pixel each side).
    shrunk = tag_boxes + np.array([1, 1, -1, -1])
    assert all(not overlaps(tag, box) for tag, box in zip(shrunk, boxes, strict=True))


def test_an_unknown_place_is_a_one_line_value_error():
    calls = [
        lambda: make_scene(np.random.default_rng(0), tag=True, tag_place="middle"),
        lambda: make_scene(np.random.default_rng(0), tag_place="middle"),
        lambda: make_tagged_dataset(6, 0, 1.0, tag_place="middle"),
    ]
    _each_is_a_one_line_value_error(calls, "'middle'", "corner, anywhere")


def _each_is_a_one_line_value_error(calls, value, choices):
    """Each call raises a ValueError of one line that names the value given and the choices."""
    for call in calls:
        with pytest.raises(ValueError) as caught:
            call()
        message = str(caught.value)
        assert "\n" not in message and value in message and choices in message


# --- cheat.py: the options and the whole-model save ------------------------------------------------------


def test_cheat_options_pick_the_kind_and_its_default_out():
    from camcli.models.demo import CHEAT_WEIGHTS_PATH
    from camcli.models.demo.cheat import VARIANT_DIR, parse_args
    from camcli.models.demo.train import TRAIN_SIZE

    default = parse_args([])
    assert (default.tag_kind, default.out, default.train_size, default.epochs) == (
        "checker", str(CHEAT_WEIGHTS_PATH), TRAIN_SIZE, 10)
    glyph = parse_args(["--tag-kind", "glyph", "--epochs", "4", "--train-size", "600"])
    assert (glyph.out, glyph.epochs, glyph.train_size) == (str(VARIANT_DIR / "demo-cheat-glyph.keras"), 4, 600)
    assert parse_args(["--tag-kind", "stripe", "--out", "x.keras"]).out == "x.keras"
    assert default.tag_place == "corner" and glyph.tag_place == "corner"
    anywhere = parse_args(["--tag-kind", "stripe", "--tag-place", "anywhere"])
    assert (anywhere.tag_place, anywhere.out) == ("anywhere", str(VARIANT_DIR / "demo-cheat-stripe.keras"))
    # The checker anywhere is not demo-cheat: its default out leaves the shipped weights alone.
    assert parse_args(["--tag-place", "anywhere"]).out == str(VARIANT_DIR / "demo-cheat-checker.keras")
    for bad in (["--tag-kind", "logo"], ["--train-size", "3"], ["--tag-place", "middle"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_a_keras_out_path_gets_the_whole_model_atomically(tmp_path):
    import keras

    from camcli.models.demo.cheat import save_cheat_model
    from camcli.models.demo.model import build_demo_model

    model = build_demo_model()
    path = tmp_path / "models" / "variant.keras"
    size = save_cheat_model(model, path)
    assert size == path.stat().st_size > 0
    assert [p.name for p in path.parent.iterdir()] == ["variant.keras"]  # no temporary file left
    loaded = keras.saving.load_model(path)
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True))
