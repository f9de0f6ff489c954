"""Does the model's answer follow what its maps pile up on? Cover the place, and ask the model again.

A pile-up over a repeated pattern (camcli.audit.signals) says where the maps look. It does not say that
the answer depends on it: a clean model may glance at a high-contrast tag and still answer from the
object. Where the audit has the model (it explained the images itself), each candidate pile-up's images
are scored again with the pile's place covered by a flat patch of the picture's own median colour (an
occlusion test, Zeiler and Fergus 2014, Sec. 4.2): the share of images whose top-1 leaves the class is
the pile-up's `reliance`. A shortcut is what the answer relies on.
"""

from __future__ import annotations

import numpy as np

# The covered square's side, a share of the picture's short side, centred on the pile-up's mark: a little more
# than the pattern's window (camcli.audit.signals: WINDOW of PICTURE_CELLS, 1/8), so that it hides the mark
# and as little of the rest as it can (30% also hid the object wherever the two overlap).
COVER_SPAN = 0.18
MAX_TESTED = 32  # images scored per pile-up (a seeded sample of larger ones)


def covered(picture: np.ndarray, place: tuple[float, float], span: float = COVER_SPAN) -> np.ndarray:
    """A copy of an RGB picture with a square of `span` times its short side around `place` (x, y fractions)
    filled with the picture's median colour."""
    out = np.array(picture[..., :3], dtype=np.uint8, copy=True)
    height, width = out.shape[:2]
    half = max(1, round(span * min(width, height) / 2))
    x, y = round(place[0] * width), round(place[1] * height)
    out[max(0, y - half): y + half, max(0, x - half): x + half] = np.median(out.reshape(-1, 3), axis=0)
    return out


def reliance(explainer, pictures: list, class_index: int, place: tuple[float, float], seed: int) -> float | None:
    """The share of `pictures` (callables giving RGB pictures, None when unreadable) whose top-1 is no longer
    `class_index` once `place` is covered; None when no picture could be read."""
    order = np.arange(len(pictures))
    if len(order) > MAX_TESTED:
        order = np.sort(np.random.default_rng(seed).choice(order, MAX_TESTED, replace=False))
    shown = [picture for picture in (pictures[i]() for i in order) if picture is not None]
    if not shown:
        return None
    scores = explainer.class_scores(explainer.preprocess([covered(picture, place) for picture in shown]))
    return float(np.mean(np.argmax(scores, axis=1) != class_index))
