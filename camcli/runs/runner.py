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

import hashlib
import json
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from camcli import __version__
from camcli.errors import CamcliError, UsageError
from camcli.explain.explainer import Explainer, ImageExplanation, MethodSet
from camcli.maps.boxes import box_from_map, draw_box, peak_xy, threshold_mask
from camcli.maps.overlay import blend, colormap_lut, resize_unit_rgb, upsample
from camcli.maps.panel import panel_title
from camcli.runs.decode import load_rgb
from camcli.runs.discovery import ImageTask, SkippedInput
from camcli.runs.files import save_json, save_npy, save_panel, save_png
from camcli.runs.layout import TEMP_PREFIX, TEMP_SUFFIX

SUMMARY_NAME = "summary.json"


@dataclass
class RunOptions:
    out_dir: Path
    batch_size: int = 8
    alpha: float = 0.5
    colormap: str = "jet"
    save_heatmap: bool = False
    png_compress_level: int = 1  # with zlib's Z_RLE strategy (see outputs.encode_png)
    fail_fast: bool = False  # stop at the first failed image
    resume: bool = False  # skip images whose outputs are already complete
    shard: tuple[int, int] | None = None  # (k, n), 1 <= k <= n: this process's share of the images
    box_threshold: float = 0.2  # the box keeps pixels >= this fraction of the map's maximum (CAM paper)
    save_mask: bool = False  # write each map's thresholded mask as a binary PNG
    draw_box: bool = False  # draw the box on the overlay
    panel: bool = False  # write a side-by-side panel (original, heatmap with colour bar, overlay) per map

    @property
    def summary_name(self) -> str:
        return SUMMARY_NAME if self.shard is None else f"summary.{self.shard[0]}-of-{self.shard[1]}.json"


@dataclass
class RunSummary:
    images: int = 0
    ok: int = 0
    failures: list[dict] = field(default_factory=list)
    elapsed_seconds: float = 0.0
    resumed: int = 0  # images found complete from an earlier run (counted in ok)
    interrupted: bool = False

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def images_per_second(self) -> float:
        explained = self.ok - self.resumed
        return explained / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


def in_shard(out_stem: str, shard: tuple[int, int]) -> bool:
    """Whether an image belongs to shard k of n. The split depends only on the image's relative path,
    so n processes that list the same tree cover every image exactly once, whatever their order."""
    k, n = shard
    digest = hashlib.sha1(out_stem.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % n == k - 1


def is_complete(task: ImageTask, explainer: Explainer, options: RunOptions) -> bool:
    """An earlier run finished this image with the same model, layer, methods and classes: its JSON
    (written last) parses, holds one map per method and class, and every file it lists exists."""
    try:
        record = json.loads(json_path(options.out_dir, task).read_text("utf-8"))
        explanations = record["explanations"]
        if (record["model"], record["layer"]) != (explainer.loaded.name, explainer.layer):
            return False
        ranked = [p["index"] for p in record["predictions"]]
        classes = {r.index if r.index is not None else ranked[r.rank - 1] for r in explainer.requests}
        wanted = {(method, index) for method in explainer.method_names for index in classes}
        if not explanations or wanted != {(e["method"], e["class_index"]) for e in explanations}:
            return False
        files = [e["overlay"] for e in explanations]
        files += [e["heatmap"] for e in explanations if options.save_heatmap]
        files += [e["mask"] for e in explanations if options.save_mask]
        files += [e["panel"] for e in explanations if options.panel]
        return all(name and (options.out_dir / name).is_file() for name in files)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def remove_stale_temporary_files(out_dir: Path) -> int:
    """Delete the temporary files a killed run left behind (never a finished output)."""
    removed = 0
    for folder, _, names in os.walk(out_dir):
        for name in names:
            if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
                try:
                    os.unlink(os.path.join(folder, name))
                    removed += 1
                except OSError:
                    pass
    return removed


@dataclass(frozen=True)
class OutputPaths:
    """The files of one explained class of one image: `<stem>.<method>.<class>` + a suffix."""

    overlay: Path  # .png
    heatmap: Path  # .npy, with --save-heatmap
    mask: Path  # .mask.png, with --save-mask
    panel: Path  # .panel.png, with --panel


def output_paths(out_dir: Path, task: ImageTask, method: str, class_index: int) -> OutputPaths:
    base = out_dir / f"{task.out_stem}.{method}.{class_index}"
    return OutputPaths(*(base.with_name(base.name + suffix) for suffix in (".png", ".npy", ".mask.png", ".panel.png")))


def json_path(out_dir: Path, task: ImageTask) -> Path:
    stem = out_dir / task.out_stem
    return stem.with_name(stem.name + ".json")


def _relative(path: Path, out_dir: Path) -> str:
    return path.relative_to(out_dir).as_posix()


def _refuse_input(path: Path, inputs: frozenset[str]) -> Path:
    """`path`, unless writing there would replace one of the run's input images."""
    if os.path.realpath(path) in inputs:
        raise CamcliError(f"output {path} would overwrite an input image; choose another --out")
    return path


def write_image_outputs(task: ImageTask, rgb: np.ndarray, result: ImageExplanation, explainer: Explainer,
                        options: RunOptions, inputs: frozenset[str] = frozenset()) -> None:
    """Overlays (and heatmaps), then the image's JSON record. Never replaces a file in `inputs`."""
    height, width = rgb.shape[:2]
    lut = colormap_lut(options.colormap)
    explanations = []
    for class_map in result.maps:
        heatmap = upsample(class_map.heatmap, (width, height))
        paths = output_paths(options.out_dir, task, class_map.method, class_map.class_index)
        box = box_from_map(heatmap, options.box_threshold)
        if class_map.image is not None:  # guided methods: the RGB gradient image, not a blend
            picture = resize_unit_rgb(class_map.image, (width, height))
        else:
            picture = blend(rgb, heatmap, options.alpha, lut)
        if options.draw_box:
            picture = draw_box(picture, box)
        save_png(_refuse_input(paths.overlay, inputs), picture, compress_level=options.png_compress_level)
        if options.save_heatmap:
            save_npy(_refuse_input(paths.heatmap, inputs), heatmap.astype(np.float32))
        if options.save_mask:
            mask = threshold_mask(heatmap, options.box_threshold)
            save_png(_refuse_input(paths.mask, inputs), mask.astype(np.uint8) * 255,
                     compress_level=options.png_compress_level)
        if options.panel:
            title = panel_title(class_map.label, class_map.score, class_map.method, class_map.layers)
            save_panel(_refuse_input(paths.panel, inputs), rgb, None if class_map.image is not None else heatmap,
                       picture, title, options.colormap)
        explanations.append({
            "method": class_map.method,
            "layer": class_map.layer,
            "layers": class_map.layers,
            "class_index": class_map.class_index,
            "label": class_map.label,
            "score": class_map.score,
            "overlay": _relative(paths.overlay, options.out_dir),
            "heatmap": _relative(paths.heatmap, options.out_dir) if options.save_heatmap else None,
            "peak": peak_xy(heatmap),
            "bbox": list(box) if box is not None else None,
            "mask": _relative(paths.mask, options.out_dir) if options.save_mask else None,
            "panel": _relative(paths.panel, options.out_dir) if options.panel else None,
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
        "layers": explainer.layers,
        "predictions": [
            {"rank": p.rank, "index": p.index, "label": p.label, "score": p.score} for p in result.predictions
        ],
        "explanations": explanations,
    }
    if not loaded.pretrained:
        record["warning"] = RANDOM_WEIGHTS_WARNING
    save_json(_refuse_input(json_path(options.out_dir, task), inputs), record)


RANDOM_WEIGHTS_WARNING = "random weights (--weights none): the predictions and maps are meaningless"


def _decode(task: ImageTask, explainer: Explainer):
    """(rgb, model input) for a task, or the error that stops it."""
    try:
        rgb = load_rgb(task.source)
        return rgb, explainer.preprocess([rgb])[0], None
    except CamcliError as error:
        return None, None, str(getattr(error, "reason", error))


def run(explainer: Explainer | MethodSet, tasks: list[ImageTask], options: RunOptions,
        skipped: Iterable[SkippedInput] = (), on_failure: Callable[[str, str], None] | None = None,
        on_progress: Callable[[int], None] | None = None, stop: threading.Event | None = None) -> RunSummary:
    """Explain every task, write the outputs and the summary JSON; return the summary.

    on_failure(image, reason) is called once per failed image as it happens; on_progress(n) after
    every n images finished (written, failed or found complete). Setting `stop` (e.g. on SIGINT)
    ends the run after the current batch, with its outputs and the summary written.
    """
    stop = stop or threading.Event()  # set from outside: an interruption
    halt = threading.Event()  # set by --fail-fast
    inputs = frozenset(os.path.realpath(task.source) for task in tasks)  # never overwritten
    if options.shard is not None:
        tasks = [task for task in tasks if in_shard(task.out_stem, options.shard)]
        # Inputs that were never images have no output path to split by, and their spelling may
        # differ between processes: shard 1 reports them all, so each is reported exactly once.
        skipped = list(skipped) if options.shard[0] == 1 else []
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
        if options.fail_fast:
            halt.set()

    for item in skipped:
        summary.images += 1
        fail(item.display, item.reason)
    if options.resume:
        remove_stale_temporary_files(options.out_dir)
        remaining = [task for task in tasks if not is_complete(task, explainer, options)]
        summary.resumed = summary.ok = len(tasks) - len(remaining)
        if on_progress and summary.resumed:
            on_progress(summary.resumed)
        tasks = remaining

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
        while decoding and not stop.is_set() and not halt.is_set():
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
                writing.append((task, writers.submit(write_image_outputs, task, rgb, result, explainer, options,
                                                     inputs)))
            drain_writes(limit=lookahead)
        drain_writes(limit=0)
        summary.interrupted = stop.is_set()
        for _, future in decoding:  # stopped early: decoded images not yet explained are dropped
            future.cancel()

    summary.elapsed_seconds = time.perf_counter() - started
    write_summary(options, explainer, summary)
    return summary


def summary_record(explainer: Explainer, summary: RunSummary, shard: tuple[int, int] | None = None) -> dict:
    loaded = explainer.loaded
    record = {
        "camcli_version": __version__,
        "model": loaded.name,
        "layer": explainer.layer,
        "method": "+".join(explainer.method_names),
        "methods": explainer.method_names,
        "classes": [request.text for request in explainer.requests],
        "pretrained": loaded.pretrained,
        "images": summary.images,
        "ok": summary.ok,
        "failed": summary.failed,
        "failures": summary.failures,
        "elapsed_seconds": round(summary.elapsed_seconds, 3),
        "images_per_second": round(summary.images_per_second, 3),
        "resumed": summary.resumed,
        "interrupted": summary.interrupted,
    }
    if shard is not None:
        record["shard"] = {"index": shard[0], "count": shard[1]}
    if not loaded.pretrained:
        record["warning"] = RANDOM_WEIGHTS_WARNING
    return record


def write_summary(options: RunOptions, explainer: Explainer, summary: RunSummary) -> None:
    save_json(options.out_dir / options.summary_name, summary_record(explainer, summary, options.shard))


_SHARD_SUMMARY = re.compile(r"summary\.(\d+)-of-(\d+)\.json")


def merge_summaries(out_dir: Path) -> dict:
    """Combine the shard summaries (summary.K-of-N.json) in `out_dir` into one record.

    The record lists `missing_shards`; a folder with only a plain summary.json is returned as is.
    Raises UsageError when there is nothing to merge or the shards disagree on N.
    """
    shards = {}
    for path in sorted(out_dir.glob("summary.*-of-*.json")):
        match = _SHARD_SUMMARY.fullmatch(path.name)
        if match:
            try:
                shards[(int(match[1]), int(match[2]))] = json.loads(path.read_text("utf-8"))
            except (OSError, ValueError) as error:
                raise UsageError(f"cannot read shard summary {path}: {error}") from error
    if not shards:
        plain = out_dir / SUMMARY_NAME
        if plain.is_file():
            return {**json.loads(plain.read_text("utf-8")), "missing_shards": []}
        raise UsageError(f"no summary.json or summary.K-of-N.json in {out_dir}; is it a camcli --out folder?")
    counts = {n for _, n in shards}
    if len(counts) != 1:
        raise UsageError(f"shard summaries in {out_dir} disagree on the shard count: {sorted(counts)}")
    (count,) = counts
    records = [shards[key] for key in sorted(shards)]
    first = records[0]
    elapsed = max(r.get("elapsed_seconds", 0.0) for r in records)  # shards run side by side
    ok = sum(r["ok"] for r in records)
    resumed = sum(r.get("resumed", 0) for r in records)
    return {
        **{key: first[key] for key in ("camcli_version", "model", "layer", "method", "methods", "classes", "pretrained")
           if key in first},
        "images": sum(r["images"] for r in records),
        "ok": ok,
        "failed": sum(r["failed"] for r in records),
        "failures": [failure for r in records for failure in r["failures"]],
        "elapsed_seconds": elapsed,
        "images_per_second": round((ok - resumed) / elapsed, 3) if elapsed else 0.0,
        "resumed": resumed,
        "interrupted": any(r.get("interrupted") for r in records),
        "shards": count,
        "missing_shards": [k for k in range(1, count + 1) if (k, count) not in shards],
    }
