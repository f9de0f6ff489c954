"""The library calls behind the commands: what `camcli explain`, `evaluate` (and its `--sanity`), `audit`,
`report` and `layers` do.

A notebook, a batch engine or a test calls exactly what the CLI calls, with the option groups of
camcli.options, or any of their fields as keywords (routed to their group by name):

    >>> import camcli
    >>> from camcli.options import FileOptions, MapRequest
    >>> summary = camcli.explain_paths(["photos/"], model="demo", out="results", methods=["gradcam"])
    >>> summary = camcli.explain_paths(["photos/"], model="demo", maps=MapRequest(methods=("cam",)),
    ...                                files=FileOptions(save_mask=True), batch_size=16)
    >>> summary.ok, summary.failed, summary.failures
    >>> report = camcli.evaluate_paths(["scenes/"], truth="scenes/truth.csv", model="demo")
    >>> sanity = camcli.sanity_paths(["scenes/"], model="demo", methods=["gradcam", "guidedbackprop"])
    >>> camcli.write_report("results")

`model` is a `camcli.options.ModelOptions`, or its `model` field: a built-in name or model file (loaded
with `weights`, `preprocess`, `labels_file` and `unsafe_load`), a `LoadedModel` from `camcli.load_model`
/ `camcli.wrap_model`, or a Keras model (wrapped with default preprocessing). Errors are
`camcli.errors.CamcliError`s with one-line messages. TensorFlow is imported only on the first call.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

from camcli.errors import UsageError
from camcli.models.catalog import DEFAULT_MODEL
from camcli.options import (
    BOX_TARGET,
    AuditOptions,
    FileOptions,
    MapRequest,
    ModelOptions,
    RunHooks,
    RunOptions,
    SanityOptions,
    ScoringOptions,
    field_names,
    gather,
)

PathLike = str | os.PathLike
_GROUPS = {"model": ModelOptions, "maps": MapRequest, "files": FileOptions, "run": RunOptions, "hooks": RunHooks,
           "scoring": ScoringOptions, "audit": AuditOptions, "sanity": SanityOptions}


def groups_of(where: str, model, options: dict, **given) -> dict:
    """The option groups of a call: those `given` (by parameter name, None for a default one), the model
    (a ModelOptions, or its `model` field), and the keywords in `options` routed to them by field name."""
    if not isinstance(model, ModelOptions):
        options = {"model": model, **options}
        model = None
    return gather(where, {key: (_GROUPS[key], value) for key, value in {"model": model, **given}.items()}, options)


def changed_fields(group) -> list[str]:
    """The fields of `group` given a value other than their default (as a group made with none holds it)."""
    default = type(group)()
    return [item.name for item in fields(group) if getattr(group, item.name) != getattr(default, item.name)]


def refuse_unused(group, used: tuple[str, ...], reason: str) -> None:
    """A field of `group` given (not its default) that the call never reads: UsageError naming it, with `reason`."""
    for name in changed_fields(group):
        if name not in used:
            raise UsageError(f"`{name}` {reason}")


# What evaluate and the sanity check read of the groups explain_paths shares with them; any other field
# given is refused rather than ignored.
EVALUATE_READS = {"files": ("box_threshold", "bg_threshold", "refine"),
                  "run": ("out", "batch_size", "debug", "picture_budget")}
MASKS_IGNORE = ("steps", "road", "random_logit", "pointing_tolerance", "explain_class")  # box scoring's own


def check_output_folder(out_dir: Path) -> None:
    """Fail early if the output folder cannot be created or written, without creating anything yet."""
    existing = Path(out_dir).absolute()
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():
            raise UsageError(f"cannot create output folder {out_dir}: {existing} is a symbolic link that leads "
                             "nowhere (a loop, or a missing target)")
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot create output folder {out_dir}: {existing} is not a folder")
    if not os.access(existing, os.W_OK):
        raise UsageError(f"cannot write to output folder {out_dir}: {existing} is not writable")


def input_paths(paths) -> list[Path]:
    """The images and folders to read: one path (a string or os.PathLike) is one, never split into its
    characters; a path that does not exist is a UsageError, before any model loads."""
    given = [paths] if isinstance(paths, (str, os.PathLike)) else paths
    if not isinstance(given, (list, tuple)) or not given:
        raise UsageError("give the images and folders to read as a path or a list of paths")
    for path in given:
        if not isinstance(path, (str, os.PathLike)):
            raise UsageError(f"paths are strings or os.PathLike, not {type(path).__name__} {path!r:.40}")
        if not str(os.fspath(path)).strip():
            raise UsageError("an empty path names no image or folder: give the images and folders to read")
        if not os.path.lexists(path):
            raise UsageError(f"{os.fspath(path)} does not exist: check the path")
    return [Path(path) for path in given]


def _discover(paths, out_dir: Path):
    from camcli.runs.discovery import discover

    tasks, skipped = discover(list(paths), out_dir)
    if not tasks and not skipped:
        raise UsageError(f"no images found in {', '.join(map(str, paths))}")
    return tasks, skipped


def build_explainer(loaded, maps: MapRequest):
    """One Explainer, or a MethodSet when several methods are asked for (they share one compiled step); for
    an object detector, a DetectionExplainer of every method."""
    from camcli.explain.explainer import Explainer, MethodSet

    if loaded.detector is not None:
        from camcli.explain.detection import DetectionExplainer

        return DetectionExplainer(loaded, maps)
    if len(maps.methods) == 1:
        return Explainer(loaded, maps)
    return MethodSet.of(loaded, maps)


def explain_paths(paths, model: object = DEFAULT_MODEL, *, maps: MapRequest | None = None,
                  files: FileOptions | None = None, run: RunOptions | None = None, hooks: RunHooks | None = None,
                  **options):
    """Explain every image under `paths` and write overlays, records and the summary into `run.out`.

    Returns the run's `RunSummary` (counts, failures, `as_record()` for summary.json). Images that
    fail are listed there and the others are still written; setting `hooks.stop` ends the run after
    the current batch. The groups and their fields are camcli.options': `maps` (methods, layers,
    classes, target, smoothing), `files` (alpha, colormap, save_heatmap, save_mask, panel,
    save_segmentation...), `run` (out, batch_size, resume, shard, fail_fast, report, max_pixels),
    `hooks` (on_start, on_progress, on_failure, stop); any field may be given as a keyword.
    """
    groups = groups_of("explain_paths", model, options, maps=maps, files=files, run=run, hooks=hooks)
    return explain_with(paths, **groups)


def explain_with(paths, model: ModelOptions, maps: MapRequest, files: FileOptions, run: RunOptions,
                 hooks: RunHooks):
    """explain_paths on groups already made."""
    from camcli.runs.runner import check_run_files
    from camcli.runs.runner import run as run_tasks

    if not files.save_segmentation:
        files.check_label_maps_asked()
    if run.out is None:
        raise UsageError("explain writes its outputs into a folder: give `out`")
    paths = input_paths(paths)
    check_output_folder(run.out)
    check_run_files(run.out, run.shard, report=run.report)
    tasks, skipped = _discover(paths, run.out)
    explainer = build_explainer(model.load(), maps)
    if hooks.on_start:
        hooks.on_start(len(tasks) + len(skipped) if run.shard is None else None)
    summary = run_tasks(explainer, tasks, run, files, skipped, hooks)
    if run.report and summary.summary_path is not None:
        summary.report_path = write_report(run.out)
    return summary


def evaluate_paths(paths, model: object = DEFAULT_MODEL, *, scoring: ScoringOptions | None = None,
                   maps: MapRequest | None = None, files: FileOptions | None = None, run: RunOptions | None = None,
                   hooks: RunHooks | None = None, **options):
    """Score every method's maps against the ground-truth boxes in `scoring.truth`; write evaluation.json
    and evaluation.csv into `run.out` (None writes nothing). Returns the `EvaluationReport`; its
    `failed_gates` are the `fail_under` / `fail_over` gates ("metric=value") that did not hold.

    With `truth_masks` (a folder of VOC SegmentationClass PNGs) instead of `truth`, the maps of each
    image's truth classes become label maps (`files.bg_threshold`, `files.refine`) scored by IoU per
    class and mIoU (camcli.evaluate.masks); `mask_labels` names mask values (VALUE,CLASS lines)."""
    groups = groups_of("evaluate_paths", model, options, scoring=scoring, maps=maps, files=files, run=run,
                       hooks=hooks)
    scoring, maps, files, run = (groups[key] for key in ("scoring", "maps", "files", "run"))
    if (scoring.truth is None) == (scoring.truth_masks is None):
        raise UsageError("evaluate needs the truth: boxes (`truth`) or pixel masks (`truth_masks`), one of them")
    if maps.classes:
        raise UsageError("evaluate scores the class `explain_class` names (the top-1 class, or the truth's): "
                         "`classes` does not apply")
    for key, used in EVALUATE_READS.items():
        refuse_unused(groups[key], used, "does not apply to evaluate, which writes evaluation.json and "
                                         "evaluation.csv from one whole run; drop it")
    if scoring.truth_masks is not None:
        refuse_unused(scoring, tuple(name for name in field_names(ScoringOptions) if name not in MASKS_IGNORE),
                      "applies to boxes (`truth`); with `truth_masks` the label maps are scored by IoU, for each "
                      "image's mask classes: drop it")
    paths = input_paths(paths)
    if run.out is not None:
        check_output_folder(run.out)
    if scoring.truth_masks is not None:
        return _evaluate_masks(paths, groups)
    if scoring.mask_labels is not None:
        raise UsageError("`mask_labels` applies to pixel masks: give `truth_masks`")
    files.check_label_maps_asked("`truth_masks`")
    return _evaluate_boxes(paths, groups)


def _evaluate_boxes(paths, groups: dict):
    from camcli.evaluate import evaluation
    from camcli.evaluate.truth import load_truth

    scoring, maps, run, hooks = (groups[key] for key in ("scoring", "maps", "run", "hooks"))
    gates = [evaluation.parse_gate(text, "under") for text in scoring.fail_under]
    gates += [evaluation.parse_gate(text, "over") for text in scoring.fail_over]
    if run.out is not None:
        evaluation.check_evaluation_files(run.out)
    truth_boxes = load_truth(scoring.truth)
    tasks, skipped = _discover(paths, run.out if run.out is not None else Path(os.devnull))
    options = evaluation.EvaluationOptions(run.out, groups["files"].box_threshold, scoring.steps, run.batch_size,
                                           score_batch_size=maps.masked_batch,
                                           pointing_tolerance=scoring.pointing_tolerance, road=scoring.road,
                                           random_logit=scoring.random_logit, gates=gates,
                                           truth_name=str(scoring.truth), explain_class=scoring.explain_class)

    with contextlib.ExitStack() as held:
        def explainers():  # built once the truth and the gates are known to be usable
            return _evaluation_explainers(
                groups, lambda loaded: evaluation.evaluation_classes(truth_boxes, loaded.labels, tasks,
                                                                     scoring.explain_class), len(tasks), held)

        return evaluation.evaluate(explainers, tasks, truth_boxes, options, skipped, on_failure=hooks.on_failure,
                                   on_progress=hooks.on_progress, stop=hooks.stop)


def _evaluation_explainers(groups: dict, classes_of: Callable, images: int, held: contextlib.ExitStack) -> list:
    """`evaluate`'s Explainers, one per method, on the model (a one-input model), with the classes
    `classes_of(loaded)` gives; hooks.on_start(images) once they are built. The output folder's lock
    is taken first (into `held`), once the truth and the gates are known to be usable."""
    from camcli.explain.explainer import Explainer
    from camcli.runs.lock import output_lock

    if groups["run"].out is not None:
        held.enter_context(output_lock(groups["run"].out))
    loaded = groups["model"].load()
    if loaded.extra_input_names:
        raise UsageError(f"evaluate scores one-input models, and {loaded.name} also takes "
                         f"{', '.join(loaded.extra_input_names)}; explain it with `camcli explain`")
    if loaded.detector is not None:  # a detector: its detections (target box), every method in one explainer
        from camcli.explain.detection import DetectionExplainer

        built = [DetectionExplainer(loaded, replace(groups["maps"], target=BOX_TARGET))]
    else:
        maps = replace(groups["maps"], classes=tuple(classes_of(loaded)))
        # The steps are built when first used: several methods share one (MethodScoring makes their MethodSet).
        built = [Explainer(loaded, maps.one_method(name), build_step=len(maps.methods) == 1)
                 for name in maps.methods]
    if groups["hooks"].on_start:
        groups["hooks"].on_start(images)
    return built


def _evaluate_masks(paths, groups: dict):
    """evaluate_paths with `truth_masks`: the label maps scored against the masks."""
    from camcli.evaluate import evaluation, masks

    scoring, files, run, hooks = (groups[key] for key in ("scoring", "files", "run", "hooks"))
    gates = [evaluation.parse_gate(text, "under", masks.SEGMENTATION_METRICS) for text in scoring.fail_under]
    gates += [evaluation.parse_gate(text, "over", masks.SEGMENTATION_METRICS) for text in scoring.fail_over]
    if run.out is not None:
        evaluation.check_evaluation_files(run.out)
    labels_table = masks.read_mask_labels(scoring.mask_labels) if scoring.mask_labels is not None else None
    options = masks.SegmentationOptions(run.out, files.label_threshold, files.refine, batch_size=run.batch_size,
                                        gates=gates, truth_name=str(scoring.truth_masks))
    tasks, skipped = _discover(paths, run.out if run.out is not None else Path(os.devnull))

    with contextlib.ExitStack() as held:
        def explainers(masked):  # built once the masks are read: a malformed mask fails before a model loads
            slots = masks.mask_classes_needed(masked, labels_table)
            return _evaluation_explainers(groups, lambda loaded: ["top1"] * slots, len(masked), held)

        return masks.evaluate_masks(explainers, tasks, Path(scoring.truth_masks), options, labels_table, skipped,
                                    on_failure=hooks.on_failure, on_progress=hooks.on_progress, stop=hooks.stop)


def audit_paths(paths, model: object = DEFAULT_MODEL, *, audit: AuditOptions | None = None,
                maps: MapRequest | None = None, files: FileOptions | None = None, run: RunOptions | None = None,
                hooks: RunHooks | None = None, **options):
    """SpRAy (camcli.audit.spray) over a folder's maps: per class, its strategies and the flagged ones.

    `paths` is either one output folder of `camcli explain` whose maps were saved (`save_heatmap`),
    audited in place, or images and folders, explained first into `run.out` (default camcli_out) with
    `save_heatmap=True` and the other groups. audit (camcli.options.AuditOptions): `by` "predicted"
    groups images by their top-1 class and audits its maps; "truth" groups them by `truth_labels` (a
    CSV with image and label columns) and audits the truth class's maps. With `truth_labels`, clusters
    get a purity. Writes audit.json, audit.csv and each cluster's mean map into the folder (and
    index.html with `report`). Returns the `AuditReport`; `.flagged` lists the flagged clusters,
    `.explain_summary` the explain run's summary when there was one.
    """
    from camcli.audit import folder as audit_folder
    from camcli.audit.rule import FlagRule
    from camcli.audit.spray import require_audit_libraries
    from camcli.runs.lock import output_lock
    from camcli.runs.runner import check_run_files, writing_into

    groups = groups_of("audit_paths", model, options, audit=audit, maps=maps, files=files, run=run, hooks=hooks)
    audit, files, run = groups["audit"], groups["files"], groups["run"]
    require_audit_libraries()
    labels = audit_folder.read_truth_labels(audit.truth_labels) if audit.truth_labels is not None else None
    given = input_paths(paths)
    in_place = len(given) == 1 and audit_folder.is_explain_folder(given[0])
    out_dir = _audit_folder_in_place(given[0], groups) if in_place else run.out_dir
    if not in_place:
        check_output_folder(out_dir)
    audit_folder.check_audit_files(out_dir)
    if run.report:
        check_run_files(out_dir, report=True)  # a page camcli did not write stops the audit before it starts
    if not in_place:  # loaded once: it explains the images, then scores them covered (the occlusion test)
        from camcli.explain.detection import AUDIT_REFUSAL, refuse_detector

        groups = {**groups, "model": ModelOptions(model=refuse_detector(groups["model"].load(), AUDIT_REFUSAL))}
    with contextlib.ExitStack() as held:
        if in_place:
            held.enter_context(output_lock(out_dir))
        summary, method = (None, audit.method) if in_place else _explain_for_audit(given, out_dir, labels, groups)
        held.enter_context(output_lock(out_dir))  # the explain run's lock, given back, is taken for the audit
        found = audit_folder.read_folder(out_dir, method, audit.by, labels)
        result = audit_folder.audit_maps(found, audit.by, FlagRule.of(audit), audit.neighbours, audit.seed)
        if not in_place:  # the audit has the model: does its answer follow what the maps pile up on?
            from camcli.explain.explainer import Explainer

            audit_folder.check_reliance_with(result, Explainer(groups["model"].load(), groups["maps"].one_method(
                groups["maps"].methods[0])), audit.seed)
        result.explain_summary = summary
        # The clustering cannot stop half-way: only an explain run that a signal cut short leaves the audit partial.
        result.interrupted = bool(summary is not None and summary.interrupted)
        with writing_into(out_dir):
            audit_folder.write_audit(result, out_dir, files.colormap)
        if run.report:
            result.report_path = write_report(out_dir)
    return result


def _audit_folder_in_place(folder: Path, groups: dict) -> Path:
    """An explain output folder, audited in place: the options that choose a model or maps, or another
    folder, do not apply (UsageError naming them)."""
    model, maps, run = groups["model"], groups["maps"], groups["run"]
    if {"methods", "layers", "token_grid"} & set(changed_fields(maps)):
        raise UsageError(f"{folder} is an explain output folder: its maps are audited as they are; method, "
                         "layer and token grid options apply when auditing images")
    given = changed_fields(model)
    if given:
        raise UsageError(f"{folder} is an explain output folder: its maps are audited as they are, and "
                         f"{', '.join(f'`{name}`' for name in given)} would choose the model that explains images; "
                         "drop it, or give the images instead of the folder")
    if run.out not in (None, RunOptions().out, folder):
        raise UsageError(f"{folder} is an explain output folder, audited in place: `out` does not apply")
    return folder


def _explain_for_audit(given: list[Path], out_dir: Path, labels, groups: dict):
    """Explain the images into `out_dir` with their maps saved, for the audit: (the run's summary, the
    audited method). A run that a full disk or a read-only folder stopped stops the audit (CamcliError)."""
    from camcli.errors import CamcliError

    audit, maps, model = groups["audit"], groups["maps"], groups["model"]
    if audit.by == "truth" and not maps.classes:  # each label must name one of the model's classes
        maps = replace(maps, classes=tuple(_truth_classes(labels, model.load())))
    if audit.method is not None:
        maps = replace(maps, methods=(audit.method, *[m for m in maps.methods if m != audit.method]))
    summary = explain_with(given, model, maps, replace(groups["files"], save_heatmap=True),
                           replace(groups["run"], out=out_dir, report=False), groups["hooks"])
    if summary.stopped:
        raise CamcliError(summary.stopped)
    return summary, maps.methods[0]


MAX_TRUTH_CLASSES = 20


def _truth_classes(labels, loaded) -> list[str]:
    """The classes to explain for an audit by truth: every label of the table (each image's map of
    its own label is then there), each one of the model's classes."""
    from camcli.explain.classes import parse_class_requests

    names = sorted(set(labels.rows()))
    if len(names) > MAX_TRUTH_CLASSES:
        raise UsageError(f"the truth labels name {len(names)} classes, more than {MAX_TRUTH_CLASSES} maps per "
                         "image: explain the images first (with --class for the classes to audit and "
                         "--save-heatmap), then audit that output folder")
    for name in names:
        try:
            parse_class_requests([name], loaded.labels)
        except UsageError:
            shown = ", ".join(loaded.labels[:6]) + (", ..." if len(loaded.labels) > 6 else "")
            raise UsageError(f"{labels.path}: label {name!r} is no class of model {loaded.name} ({shown}); give "
                             "each image a class name or index of the model") from None
    return names


def sanity_paths(paths, model: object = DEFAULT_MODEL, *, sanity: SanityOptions | None = None,
                 maps: MapRequest | None = None, run: RunOptions | None = None, **options):
    """The model-parameter randomisation test (Adebayo et al. 2018) of each method on the first
    `sanity.images` images under `paths`: how similar the maps stay as the model's weighted layers are
    re-initialised from the top down, on a copy of the model. Writes OUT/sanity.json (`out=None`
    writes nothing).

    sanity (camcli.options.SanityOptions): depths, how many checkpoints (default 6, from the top layer
    to all of them), or the numbers of layers to randomise; threshold, the score at which a method
    passes; fail_under, bounds on every method's score (1 - rank correlation of |map| once every layer
    is random), as numbers or "sanity=VALUE". Returns the `SanityReport` (camcli.audit.sanity):
    `record()` is sanity.json, `failed_gates` the bounds not met.
    """
    from camcli.audit import sanity as sanity_check

    groups = groups_of("sanity_paths", model, options, sanity=sanity, maps=maps, run=run)
    sanity, maps, run = groups["sanity"], groups["maps"], groups["run"]
    refuse_unused(run, EVALUATE_READS["run"], "does not apply to the sanity check, which writes sanity.json "
                                              "from one whole run; drop it")
    sanity_check.require_packages_for_sanity()
    gates = sanity_check.sanity_gates(sanity.fail_under)
    paths = input_paths(paths)
    if run.out is not None:
        check_output_folder(run.out)
        sanity_check.check_sanity_file(run.out)
    tasks, skipped = _discover(paths, run.out if run.out is not None else Path(os.devnull))
    loaded = sanity_check.check_model(groups["model"].load())
    pictures, failures = sanity_check.decode_pictures(tasks, sanity.images, loaded.input_size)
    failures = [{"image": item.display, "error": item.reason} for item in skipped] + failures
    if not pictures:
        raise UsageError(f"no image under {', '.join(map(str, paths))} could be read for the sanity check")
    report = sanity_check.run_sanity(loaded, pictures, lambda model: build_explainer(model, maps),
                                     depths=sanity.depths, seed=sanity.seed, threshold=sanity.threshold,
                                     gates=gates, batch_size=run.batch_size, failures=failures)
    if run.out is not None:
        sanity_check.write_sanity(report, run.out)
    return report


def write_report(out: PathLike, title: str | None = None) -> Path:
    """Write OUT/index.html for the camcli outputs in `out`; returns its path."""
    from camcli.report.page import write_page

    return write_page(_folder(out, "write_report"), title)


def _folder(out, where: str) -> Path:
    """An output folder's path as a Path; UsageError for anything else."""
    if not isinstance(out, (str, os.PathLike)):
        raise UsageError(f"{where} takes an output folder's path, not {type(out).__name__} {out!r:.40}")
    return Path(out)


def merge_summaries(out: PathLike, write: bool = True) -> dict:
    """The shard summaries in `out` merged into one record (written as summary.json with `write`
    when there are shards); lists `missing_shards`."""
    from camcli.runs import records
    from camcli.runs.layout import Layout

    out = _folder(out, "merge_summaries")
    if not isinstance(write, bool):
        raise UsageError(f"`write` is true or false, not {write!r:.40}")
    merged = records.merged_summary(out)
    if write and merged.get("shards"):
        records.write_summary(Layout(out).summary(), merged)
    return merged


@dataclass(frozen=True)
class LayerRow:
    path: str
    type_name: str
    shape: str
    default: bool
    reshape: str = ""  # token layers: how their tokens become a map ("197 tokens -> 14x14x768 grid, ...")


def list_layers(model: object = DEFAULT_MODEL, *, token_grid: str | None = None, **options) -> list[LayerRow]:
    """The layers that can be explained (4-D outputs, and token layers whose tokens form a patch grid,
    with how they are reshaped), the default one marked. A built-in model is built with random
    weights unless `weights` is given: its layers do not depend on them."""
    from camcli.models import catalog
    from camcli.options import parse_token_grid

    source = groups_of("list_layers", model, options)["model"]
    if source.weights is None and isinstance(source.model, str):
        entry = catalog.lookup(source.model)
        if entry is not None and entry.name not in catalog.DEMO_NAMES:
            source = replace(source, weights="none")
    given = parse_token_grid(token_grid)
    loaded = source.load()
    from camcli.models.layers import default_layer, explainable_layers

    default = loaded.default_layer or default_layer(loaded.model, loaded.input_size, given)
    return [LayerRow(info.path, info.type_name, "x".join("?" if d is None else str(d) for d in info.output_shape[1:]),
                     info.path == default,
                     grid.describe(*info.output_shape[1:]) if grid is not None else "")
            for info, grid in explainable_layers(loaded.model, loaded.input_size, given)]
