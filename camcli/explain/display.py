"""How results show themselves: `camcli.overlay`, and the pictures behind a `ClassMap`'s PNG and an
`ImageExplanation`'s HTML in Jupyter.

Numpy and Pillow only. The blend is camcli.maps.overlay's `overlay_picture` (the one the CLI's
overlay files come from), and images in any accepted form go through
camcli.models.preprocess's `as_rgb_picture`, as the model's input does.

    >>> picture = camcli.overlay(image, result.maps[0], alpha=0.5, colormap="jet")  # PIL, image's size
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from PIL import Image, ImageOps

from camcli.errors import UsageError
from camcli.explain.explainer import ClassMap, ImageExplanation
from camcli.maps.boxes import DETECTION_COLOUR, draw_box
from camcli.maps.overlay import colormap_lut, overlay_picture
from camcli.models.preprocess import as_rgb_picture
from camcli.options import FileOptions, field_default

# The longer side of a picture shown in a notebook: an image is shrunk to it (never enlarged), and a
# heatmap whose image is unknown is drawn at it.
DISPLAY_SIDE = 512


def overlay(image, class_map: ClassMap | np.ndarray, alpha: float = field_default(FileOptions, "alpha"),
            colormap: str = field_default(FileOptions, "colormap")) -> Image.Image:
    """`image` with the map coloured through `colormap` and blended over it: a new RGB Pillow image
    at the image's size.

    image: a numpy array, uint8 or float in [0, 1], RGB (H, W, 3), greyscale (H, W) or (H, W, 1),
    or RGBA (H, W, 4) (composited over white); or a Pillow image. class_map: a `ClassMap`, or a 2-D
    map in [0, 1] on any grid (it is upsampled bilinearly to the image). alpha: the colours' weight,
    from 0 (the image alone) to 1 (the colours alone). A map with no positive evidence leaves the
    image as it is.
    """
    FileOptions(alpha=alpha, colormap=colormap)  # a bad alpha or colour map is one line, in these words
    picture = as_rgb_picture(image)
    drawn = overlay_picture(picture, _unit_map(class_map), alpha, colormap_lut(colormap))
    detection = getattr(class_map, "detection", None)
    if detection is not None:  # an object detector's map: the detection it explains, as the overlay files draw it
        return Image.fromarray(draw_box(np.asarray(drawn.convert("RGB")), detection.box_in_pixels(*drawn.size),
                                        DETECTION_COLOUR))
    return drawn.copy() if drawn is image else drawn  # never hand back the caller's own image


def _unit_map(class_map) -> np.ndarray:
    try:
        heatmap = class_map.heatmap if isinstance(class_map, ClassMap) else np.asarray(class_map, dtype=np.float32)
    except (TypeError, ValueError):
        raise UsageError(f"`class_map` must be a ClassMap or a 2-D map in [0, 1], not {type(class_map).__name__} "
                         f"{class_map!r:.40}") from None
    if heatmap.ndim != 2:
        raise UsageError(f"`class_map` must be a ClassMap or a 2-D map in [0, 1], not shape {heatmap.shape}")
    if not np.isfinite(heatmap).all():
        raise UsageError("`class_map` holds NaN or infinite values; give a 2-D map in [0, 1]")
    return heatmap


def map_picture(class_map: ClassMap) -> Image.Image:
    """What a map shows in a notebook: its overlay on the explained image, shrunk to DISPLAY_SIDE; or,
    when the image is unknown (`explain_batch`), the heatmap coloured with DISPLAY_SIDE as its longer
    side (black where the map is empty: no evidence, no colour)."""
    bounds = (DISPLAY_SIDE, DISPLAY_SIDE)
    if class_map.source_image is None:
        height, width = class_map.heatmap.shape
        return overlay(ImageOps.contain(Image.new("RGB", (width, height)), bounds), class_map, alpha=1.0)
    picture = as_rgb_picture(class_map.source_image)
    if max(picture.size) > DISPLAY_SIDE:
        picture = ImageOps.contain(picture, bounds, Image.Resampling.BILINEAR)
    return overlay(picture, class_map)


def png_bytes(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def map_caption(class_map: ClassMap) -> str:
    """One line that names the map: method, class (label and index) and the model's score."""
    caption = f"{class_map.method} · {class_map.label} ({class_map.class_index}) · {class_map.score:.3f}"
    if class_map.detection is not None:  # an object detector's map: which of the image's detections
        caption = f"detection {class_map.detection.index} · {caption}"
    return caption + (" · no positive evidence" if class_map.empty else "")


def explanation_html(explanation: ImageExplanation) -> str:
    """Every map of one image side by side, each captioned, above the image's top predictions."""
    figures = []
    for class_map in explanation.maps:
        caption = html.escape(map_caption(class_map))
        data = base64.b64encode(png_bytes(map_picture(class_map))).decode("ascii")
        figures.append(f'<figure style="margin: 0 8px 8px 0" title="{html.escape(class_map.layer)}">'
                       f'<img src="data:image/png;base64,{data}" alt="{caption}">'
                       f"<figcaption>{caption}</figcaption></figure>")
    predictions = ", ".join(f"{html.escape(p.label)} {p.score:.3f}" for p in explanation.predictions)
    return (f'<div style="display: flex; flex-wrap: wrap">{"".join(figures)}</div>'
            f"<p>top {len(explanation.predictions)}: {predictions}</p>")
