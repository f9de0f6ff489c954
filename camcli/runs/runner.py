"""The batch run behind `camcli explain`: decode, explain, write, for any number of images.

Three stages overlap: a thread pool decodes and preprocesses the next images while the compiled step
explains the current batch, and another pool colours, encodes and writes the finished ones
(Pillow, numpy and TensorFlow release the GIL for the heavy parts). Results keep the input order.

Memory is bounded in bytes, not in images: every image holds its decoded picture from the moment
its decode is queued until its files are written, and new decodes are queued only while the
pictures held stay within `RunOptions.picture_budget` (camcli.options) (one image is always allowed, however
large). So a folder of 48 MP photos holds a few at a time where 224 px images fill the queues:
the peak is set by the budget, the batch and the model, not by photo size times queue depth.

How a run ends:
- One bad image never costs the others: its failure is recorded (one line naming the image and the
  stage) and the run goes on.
- `fail_fast`: nothing is explained after the first failure.
- `stop` (set on SIGINT or SIGTERM): the current batch is finished and written, then the run ends
  with `interrupted: true`.
- An error that would repeat for every image (disk full, read-only folder, quota) stops the run at
  its first occurrence; the summary says why (`stopped`) wherever it can still be written.
Every file is written atomically, and an image's record is written after its other files, so a
record means the image is complete. `resume` skips the images whose record has this run's
fingerprint and whose files exist, and recomputes the others.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from camcli import __version__
from camcli.errors import REPEATING_WRITE_ERRORS, CamcliError, UsageError, one_line
from camcli.options import FileOptions, RunHooks, RunOptions
from camcli.runs import records
from camcli.runs.decode import DecodedImage, decode_image, picture_bytes
from camcli.runs.discovery import ImageTask, SkippedInput
from camcli.runs.layout import Layout, check_replaceable, is_temporary, may_replace
from camcli.runs.lock import other_writers, output_lock
from camcli.runs.records import RunIdentity
from camcli.runs.writer import ImageWriter, required_files, settings_of


@dataclass
class RunSummary:
    """What a run did. `as_record()` is what summary.json holds."""

    images: int = 0
    ok: int = 0  # explained now, or skipped as unchanged
    failures: list[dict] = field(default_factory=list)  # [{"image", "error"}]
    elapsed_seconds: float = 0.0
    skipped: int = 0  # found complete and unchanged (resume)
    recomputed: int = 0  # had an earlier record whose fingerprint or files did not match (resume)
    interrupted: bool = False
    stopped: str | None = None  # why the run ended early (a repeating write error), else None
    summary_path: Path | None = None  # where the summary went; None when it could not be written
    report_path: Path | None = None  # the report page, when one was asked for
    run: dict = field(default_factory=dict)  # records.RUN_FIELDS of this run

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def explained(self) -> int:
        return self.ok - self.skipped

    @property
    def images_per_second(self) -> float:
        return self.explained / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def as_record(self, shard: tuple[int, int] | None = None) -> dict:
        record = {
            **self.run,
            "images": self.images,
            "ok": self.ok,
            "failed": self.failed,
            "failures": self.failures,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "images_per_second": round(self.images_per_second, 3),
            "skipped": self.skipped,
            "recomputed": self.recomputed,
            "interrupted": self.interrupted,
            "stopped": self.stopped,
        }
        if shard is not None:
            record["shard"] = {"index": shard[0], "count": shard[1]}
        if not self.run.get("pretrained", True):
            record["warning"] = records.RANDOM_WEIGHTS_WARNING
        return record


def in_shard(out_stem: str, shard: tuple[int, int]) -> bool:
    """Whether an image belongs to shard k of n. The split depends only on the image's relative path,
    so n processes that list the same tree cover every image exactly once, whatever their order."""
    k, n = shard
    digest = hashlib.sha1(out_stem.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % n == k - 1


def explainer_settings(explainer) -> dict:
    """Everything about the model and the explainer (or MethodSet) that shapes maps and predictions."""
    loaded = explainer.loaded
    return {
        "model": loaded.name,
        "weights": loaded.weights_identity,
        "preprocess": loaded.preprocess,
        "input_size": list(loaded.input_size),
        "labels": hashlib.sha256("\n".join(loaded.labels).encode("utf-8", "surrogateescape")).hexdigest(),
        **explainer.settings(),
    }


def run_target(explainer) -> dict:
    """What the maps explain, as records and the summary hold it: the target, and the explained output
    of a model with several."""
    output = explainer.loaded.output_name
    return {**explainer.target_record(), **({"output": output} if output else {})}


def run_identity(explainer, files: FileOptions) -> RunIdentity:
    """What every record of a run with `explainer` and `files` says about it, its fingerprint included:
    one function, so that any engine that writes camcli's outputs (camcli.ray) writes the same records.
    The fingerprint is made from the option groups' fields (camcli.options.fingerprint_fields) and what
    the explainer resolved (its layers, head, model interface and weights)."""
    fingerprint = records.fingerprint({**explainer_settings(explainer), **settings_of(files)})
    return RunIdentity(explainer.loaded.name, explainer.layer, list(explainer.layers), explainer.loaded.pretrained,
                       fingerprint, explainer.precision, run_target(explainer))


def run_fields(explainer, fingerprint: str) -> dict:
    loaded = explainer.loaded
    return {
        "camcli_version": __version__,
        "model": loaded.name,
        "layer": explainer.layer,
        "method": "+".join(explainer.method_names),
        "methods": list(explainer.method_names),
        "classes": [request.text for request in explainer.requests],
        "target": run_target(explainer),
        "precision": explainer.precision,
        "pretrained": loaded.pretrained,
        "fingerprint": fingerprint,
    }


def remove_stale_temporary_files(out_dir: Path) -> int:
    """Delete the temporary files a killed run left behind (never a finished output)."""
    removed = 0
    for folder, _, names in os.walk(out_dir):
        for name in names:
            if is_temporary(name):
                try:
                    os.unlink(os.path.join(folder, name))
                    removed += 1
                except OSError:
                    pass
    return removed


def check_run_files(out_dir: Path, shard: tuple[int, int] | None = None, report: bool = False) -> None:
    """UsageError before a run starts when its summary (or, with `report`, index.html) would replace a
    file camcli did not write."""
    layout = Layout(out_dir)
    for path in [layout.summary(shard)] + ([layout.report] if report else []):
        check_replaceable(path, may_replace)


def write_error_line(out_dir: Path, error: OSError, then: str = "rerun") -> str:
    """One line for an error writing into `out_dir`: a full disk, a read-only folder or a quota (which
    would repeat for every file) stops the run and says what to do."""
    if error.errno in REPEATING_WRITE_ERRORS:
        return (f"cannot write to {out_dir}: {os.strerror(error.errno)} "
                f"({errno.errorcode.get(error.errno, error.errno)}, at {error.filename or out_dir}); "
                f"the run stopped: free space or fix the folder, then {then}")
    return f"cannot write to {out_dir}: {one_line(error)}"


@contextlib.contextmanager
def writing_into(out_dir: Path):
    """Turn an OSError raised while writing a run's results into `out_dir` into one CamcliError line."""
    try:
        yield
    except OSError as error:
        raise CamcliError(write_error_line(out_dir, error)) from error


class _Decoded:
    __slots__ = ("task", "cost", "image", "model_input", "extras", "error")

    def __init__(self, task, cost, image=None, model_input=None, extras=None, error=None):
        self.task, self.cost, self.image, self.model_input, self.error = task, cost, image, model_input, error
        self.extras = extras  # the model's other inputs for this image, {name: array}; None for one input


def _stage_error(stage: str, error: BaseException) -> str:
    if isinstance(error, CamcliError):
        return getattr(error, "reason", None) or one_line(error)  # one_line: a UsageError raised inside the step
    return (f"internal error while {stage}: {type(error).__name__}: {one_line(error)} "
            "(rerun with `debug` for the traceback)")


class FileDecoder:
    """Where a run's pictures come from: each task's file, decoded by camcli (`decode_image`). An engine
    that has the images already (camcli.ray) gives RunPipeline another object with these two methods."""

    def __init__(self, run: RunOptions, files: FileOptions):
        self.max_side, self.max_pixels = files.max_size, run.max_pixels

    def cost(self, task: ImageTask) -> int:
        """About how many bytes the task's decoded picture holds (the memory budget's unit)."""
        return picture_bytes(task.source, self.max_side)

    def decode(self, task: ImageTask, model_size: tuple[int, int]) -> DecodedImage:
        return decode_image(task.source, max_side=self.max_side, model_size=model_size, max_pixels=self.max_pixels)


class RunPipeline:
    """One run's state: counts, the pools' queues, and why it stops."""

    def __init__(self, explainer, options: RunOptions, writer: ImageWriter, summary: RunSummary, hooks: RunHooks,
                 decoder: FileDecoder | None = None):
        self.decoder = decoder or FileDecoder(options, writer.options)
        self.explainer, self.options, self.writer, self.summary = explainer, options, writer, summary
        self.on_failure, self.on_progress = hooks.on_failure, hooks.on_progress
        self.stop = hooks.stop or threading.Event()
        self.halt = threading.Event()  # fail-fast or a repeating error: explain nothing more
        self.lookahead = max(2 * options.batch_size, 4)
        self.decoding: deque = deque()  # futures of _Decoded, in input order
        self.writing: deque = deque()  # (task, cost, future), in input order
        self.held_bytes = 0  # of the pictures queued for decoding, explained or being written
        self.waiting: ImageTask | None = None  # the next task, held back by the budget
        self.input_size = tuple(explainer.loaded.input_size)

    # -- bookkeeping ----------------------------------------------------------------------------

    def fail(self, display: str, reason: str) -> None:
        self.summary.failures.append({"image": display, "error": reason})
        if self.on_failure:
            self.on_failure(display, reason)
        if self.options.fail_fast:
            self.halt.set()

    def progress(self, count: int = 1) -> None:
        if self.on_progress and count:
            self.on_progress(count)

    @property
    def stopping(self) -> bool:
        return self.stop.is_set() or self.halt.is_set()

    # -- the stages -----------------------------------------------------------------------------

    def decode(self, task: ImageTask, cost: int) -> _Decoded:
        try:
            loaded = self.explainer.loaded
            extras = loaded.extra_arrays(task.source) if loaded.extra_input_names else None
            image = self.decoder.decode(task, self.input_size)
            return _Decoded(task, cost, image, self.explainer.preprocess([image.model_view])[0], extras)
        except Exception as error:  # noqa: BLE001 - every failure is one image's, named with its stage
            if self.options.debug and not isinstance(error, CamcliError):
                raise
            return _Decoded(task, cost, error=_stage_error("decoding", error))

    def release(self, cost: int) -> None:
        self.held_bytes -= cost

    def top_up(self, pending, decoders) -> None:
        """Queue decodes up to the lookahead, while the pictures held fit the budget (waiting for the
        oldest write when they do not)."""
        while len(self.decoding) < self.lookahead and not self.stopping:
            task = self.waiting or next(pending, None)
            self.waiting = None
            if task is None:
                return
            cost = self.decoder.cost(task)
            if self.held_bytes and self.held_bytes + cost > self.options.picture_budget:
                self.waiting = task
                if not self.writing:
                    return  # what is held is waiting to be explained: the batch goes on with it
                self.drain_writes(limit=len(self.writing) - 1)
                continue
            self.held_bytes += cost
            self.decoding.append(decoders.submit(self.decode, task, cost))

    def next_batch(self, pending, decoders) -> list[_Decoded]:
        batch = []
        while self.decoding and len(batch) < self.options.batch_size and not self.stopping:
            item = self.decoding.popleft().result()
            if item.error is not None:
                self.release(item.cost)
                self.fail(item.task.display, item.error)
                self.progress()
            else:
                batch.append(item)
            self.top_up(pending, decoders)
        if self.halt.is_set():
            for item in batch:
                self.release(item.cost)
            return []
        return batch

    def explain(self, batch: list[_Decoded]) -> list | None:
        try:
            extras = None
            if batch[0].extras is not None:
                extras = {name: np.stack([item.extras[name] for item in batch]) for name in batch[0].extras}
            return self.explainer.explain_batch(np.stack([item.model_input for item in batch]), extras=extras)
        except Exception as error:  # noqa: BLE001 - a batch that cannot be explained fails its images
            if self.options.debug and not isinstance(error, CamcliError):
                raise
            reason = _stage_error("explaining", error)
            for item in batch:
                self.release(item.cost)
                self.fail(item.task.display, reason)
            self.progress(len(batch))
            return None

    def drain_writes(self, limit: int) -> None:
        while len(self.writing) > max(limit, 0):
            task, cost, future = self.writing.popleft()
            self.release(cost)
            try:
                future.result()
                self.summary.ok += 1
            except OSError as error:
                self.write_failed(task, error)
            except Exception as error:  # noqa: BLE001
                if self.options.debug and not isinstance(error, CamcliError):
                    raise
                self.fail(task.display, _stage_error("writing outputs", error) if not isinstance(error, CamcliError)
                          else str(error))
            self.progress()

    def write_failed(self, task: ImageTask, error: OSError) -> None:
        reason = f"cannot write outputs: {one_line(error)}"
        if error.errno in REPEATING_WRITE_ERRORS and self.summary.stopped is not None:
            # The same error again, for an image already in flight: counted, not printed once more.
            self.summary.failures.append({"image": task.display, "error": reason})
            return
        if error.errno in REPEATING_WRITE_ERRORS:
            self.summary.stopped = write_error_line(self.options.out_dir, error, "rerun with `resume`")
            self.halt.set()
        self.fail(task.display, reason)

    def loop(self, tasks: list[ImageTask]) -> None:
        pending = iter(tasks)
        workers = min(4, os.cpu_count() or 2)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="camcli-decode") as decoders, \
                ThreadPoolExecutor(max_workers=2, thread_name_prefix="camcli-write") as writers:
            self.top_up(pending, decoders)
            while (self.decoding or self.waiting is not None) and not self.stopping:
                if not self.decoding:  # the budget held the next image back until writes finished
                    self.top_up(pending, decoders)
                batch = self.next_batch(pending, decoders)
                results = self.explain(batch) if batch else None
                for item, result in zip(batch, results or []):
                    future = writers.submit(self.writer.write, item.task, item.image, result)
                    self.writing.append((item.task, item.cost, future))
                # With fail-fast, every write is checked before the next batch is explained.
                self.drain_writes(limit=0 if self.options.fail_fast else self.lookahead)
            self.drain_writes(limit=0)
            for future in self.decoding:  # stopped early: decoded images not yet explained are dropped
                future.cancel()
        left = bool(self.decoding) or self.waiting is not None or next(pending, None) is not None
        self.summary.interrupted = self.stop.is_set() and left  # a signal after the last batch stops nothing


def select_for_resume(tasks: list[ImageTask], explainer, options: RunOptions, files: FileOptions, fingerprint: str
                      ) -> tuple[list[ImageTask], int, int]:
    """(tasks still to explain, how many are skipped as unchanged, how many will be recomputed)."""
    layout = Layout(options.out_dir)
    required = required_files(files)
    remaining, recomputed = [], 0
    for task in tasks:
        record = records.read_image_record(layout.record(task.out_stem))
        if records.is_unchanged(record, fingerprint, wanted_maps(record, explainer), options.out_dir, required):
            continue
        remaining.append(task)
        recomputed += record is not None
    return remaining, len(tasks) - len(remaining), recomputed


def wanted_maps(record: dict | None, explainer) -> set[tuple[str, int]] | None:
    """The (method, class) maps a record must hold, from its own top-k for ranked classes."""
    if record is None:
        return None
    if getattr(explainer, "detects", False):  # an object detector's maps: one per method and detection
        return explainer.wanted_maps(record)
    try:
        ranked = [p["index"] for p in record["predictions"]]
        classes = {r.index if r.index is not None else ranked[r.rank - 1] for r in explainer.requests}
    except (KeyError, TypeError, IndexError):
        return {("", -1)}  # matches nothing: recompute
    return {(method, index) for method in explainer.method_names for index in classes}


def prepare_output_folder(out_dir: Path, shard: tuple[int, int] | None = None, resume: bool = False) -> None:
    """Before a run writes into `out_dir`: its summary may be replaced (check_run_files), the folder
    exists, and with `resume` the temporary files a killed run left are gone."""
    check_run_files(out_dir, shard)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create output folder {out_dir}: {one_line(error)}") from error
    if resume and not other_writers(out_dir):  # a shard beside this one has files in flight: not a killed run's
        remove_stale_temporary_files(out_dir)


def run(explainer, tasks: list[ImageTask], options: RunOptions, files: FileOptions,
        skipped: Iterable[SkippedInput] = (), hooks: RunHooks | None = None) -> RunSummary:
    """Explain every task, write the outputs and the summary JSON; return the summary.

    hooks.on_failure(image, reason) is called once per failed image as it happens; on_progress(n)
    after every n images finished (written, failed or skipped). Setting hooks.stop ends the run after
    the current batch, with its outputs and the summary written.
    """
    inputs = frozenset(os.path.realpath(task.source) for task in tasks)  # never overwritten
    if options.shard is not None:
        tasks = [task for task in tasks if in_shard(task.out_stem, options.shard)]
        # Inputs that were never images have no output path to split by, and their spelling may
        # differ between processes: shard 1 reports them all, so each is reported exactly once.
        skipped = list(skipped) if options.shard[0] == 1 else []
    with output_lock(options.out_dir, options.shard):  # one writer per folder (per shard: they write apart)
        prepare_output_folder(options.out_dir, options.shard, options.resume)
        summary = run_batch(explainer, tasks, options, files, inputs=inputs, skipped=skipped, hooks=hooks).summary
        _write_summary(summary, options)
    return summary


class BatchOutcome(NamedTuple):
    summary: RunSummary  # the batch's counts and failures (no summary file is written)
    unchanged: frozenset[str]  # out_stems skipped because `resume` found them complete and unchanged


def run_batch(explainer, tasks: list[ImageTask], options: RunOptions, files: FileOptions, decoder=None,
              inputs: frozenset[str] = frozenset(), skipped: Iterable[SkippedInput] = (),
              hooks: RunHooks | None = None) -> BatchOutcome:
    """Explain `tasks` into the existing folder `options.out_dir` and write no summary: the core of `run`,
    and what an engine that schedules the images itself (camcli.ray) runs for each batch it is given,
    with the pictures from `decoder` (default: each task's file). `inputs`: the real paths of input
    files, never overwritten; `skipped`: inputs that failed before decoding, counted as failures."""
    identity = run_identity(explainer, files)
    summary = RunSummary(images=len(tasks), run=run_fields(explainer, identity.fingerprint))
    pipeline = RunPipeline(explainer, options, ImageWriter(options.out_dir, files, identity, inputs),
                         summary, hooks or RunHooks(), decoder)
    started = time.perf_counter()
    for item in skipped:
        summary.images += 1
        pipeline.fail(item.display, item.reason)
    remaining = tasks
    if options.resume:
        remaining, summary.skipped, summary.recomputed = select_for_resume(tasks, explainer, options, files,
                                                                           identity.fingerprint)
        summary.ok = summary.skipped
        pipeline.progress(summary.skipped)
    if not pipeline.halt.is_set():
        pipeline.loop(remaining)
    summary.elapsed_seconds = time.perf_counter() - started
    kept = {task.out_stem for task in remaining}
    return BatchOutcome(summary, frozenset(task.out_stem for task in tasks if task.out_stem not in kept))


def _write_summary(summary: RunSummary, options: RunOptions) -> None:
    path = Layout(options.out_dir).summary(options.shard)
    try:
        records.write_summary(path, summary.as_record(options.shard))
        summary.summary_path = path
    except OSError as error:
        summary.summary_path = None
        if summary.stopped is None:
            summary.stopped = f"cannot write the summary {path}: {one_line(error)}"
