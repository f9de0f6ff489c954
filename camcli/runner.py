"""The batch run behind `camcli explain`: decode, explain, write, for any number of images.

Three stages overlap: a thread pool decodes and preprocesses the next images while the compiled step
explains the current batch, and another pool colours, encodes and writes the finished ones
(Pillow, numpy and TensorFlow release the GIL for the heavy parts). Both pools have bounded queues,
so memory stays flat however many images there are, and results keep the input order.

One bad image never costs the others: its failure is recorded and the run goes on. Every file is
written atomically, and an image's JSON is written after its overlays, so a JSON file means the
image is complete.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from camcli import __version__
from camcli.discovery import ImageTask, SkippedInput
from camcli.errors import CamcliError, UsageError
from camcli.explainer import Explainer, ImageExplanation
from camcli.images import load_rgb
from camcli.outputs import save_json, save_npy, save_png
from camcli.overlay import blend, colormap_lut, peak_xy, upsample

SUMMARY_NAME = "summary.json"


@dataclass
class RunOptions:
    out_dir: Path
    batch_size: int = 8
    alpha: float = 0.5
    colormap: str = "jet"
    save_heatmap: bool = False
    png_compress_level: int = 1  # zlib level 1: several times faster than 6, files ~10-20% larger


@dataclass
class RunSummary:
    images: int = 0
    ok: int = 0
    failures: list[dict] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def images_per_second(self) -> float:
        return self.ok / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


def output_paths(out_dir: Path, task: ImageTask, method: str, class_index: int) -> tuple[Path, Path]:
    """(overlay PNG, heatmap NPY) for one explained class of one image."""
    base = out_dir / f"{task.out_stem}.{method}.{class_index}"
    return base.with_name(base.name + ".png"), base.with_name(base.name + ".npy")


def json_path(out_dir: Path, task: ImageTask) -> Path:
    stem = out_dir / task.out_stem
    return stem.with_name(stem.name + ".json")


def _relative(path: Path, out_dir: Path) -> str:
    return path.relative_to(out_dir).as_posix()


def write_image_outputs(task: ImageTask, rgb: np.ndarray, result: ImageExplanation, explainer: Explainer,
                        options: RunOptions) -> None:
    """Overlays (and heatmaps), then the image's JSON record."""
    height, width = rgb.shape[:2]
    lut = colormap_lut(options.colormap)
    explanations = []
    for class_map in result.maps:
        heatmap = upsample(class_map.heatmap, (width, height))
        overlay_path, heatmap_path = output_paths(options.out_dir, task, class_map.method, class_map.class_index)
        save_png(overlay_path, blend(rgb, heatmap, options.alpha, lut), compress_level=options.png_compress_level)
        if options.save_heatmap:
            save_npy(heatmap_path, heatmap.astype(np.float32))
        explanations.append({
            "method": class_map.method,
            "layer": class_map.layer,
            "class_index": class_map.class_index,
            "label": class_map.label,
            "score": class_map.score,
            "overlay": _relative(overlay_path, options.out_dir),
            "heatmap": _relative(heatmap_path, options.out_dir) if options.save_heatmap else None,
            "peak": peak_xy(heatmap),
            "raw_max": class_map.raw_max,
            "empty": class_map.empty,
        })
    loaded = explainer.loaded
    record = {
        "image": task.display,
        "width": width,
        "height": height,
        "model": loaded.name,
        "layer": explainer.layer,
        "predictions": [
            {"rank": p.rank, "index": p.index, "label": p.label, "score": p.score} for p in result.predictions
        ],
        "explanations": explanations,
    }
    if not loaded.pretrained:
        record["warning"] = RANDOM_WEIGHTS_WARNING
    save_json(json_path(options.out_dir, task), record)


RANDOM_WEIGHTS_WARNING = "random weights (--weights none): the predictions and maps are meaningless"


def _decode(task: ImageTask, explainer: Explainer):
    """(rgb, model input) for a task, or the error that stops it."""
    try:
        rgb = load_rgb(task.source)
        return rgb, explainer.preprocess([rgb])[0], None
    except CamcliError as error:
        return None, None, str(getattr(error, "reason", error))


def run(explainer: Explainer, tasks: list[ImageTask], options: RunOptions,
        skipped: Iterable[SkippedInput] = (), on_failure: Callable[[str, str], None] | None = None,
        on_progress: Callable[[int], None] | None = None) -> RunSummary:
    """Explain every task, write the outputs and `summary.json`; return the summary.

    on_failure(image, reason) is called once per failed image as it happens; on_progress(n) after
    every n images finished (written or failed).
    """
    try:
        options.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create output folder {options.out_dir}: {error}; choose another --out") from error
    colormap_lut(options.colormap)  # an unknown colour map fails before any work is done
    summary = RunSummary(images=len(tasks))
    started = time.perf_counter()

    def fail(display: str, reason: str) -> None:
        summary.failures.append({"image": display, "error": reason})
        if on_failure:
            on_failure(display, reason)

    for item in skipped:
        summary.images += 1
        fail(item.display, item.reason)

    lookahead = max(2 * options.batch_size, 4)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2), thread_name_prefix="camcli-decode") as decoders, \
            ThreadPoolExecutor(max_workers=2, thread_name_prefix="camcli-write") as writers:
        decoding = deque()
        writing = deque()
        pending = iter(tasks)

        def top_up():
            while len(decoding) < lookahead:
                task = next(pending, None)
                if task is None:
                    return
                decoding.append((task, decoders.submit(_decode, task, explainer)))

        def drain_writes(limit: int):
            while len(writing) > limit:
                task, future = writing.popleft()
                try:
                    future.result()
                    summary.ok += 1
                except (CamcliError, OSError) as error:
                    fail(task.display, f"cannot write outputs: {error}")
                if on_progress:
                    on_progress(1)

        top_up()
        while decoding:
            batch_tasks, batch_rgb, batch_inputs = [], [], []
            while decoding and len(batch_tasks) < options.batch_size:
                task, future = decoding.popleft()
                rgb, model_input, error = future.result()
                top_up()
                if error is not None:
                    fail(task.display, error)
                    if on_progress:
                        on_progress(1)
                    continue
                batch_tasks.append(task)
                batch_rgb.append(rgb)
                batch_inputs.append(model_input)
            if not batch_tasks:
                continue
            results = explainer.explain_batch(np.stack(batch_inputs))
            for task, rgb, result in zip(batch_tasks, batch_rgb, results):
                writing.append((task, writers.submit(write_image_outputs, task, rgb, result, explainer, options)))
            drain_writes(limit=lookahead)
        drain_writes(limit=0)

    summary.elapsed_seconds = time.perf_counter() - started
    write_summary(options.out_dir, explainer, summary)
    return summary


def summary_record(explainer: Explainer, summary: RunSummary) -> dict:
    loaded = explainer.loaded
    record = {
        "camcli_version": __version__,
        "model": loaded.name,
        "layer": explainer.layer,
        "method": explainer.method.name,
        "classes": [request.text for request in explainer.requests],
        "pretrained": loaded.pretrained,
        "images": summary.images,
        "ok": summary.ok,
        "failed": summary.failed,
        "failures": summary.failures,
        "elapsed_seconds": round(summary.elapsed_seconds, 3),
        "images_per_second": round(summary.images_per_second, 3),
    }
    if not loaded.pretrained:
        record["warning"] = RANDOM_WEIGHTS_WARNING
    return record


def write_summary(out_dir: Path, explainer: Explainer, summary: RunSummary) -> None:
    save_json(out_dir / SUMMARY_NAME, summary_record(explainer, summary))
