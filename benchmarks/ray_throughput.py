"""camcli.ray against `camcli explain` on the same machine and the same folder: images per second.

One folder of generated scenes (PNG, 160 to 320 px) is explained, side by side in one run:
- by `camcli explain` (camcli.explain_paths, what the command calls);
- by camcli.ray.explain_dataset on a local Ray (ray.init(num_cpus=CPUs)), reading the files with
  ray.data.read_binary_files (camcli decodes them) and with ray.data.read_images (Ray decodes them),
  with one actor of 1 CPU and with two actors of half a CPU each.
Each Ray figure is the dataset's wall time from the call to the summary, with the driver's and the
actors' model loading in it; Ray's own start (ray.init) is printed apart. Every run's records are
checked to be camcli explain's (same files).

    python benchmarks/ray_throughput.py                      # demo model, 1,000 images, about 3 minutes
    python benchmarks/ray_throughput.py --model resnet50 --images 200
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_scenes(folder: Path, count: int) -> None:
    from PIL import Image

    from camcli.models.demo.scenes import make_dataset

    images, _, _ = make_dataset(count, seed=4242)
    for i, image in enumerate(images):
        sub = folder / f"part{i % 4}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(sub / f"scene{i:05d}.png")


def files_of(out: Path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), out) for d, _, names in os.walk(out) for n in names
                  if n != "summary.json")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="the local Ray's CPUs")
    args = parser.parse_args(argv)
    import camcli

    work = Path(tempfile.mkdtemp(prefix="camcli-ray-bench-"))
    try:
        images = work / "scenes"
        write_scenes(images, args.images)
        weights = {"weights": "none"} if args.model not in ("demo", "demo-cheat") else {}
        started = time.perf_counter()
        summary = camcli.explain_paths([str(images)], model=args.model, out=work / "cli", **weights)
        cli_seconds = time.perf_counter() - started
        rows = [("camcli explain", cli_seconds, summary.ok)]
        reference = files_of(work / "cli")

        import ray
        import ray.data

        import camcli.ray

        started = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        ray_start = time.perf_counter() - started
        ray.data.DataContext.get_current().enable_progress_bars = False
        # The fixed cost of a Ray run (the driver's and the actor's model loading, Ray's scheduling): a
        # dataset of one batch.
        started = time.perf_counter()
        small = ray.data.read_binary_files([str(p) for p in sorted(images.rglob("*.png"))[:8]], include_paths=True)
        camcli.ray.explain_dataset(small, work / "ray-fixed", model=args.model, root=str(images), **weights)
        fixed = time.perf_counter() - started
        runs = [("read_binary_files, 1 actor of 1 CPU", "binary", 1, 1.0),
                ("read_binary_files, 2 actors of 0.5 CPU", "binary", 2, 0.5),
                ("read_images, 1 actor of 1 CPU", "images", 1, 1.0)]
        for name, reader, actors, cpus in runs:
            out = work / f"ray-{reader}-{actors}"
            started = time.perf_counter()
            ds = ray.data.read_binary_files(str(images), include_paths=True) if reader == "binary" else \
                ray.data.read_images(str(images), include_paths=True, mode="RGB")
            summary = camcli.ray.explain_dataset(ds, out, model=args.model, root=str(images), concurrency=actors,
                                                 num_cpus=cpus, **weights)
            seconds = time.perf_counter() - started
            assert files_of(out) == reference, f"{name}: other files than camcli explain's"
            rows.append((name, seconds, summary.ok))
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"model {args.model}, {args.images} images (160-320 px PNG), {os.cpu_count()} cores; "
          f"ray.init took {ray_start:.1f} s (not in the figures); a Ray run of 8 images took {fixed:.1f} s "
          "(its fixed cost: loading the model on the driver and in an actor)")
    print("| run | wall s | images | images/s | against camcli explain | images/s after the fixed cost |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, seconds, ok in rows:
        steady = f"{(ok - 8) / (seconds - fixed):.1f}" if name != "camcli explain" and seconds > fixed else "-"
        print(f"| {name} | {seconds:.1f} | {ok} | {ok / seconds:.1f} | {cli_seconds / seconds:.2f}x | {steady} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
