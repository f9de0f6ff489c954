"""Phone and camera photos: camcli on 12 MP and 48 MP JPEGs (and a few HEIC), against predict-only.

`make bench-photos`. It generates the photos once (cached under --cache): smooth upscales of
../shared/photos (or of demo scenes where that folder is missing) with a little sensor-like noise,
saved as quality-92 JPEGs, some with an EXIF orientation, as phones write them (and 4 HEIC, timed
apart: a HEIC decode costs several JPEG decodes and would flatter the JPEG ratios). Then, side by side
in one process, with ResNet50 (weights=None: the cost of a real model, without its download) at
batch 8:

  1. predict-only, full decode: decode every pixel (camcli's decoder), resize to the model input,
     a compiled forward pass, decoding overlapped in a thread pool: what classifying costs when the
     whole photo is decoded;
  2. predict-only, reduced decode: the same, with the JPEG decoded at the smallest DCT scale that
     still covers the model input (Pillow's draft): the fastest way to classify these files;
  3. camcli explain with default options (full-size JPEG overlays): the run behind the command
     (discovery, decoding, the step, overlays, JSON, the summary) with the model loaded and its
     step compiled once, as a long run amortises them;
  4. camcli explain --max-size 1024.

The modes run interleaved over --rounds rounds (1, 3, 2, 4, then 4, 2, 3, 1, ...), each on the same
images, and each ratio is the median over rounds of the two modes' speeds in the same round (a
2-core machine's speed swings within seconds; neighbouring measurements are steady). It prints ms
per image, MB per overlay, and the targets. Peak resident memory is measured in fresh processes:
camcli with defaults on the 12 MP and the 48 MP photos.

    python benchmarks/photos.py            # the full run
    python benchmarks/photos.py --quick    # fewer, smaller photos, one round, to try things
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGETS = {
    "default_ratio": 0.80,  # 12 MP, default options, against predict-only with the same full decode
    "overlay_mb": 1.5,  # 12 MP, default options: MB per overlay
    "max_size_ratio": 0.85,  # 12 MP, --max-size 1024, against predict-only with reduced decode
    "rss_48mp_mb": 2.5 * 1024,  # 48 MP, default options: peak RSS
}
SIZES = {"12mp": (4000, 3000), "48mp": (8000, 6000)}
MODEL = "resnet50"
BATCH = 8


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "camcli-bench-photos")
    parser.add_argument("--images", type=int, default=32, help="12 MP JPEG photos per round")
    parser.add_argument("--large-images", type=int, default=8, help="48 MP photos for the memory run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="8 photos, 1 round, 4 large photos")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one memory run in a fresh process
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.rounds, args.large_images = 8, 1, 4
    return args


# --- the photos -------------------------------------------------------------------------------------


def _sources():
    from PIL import Image

    shared = REPO.parent / "shared" / "photos"
    paths = sorted(p for p in shared.glob("*") if p.suffix.lower() in (".png", ".jpg")) if shared.is_dir() else []
    if paths:
        return [Image.open(p).convert("RGB") for p in paths]
    from camcli.models.demo.samples import write_generated

    folder = Path(tempfile.mkdtemp())
    write_generated(folder)
    return [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png"))]


def make_photos(folder: Path, size: tuple[int, int], count: int, heic: int = 0) -> Path:
    """`count` JPEG photos of `size` (and `heic` HEIC ones) in `folder`, made once."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    done = folder / ".complete"
    if done.is_file() and done.read_text() == f"{size} {count} {heic}":
        return folder
    for old in folder.iterdir():
        old.unlink()
    rng = np.random.default_rng(0)
    sources = _sources()
    for i in range(count + heic):
        source = sources[i % len(sources)]
        # A different crop of the source for each photo, so that no two files are the same.
        w, h = source.size
        dx, dy = int(rng.integers(0, max(1, w // 8))), int(rng.integers(0, max(1, h // 8)))
        crop = source.crop((dx, dy, dx + w * 7 // 8, dy + h * 7 // 8))
        picture = np.asarray(crop.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
        picture += rng.normal(0.0, 2.0, picture.shape).astype(np.float32)  # sensor-like noise
        image = Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8))
        if i < count:
            exif = Image.Exif()
            if i % 4 == 1:  # a portrait photo stored sideways, as phones do
                image = image.transpose(Image.Transpose.ROTATE_90)
                exif[0x0112] = 6
            image.save(folder / f"IMG_{i:04d}.jpg", quality=92, exif=exif)
        else:
            image.save(folder / f"IMG_{i:04d}.heic", format="HEIF", quality=90)
    done.write_text(f"{size} {count} {heic}")
    return folder


# --- the modes --------------------------------------------------------------------------------------


class Modes:
    """Each mode explains (or classifies) one folder and returns its seconds."""

    def __init__(self, explainer, out_root: Path):
        self.explainer = explainer  # built (and its step compiled) once: start-up is not what is measured
        self.out_root = out_root

    def predict(self, paths, reduced: bool) -> float:
        from camcli.runs.decode import decode_image

        explainer = self.explainer
        size = explainer.loaded.input_size

        def prepare(path):
            decoded = decode_image(path, model_size=size, outputs=not reduced)
            return explainer.preprocess([decoded.model_view])[0]

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            inputs = list(pool.map(prepare, paths))  # decoded ahead, in order, as camcli's runner does
            for start in range(0, len(inputs), BATCH):
                explainer.class_scores(np.stack(inputs[start:start + BATCH]))
        return time.perf_counter() - started

    def camcli(self, folder: Path, name: str, max_size: int | None = None) -> tuple[float, float]:
        """(seconds, MB per overlay) of camcli's run (what `camcli explain` runs once the model is
        loaded: discovery, decoding, the step, overlays, JSON, the summary) on `folder`."""
        from camcli.options import FileOptions, RunOptions
        from camcli.runs.discovery import discover
        from camcli.runs.runner import run

        out = self.out_root / name
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        tasks, skipped = discover([folder], out)
        summary = run(self.explainer, tasks, RunOptions(out=out, batch_size=BATCH), FileOptions(max_size=max_size),
                      skipped)
        seconds = time.perf_counter() - started
        if summary.failed:
            raise SystemExit(f"camcli failed on {summary.failed} photos: {summary.failures[:2]}")
        overlays = [p for p in out.iterdir() if ".gradcam." in p.name]
        return seconds, sum(p.stat().st_size for p in overlays) / len(overlays) / 1e6


def run_rounds(modes: Modes, folder: Path, rounds: int) -> dict:
    paths = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    order = ["predict_full", "camcli_default", "predict_reduced", "camcli_max_size"]
    seconds = {name: [] for name in order}
    sizes = {}
    for index in range(rounds):
        for name in order if index % 2 == 0 else order[::-1]:
            if name.startswith("predict"):
                seconds[name].append(modes.predict(paths, reduced=name == "predict_reduced"))
            else:
                took, sizes[name] = modes.camcli(folder, name, 1024 if name == "camcli_max_size" else None)
                seconds[name].append(took)
    return {"count": len(paths), "seconds": seconds, "overlay_mb": sizes}


def stage_costs(explainer, path: Path, repeats: int = 5) -> dict:
    """Milliseconds of each stage for one photo, on one core (best of `repeats`), and of the step
    per image at batch 8 (both cores): where the time of a full-size overlay goes."""
    from camcli.maps.fast_overlay import draw_overlay  # the writer's: OpenCV's where it imports, else Pillow's
    from camcli.maps.overlay import colormap_lut
    from camcli.runs.decode import decode_image
    from camcli.runs.files import encode_picture
    from camcli.runs.writer import measure

    def best(call):
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return 1000 * min(times)

    size = explainer.loaded.input_size
    decoded = decode_image(path, model_size=size)
    unit = np.random.default_rng(0).random((7, 7)).astype(np.float32)
    lut = colormap_lut("jet")
    drawn = draw_overlay(decoded.picture, unit, 0.5, lut)
    batch = np.zeros((BATCH, *size, 3), np.float32)
    return {
        "decode": best(lambda: decode_image(path, model_size=size)),
        "model input": best(lambda: explainer.preprocess([decoded.model_view])),
        "forward per image": best(lambda: explainer.class_scores(batch)) / BATCH,
        "Grad-CAM step per image": best(lambda: explainer.explain_batch(batch)) / BATCH,
        "box and peak": best(lambda: measure(unit, decoded.original_size, 0.2)),
        "overlay": best(lambda: draw_overlay(decoded.picture, unit, 0.5, lut)),
        "JPEG encode": best(lambda: encode_picture(drawn, "jpg")),
    }


def print_stages(costs: dict) -> None:
    print("one 12 MP photo, ms: " + ", ".join(f"{name} {ms:.1f}" for name, ms in costs.items()))
    # Both cores are busy in both modes, so the ratio cannot exceed predict-only's CPU time over
    # camcli's: the step runs on two cores (its wall time counts twice), the rest on one.
    predict = costs["decode"] + costs["model input"] + 2 * costs["forward per image"]
    outputs = costs["box and peak"] + costs["overlay"] + costs["JPEG encode"]
    camcli = costs["decode"] + costs["model input"] + 2 * costs["Grad-CAM step per image"] + outputs
    print(f"  CPU per photo: predict-only {predict:.0f} ms, camcli {camcli:.0f} ms (a full-size overlay is "
          f"{outputs:.0f} of them): with both cores busy, camcli/predict-only cannot exceed "
          f"{predict / camcli:.2f} here")


def _ratio(result: dict, mode: str, against: str) -> float:
    pairs = zip(result["seconds"][mode], result["seconds"][against])
    return statistics.median(reference / took for took, reference in pairs)


# --- memory, in fresh processes ----------------------------------------------------------------------


def child(spec: str) -> None:
    """One camcli run in this fresh process; prints its peak RSS and time as JSON."""
    import camcli

    folder, out = spec.split("|")
    started = time.perf_counter()
    summary = camcli.explain_paths([folder], model=MODEL, weights="none", out=out, batch_size=BATCH)
    peak_mb = high_water_mb()
    print(json.dumps({"peak_mb": peak_mb, "seconds": time.perf_counter() - started, "ok": summary.ok,
                      "failed": summary.failed}))


def high_water_mb() -> float:
    """This process's peak resident memory. Not getrusage's ru_maxrss: Linux carries that across
    exec from the forking parent, so a child of a large process would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss(folder: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, __file__, "--child", f"{folder}|{out}"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        raise SystemExit(f"memory run failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the report ------------------------------------------------------------------------------------------


def held(ok: bool) -> str:
    return "held" if ok else "MISSED"


def print_table(result: dict, image_label: str) -> None:
    from camcli.maps.fast_overlay import opencv

    count = result["count"]
    drawn_by = "OpenCV (the fast extra)" if opencv() is not None else "Pillow (no OpenCV)"
    print(f"{image_label}: {count} photos per round, {MODEL} weights=None, batch {BATCH}, overlays drawn by {drawn_by}")
    print(f"{'mode':<34}{'ms/image':>10}{'images/s':>10}{'MB/overlay':>12}")
    labels = {"predict_full": "predict-only, full decode", "predict_reduced": "predict-only, reduced decode",
              "camcli_default": "camcli explain (defaults)", "camcli_max_size": "camcli explain --max-size 1024"}
    for name, label in labels.items():
        seconds = statistics.median(result["seconds"][name])
        size = result["overlay_mb"].get(name)
        size_text = f"{size:12.2f}" if size is not None else f"{'':>12}"
        print(f"{label:<34}{1000 * seconds / count:10.1f}{count / seconds:10.2f}{size_text}")


def print_heic(result: dict) -> None:
    count = result["count"]
    per_image = {name: 1000 * statistics.median(times) / count for name, times in result["seconds"].items()}
    print(f"12 MP HEIC ({count} photos, no reduced decode for HEIC): predict-only {per_image['predict_full']:.0f} "
          f"ms/image, camcli {per_image['camcli_default']:.0f} ms/image "
          f"({result['overlay_mb']['camcli_default']:.2f} MB JPEG overlays), "
          f"ratio {per_image['predict_full'] / per_image['camcli_default']:.2f}")


def print_targets(result: dict, memory: dict) -> int:
    default = _ratio(result, "camcli_default", "predict_full")
    reduced = _ratio(result, "camcli_max_size", "predict_reduced")
    overlay = result["overlay_mb"]["camcli_default"]
    checks = [
        (f"12 MP defaults: camcli/predict-only (full decode) {default:.2f} (>= {TARGETS['default_ratio']})",
         default >= TARGETS["default_ratio"]),
        (f"12 MP defaults: {overlay:.2f} MB per overlay (<= {TARGETS['overlay_mb']})",
         overlay <= TARGETS["overlay_mb"]),
        (f"12 MP --max-size 1024: camcli/predict-only (reduced decode) {reduced:.2f} (>= {TARGETS['max_size_ratio']})",
         reduced >= TARGETS["max_size_ratio"]),
    ]
    if "48mp" in memory:
        peak = memory["48mp"]["peak_mb"]
        checks.append((f"48 MP defaults: peak RSS {peak:.0f} MB (<= {TARGETS['rss_48mp_mb']:.0f})",
                       peak <= TARGETS["rss_48mp_mb"]))
    for text, ok in checks:
        print(f"  {text}: {held(ok)}")
    kept = sum(ok for _, ok in checks)
    print(f"{kept} of {len(checks)} targets held")
    return 0 if kept == len(checks) else 1


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from camcli.runs.decode import heif_reader

    twelve = make_photos(args.cache / "12mp", SIZES["12mp"], args.images)
    heic = make_photos(args.cache / "heic", SIZES["12mp"], 0, heic=4) if heif_reader() else None
    large = make_photos(args.cache / "48mp", SIZES["48mp"], args.large_images)
    import camcli

    explainer = camcli.Explainer(camcli.load_model(MODEL, weights="none"), masked_batch=4 * BATCH)
    out_root = Path(tempfile.mkdtemp(prefix="camcli-photos-out-"))
    modes = Modes(explainer, out_root)
    warm = args.cache / "warm"
    warm.mkdir(exist_ok=True)
    for path in sorted(twelve.glob("*.jpg"))[:2]:
        shutil.copy(path, warm / path.name)
    run_rounds(modes, warm, 1)  # compile the step and fill the caches before anything is timed
    result = run_rounds(modes, twelve, args.rounds)
    width, height = SIZES["12mp"]
    print_table(result, f"12 MP ({width}x{height}) JPEGs")
    if heic is not None:
        print_heic(run_rounds(modes, heic, 1))
    else:
        print("HEIC: skipped (pillow-heif is not installed: pip install 'keras-camcli[heif]')")
    print_stages(stage_costs(explainer, sorted(twelve.glob("*.jpg"))[0]))
    memory = {"12mp": peak_rss(twelve, out_root / "rss12"), "48mp": peak_rss(large, out_root / "rss48")}
    for name, figures in memory.items():
        print(f"peak RSS, camcli explain (defaults) on the {name[:2]} MP photos: {figures['peak_mb']:.0f} MB "
              f"({figures['ok']} explained in {figures['seconds']:.1f} s)")
    shutil.rmtree(out_root, ignore_errors=True)
    return print_targets(result, memory)


if __name__ == "__main__":
    sys.exit(main())
