"""Soak test: explain thousands of generated images with the demo model in one run, and watch it.

It checks what a long unattended run must keep: no image fails, every image's JSON and overlay
exist and parse, resident memory stops growing after the first 100 images, and throughput holds.
It samples RSS every 100 images and prints the curve.

    python benchmarks/soak.py                  # 5,000 images (issue 4)
    python benchmarks/soak.py --images 2000    # what benchmarks/throughput.py runs for its memory target
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MAX_MEMORY_GROWTH = 0.05  # at most 5% more RSS at the end than after 100 images


def rss_mb() -> float:
    import os

    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def generate(folder: Path, count: int, seed: int = 11) -> None:
    """Scenes of varied sizes, as JPEG and PNG, in nested folders of 500."""
    from PIL import Image

    from camcli.models.demo.scenes import make_scene

    rng = np.random.default_rng(seed)
    for i in range(count):
        scene = make_scene(rng)
        path = folder / f"part{i // 500:02d}" / f"scene_{i:05d}.{'jpg' if i % 2 else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene.image).save(path)


def soak(count: int, work: Path, batch_size: int = 16) -> dict:
    """Run `count` images through camcli's runner; return the figures."""
    from camcli.explain.explainer import Explainer
    from camcli.models.loading import load_model
    from camcli.options import FileOptions, RunHooks, RunOptions
    from camcli.runs.discovery import discover
    from camcli.runs.runner import run

    images, out = work / "images", work / "out"
    started = time.perf_counter()
    generate(images, count)
    generated = time.perf_counter() - started
    explainer = Explainer(load_model("demo"), classes=["top1", "top2"])
    tasks, skipped = discover([images], out)
    curve = []
    done = [0]

    def progress(n):
        before = done[0]
        done[0] += n
        if done[0] // 100 > before // 100:
            curve.append((done[0], rss_mb()))

    summary = run(explainer, tasks, RunOptions(out=out, batch_size=batch_size), FileOptions(), skipped,
                  RunHooks(on_progress=progress))
    records = list(out.rglob("scene_*.json"))
    complete = sum(all((out / e["overlay"]).is_file() for e in json.loads(p.read_text())["explanations"])
                   for p in records)
    at100 = next(rss for n, rss in curve if n >= 100)
    end = curve[-1][1]
    return {
        "images": summary.images, "ok": summary.ok, "failed": summary.failed, "json_complete": complete,
        "generated_seconds": generated, "explain_seconds": summary.elapsed_seconds,
        "images_per_second": summary.images_per_second, "rss_at_100": at100, "rss_end": end,
        "rss_max": max(rss for _, rss in curve), "growth": (end - at100) / at100, "curve": curve,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="camcli-soak-"))
    try:
        figures = soak(args.images, work, args.batch_size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"soak: {figures['images']} images generated in {figures['generated_seconds']:.0f} s, explained "
          f"(gradcam, top1 + top2) in {figures['explain_seconds']:.0f} s = {figures['images_per_second']:.1f} images/s")
    print(f"ok {figures['ok']}, failed {figures['failed']}, complete JSON records {figures['json_complete']}")
    print("RSS (MB) every 1000 images: " + ", ".join(
        f"{n}: {rss:.0f}" for n, rss in figures["curve"] if n % 1000 == 0 or n == 100))
    ok = figures["failed"] == 0 and figures["json_complete"] == figures["images"] == figures["ok"]
    held = figures["growth"] <= MAX_MEMORY_GROWTH
    print(f"RSS after 100 images {figures['rss_at_100']:.0f} MB, at the end {figures['rss_end']:.0f} MB, max "
          f"{figures['rss_max']:.0f} MB: growth {figures['growth']:+.1%} (at most {MAX_MEMORY_GROWTH:.0%}: "
          f"{'held' if held else 'MISSED'})")
    print("all images explained and complete" if ok else "SOME IMAGES FAILED OR ARE INCOMPLETE")
    return 0 if ok and held else 1


if __name__ == "__main__":
    sys.exit(main())
