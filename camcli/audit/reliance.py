"""Does the model's answer follow the mark its maps pile up on? Paste it elsewhere, cover it, and ask again.

A mark (camcli.audit.signals) says where the maps look. It does not say that the answer depends on it: a
clean model may glance at a high-contrast tag and still answer from the object. Where the audit has the
model (it explained the images itself), two tests:
- `transfer`: the mark, cut from its carriers, pasted into pictures of other classes: how much more often
  they get the class than with the same place of other pictures pasted (a sufficiency test, as for a
  BadNets trigger). camcli.audit.spray.check_reliance flags by it.
- `reliance`: each carrier with its mark covered by a flat patch of the picture's own median colour (an
  occlusion test, Zeiler and Fergus 2014, Sec. 4.2): the share whose top-1 leaves the class. Reported; it
  decides only with no other class, since covering a mark in the middle of a picture hides the object too.
"""

from __future__ import annotations

import numpy as np

from camcli.audit.signals import seeded_sample

# The covered square's side, a share of the picture's short side, centred on the pile-up's mark: a little more
# than the pattern's window (camcli.audit.signals: WINDOW of PICTURE_CELLS, 1/8), so that it hides the mark
# and as little of the rest as it can (30% also hid the object wherever the two overlap).
COVER_SPAN = 0.18
MAX_TESTED = 32  # images scored per pile-up (a seeded sample of larger ones)
# Pictures of other classes the transfer test pastes into (and as many controls): the difference of two rates,
# which on 32 each moved by up to 0.08 from sample to sample; a clean model's cross part reached the 0.25 threshold
# on 32 pictures and measured 0.17 on 64, while the cheating models' tags stayed at 0.3-1.0 (make bench-audit).
MAX_TRANSFERRED = 64


# The most of a picture's short side that the transfer test pastes, each way: a mark is small (the demo's tags are 14%
# of it), while the box measured around a group of alike objects is the object, and a whole object pasted into a
# picture gives its own class, shortcut or not (pasting 18% squares of crosses gave "cross" up to 47% of the time).
MAX_PASTE = 0.16
MARGIN = 0.02  # added to a mark's measured box on every side (a share of the short side): the mark's edge is blurred


def square(span: float = COVER_SPAN) -> tuple[float, float, float, float]:
    """A box of `span` times the short side a side, centred on the place: (left, top, right, bottom) offsets."""
    return (-span / 2, -span / 2, span / 2, span / 2)


def covered(picture: np.ndarray, place: tuple[float, float], extent: tuple | None = None) -> np.ndarray:
    """A copy of an RGB picture with the box `extent` ((left, top, right, bottom) offsets from `place`, shares of
    its short side; default a square of COVER_SPAN) filled with the picture's median colour."""
    out = np.array(picture[..., :3], dtype=np.uint8, copy=True)
    left, top, right, bottom = _box(out.shape[1], out.shape[0], place, extent)
    out[top:bottom, left:right] = np.median(out.reshape(-1, 3), axis=0)
    return out


def pasted(donor: np.ndarray, donor_place: tuple[float, float], picture: np.ndarray, place: tuple[float, float],
           extent: tuple | None = None) -> np.ndarray:
    """A copy of an RGB `picture` with the box `extent` around `donor_place` cut from `donor`, scaled by the two
    pictures' short sides and pasted at the same box around `place`."""
    from PIL import Image

    out = np.array(picture[..., :3], dtype=np.uint8, copy=True)
    extent = _at_most(extent, MAX_PASTE)
    left, top, right, bottom = _box(donor.shape[1], donor.shape[0], donor_place, extent)
    crop = donor[top:bottom, left:right, :3]
    box = _box(out.shape[1], out.shape[0], place, extent)
    side_x, side_y = box[2] - box[0], box[3] - box[1]
    if side_x < 1 or side_y < 1 or crop.size == 0:
        return out
    patch = Image.fromarray(np.ascontiguousarray(crop)).resize((side_x, side_y), Image.Resampling.BILINEAR)
    out[box[1]: box[3], box[0]: box[2]] = np.asarray(patch)
    return out


def _at_most(extent: tuple | None, side: float) -> tuple | None:
    """`extent` cut to at most `side` (a share of the short side) each way, about its middle."""
    if extent is None:
        return None
    middle_x, middle_y = (extent[0] + extent[2]) / 2, (extent[1] + extent[3]) / 2
    half_x, half_y = min(side, extent[2] - extent[0]) / 2, min(side, extent[3] - extent[1]) / 2
    return (middle_x - half_x, middle_y - half_y, middle_x + half_x, middle_y + half_y)


def _box(width: int, height: int, place: tuple[float, float], extent: tuple | None) -> tuple[int, int, int, int]:
    """The pixels of `extent` around `place`, grown by MARGIN (a measured extent only), cut to the picture."""
    short = min(width, height)
    if extent is None:
        extent = square()
    else:
        extent = (extent[0] - MARGIN, extent[1] - MARGIN, extent[2] + MARGIN, extent[3] + MARGIN)
    x, y = place[0] * width, place[1] * height
    left, right = round(x + extent[0] * short), round(x + extent[2] * short)
    top, bottom = round(y + extent[1] * short), round(y + extent[3] * short)
    return (max(0, left), max(0, top), min(width, max(left + 1, right)), min(height, max(top + 1, bottom)))


def reliance(explainer, pictures: list, places: list, class_index: int, seed: int,
             extent: tuple | None = None) -> float | None:
    """The share of `pictures` (callables giving RGB pictures, None when unreadable) whose top-1 is no longer
    `class_index` once its place (`places[i]`, (x, y) fractions) is covered; None when no picture could be read."""
    shown = [(picture, places[i]) for i in seeded_sample(len(pictures), MAX_TESTED, seed)
             if (picture := pictures[i]()) is not None]
    if not shown:
        return None
    scores = explainer.class_scores(explainer.preprocess([covered(picture, place, extent)
                                                           for picture, place in shown]))
    return float(np.mean(np.argmax(scores, axis=1) != class_index))


def transfer(explainer, donors: list, donor_places: list, others: list, class_index: int, seed: int,
             extent: tuple | None = None, controls: list = ()) -> float | None:
    """How much more often pictures of other classes (`others`: callables giving RGB pictures, None when
    unreadable) get `class_index` as their top-1 once the mark is pasted in than once the same place of other
    pictures is (`controls`, callables; the audit gives pictures of other classes, sampled apart): the mark is
    cut from the donors (the pictures that carry it best, used in turn) at their places and pasted at the same
    place, the controls are cut at the same places. Pictures the model already calls `class_index` are left
    out. None when no picture could be read; without controls, the share for the mark alone.

    Covering a mark (`reliance`) also covers whatever lies under or beside it (an object in the middle of the
    picture); pasting it into a picture of another class asks what it does on its own: a shortcut is enough
    for the answer (a sufficiency test, as the BadNets trigger is). Pasting anything there can change an answer
    (it hides part of the picture): the control takes that rate off. Its pieces come from other classes, not
    from the class's own pictures: those hold the class's objects wherever the class's objects sit (in the
    middle, often), which give the class when pasted, and a mark there would be measured against them."""
    cut = [(picture, donor_places[i]) for i, donor in enumerate(donors) if (picture := donor()) is not None]
    shown = [picture for i in seeded_sample(len(others), MAX_TRANSFERRED, seed)
             if (picture := others[i]()) is not None]
    if not cut or not shown:
        return None
    before = np.argmax(explainer.class_scores(explainer.preprocess(shown)), axis=1)
    shown = [picture for picture, top in zip(shown, before, strict=True) if top != class_index]
    if not shown:
        return None
    rate = _pasted_rate(explainer, cut, shown, class_index, extent)
    plain = [(picture, cut[k % len(cut)][1])
             for k, i in enumerate(seeded_sample(len(controls), MAX_TRANSFERRED, seed + 1))
             if (picture := controls[i]()) is not None]
    plain = plain[1:] + plain[:1]  # where the controls are the same pictures, none is pasted into itself
    return rate - _pasted_rate(explainer, plain, shown, class_index, extent) if plain else rate


def _pasted_rate(explainer, cut: list, shown: list, class_index: int, extent: tuple | None) -> float:
    """The share of `shown` whose top-1 is `class_index` with the pieces of `cut` ((picture, place), used in turn)
    pasted at their places."""
    marked = [pasted(*cut[i % len(cut)], picture, cut[i % len(cut)][1], extent) for i, picture in enumerate(shown)]
    return float(np.mean(np.argmax(explainer.class_scores(explainer.preprocess(marked)), axis=1) == class_index))
