"""camcli on Ray Data: explain a dataset with actors that each load the model once (extra `ray`).

    >>> import ray, camcli.ray
    >>> ds = ray.data.read_binary_files("photos/", include_paths=True)  # or read_images(..., include_paths=True)
    >>> summary = camcli.ray.explain_dataset(ds, "results", model="resnet50", root="photos/", concurrency=4)
    >>> summary.ok, summary.failed, summary.images_per_second

The outputs are `camcli explain photos/ --out results`'s: the same layout and file names, the same
records (their fingerprints included) and the same failure rules; the driver writes summary.json from
what every actor reports, so `camcli report results` and `camcli explain --resume` work on them.

What the dataset holds, per row:
- `path` (from `include_paths=True`): names the image. Its output name is its path relative to
  `root` (default: the folder that holds all of the dataset's files, relative to the working
  directory when it lies in it), with the collision rules of camcli's folder walk, computed once on
  the driver from `Dataset.input_files()`; records call it root/relative path, as `camcli explain
  root` does.
- `bytes` (ray.data.read_binary_files): camcli decodes them itself, as `camcli explain` does: EXIF
  orientation, HEIC, reduced JPEG decoding, the pixel limit, and a bad file fails alone.
- or `image` (ray.data.read_images): the pixels as Ray decoded them (no EXIF orientation; give
  `mode="RGB"` to read_images when the folder mixes modes). Ray stops the whole dataset at a file
  it cannot decode, so read_binary_files is the one to use on folders that may hold bad files.
- or neither: each actor reads the file at `path` (a file system every worker sees).

`ExplainBatches` is the callable class behind it, for pipelines that add stages of their own:
`ds.map_batches(ExplainBatches, fn_constructor_kwargs={...}, batch_format="numpy", concurrency=N)`;
each row it returns says what became of one image (`status`: explained, unchanged or failed).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from camcli.api import build_explainer, check_output_folder, groups_of
from camcli.errors import CamcliError, UsageError, one_line
from camcli.models.catalog import DEFAULT_MODEL
from camcli.options import FileOptions, MapRequest, ModelOptions, RunOptions


@dataclass(frozen=True)
class ExplainSettings:
    """Everything an actor needs to explain as the driver would: the run's option groups (picklable, the
    model as a name or path, which every actor loads for itself)."""

    model: ModelOptions
    maps: MapRequest
    files: FileOptions
    run: RunOptions

    def __post_init__(self):
        if self.model.in_memory:
            raise UsageError("explain_dataset needs the model as a name or a file path, which every actor loads "
                             f"for itself, not a {type(self.model.model).__name__}")
        if not self.files.save_segmentation:
            self.files.check_label_maps_asked()

    @classmethod
    def of(cls, model: object = DEFAULT_MODEL, out=None, *, maps: MapRequest | None = None,
           files: FileOptions | None = None, run: RunOptions | None = None, **options) -> ExplainSettings:
        """From explain_paths' groups or their fields: ExplainSettings.of("demo", methods=["cam"])."""
        given = {**options, **({"out": out} if out is not None else {})}
        groups = groups_of("explain_dataset", model, given, maps=maps, files=files, run=run)
        return cls(groups["model"], groups["maps"], groups["files"], groups["run"])

    def build(self):
        """The model, loaded, and its Explainer (or MethodSet)."""
        return build_explainer(self.model.load(), self.maps)


class _RowPictures:
    """A batch's pictures for camcli's runner (camcli.runs.runner.FileDecoder's two methods): the rows'
    bytes or pixels, by output stem; a task without either is read from its file."""

    def __init__(self, settings: ExplainSettings, pixels: dict[str, object], kind: str | None):
        from camcli.runs.runner import FileDecoder

        self.files = FileDecoder(settings.run, settings.files)  # its max_side and max_pixels are the run's
        self.pixels, self.kind = pixels, kind

    def cost(self, task) -> int:
        data = self.pixels.get(task.out_stem)
        if data is None:
            return self.files.cost(task)
        if self.kind == "image":
            height, width = np.shape(data)[:2]
            return 4 * int(width) * int(height)
        import io

        from camcli.runs.decode import picture_bytes

        return picture_bytes(io.BytesIO(data), self.files.max_side)

    def decode(self, task, model_size):
        from camcli.runs.decode import decode_array, decode_bytes, format_of_name

        data = self.pixels.get(task.out_stem)
        if data is None:
            return self.files.decode(task, model_size)
        if self.kind == "image":
            return decode_array(data, task.display, self.files.max_side, model_size, fmt=format_of_name(task.display))
        return decode_bytes(bytes(data), task.display, self.files.max_side, model_size, self.files.max_pixels)


class ExplainBatches:
    """For `Dataset.map_batches`: loads the model once (per actor), explains each batch it is given
    into `out` through camcli's runner and writer, and returns one row per image: path, image (as
    camcli names it), stem, status (explained, unchanged with `resume`, failed, or ignored for a listed
    file that is no image) and error.

    settings: an ExplainSettings. tasks: {absolute path: (image, stem)} from the driver's listing; a
    path not in it is named by its path relative to `root`. ignored: absolute paths of listed files
    that are no images (a folder walk skips them too: truth.csv, notes.txt), returned as "ignored".
    """

    def __init__(self, out: str, settings: ExplainSettings, tasks: Mapping[str, tuple[str, str]] | None = None,
                 root: str | None = None, ignored: frozenset[str] = frozenset()):
        self.out_dir = Path(out)
        self.settings, self.tasks, self.root, self.ignored = settings, dict(tasks or {}), root, frozenset(ignored)
        self.explainer = settings.build()
        self.options = replace(settings.run, out=self.out_dir)

    def _task(self, path: str):
        """The ImageTask for a row's path; None for a listed file that is no image."""
        from camcli.runs.discovery import ImageTask, tasks_for_files

        absolute = os.path.abspath(path)
        if absolute in self.ignored:
            return None
        if absolute in self.tasks:
            image, stem = self.tasks[absolute]
            return ImageTask(Path(absolute), image, stem)
        if self.root is None:
            raise UsageError(f"{path} is not among the dataset's listed files: give `root`, the folder the outputs' "
                             "names are relative to")
        found = tasks_for_files([absolute], self.root)  # empty for a file that is no image
        return found[0] if found else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from camcli.runs.discovery import printable
        from camcli.runs.runner import run_batch

        if "path" not in batch:
            raise UsageError("the dataset has no `path` column: read it with include_paths=True")
        paths = [str(path) for path in batch["path"]]
        found = [self._task(path) for path in paths]
        rows = [i for i, task in enumerate(found) if task is not None]
        tasks = [found[i] for i in rows]
        kind = "bytes" if "bytes" in batch else "image" if "image" in batch else None
        pixels = {task.out_stem: batch[kind][i] for i, task in zip(rows, tasks)} if kind else {}
        inputs = frozenset(os.path.realpath(task.source) for task in tasks)
        outcome = run_batch(self.explainer, tasks, self.options, self.settings.files,
                            _RowPictures(self.settings, pixels, kind), inputs)
        errors = {failure["image"]: failure["error"] for failure in outcome.summary.failures}
        status = ["failed" if task.display in errors else "unchanged" if task.out_stem in outcome.unchanged
                  else "explained" for task in tasks]
        kept = set(rows)
        ignored = [path for i, path in enumerate(paths) if i not in kept]
        column = lambda values: np.asarray(values, dtype=object)
        return {"path": column([str(task.source) for task in tasks] + ignored),
                "image": column([task.display for task in tasks] + [printable(path) for path in ignored]),
                "stem": column([task.out_stem for task in tasks] + [""] * len(ignored)),
                "status": column(status + ["ignored"] * len(ignored)),
                "error": column([errors.get(task.display, "") for task in tasks] + [""] * len(ignored))}


def _listed_tasks(ds, root: str | None, out_dir: Path
                  ) -> tuple[dict[str, tuple[str, str]], str | None, frozenset[str]]:
    """{absolute path: (image, stem)} for the images among the dataset's listed files, the root they are
    named from, and the absolute paths of the listed files that are no images."""
    from camcli.runs.discovery import is_inside, printable, tasks_for_files

    try:
        files = list(ds.input_files())
    except Exception:  # noqa: BLE001 - a dataset without a file listing (from_items, from_numpy...)
        files = []
    if not files:
        if root is None:
            raise UsageError("the dataset lists no files (Dataset.input_files() is empty, as for from_items): "
                             "give `root`, the folder its paths are named relative to")
        return {}, root, frozenset()
    if root is None:  # the folder that holds them all, written as camcli explain's argument likely was
        root = os.path.commonpath([os.path.dirname(os.path.abspath(file)) for file in files])
        here = os.getcwd()
        if root == here or root.startswith(here.rstrip(os.sep) + os.sep):
            root = os.path.relpath(root, here)
    out_real = os.path.realpath(out_dir)
    inside = [file for file in files if is_inside(os.path.realpath(file), out_real)]
    if inside:
        raise UsageError(f"the dataset reads {printable(inside[0])}, inside the output folder {out_dir}; "
                         "write to another output folder (`out`)")
    try:
        tasks = tasks_for_files(files, root)
    except ValueError as error:
        raise UsageError(f"{error}: give `root`, the folder that holds every file of the dataset") from None
    named = {os.path.abspath(str(task.source)): (task.display, task.out_stem) for task in tasks}
    return named, root, frozenset(os.path.abspath(file) for file in files) - set(named)


def _actor_pool(ray, concurrency: int | tuple[int, int], num_cpus: float | None):
    """Ray Data's actor pool for `concurrency` (n, or (min, max)) actors; a warning when they would leave
    less than a whole CPU of a running cluster: Ray's read task needs one CPU, whole, and would wait for
    it forever behind actors that never end."""
    low, high = (concurrency, concurrency) if isinstance(concurrency, int) else tuple(concurrency)
    if not 1 <= low <= high:
        raise UsageError(f"`concurrency={concurrency}` must be a number of actors (at least 1), or (min, max)")
    cpus = ray.cluster_resources().get("CPU", 0) if ray.is_initialized() else 0
    each = 1.0 if num_cpus is None else num_cpus
    if cpus and high * each + 1 > cpus:
        total, one = f"{cpus:g} CPU{'s' if cpus != 1 else ''}", "s" if high == 1 else ""
        held = f"take{one} all {total}" if high * each >= cpus else f"leave{one} {cpus - high * each:g} of the {total}"
        actors = f"{high} actor{'' if one else 's'}"
        warnings.warn(f"{actors} of {each:g} CPU {held} of the Ray cluster, and the dataset's read tasks need "
                      f"a whole CPU: give num_cpus (say {max(cpus - 1, 0) / high:g}) or fewer actors, unless the "
                      "cluster adds nodes", stacklevel=3)
    return ray.data.ActorPoolStrategy(min_size=low, max_size=high)


def _merged_summary(explained, run: dict):
    """The RunSummary of every actor's rows (each image once: a batch Ray ran again, after a lost
    actor, rewrote the same files)."""
    from camcli.runs.runner import RunSummary

    try:
        rows = {}
        for row in explained.iter_rows():
            if row["status"] != "ignored":
                rows[row["stem"]] = row
    except Exception as error:  # noqa: BLE001 - Ray wraps a failing stage in its own errors
        raise CamcliError(f"the Ray run failed: {one_line(error)} (a file Ray cannot decode stops read_images; "
                          "ray.data.read_binary_files(..., include_paths=True) lets camcli report it alone)") from None
    summary = RunSummary(images=len(rows), run=run)
    for row in sorted(rows.values(), key=lambda row: row["stem"]):
        if row["status"] == "failed":
            summary.failures.append({"image": row["image"], "error": row["error"]})
        else:
            summary.ok += 1
            summary.skipped += row["status"] == "unchanged"
    return summary


def _check_ray_arguments(root, num_cpus, num_gpus, rows_per_call) -> None:
    """explain_dataset's own arguments, checked before any actor starts: one line each."""
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise UsageError(f"`root` takes a folder's path, not {type(root).__name__} {root!r:.40}")
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 <= value < float("inf")):
            raise UsageError(f"`{name}={value!r}` must be a number of {name[4:-1].upper()}s per actor, 0 or more")
    if rows_per_call is not None and (isinstance(rows_per_call, bool) or not isinstance(rows_per_call, int)):
        raise UsageError(f"`rows_per_call={rows_per_call!r}` must be a whole number")
    if rows_per_call is not None and rows_per_call < 1:
        raise UsageError(f"`rows_per_call={rows_per_call}` must be at least 1")


def explain_dataset(ds, out, model: object = DEFAULT_MODEL, *, root: str | os.PathLike | None = None,
                    concurrency: int | tuple[int, int] = 1, num_cpus: float | None = None,
                    num_gpus: float | None = None, rows_per_call: int | None = None, maps: MapRequest | None = None,
                    files: FileOptions | None = None, run: RunOptions | None = None, **options):
    """Explain every row of the Ray Dataset `ds` into the folder `out`, with `concurrency` actors that
    each load `model` once; write summary.json and return the run's `RunSummary`, merged over the actors.

    model, maps, files, run: explain_paths' option groups (camcli.options), or any of their fields as
    keywords (weights, extra_inputs, methods, classes, save_heatmap, batch_size, resume...); `run`'s
    shard, fail_fast and report are explain_paths' own. num_cpus / num_gpus: what each actor reserves.
    rows_per_call: rows Ray hands an actor at a time (default 8 batches), within which camcli's runner
    overlaps decoding, explaining and writing.
    """
    try:
        import ray
        import ray.data
    except ImportError:
        raise UsageError("camcli.ray needs Ray Data: pip install 'keras-camcli[ray]'") from None
    from camcli.runs import records
    from camcli.runs.layout import Layout
    from camcli.runs.lock import output_lock
    from camcli.runs.runner import check_run_files, prepare_output_folder, run_fields, run_identity

    if not isinstance(ds, ray.data.Dataset):
        raise UsageError(f"explain_dataset takes a ray.data.Dataset (e.g. ray.data.read_binary_files(folder, "
                         f"include_paths=True)), not {type(ds).__name__}; camcli.explain_paths reads paths")
    settings = ExplainSettings.of(model, out, maps=maps, files=files, run=run, **options)
    given = [name for name in ("shard", "fail_fast", "report") if getattr(settings.run, name)]
    if given:
        raise UsageError(f"explain_dataset takes no `{given[0]}`: Ray schedules the rows; use camcli explain for it")
    _check_ray_arguments(root=root, num_cpus=num_cpus, num_gpus=num_gpus, rows_per_call=rows_per_call)
    actors = _actor_pool(ray, concurrency, num_cpus)
    out_dir = Path(out).absolute()
    check_output_folder(out_dir)
    check_run_files(out_dir)
    tasks, root, ignored = _listed_tasks(ds, None if root is None else os.fspath(root), out_dir)
    explainer = settings.build()  # on the driver too: a bad layer or class fails here, in one line
    identity = run_identity(explainer, settings.files)
    with output_lock(out_dir):  # one writer per folder, as camcli explain
        prepare_output_folder(out_dir, resume=settings.run.resume)
        started = time.perf_counter()
        remote = {key: value for key, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)) if value is not None}
        explained = ds.map_batches(ExplainBatches, batch_size=rows_per_call or 8 * settings.run.batch_size,
                                   batch_format="numpy",
                                   compute=actors,
                                   fn_constructor_kwargs={"out": str(out_dir), "settings": settings, "tasks": tasks,
                                                          "root": root, "ignored": ignored}, **remote)
        summary = _merged_summary(explained, run_fields(explainer, identity.fingerprint))
        summary.elapsed_seconds = time.perf_counter() - started
        path = Layout(out_dir).summary()
        records.write_summary(path, summary.as_record())
    summary.summary_path = path
    return summary
