"""The library calls behind the commands: what `camcli explain`, `evaluate` (and its `--sanity`), `report`
and `layers` do.

A notebook, a batch engine or a test calls exactly what the CLI calls:

    >>> import camcli
    >>> summary = camcli.explain_paths(["photos/"], model="demo", out="results", methods=["gradcam"])
    >>> summary.ok, summary.failed, summary.failures
    >>> report = camcli.evaluate_paths(["scenes/"], truth="scenes/truth.csv", model="demo")
    >>> sanity = camcli.sanity_paths(["scenes/"], model="demo", methods=["gradcam", "guidedbackprop"])
    >>> camcli.write_report("results")

`model` is a built-in name or model file (loaded with `weights`, `preprocess`, `labels_file` and
`unsafe_load`), a `LoadedModel` from `camcli.load_model` / `camcli.wrap_model`, or a Keras model
(wrapped with default preprocessing). Errors are `camcli.errors.CamcliError`s with one-line messages.
TensorFlow is imported only here, on the first call.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from camcli.errors import UsageError
from camcli.models.catalog import DEFAULT_MODEL

PathLike = str | os.PathLike
# Masked copies per forward pass, for Score-CAM and evaluate's curves: fixed, so that their memory does
# not grow with `batch_size` (a ResNet50 pass over 400 masked copies held 7 GB).
MASKED_BATCH = 32


@dataclass(frozen=True)
class ModelSource:
    """How to get the model: a spec to load, or a model in memory."""

    model: object = DEFAULT_MODEL
    weights: str | None = None
    preprocess: str | None = None
    labels_file: str | None = None
    unsafe_load: bool = False
    image_input: str | None = None
    extra_inputs: object = None  # a table's path, or a callable: image key -> {input name: values}
    output: str | None = None

    def load(self):
        from camcli.models.loading import LoadedModel, load_model, wrap_model

        interface = {"image_input": self.image_input, "extra_inputs": self.extra_inputs, "output": self.output}
        if isinstance(self.model, LoadedModel):
            given = [name for name, value in interface.items() if value is not None]
            if given:
                raise UsageError(f"`{given[0]}` goes to camcli.wrap_model or load_model, with the model")
            return self.model
        if isinstance(self.model, (str, os.PathLike)):
            return load_model(os.fspath(self.model), weights=self.weights, preprocess=self.preprocess,
                              labels_file=self.labels_file, unsafe=self.unsafe_load, **interface)
        return wrap_model(self.model, preprocess=self.preprocess or "none", labels_file=self.labels_file,
                          **interface)


def check_output_folder(out_dir: Path) -> None:
    """Fail early if the output folder cannot be created or written, without creating anything yet."""
    existing = Path(out_dir).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot create output folder {out_dir}: {existing} is not a folder")
    if not os.access(existing, os.W_OK):
        raise UsageError(f"cannot write to output folder {out_dir}: {existing} is not writable")


def _discover(paths: Sequence[PathLike], out_dir: Path):
    from camcli.runs.discovery import discover

    tasks, skipped = discover(list(paths), out_dir)
    if not tasks and not skipped:
        raise UsageError(f"no images found in {', '.join(map(str, paths))}")
    return tasks, skipped


def _method_names(methods: str | Sequence[str] | None) -> list[str]:
    """The methods asked for, each once, lowercase; one string is one method; none: gradcam."""
    names = [methods] if isinstance(methods, str) else list(methods or [])
    return list(dict.fromkeys(name.lower() for name in names)) or ["gradcam"]


def build_explainer(loaded, *, methods: Sequence[str] | None = None, layers: Sequence[str] | None = None,
                    classes: Sequence[str] | None = None, top_k: int | None = None, head: str = "auto",
                    eigen_smooth: bool = False, aug_smooth: bool = False, max_channels: int | None = None,
                    batch_size: int = 8, target: object = None, target_mask: object = None,
                    token_grid: str | None = None):
    """One Explainer, or a MethodSet when several methods are asked for."""
    from camcli.explain.explainer import Explainer, MethodSet
    from camcli.explain.methods import REGISTRY

    names = _method_names(methods)
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        raise UsageError(f"unknown method {unknown[0]!r}: choose one of {', '.join(REGISTRY)}")
    if max_channels is not None and not any(REGISTRY[name].needs_masked_scores for name in names):
        raise UsageError(f"`max_channels` applies to the scorecam method, not {', '.join(names)}")
    layers = [layers] if isinstance(layers, str) else list(layers or [])  # one string is one layer
    explainers = [Explainer(loaded, layer=layers or None, method=name, classes=classes, top_k=top_k,
                            head=head, eigen_smooth=eigen_smooth, aug_smooth=aug_smooth,
                            score_batch_size=MASKED_BATCH, target=target, target_mask=target_mask,
                            token_grid=token_grid,
                            max_channels=max_channels if REGISTRY[name].needs_masked_scores else None)
                  for name in names]
    return explainers[0] if len(explainers) == 1 else MethodSet(explainers)


def make_output_options(*, alpha: float = 0.5, colormap: str = "jet", box_threshold: float = 0.2,
                        draw_box: bool = False, save_heatmap: bool = False, save_mask: bool = False,
                        panel: bool = False, overlay_format: str = "auto", max_size: int | None = None,
                        save_segmentation: bool = False, bg_threshold: float | None = None, refine: str = "none"):
    """The files each image gets (camcli.runs.writer.OutputOptions), checked: a bad colour map, format or
    size is a UsageError before any model loads. explain_paths and camcli.ray take the same options."""
    from camcli.maps.label_settings import DEFAULT_BG_THRESHOLD
    from camcli.maps.overlay import colormap_lut
    from camcli.runs.writer import OVERLAY_FORMATS, OutputOptions

    if not save_segmentation and (bg_threshold is not None or refine != "none"):
        raise UsageError("`bg_threshold` and `refine` shape the label maps: add `save_segmentation`")
    if overlay_format not in OVERLAY_FORMATS:
        raise UsageError(f"unknown overlay format {overlay_format!r}: choose one of {', '.join(OVERLAY_FORMATS)}")
    if max_size is not None and max_size < 16:
        raise UsageError(f"`max_size={max_size}` must be at least 16")
    colormap_lut(colormap)
    return OutputOptions(alpha=alpha, colormap=colormap, box_threshold=box_threshold, draw_box=draw_box,
                         save_heatmap=save_heatmap, save_mask=save_mask, panel=panel, overlay_format=overlay_format,
                         max_size=max_size, save_segmentation=save_segmentation, refine=refine,
                         bg_threshold=DEFAULT_BG_THRESHOLD if bg_threshold is None else bg_threshold)


def explain_paths(paths: Sequence[PathLike], *, model: object = DEFAULT_MODEL, out: PathLike = "camcli_out",
                  weights: str | None = None, preprocess: str | None = None, labels_file: str | None = None,
                  unsafe_load: bool = False, image_input: str | None = None, extra_inputs: object = None,
                  output: str | None = None, target: object = None, target_mask: object = None,
                  token_grid: str | None = None, layers: str | Sequence[str] | None = None,
                  methods: Sequence[str] | None = None, classes: Sequence[str] | None = None,
                  top_k: int | None = None, head: str = "auto", eigen_smooth: bool = False,
                  aug_smooth: bool = False, max_channels: int | None = None, batch_size: int = 8,
                  alpha: float = 0.5, colormap: str = "jet", box_threshold: float = 0.2, draw_box: bool = False,
                  save_heatmap: bool = False, save_mask: bool = False, panel: bool = False, report: bool = False,
                  save_segmentation: bool = False, bg_threshold: float | None = None, refine: str = "none",
                  overlay_format: str = "auto", max_size: int | None = None, max_pixels: int | None = None,
                  fail_fast: bool = False, resume: bool = False, shard: tuple[int, int] | None = None,
                  on_failure: Callable[[str, str], None] | None = None,
                  on_progress: Callable[[int], None] | None = None,
                  on_start: Callable[[int | None], None] | None = None,
                  stop: threading.Event | None = None, debug: bool = False):
    """Explain every image under `paths` and write overlays, records and the summary into `out`.

    Returns the run's `RunSummary` (counts, failures, `as_record()` for summary.json). Images that
    fail are listed there and the others are still written; setting `stop` ends the run after the
    current batch. on_start(total) is called once the images are found (total None for a shard).
    overlay_format: "auto" (JPEG for photos, PNG for lossless inputs), "png", "jpg" or "webp".
    max_size: the longest side of the pictures written (None: the original size). max_pixels: decode
    images of up to this many pixels (None: Pillow's decompression-bomb limit).
    image_input, extra_inputs, output: for models with several inputs or outputs (see
    camcli.wrap_model; extra_inputs may be a CSV/JSON table's path). save_segmentation: a label map
    per image and method (`<stem>.<method>.segmentation.png`), each pixel the argmax of its classes'
    normalised maps and `bg_threshold` (default camcli.maps.segmentation.DEFAULT_BG_THRESHOLD), after
    `refine` ("none", "slic", "randomwalk", "crf"). target: "class" (default),
    "region" (with an optional target_mask), "value", "increase", "decrease", or a callable
    (camcli.explain.targets). token_grid: "HxW" for token layers whose grid cannot be inferred.
    """
    from camcli.runs.runner import RunOptions, check_run_files, run

    out_dir = Path(out)
    output_options = make_output_options(alpha=alpha, colormap=colormap, box_threshold=box_threshold,
                                         draw_box=draw_box, save_heatmap=save_heatmap, save_mask=save_mask,
                                         panel=panel, overlay_format=overlay_format, max_size=max_size,
                                         save_segmentation=save_segmentation, refine=refine,
                                         bg_threshold=bg_threshold)
    check_output_folder(out_dir)
    check_run_files(out_dir, shard, report=report)
    tasks, skipped = _discover(paths, out_dir)
    loaded = ModelSource(model, weights, preprocess, labels_file, unsafe_load, image_input, extra_inputs,
                         output).load()
    explainer = build_explainer(loaded, methods=methods, layers=layers, classes=classes, top_k=top_k, head=head,
                                eigen_smooth=eigen_smooth, aug_smooth=aug_smooth, max_channels=max_channels,
                                batch_size=batch_size, target=target, target_mask=target_mask,
                                token_grid=token_grid)
    options = RunOptions(out_dir, batch_size, output_options, fail_fast=fail_fast, resume=resume, shard=shard,
                         raise_unexpected=debug, max_pixels=max_pixels)
    if on_start:
        on_start(len(tasks) + len(skipped) if shard is None else None)
    summary = run(explainer, tasks, options, skipped, on_failure=on_failure, on_progress=on_progress, stop=stop)
    if report and summary.summary_path is not None:
        summary.report_path = write_report(out_dir)
    return summary


def evaluate_paths(paths: Sequence[PathLike], *, truth: PathLike | None = None, model: object = DEFAULT_MODEL,
                   out: PathLike | None = "camcli_out", weights: str | None = None, preprocess: str | None = None,
                   labels_file: str | None = None, unsafe_load: bool = False, image_input: str | None = None,
                   extra_inputs: object = None, output: str | None = None, methods: Sequence[str] | None = None,
                   layers: Sequence[str] | None = None, head: str = "auto", steps: int = 50,
                   box_threshold: float = 0.2, pointing_tolerance: float = 0.0, batch_size: int = 8,
                   explain_class: str = "predicted", fail_under: Sequence[str] = (), fail_over: Sequence[str] = (),
                   truth_masks: PathLike | None = None, mask_labels: PathLike | None = None,
                   bg_threshold: float | None = None, refine: str = "none",
                   on_failure: Callable[[str, str], None] | None = None,
                   on_progress: Callable[[int], None] | None = None,
                   on_start: Callable[[int], None] | None = None):
    """Score every method's maps against the ground-truth boxes in `truth`; write evaluation.json and
    evaluation.csv into `out` (None writes nothing). Returns the `EvaluationReport`; its
    `failed_gates` are the `fail_under` / `fail_over` gates ("metric=value") that did not hold.

    With `truth_masks` (a folder of VOC SegmentationClass PNGs) instead of `truth`, the maps of each
    image's truth classes become label maps (`bg_threshold`, `refine`) scored by IoU per class and
    mIoU (camcli.evaluate.masks); `mask_labels` names mask values (VALUE,CLASS lines)."""
    from camcli.evaluate import evaluation
    from camcli.evaluate.truth import load_truth

    if (truth is None) == (truth_masks is None):
        raise UsageError("evaluate needs the truth: boxes (`truth`) or pixel masks (`truth_masks`), one of them")
    if truth_masks is not None:
        return _evaluate_masks(paths, truth_masks, mask_labels, bg_threshold, refine, fail_under, fail_over,
                               out, ModelSource(model, weights, preprocess, labels_file, unsafe_load, image_input,
                                                extra_inputs, output),
                               methods, layers, head, batch_size, on_failure, on_progress, on_start)
    given = [name for name, value in (("mask_labels", mask_labels), ("bg_threshold", bg_threshold))
             if value is not None]
    if refine != "none":
        given.append("refine")
    if given:
        raise UsageError(f"`{given[0]}` applies to pixel masks: give `truth_masks`")
    gates = [evaluation.parse_gate(text, "under") for text in fail_under]
    gates += [evaluation.parse_gate(text, "over") for text in fail_over]
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        check_output_folder(out_dir)
        evaluation.check_output_files(out_dir)
    truth_boxes = load_truth(truth)
    tasks, skipped = _discover(paths, out_dir if out_dir is not None else Path(os.devnull))
    options = evaluation.EvaluationOptions(out_dir, box_threshold, steps, batch_size, score_batch_size=MASKED_BATCH,
                                           pointing_tolerance=pointing_tolerance, gates=gates,
                                           truth_name=str(truth), explain_class=explain_class)

    def explainers():  # built once the truth and the gates are known to be usable
        source = ModelSource(model, weights, preprocess, labels_file, unsafe_load, image_input, extra_inputs, output)
        return _evaluation_explainers(
            source, lambda loaded: evaluation.evaluation_classes(truth_boxes, loaded.labels, tasks, explain_class),
            methods, layers, head, on_start, len(tasks))

    return evaluation.evaluate(explainers, tasks, truth_boxes, options, skipped, on_failure=on_failure,
                               on_progress=on_progress)


def _evaluation_explainers(source: ModelSource, classes_of: Callable, methods, layers, head,
                           on_start: Callable[[int], None] | None, images: int) -> list:
    """`evaluate`'s Explainers, one per method, on the model `source` loads (a one-input model), with
    the classes `classes_of(loaded)` gives; on_start(images) once they are built."""
    from camcli.explain.explainer import Explainer

    loaded = source.load()
    if loaded.extra_input_names:
        raise UsageError(f"evaluate scores one-input models, and {loaded.name} also takes "
                         f"{', '.join(loaded.extra_input_names)}; explain it with `camcli explain`")
    classes = classes_of(loaded)
    built = [Explainer(loaded, layer=list(layers or []) or None, method=name, classes=classes, head=head,
                       score_batch_size=MASKED_BATCH) for name in _method_names(methods)]
    if on_start:
        on_start(images)
    return built


def _evaluate_masks(paths, truth_masks, mask_labels, bg_threshold, refine, fail_under, fail_over, out,
                    source: ModelSource, methods, layers, head, batch_size, on_failure, on_progress, on_start):
    """evaluate_paths with `truth_masks`: the label maps scored against the masks."""
    from camcli.evaluate import evaluation, masks
    from camcli.maps.label_settings import DEFAULT_BG_THRESHOLD

    gates = [evaluation.parse_gate(text, "under", masks.SEGMENTATION_METRICS) for text in fail_under]
    gates += [evaluation.parse_gate(text, "over", masks.SEGMENTATION_METRICS) for text in fail_over]
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        check_output_folder(out_dir)
        evaluation.check_output_files(out_dir)
    labels_table = masks.read_mask_labels(mask_labels) if mask_labels is not None else None
    options = masks.SegmentationOptions(out_dir, DEFAULT_BG_THRESHOLD if bg_threshold is None else bg_threshold,
                                        refine, batch_size=batch_size, gates=gates, truth_name=str(truth_masks))
    tasks, skipped = _discover(paths, out_dir if out_dir is not None else Path(os.devnull))

    def explainers(masked):  # built once the masks are read: a malformed mask fails before a model loads
        slots = masks.mask_classes_needed(masked, labels_table)
        return _evaluation_explainers(source, lambda loaded: ["top1"] * slots, methods, layers, head, on_start,
                                      len(masked))

    return masks.evaluate_masks(explainers, tasks, Path(truth_masks), options, labels_table, skipped,
                                on_failure=on_failure, on_progress=on_progress)


def audit_paths(paths: Sequence[PathLike], *, out: PathLike | None = None, by: str = "predicted",
                truth_labels: PathLike | None = None, method: str | None = None, rule: object = None,
                neighbours: int | None = None, seed: int = 0, report: bool = False, colormap: str = "jet",
                **explain_options):
    """SpRAy (camcli.audit.spray) over a folder's maps: per class, its strategies and the flagged ones.

    `paths` is either one output folder of `camcli explain` whose maps were saved (`save_heatmap`),
    audited in place, or images and folders, explained first into `out` (default camcli_out) with
    `save_heatmap=True` and `explain_options` (those of explain_paths). by: "predicted" groups images
    by their top-1 class and audits its maps; "truth" groups them by `truth_labels` (a CSV with image
    and label columns) and audits the truth class's maps. With `truth_labels`, clusters get a purity.
    Writes audit.json, audit.csv and each cluster's mean map into the folder (and index.html with
    `report`). Returns the `AuditReport`; `.flagged` lists the flagged clusters, `.explain_summary`
    the explain run's summary when there was one.
    """
    from camcli.audit import folder as audit_folder
    from camcli.audit.rule import DEFAULT_RULE
    from camcli.audit.spray import NEIGHBOURS, require_audit_libraries

    require_audit_libraries()
    if by not in audit_folder.BY_CHOICES:
        raise UsageError(f"unknown `by` {by!r}: choose predicted or truth")
    if by == "truth" and truth_labels is None:
        raise UsageError("`by truth` needs the images' labels: give truth_labels, a CSV with image,label columns")
    labels = audit_folder.read_truth_labels(truth_labels) if truth_labels is not None else None
    given = [Path(p) for p in paths]
    summary = None
    if len(given) == 1 and audit_folder.is_explain_folder(given[0]):
        if explain_options.get("methods") or explain_options.get("layers"):
            raise UsageError(f"{given[0]} is an explain output folder: its maps are audited as they are; method "
                             "and layer options apply when auditing images")
        out_dir = given[0]
        audit_folder.check_output_files(out_dir)
    else:
        out_dir = Path(out if out is not None else "camcli_out")
        check_output_folder(out_dir)
        audit_folder.check_output_files(out_dir)
        if by == "truth" and not explain_options.get("classes"):
            explain_options["classes"] = _truth_classes(labels)
        if method is not None:
            explain_options["methods"] = [method, *[m for m in explain_options.get("methods") or [] if m != method]]
        summary = explain_paths(given, out=out_dir, save_heatmap=True, colormap=colormap, **explain_options)
        method = method or _method_names(explain_options.get("methods"))[0]
    maps = audit_folder.read_folder(out_dir, method, by, labels)
    result = audit_folder.audit_maps(maps, by, rule or DEFAULT_RULE, neighbours or NEIGHBOURS, seed)
    audit_folder.write_audit(result, out_dir, colormap)
    result.explain_summary = summary
    if report:
        result.report_path = write_report(out_dir)
    return result


MAX_TRUTH_CLASSES = 20


def _truth_classes(labels) -> list[str]:
    """The classes to explain for an audit by truth: every label of the table (each image's map of
    its own label is then there)."""
    names = sorted(set(labels.rows()))
    if len(names) > MAX_TRUTH_CLASSES:
        raise UsageError(f"the truth labels name {len(names)} classes, more than {MAX_TRUTH_CLASSES} maps per "
                         "image: explain the images first (with --class for the classes to audit and "
                         "--save-heatmap), then audit that output folder")
    return names


def sanity_paths(paths: Sequence[PathLike], *, model: object = DEFAULT_MODEL, out: PathLike | None = "camcli_out",
                 weights: str | None = None, preprocess: str | None = None, labels_file: str | None = None,
                 unsafe_load: bool = False, image_input: str | None = None, extra_inputs: object = None,
                 output: str | None = None, methods: Sequence[str] | None = None,
                 layers: str | Sequence[str] | None = None, head: str = "auto", max_channels: int | None = None,
                 images: int = 16, depths: int | Sequence[int] | None = None, seed: int = 0,
                 threshold: float | None = None, fail_under: float | str | Sequence[float | str] | None = None,
                 batch_size: int = 8):
    """The model-parameter randomisation test (Adebayo et al. 2018) of each method on the first `images`
    images under `paths`: how similar the maps stay as the model's weighted layers are re-initialised
    from the top down, on a copy of the model. Writes OUT/sanity.json (None writes nothing).

    depths: how many checkpoints (default 6, from the top layer to all of them), or the numbers of
    layers to randomise. threshold: the score at which a method passes (default 0.5). fail_under:
    bounds on every method's score (1 - rank correlation of |map| once every layer is random), as
    numbers or "sanity=VALUE". Returns the `SanityReport` (camcli.audit.sanity): `record()` is
    sanity.json, `failed_gates` the bounds not met. max_channels: Score-CAM's, as in explain_paths.
    """
    from camcli.audit import sanity

    sanity.require_packages()
    gates = sanity.sanity_gates(fail_under)
    if images < 1:
        raise UsageError(f"`images={images}` must be at least 1")
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        check_output_folder(out_dir)
        sanity.check_output_file(out_dir)
    tasks, skipped = _discover(paths, out_dir if out_dir is not None else Path(os.devnull))
    loaded = ModelSource(model, weights, preprocess, labels_file, unsafe_load, image_input, extra_inputs,
                         output).load()
    pictures, failures = sanity.decode_pictures(tasks, images, loaded.input_size)
    failures = [{"image": item.display, "error": item.reason} for item in skipped] + failures
    if not pictures:
        raise UsageError(f"no image under {', '.join(map(str, paths))} could be read for the sanity check")

    def explainer_for(model):
        return build_explainer(model, methods=methods, layers=layers, head=head, max_channels=max_channels,
                               batch_size=batch_size)

    threshold = sanity.DEFAULT_THRESHOLD if threshold is None else threshold
    report = sanity.run_sanity(loaded, pictures, explainer_for, depths=depths, seed=seed, threshold=threshold,
                               gates=gates, batch_size=batch_size, failures=failures)
    if out_dir is not None:
        sanity.write_sanity(report, out_dir)
    return report


def write_report(out: PathLike, title: str | None = None) -> Path:
    """Write OUT/index.html for the camcli outputs in `out`; returns its path."""
    from camcli.report.page import write_report as write_page

    return write_page(Path(out), title)


def merge_summaries(out: PathLike, write: bool = True) -> dict:
    """The shard summaries in `out` merged into one record (written as summary.json with `write`
    when there are shards); lists `missing_shards`."""
    from camcli.runs import records
    from camcli.runs.layout import Layout

    merged = records.merge_summaries(Path(out))
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


def list_layers(model: object = DEFAULT_MODEL, *, weights: str | None = None, preprocess: str | None = None,
                labels_file: str | None = None, unsafe_load: bool = False, image_input: str | None = None,
                extra_inputs: object = None, output: str | None = None,
                token_grid: str | None = None) -> list[LayerRow]:
    """The layers that can be explained (4-D outputs, and token layers whose tokens form a patch grid,
    with how they are reshaped), the default one marked. A built-in model is built with random
    weights unless `weights` is given: its layers do not depend on them."""
    from camcli.models import catalog

    if isinstance(model, str) and weights is None:
        entry = catalog.lookup(model)
        if entry is not None and entry.name not in catalog.DEMO_NAMES:
            weights = "none"
    loaded = ModelSource(model, weights, preprocess, labels_file, unsafe_load, image_input, extra_inputs,
                         output).load()
    from camcli.models.layers import default_layer, explainable_layers, parse_token_grid

    given = parse_token_grid(token_grid)
    default = default_layer(loaded.model, loaded.input_size, given)
    return [LayerRow(info.path, info.type_name, "x".join("?" if d is None else str(d) for d in info.output_shape[1:]),
                     info.path == default,
                     grid.describe(*info.output_shape[1:]) if grid is not None else "")
            for info, grid in explainable_layers(loaded.model, loaded.input_size, given)]
