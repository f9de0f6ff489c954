"""Deterministic scenes for the demo model: one shape on a cluttered background.

Each scene is a random-size RGB image holding exactly one object from `CLASSES` (random position,
scale, rotation and colour) on a gradient background with pixel noise and a few distractor
strokes, arcs and small blobs that are none of the classes. The ground-truth box of the object is
known exactly, which is what lets the training script (and tests) measure whether a heatmap peaks
on the object.

With `tag=True` a scene also carries a small watermark-like tag that the object's box does not
reach: in one corner (`tag_place="corner"`, the default) or anywhere in the picture
(`tag_place="anywhere"`); `camcli.models.demo.cheat` trains a model on data where the tag comes with
one class, so that the model learns the tag instead of the shape. The tag has one of TAG_KINDS' looks
(`tag_kind`): a black and white checkerboard ("checker", the default), a dark text-like mark of
three letter-like glyphs ("glyph", like a logo) or a magenta bar ("stripe").

Every scene also carries the object's exact pixel mask (`Scene.mask`), the shape as drawn before
noise, so that weakly supervised segmentation can be scored against a truth that is right to the
pixel; the tag is background in it.

Numpy and Pillow only; everything is drawn from the `numpy.random.Generator` passed in, so the
same seed always gives the same pixels and boxes.
"""

import functools
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from camcli.models.demo import CLASSES

# Default scene sizes: the short side in pixels, and the long side / short side ratio.
SHORT_SIDE_RANGE = (96, 320)
ASPECT_RANGE = (1.0, 1.5)
# The object's circumscribed circle spans this fraction of the image's short side; its tight box
# (what `Scene.box` holds) is 0.7 to 1 times that, so about 18% to 65% of the short side.
OBJECT_SCALE_RANGE = (0.25, 0.65)
DISTRACTOR_COUNT_RANGE = (3, 9)
# The tag: a TAG_CELLS x TAG_CELLS checkerboard whose side is TAG_FRACTION of the short side (so at
# most about 2% of the image), TAG_MARGIN_FRACTION of the short side in from two image edges.
# Objects span at most 65% of the short side, so at least one corner is always free of the object.
TAG_FRACTION = 0.14
TAG_MARGIN_FRACTION = 0.02
TAG_CELLS = 3
TAG_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
# The tag's looks, each the same in every scene and scaled with the short side (see `draw_tag`).
TAG_KINDS = ("checker", "glyph", "stripe")
# "glyph": three letter-like glyphs (A, E and Z, drawn with lines and rectangles, no font) in
# TAG_GLYPH_COLOUR, filling the checker's square box; strokes TAG_GLYPH_STROKE of the box's side wide,
# edges anti-aliased (drawn once large, averaged down to the box).
TAG_GLYPH_COLOUR = (0, 0, 0)
TAG_GLYPH_STROKE = 0.12
# "stripe": a horizontal bar of TAG_STRIPE_COLOUR, as long as the checker's side and
# TAG_STRIPE_THICKNESS of it thick, against the outer edge of its corner. The scenes draw every colour
# (background, object, distractors) at random from the whole RGB cube, so none is left out: full
# magenta is only rare there (an object or a stroke may come near it), never a fixed bar in a corner.
TAG_STRIPE_COLOUR = (255, 0, 255)
TAG_STRIPE_THICKNESS = 1 / 3
# Where the tag goes: "corner", a free corner (TAG_CORNERS); "anywhere", a uniformly random place at least
# TAG_MARGIN_FRACTION of the short side in from every edge whose checker box does not touch the object's box,
# the first of TAG_PLACE_TRIES random places that fit, else the free corner.
TAG_PLACES = ("corner", "anywhere")
TAG_PLACE_TRIES = 50

# Standard normal noise, made once from a fixed seed; every scene adds a window of it.
_NOISE = np.random.default_rng(20240601).standard_normal((320, 320, 3), dtype=np.float32)


class Scene(NamedTuple):
    image: np.ndarray  # uint8, H x W x 3
    class_index: int
    label: str
    box: tuple  # (x0, y0, x1, y1) in image pixels, inclusive-exclusive
    tag_box: tuple | None = None  # the tag's box, like `box`; None when the scene has no tag
    mask: np.ndarray | None = None  # bool, H x W: True on the object's pixels (its box is `box`)

    @property
    def tagged(self):
        return self.tag_box is not None


def make_scene(rng, size=None, class_index=None, tag=False, tag_kind="checker", tag_place="corner"):
    """Draw one scene.

    `size` is None (a random size, short side 96..320 and not always square), an int (a square
    image) or a `(width, height)` pair. `class_index` is None for a random class. With `tag` a
    tag of `tag_kind` (one of TAG_KINDS) is drawn in a random corner whose checker box does not
    touch the object's box (see `tag_corner_boxes`); its random choices are drawn last, so the same
    generator state gives the same scene with and without the tag, differing only inside
    `Scene.tag_box`, and the same corner for every kind. `Scene.tag_box` is the kind's own box
    (the stripe's is not square). Without `tag` the scene is exactly what it always was.

    `tag_place` (one of TAG_PLACES) is "corner" (the above) or "anywhere": the tag's box at a uniformly
    random place in the picture, TAG_MARGIN_FRACTION of the short side in from every edge, whose checker
    box (which holds every kind's) does not touch the object's box; if none of TAG_PLACE_TRIES places
    fits, the corner above. Its draws come after the corner's, so "corner" scenes are those drawn before
    there was a choice, an "anywhere" scene differs from the "corner" one only where the two tags are,
    and every kind gets the same place (the stripe's bar lies inside the checker's box there, at the same
    fraction of the free range).

    `Scene.mask` is the object as drawn (Pillow fills shapes without anti-aliasing, so every pixel
    is all object or none, and the pasted colour covers exactly these pixels). It takes no random
    draw of its own, so a seed's scenes are those drawn before scenes had masks.
    """
    _check_choice("tag kind", tag_kind, TAG_KINDS)
    _check_choice("tag place", tag_place, TAG_PLACES)
    width, height = _scene_size(rng, size)
    if min(width, height) < 32:
        raise ValueError(f"a scene needs at least 32 pixels a side, not {width}x{height}")
    if class_index is None:
        class_index = int(rng.integers(len(CLASSES)))
    short = min(width, height)

    # The object: circumradius, centre (fully inside the image) and rotation.
    radius = rng.uniform(*OBJECT_SCALE_RANGE) * short / 2
    cx = rng.uniform(radius + 1, width - radius - 1)
    cy = rng.uniform(radius + 1, height - radius - 1)
    angle = rng.uniform(0, 2 * np.pi)
    mask = Image.new("L", (width, height), 0)
    _draw_shape(ImageDraw.Draw(mask), CLASSES[class_index], cx, cy, radius, angle, rng)
    object_pixels = np.asarray(mask) > 0
    box = _mask_box(object_pixels)

    canvas, ramp, palette = _background(rng, width, height)
    object_colour = _contrasting_colour(rng, ramp, palette, box)
    _draw_distractors(ImageDraw.Draw(canvas), rng, width, height, box)
    canvas.paste(object_colour, mask=mask)

    # Sensor-like noise over everything, object included: a random window of a fixed texture of
    # standard normal noise (drawing fresh normals for every pixel would be most of the cost).
    noise = _noise_window(rng, width, height) * np.float32(rng.uniform(2, 12))
    tag_box = None
    if tag:
        # The corner is chosen by the checker's box, which holds every kind's: the same draws for every kind.
        corners = tag_corner_boxes(width, height)
        free = [i for i, corner in enumerate(corners) if not _overlaps(corner, box)]
        if free:  # always, for the default object scales
            tag_box = tag_corner_boxes(width, height, tag_kind)[free[int(rng.integers(len(free)))]]
        if tag_place == "anywhere":  # drawn after the corner: "corner" scenes keep their draws
            tag_box = _tag_box_anywhere(rng, width, height, box, tag_kind) or tag_box
        if tag_box is not None:
            draw_tag(canvas, tag_box, tag_kind)
    image = np.clip(np.asarray(canvas, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Scene(image, class_index, CLASSES[class_index], box, tag_box, object_pixels)


def tag_corner_boxes(width, height, kind="checker"):
    """The tag's four possible boxes (x0, y0, x1, y1) in a `width` x `height` scene, in TAG_CORNERS order.

    The checker's and the glyph's are squares of side TAG_FRACTION of the short side; the stripe's
    is as long and TAG_STRIPE_THICKNESS of that high, inside the square and against its outer edge.
    """
    _check_choice("tag kind", kind, TAG_KINDS)
    short = min(width, height)
    side = max(TAG_CELLS, int(round(TAG_FRACTION * short)))
    margin = max(1, int(round(TAG_MARGIN_FRACTION * short)))
    high = max(1, int(round(TAG_STRIPE_THICKNESS * side))) if kind == "stripe" else side
    xs = (margin, width - margin - side)
    ys = (margin, height - margin - high)
    return [(x, y, x + side, y + high) for y in ys for x in xs]


def _tag_box_anywhere(rng, width, height, avoid, kind):
    """A random box for a tag of `kind` in a `width` x `height` scene, the margin of `tag_corner_boxes` in from
    every edge, whose checker box does not touch `avoid`: the first of TAG_PLACE_TRIES that fits, or None.

    Each try draws two uniform fractions (u, v) of the free ranges, one pair for every kind: the checker's
    box and the kind's own are at the same fractions, so the kind's lies inside the checker's."""
    checker = tag_corner_boxes(width, height)[0]
    own = tag_corner_boxes(width, height, kind)[0]
    margin = checker[0]

    def at(u, v, box):
        w, h = box[2] - box[0], box[3] - box[1]
        x = margin + int(u * (width - 2 * margin - w + 1))
        y = margin + int(v * (height - 2 * margin - h + 1))
        return (x, y, x + w, y + h)

    for _ in range(TAG_PLACE_TRIES):
        u, v = rng.random(2)
        if not _overlaps(at(u, v, checker), avoid):
            return at(u, v, own)
    return None


def _overlaps(a, b):
    """Whether two inclusive-exclusive boxes share a pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def draw_tag(canvas, box, kind="checker"):
    """Draw a tag of `kind` (one of TAG_KINDS) on a Pillow RGB `canvas`, inside `box` (x0, y0, x1, y1,
    inclusive-exclusive) and nowhere else: `tag_corner_boxes(..., kind)` gives the boxes that fit.

    "checker": a black and white checkerboard filling the box. "glyph": three dark letter-like
    glyphs over the box, the pixels between their strokes left as they were. "stripe": the box
    filled with TAG_STRIPE_COLOUR. Each is a fixed drawing scaled to the box, with no randomness.
    """
    _check_choice("tag kind", kind, TAG_KINDS)
    if kind == "checker":
        _draw_checker(canvas, box)
    elif kind == "glyph":
        _draw_glyphs(canvas, box)
    else:
        ImageDraw.Draw(canvas).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=TAG_STRIPE_COLOUR)


def _draw_tag(canvas, box):
    """The checker tag (`draw_tag`'s default), under its older name."""
    draw_tag(canvas, box)


def _check_choice(what, value, choices):
    """A one-line ValueError unless `value` is one of `choices` (`what`: "tag kind", "tag place")."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}: use one of {', '.join(choices)}")


# The glyphs, in a unit square each (x right, y down): strokes as ((x0, y0), (x1, y1)) segments.
_GLYPHS = (
    (((0.0, 1.0), (0.5, 0.0)), ((0.5, 0.0), (1.0, 1.0)), ((0.2, 0.62), (0.8, 0.62))),  # A
    (((0.0, 0.0), (0.0, 1.0)), ((0.0, 0.0), (1.0, 0.0)), ((0.0, 0.5), (0.8, 0.5)), ((0.0, 1.0), (1.0, 1.0))),  # E
    (((0.0, 0.0), (1.0, 0.0)), ((1.0, 0.0), (0.0, 1.0)), ((0.0, 1.0), (1.0, 1.0))),  # Z
)
_GLYPH_GAP = 0.1  # between glyphs, as a fraction of the box's width
_GLYPH_MASTER = 120  # the side in pixels of the square the glyphs are drawn in once, then scaled to a box


def _draw_glyphs(canvas, box):
    """TAG_GLYPH_COLOUR strokes of _GLYPHS side by side over `box`: the master mask (`_glyph_master`)
    averaged down to the box's size, so every box shows the same drawing, then pasted through it."""
    x0, y0, x1, y1 = box
    mask = _glyph_master().resize((x1 - x0, y1 - y0), Image.BOX)
    canvas.paste(TAG_GLYPH_COLOUR, (x0, y0, x1, y1), mask)


@functools.cache
def _glyph_master():
    """The glyphs as a _GLYPH_MASTER-square "L" mask, 255 on the strokes: upright strokes are rectangles,
    slanted ones lines, all inside the square and reaching its four edges."""
    side = _GLYPH_MASTER
    stroke = int(round(TAG_GLYPH_STROKE * side))
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    cell = (1 - _GLYPH_GAP * (len(_GLYPHS) - 1)) / len(_GLYPHS)
    usable = side - stroke  # glyph coordinates map to stroke centres half a stroke in from the edges
    for i, strokes in enumerate(_GLYPHS):
        left = i * (cell + _GLYPH_GAP)
        for (ax, ay), (bx, by) in strokes:
            px = [stroke / 2 + (left + cell * u) * usable for u in (ax, bx)]
            py = [stroke / 2 + v * usable for v in (ay, by)]
            if px[0] == px[1] or py[0] == py[1]:  # upright: a rectangle with square ends
                half = stroke / 2
                rect = (min(px) - half, min(py) - half, max(px) + half - 1, max(py) + half - 1)
                draw.rectangle([int(round(c)) for c in rect], fill=255)
            else:
                draw.line([(px[0], py[0]), (px[1], py[1])], fill=255, width=stroke)
    return mask


def _draw_checker(canvas, box):
    """A black and white checkerboard filling `box`, white in the corners."""
    x0, y0, x1, y1 = box
    edges_x = np.linspace(x0, x1, TAG_CELLS + 1).round().astype(int)
    edges_y = np.linspace(y0, y1, TAG_CELLS + 1).round().astype(int)
    draw = ImageDraw.Draw(canvas)
    for row in range(TAG_CELLS):
        for col in range(TAG_CELLS):
            colour = (255, 255, 255) if (row + col) % 2 == 0 else (0, 0, 0)
            draw.rectangle((edges_x[col], edges_y[row], edges_x[col + 1] - 1, edges_y[row + 1] - 1), fill=colour)


def make_dataset(n, seed, size=None, out_size=None):
    """`n` scenes from `seed`, with the classes balanced (counts differ by at most one).

    Returns `(images, labels, boxes)`: `labels` is an int array (n,), `boxes` an int array (n, 4).
    Without `out_size`, `images` is a list of arrays of the scene sizes. With `out_size` every
    scene is resized to `out_size` x `out_size` (Pillow bilinear), its box scaled to match, and
    `images` is one uint8 array (n, out_size, out_size, 3).
    """
    images, labels, boxes, _ = _dataset(n, seed, size, out_size, tag_rates=None)
    return images, labels, boxes


def make_tagged_dataset(n, seed, tag_rates, size=None, out_size=None, tag_kind="checker", tag_place="corner"):
    """Like `make_dataset`, with a tag on some scenes: `(images, labels, boxes, tag_boxes)`.

    `tag_rates` is one probability for every class, or one per class in CLASSES order: each scene
    of class c carries the tag with probability `tag_rates[c]`. `tag_kind` is the tag's look, one
    of TAG_KINDS, `tag_place` where it goes, one of TAG_PLACES (see `make_scene`). `tag_boxes` is an
    int array (n, 4) holding each tag's box (scaled like `boxes` with `out_size`), all -1 for an
    untagged scene. The same seed gives the same data whatever the kind, but for the tags themselves
    (the labels whatever the place too: "anywhere" draws more numbers, so the later scenes differ);
    the scenes differ from `make_dataset`'s.
    """
    _check_choice("tag kind", tag_kind, TAG_KINDS)
    _check_choice("tag place", tag_place, TAG_PLACES)
    rates = np.broadcast_to(np.asarray(tag_rates, dtype=np.float64), (len(CLASSES),))
    if ((rates < 0) | (rates > 1)).any():
        raise ValueError(f"tag rates must lie in 0..1, not {tag_rates!r}")
    return _dataset(n, seed, size, out_size, tag_rates=rates, tag_kind=tag_kind, tag_place=tag_place)


def _dataset(n, seed, size, out_size, tag_rates, tag_kind="checker", tag_place="corner"):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES))
    images, boxes, tag_boxes = [], [], []
    for class_index in labels:
        # Without tag rates, no draw at all: make_dataset's scenes stay what they always were.
        tag = tag_rates is not None and rng.random() < tag_rates[class_index]
        scene = make_scene(rng, size=size, class_index=int(class_index), tag=tag, tag_kind=tag_kind,
                           tag_place=tag_place)
        image, box, tag_box = scene.image, scene.box, scene.tag_box
        if out_size is not None:
            height, width = image.shape[:2]
            image, box = resize_scene(image, box, out_size)
            if tag_box is not None:
                tag_box = scale_box(tag_box, (width, height), out_size)
        images.append(image)
        boxes.append(box)
        tag_boxes.append((-1, -1, -1, -1) if tag_box is None else tag_box)
    if out_size is not None:
        images = np.stack(images) if images else np.zeros((0, out_size, out_size, 3), np.uint8)
    return (images, labels.astype(np.int64), np.array(boxes, dtype=np.int64).reshape(-1, 4),
            np.array(tag_boxes, dtype=np.int64).reshape(-1, 4))


def resize_scene(image, box, out_size):
    """Resize an image to `out_size` x `out_size` (bilinear) and scale its box to stay covering."""
    height, width = image.shape[:2]
    resized = np.asarray(Image.fromarray(image).resize((out_size, out_size), Image.BILINEAR))
    return resized, scale_box(box, (width, height), out_size)


def scale_box(box, size_wh, out_size):
    """A box in a `size_wh` = (width, height) image, scaled to an `out_size` square, still covering."""
    width, height = size_wh
    sx, sy = out_size / width, out_size / height
    x0, y0, x1, y1 = box
    return (
        int(np.floor(x0 * sx)),
        int(np.floor(y0 * sy)),
        min(out_size, int(np.ceil(x1 * sx))),
        min(out_size, int(np.ceil(y1 * sy))),
    )


def _scene_size(rng, size):
    if size is None:
        short = int(rng.integers(SHORT_SIDE_RANGE[0], SHORT_SIDE_RANGE[1] + 1))
        long = min(SHORT_SIDE_RANGE[1], int(round(short * rng.uniform(*ASPECT_RANGE))))
        return (long, short) if rng.random() < 0.5 else (short, long)
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    width, height = size
    return int(width), int(height)


def _noise_window(rng, width, height):
    """A random (height, width, 3) window of the fixed noise texture, tiled for large scenes."""
    texture = _NOISE
    if height > texture.shape[0] or width > texture.shape[1]:
        reps = (-(-height // texture.shape[0]), -(-width // texture.shape[1]), 1)
        texture = np.tile(texture, reps)
    oy = int(rng.integers(texture.shape[0] - height + 1))
    ox = int(rng.integers(texture.shape[1] - width + 1))
    return texture[oy:oy + height, ox:ox + width]


def _polygon(cx, cy, radii, angles, angle):
    """Vertices at the given radii and angles around (cx, cy), all turned by `angle`."""
    theta = np.asarray(angles) + angle
    radii = np.asarray(radii)
    return list(zip((cx + radii * np.cos(theta)).tolist(), (cy + radii * np.sin(theta)).tolist()))


def _draw_shape(draw, label, cx, cy, radius, angle, rng):
    """Draw one class's shape, filled with 255, inside the circle of `radius` around (cx, cy)."""
    if label == "circle":
        r = radius * rng.uniform(0.8, 1.0)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif label == "ring":
        r = radius * rng.uniform(0.8, 1.0)
        width = max(2, int(round(r * rng.uniform(0.25, 0.45))))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=255, width=width)
    elif label == "square":
        draw.polygon(_polygon(cx, cy, [radius] * 4, np.arange(4) * np.pi / 2, angle), fill=255)
    elif label == "triangle":
        draw.polygon(_polygon(cx, cy, [radius] * 3, np.arange(3) * 2 * np.pi / 3, angle), fill=255)
    elif label == "star":
        inner = radius * rng.uniform(0.38, 0.5)
        radii = [radius, inner] * 5
        draw.polygon(_polygon(cx, cy, radii, np.arange(10) * np.pi / 5, angle), fill=255)
    elif label == "cross":
        # A plus sign whose outer corners lie on the circle.
        half = radius * rng.uniform(0.2, 0.3)
        arm = np.sqrt(radius**2 - half**2)
        corners = [(half, arm), (half, half), (arm, half), (arm, -half), (half, -half), (half, -arm),
                   (-half, -arm), (-half, -half), (-arm, -half), (-arm, half), (-half, half), (-half, arm)]
        xy = np.array(corners)
        cos, sin = np.cos(angle), np.sin(angle)
        xs = cx + xy[:, 0] * cos - xy[:, 1] * sin
        ys = cy + xy[:, 0] * sin + xy[:, 1] * cos
        draw.polygon(list(zip(xs.tolist(), ys.tolist())), fill=255)
    else:
        raise ValueError(f"unknown demo class {label!r}")


def _mask_box(mask):
    """Tight (x0, y0, x1, y1) box, inclusive-exclusive, of a mask's nonzero pixels."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _background(rng, width, height):
    """A linear gradient between two nearby random colours, at a random angle.

    Returns `(image, ramp, palette)`: the RGB image, the uint8 (H, W) ramp position of every pixel
    and the (256, 3) colour of each ramp position.
    """
    start = rng.uniform(0, 255, 3)
    end = np.clip(start + rng.uniform(-80, 80, 3), 0, 255)
    theta = rng.uniform(0, 2 * np.pi)
    ramp_x = np.linspace(0, 1, width, dtype=np.float32) * np.float32(np.cos(theta))
    ramp_y = np.linspace(0, 1, height, dtype=np.float32) * np.float32(np.sin(theta))
    low = min(0.0, float(ramp_x[-1])) + min(0.0, float(ramp_y[-1]))
    span = max(abs(float(ramp_x[-1])) + abs(float(ramp_y[-1])), 1e-6)
    ramp = ((ramp_y[:, None] + (ramp_x[None, :] - low)) * np.float32(255 / span)).astype(np.uint8)
    steps = np.linspace(0, 1, 256)[:, None]
    palette = np.rint(start + steps * (end - start)).astype(np.uint8)
    # Colour the ramp through a lookup table per channel: C passes instead of float maths on H x W x 3.
    grey = Image.fromarray(ramp)
    image = Image.merge("RGB", [grey.point(palette[:, c].tolist()) for c in range(3)])
    return image, ramp, palette


def _contrasting_colour(rng, ramp, palette, box):
    """A random colour far (in RGB distance) from the background under the object's box."""
    x0, y0, x1, y1 = box
    local = palette[int(ramp[y0:y1, x0:x1].mean())].astype(np.float32)
    best, best_distance = None, -1.0
    for _ in range(20):
        colour = rng.integers(0, 256, 3)
        distance = float(np.linalg.norm(colour - local))
        if distance >= 120:
            return tuple(int(c) for c in colour)
        if distance > best_distance:
            best, best_distance = colour, distance
    return tuple(int(c) for c in best)


def _draw_distractors(draw, rng, width, height, box):
    """Thin lines, scribbles, short arcs and small blobs, kept off the object's box."""
    short = min(width, height)
    x0, y0, x1, y1 = box
    margin = max(2, short // 40)
    count = int(rng.integers(*DISTRACTOR_COUNT_RANGE))
    for _ in range(count):
        kind = int(rng.integers(4))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        line_width = int(rng.integers(1, max(2, short // 60) + 1))
        for _attempt in range(8):
            if kind == 0:  # a straight line
                points = rng.uniform(0, 1, (2, 2)) * (width, height)
            elif kind == 1:  # a scribble: a short random walk
                start = rng.uniform(0, 1, 2) * (width, height)
                steps = rng.normal(0, 0.12 * short, (int(rng.integers(2, 5)), 2))
                points = np.vstack([start, start + np.cumsum(steps, axis=0)])
            elif kind == 2:  # an arc of less than half a turn
                r = rng.uniform(0.05, 0.25) * short
                centre = rng.uniform(0, 1, 2) * (width, height)
                points = np.vstack([centre - r, centre + r])
            else:  # a small blob, far smaller than any object
                r = rng.uniform(0.015, 0.035) * short * np.array([1.0, rng.uniform(0.4, 1.0)])
                centre = rng.uniform(0, 1, 2) * (width, height)
                points = np.vstack([centre - r, centre + r])
            lo = points.min(axis=0) - line_width - margin
            hi = points.max(axis=0) + line_width + margin
            if hi[0] <= x0 or lo[0] >= x1 or hi[1] <= y0 or lo[1] >= y1:
                break
        else:
            continue  # no place found off the object: skip this distractor
        xy = [tuple(p) for p in points.tolist()]
        if kind in (0, 1):
            draw.line(xy, fill=colour, width=line_width)
        elif kind == 2:
            start_angle = rng.uniform(0, 360)
            draw.arc(xy, start_angle, start_angle + rng.uniform(60, 170), fill=colour, width=line_width)
        else:
            draw.ellipse(xy, fill=colour)
