"""From a raw class-activation map to a coloured overlay: numpy and Pillow only.

The pipeline for one image is `normalize_map` (on the layer's grid), then `overlay_picture`:
upsample to the picture's size, colour through a colour map's lookup table (`colormap_lut`) and
blend. That runs in Pillow's C code, band by band, with no float array the size of the photo:
a 12 MP overlay costs about 43 ms of CPU (65 with its JPEG encode), and its memory is the output plus
one band. The writer's full-size overlays take the same steps in OpenCV where it is installed
(camcli.maps.fast_overlay, the `fast` extra: 16 ms, 40 with the encode), within the same bound of the
float pipeline; `overlay_picture` is the fallback, and what `camcli.overlay` draws. `upsample` and
`blend` are the same steps on numpy arrays, for maps that are measured rather than drawn.
"""

import difflib
import functools

import numpy as np
from PIL import Image

from camcli.errors import UsageError


def colormap_names():
    """The colour map names matplotlib knows (its registry, sorted)."""
    import matplotlib  # imported here: only runs that draw an overlay pay for it

    return sorted(matplotlib.colormaps)


@functools.cache
def colormap_lut(name):
    """The colour map `name` as a read-only uint8 (256, 3) lookup table, index 0 = coldest."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except (KeyError, TypeError, ValueError):
        raise UsageError(_unknown_colormap_message(name)) from None
    rgba = cmap(np.linspace(0.0, 1.0, 256))  # floats in 0..1, shape (256, 4)
    lut = np.rint(rgba[:, :3] * 255.0).astype(np.uint8)
    lut.flags.writeable = False  # shared by every caller through the cache
    return lut


def _unknown_colormap_message(name):
    names = colormap_names()
    by_lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(by_lower[c] for c in close)}?" if close else ""
    return f"unknown colormap {name!r}{hint} (see `camcli explain --help`)"


def normalize_map(raw):
    """Scale a raw (h, w) map to [0, 1]: returns `(unit_map float32, raw_max, empty)`.

    ReLU first: Grad-CAM keeps only the evidence *for* the class (Selvaraju et al. 2017, Eq. 2).
    Then divide by the maximum. A map with no positive value, or with any NaN or infinity (a
    numeric failure upstream, so no value in it can be trusted), is "empty": the unit map is all
    zeros and `raw_max` is 0.0. The result never contains NaN.
    """
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {raw.shape}")
    positive = np.maximum(raw, 0.0)
    raw_max = float(positive.max()) if positive.size else 0.0
    if not np.isfinite(raw).all() or not raw_max > 0.0:
        return np.zeros(raw.shape, dtype=np.float32), 0.0, True
    return (positive / raw_max).astype(np.float32), raw_max, False


def upsample(unit_map, *, height: int, width: int):
    """Bilinear resize of a (h, w) map in [0, 1] to (height, width), clipped to [0, 1].

    The size is keyword-only: numpy writes (height, width) and Pillow (width, height), and a
    positional pair in the wrong order would give a map of the wrong shape without a word.
    """
    height, width = int(height), int(width)
    image = Image.fromarray(np.ascontiguousarray(unit_map, dtype=np.float32))  # mode "F"
    resized = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))
    return np.clip(resized, 0.0, 1.0).astype(np.float32)


# Rows drawn at a time by overlay_picture: enough to keep Pillow's loops long, few enough that a
# band of a 48 MP photo (8000 px wide) holds about 6 MB per temporary image.
OVERLAY_BAND_ROWS = 256


def overlay_picture(picture: Image.Image, unit_map, alpha: float, lut) -> Image.Image:
    """`(1 - alpha) * picture + alpha * colour(upsample(unit_map))` as a new RGB Pillow image.

    The map (a (h, w) array in [0, 1], on the layer's grid) is rounded to 256 levels and upsampled
    bilinearly by Pillow in 8 bits, each level coloured by `lut`, and blended by Pillow. Against the
    float pipeline (`upsample`, then numpy's `blend`) a pixel differs by at most one step of the
    lookup table times alpha, plus one level (Pillow's blend truncates where numpy rounds), and by
    under half a level on average (tests/test_photos.py). Each band of rows resamples its own part
    of the map (Pillow's `box`), as the whole resample would. An all-zero map returns `picture`
    itself, unchanged: no evidence, no tint.
    """
    unit_map = np.asarray(unit_map, dtype=np.float32)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if not unit_map.any():
        return picture
    width, height = picture.size
    map_height, map_width = unit_map.shape
    levels = Image.fromarray(np.rint(np.clip(unit_map, 0.0, 1.0) * 255.0).astype(np.uint8), "L")
    palette = np.ascontiguousarray(lut, dtype=np.uint8).tobytes()
    out = Image.new("RGB", (width, height))
    # Image.blend holds the GIL, where a paste through a constant mask would not; but the paste
    # costs 40% more CPU, and on two busy cores CPU is what sets the pace (measured side by side in
    # a 12 MP run: no difference in throughput).
    for top in range(0, height, OVERLAY_BAND_ROWS):
        bottom = min(height, top + OVERLAY_BAND_ROWS)
        source = (0.0, top * map_height / height, float(map_width), bottom * map_height / height)
        band = levels.resize((width, bottom - top), Image.Resampling.BILINEAR, box=source)
        band.putpalette(palette)  # an "L" image with a palette becomes a "P" image
        colour = band.convert("RGB")
        out.paste(Image.blend(picture.crop((0, top, width, bottom)), colour, alpha), (0, top))
    return out


def resize_unit_rgb(image, size_wh):
    """An (h, w, 3) float image in [0, 1] as uint8 RGB resized to `size_wh` = (width, height)."""
    pixels = Image.fromarray(np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8))
    return np.asarray(pixels.resize(tuple(int(n) for n in size_wh), Image.Resampling.BILINEAR))


def blend(rgb, heatmap, alpha, lut):
    """`(1 - alpha) * rgb + alpha * colour(heatmap)`, rounded to uint8 (H, W, 3).

    An all-zero heatmap (no evidence) leaves the image as it is, rather than tinting it with the
    colour map's coldest colour.
    """
    rgb = np.asarray(rgb)
    heatmap = np.asarray(heatmap)
    if heatmap.shape != rgb.shape[:2]:
        raise ValueError(f"heatmap shape {heatmap.shape} does not match image shape {rgb.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if not heatmap.any():
        return rgb.copy()
    index = np.rint(np.clip(heatmap, 0.0, 1.0) * 255.0).astype(np.intp)
    # Both terms come from 256-entry tables, so the per-pixel work is two lookups and one add
    # (about 4x faster than blending in float per pixel; this runs once per overlay written).
    image_part = (1.0 - alpha) * np.arange(256, dtype=np.float32)
    colour_part = alpha * np.asarray(lut, dtype=np.float32)
    mixed = np.take(image_part, rgb) + np.take(colour_part, index, axis=0)  # take: faster than a[index]
    return np.rint(mixed).astype(np.uint8)  # both parts lie in [0, 255], so no clipping is needed
