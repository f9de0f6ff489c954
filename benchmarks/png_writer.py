"""PNG writing: camcli's writer (camcli.runs.files.encode_png) against Pillow's encoder, side by side.

Every overlay camcli writes costs one PNG encode on a CPU that the model's forward pass also needs,
so the encode is a large part of what separates `camcli explain` from plain prediction. This
measures, on the same pictures and in alternating order, the milliseconds and the size of a file:
  - pillow: Image.save(format="PNG", compress_level, compress_type), as camcli wrote PNGs before
    (Pillow tries all five row filters on every row and keeps the best);
  - camcli: encode_png, PNG's "Up" filter on every row, computed by numpy, then zlib.
Pictures: jet overlays (alpha 0.5, a random 7x7 map) of generated scenes at 224 and 299 px and of
the sample photos, at compress level 1 with zlib's Z_RLE strategy (the overlays' settings); and one
side-by-side panel at level 6 with the default strategy (the panels' settings).

    python benchmarks/png_writer.py            # make bench-png
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import zlib
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from camcli.maps.overlay import blend, colormap_lut, upsample  # noqa: E402
from camcli.runs.files import encode_png  # noqa: E402


def pillow_png(pixels: np.ndarray, compress_level: int, strategy: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=compress_level, compress_type=strategy)
    return buffer.getvalue()


def overlay(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = rgb.shape[:2]
    heatmap = upsample(rng.random((7, 7)).astype(np.float32), height=height, width=width)
    return blend(rgb, heatmap, 0.5, colormap_lut("jet"))


def pictures(rng: np.random.Generator) -> list[tuple[str, np.ndarray, int, int]]:
    """(name, pixels, compress level, strategy) for every picture measured."""
    from camcli.maps.panel import render_panel
    from camcli.models.demo.scenes import make_scene
    from camcli.runs.decode import load_rgb

    overlay_settings = (1, zlib.Z_RLE)
    found = []
    for size in (224, 299):
        scene = make_scene(rng, size=(size, size)).image
        buffer = io.BytesIO()
        Image.fromarray(scene).save(buffer, format="JPEG", quality=90)  # as the benchmark's inputs are
        scene = np.asarray(Image.open(buffer).convert("RGB"))
        found.append((f"overlay, scene {size} px", overlay(scene, rng), *overlay_settings))
    for path in sorted((REPO / "sample_images" / "photos").glob("*.png")):
        rgb = load_rgb(path)
        found.append((f"overlay, {path.name} {rgb.shape[1]}x{rgb.shape[0]}", overlay(rgb, rng), *overlay_settings))
    rgb = found[0][1]
    heatmap = upsample(rng.random((7, 7)).astype(np.float32), height=rgb.shape[0], width=rgb.shape[1])
    found.append(("panel (level 6, default strategy)", render_panel(rgb, heatmap, rgb, "tabby 0.81 gradcam", "jet"),
                  6, zlib.Z_DEFAULT_STRATEGY))
    return found


def milliseconds(encode, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        encode()
    return (time.perf_counter() - started) / repeat * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds; medians are printed (default 7)")
    parser.add_argument("--repeat", type=int, default=10, help="encodes per picture per round (default 10)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    print("PNG writer: milliseconds and KiB per file, medians of "
          f"{args.rounds} alternating rounds of {args.repeat} encodes\n")
    print(f"{'picture':<40} {'pillow ms':>9} {'camcli ms':>9} {'speed-up':>8} {'pillow KiB':>10} {'camcli KiB':>10}")
    speedups = []
    for name, pixels, level, strategy in pictures(rng):
        writers = {"pillow": partial(pillow_png, pixels, level, strategy),
                   "camcli": partial(encode_png, pixels, level, strategy)}
        times = {writer: [] for writer in writers}
        for index in range(args.rounds):
            for writer in writers if index % 2 == 0 else reversed(writers):
                times[writer].append(milliseconds(writers[writer], args.repeat))
        pillow, camcli = (statistics.median(times[writer]) for writer in writers)
        ratio = statistics.median(p / c for p, c in zip(times["pillow"], times["camcli"]))
        speedups.append(ratio)
        size_pillow, size_camcli = (len(encode()) / 1024 for encode in writers.values())
        print(f"{name:<40} {pillow:9.2f} {camcli:9.2f} {ratio:7.2f}x {size_pillow:10.1f} {size_camcli:10.1f}")
    print(f"\nmedian speed-up {statistics.median(speedups):.2f}x (speed-up: the median over rounds of pillow ms / "
          "camcli ms in the same round)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
