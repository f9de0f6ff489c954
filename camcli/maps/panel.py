"""Side-by-side panels: the original, the heatmap with a colour bar, and the overlay, in one PNG.

matplotlib draws them (axes, colour bar and title text), through a `Figure` and an Agg canvas of
its own rather than pyplot, whose global state is not thread-safe: the runner's writer threads
can render panels side by side. matplotlib is imported on first use only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

# 12 x 4.5 inches at 100 dpi: 1200 x 450 pixels, three 10-11 pt labelled plots side by side.
FIGSIZE = (12.0, 4.5)
DPI = 100
# Each plot is about 350 pixels wide: pictures are shrunk to this side before drawing, which keeps
# a 24-megapixel photo as quick to draw as a thumbnail and changes nothing visible.
_DRAW_SIDE = 700


def panel_title(label: str, score: float | None, method: str, layer: str | Sequence[str] | None) -> str:
    """"tabby (score 0.812) - gradcam at block5_conv3"; several layers are joined with "+"."""
    layers = [layer] if isinstance(layer, str) else list(layer or [])
    score_text = "" if score is None else f" (score {score:.3f})"
    at = f" at {' + '.join(layers)}" if layers else ""
    return f"{label}{score_text} - {method}{at}"


def _shrink(picture: np.ndarray) -> np.ndarray:
    """`picture` (uint8 RGB, or a float map) with its longer side at most _DRAW_SIDE."""
    height, width = picture.shape[:2]
    scale = _DRAW_SIDE / max(height, width)
    if scale >= 1:
        return picture
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if picture.dtype == np.uint8:
        return np.asarray(Image.fromarray(picture).resize(size, Image.Resampling.BILINEAR))
    return np.asarray(Image.fromarray(picture.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR))


def render_panel(rgb: np.ndarray, heatmap: np.ndarray | None, overlay: np.ndarray, title: str,
                 colormap: str) -> np.ndarray:
    """The panel as an (H, W, 3) uint8 array, 1200 x 450 pixels at the default size.

    rgb and overlay are (h, w, 3) uint8 pictures; heatmap is an (h, w) map in [0, 1] (its plot gets
    a colour bar), or None for methods without one, which leaves two plots.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from camcli.maps.overlay import colormap_lut

    colormap_lut(colormap)  # an unknown name fails with camcli's message, not matplotlib's
    plots = [("original", _shrink(np.asarray(rgb, np.uint8)))]
    if heatmap is not None:
        plots.append(("heatmap", _shrink(np.asarray(heatmap, np.float32))))
    plots.append(("overlay", _shrink(np.asarray(overlay, np.uint8))))

    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(plots))
    for ax, (name, picture) in zip(axes, plots):
        if name == "heatmap":
            image = ax.imshow(picture, cmap=colormap, vmin=0.0, vmax=1.0, interpolation="bilinear")
            bar = figure.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
            bar.ax.tick_params(labelsize=10)
            bar.set_label("activation (0 = none, 1 = peak)", fontsize=10)
        else:
            ax.imshow(picture, interpolation="bilinear")
        ax.set_title(name, fontsize=12)
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle(title, fontsize=14, wrap=True)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()
