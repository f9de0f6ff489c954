"""One description of a run: the option groups every entry point takes, each checked when it is made.

`camcli explain`, `evaluate`, `audit`, the library calls (`camcli.explain_paths`...), `camcli.ray`, the
Keras callback and `Explainer` all take these groups, so an option is written once, here, with its
default; the command line's options are checked against these fields (tests/test_options.py), and
the fingerprint that `--resume` compares is made from the fields that shape the outputs.

    ModelOptions    which model, and how it is fed and read
    MapRequest      the maps asked for: methods, layers, classes, target, smoothing, channels
    FileOptions     the files written for each map, and how they look
    RunOptions      the run: output folder, batch size, resume, shards, fail-fast, report
    RunHooks        what the caller hears during a run: start, progress, failures; and a stop event
    ScoringOptions  `evaluate`: the truth, its metrics and gates
    AuditOptions    `audit`: grouping, clustering and the flag rule
    SanityOptions   the model-parameter randomisation test
    ProbeOptions    the Keras callback's probe runs

A library call also takes any field as a keyword (`camcli.explain_paths(["cat.jpg"], model="demo",
save_mask=True)`): `gather` routes it to its group by name, and an unknown name is a one-line error
that names the closest field. The module imports neither numpy nor TensorFlow: `camcli --help` reads it.

Field metadata: `cli=False` marks a library-only field (no command-line option), `fingerprint=False`
a field that does not shape the outputs' pixels or records (or enters the fingerprint another way).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from camcli.errors import UsageError
from camcli.maps.label_settings import DEFAULT_BG_THRESHOLD, DEFAULT_BOX_THRESHOLD, REFINEMENTS
from camcli.models.catalog import DEFAULT_MODEL, PREPROCESS_MODES

DEFAULT_OUT = "camcli_out"
# Masked copies per forward pass, for Score-CAM and evaluate's curves: fixed, so that their memory does
# not grow with the batch size (a ResNet50 pass over 400 masked copies held 7 GB).
MASKED_BATCH = 32
HEADS = ("auto", "softmax", "sigmoid")
# The compute dtype of the step: float32 (the default) runs the user's model; the others run a copy of it
# under Keras' mixed-precision policy (camcli.models.precision). The maps' arithmetic is float32 in all.
PRECISIONS = ("float32", "bfloat16", "float16")
REGRESSION_TARGETS = ("value", "increase", "decrease")
BOX_TARGET = "box"  # an object detector's detections (camcli.explain.detection)
TARGETS = ("class", "region", BOX_TARGET, *REGRESSION_TARGETS)
OVERLAY_FORMATS = ("auto", "png", "jpg", "webp")
EXPLAIN_CLASSES = ("predicted", "truth")
AUDIT_GROUPINGS = ("predicted", "truth")


def option(default=None, *, cli: bool = True, fingerprint: bool = True, help: str | None = None):
    """A group's field: its default, whether the command line shows it, whether it shapes the outputs, and
    for a flag the command line makes from the field itself (cli.flag_options), its help."""
    return field(default=default, metadata={"cli": cli, "fingerprint": fingerprint, "help": help})


# --- checks, each one line in the library's terms (`name=value`, which the CLI shows as its flag) ---------


def _set(group, name: str, value) -> None:
    object.__setattr__(group, name, value)  # a frozen group normalises its own fields once, when made


def _names(value, name: str) -> tuple[str, ...]:
    """A string is one item, never split into characters; a list or tuple is taken as it is."""
    if value is None:
        return ()
    if isinstance(value, (str, os.PathLike)):
        return (os.fspath(value),)
    if not isinstance(value, (list, tuple)):
        raise UsageError(f"`{name}` takes a name or a list of names, not {type(value).__name__} {value!r:.40}")
    for item in value:
        if not isinstance(item, (str, int)) or isinstance(item, bool):
            raise UsageError(f"`{name}` takes names, and {item!r} is a {type(item).__name__}")
    return tuple(str(item) for item in value)


def _flags(group) -> None:
    """Every true-or-false field of a group (those whose default is a bool) is a bool."""
    for item in fields(group):
        if isinstance(item.default, bool) and not isinstance(getattr(group, item.name), bool):
            raise UsageError(f"`{item.name}` is true or false, not {getattr(group, item.name)!r}")


def _number(group, name: str, low: float | None = None, high: float | None = None, *, whole: bool = False,
            optional: bool = False) -> None:
    value = getattr(group, name)
    if value is None and optional:
        return
    kind = int if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value != value:
        raise UsageError(f"`{name}={value!r}` must be {'a whole number' if whole else 'a number'}")
    if low is not None and value < low:
        raise UsageError(f"`{name}={value}` must be at least {low}")
    if high is not None and value > high:
        raise UsageError(f"`{name}={value}` must be at most {high}")


def _choice(group, name: str, choices: Sequence[str], *, optional: bool = False) -> None:
    value = getattr(group, name)
    if value is None and optional:
        return
    if value not in choices:
        raise UsageError(f"unknown `{name}` {value!r}: choose one of {', '.join(choices)}")


def _text(group, name: str) -> None:
    value = getattr(group, name)
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise UsageError(f"`{name}` takes a name or a path, not a {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
        raise UsageError(f"`{name}` is empty: give a name or a path, or leave it out")


def parse_token_grid(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """'14x14' (or (14, 14)) -> (14, 14); UsageError for anything else."""
    if text is None:
        return None
    if isinstance(text, (tuple, list)):
        if len(text) != 2 or not all(isinstance(size, int) and not isinstance(size, bool) for size in text):
            raise UsageError(f"`token_grid={tuple(text)!r:.40}` is not (height, width) in whole numbers, e.g. "
                             "(14, 14), or '14x14'")
        height, width = text
    else:
        try:
            height, width = (int(part) for part in str(text).lower().replace("×", "x").split("x"))
        except ValueError:
            raise UsageError(f"`token_grid={text}` is not HEIGHTxWIDTH, e.g. 14x14") from None
    if height < 1 or width < 1:
        raise UsageError(f"`token_grid={text}`: both sizes must be at least 1")
    return height, width


def parse_shard(value) -> tuple[int, int] | None:
    """(k, n) or "K/N" -> (k, n) with 1 <= k <= n."""
    if value is None:
        return None
    try:
        parts = value.split("/") if isinstance(value, str) else list(value)
        if any(isinstance(part, (bool, float)) for part in parts):
            raise TypeError
        k, n = (int(part) for part in parts)
    except (TypeError, ValueError):
        raise UsageError(f"shard {value!r} is not K/N, e.g. 1/4") from None
    if n < 1 or not 1 <= k <= n:
        raise UsageError(f"shard {value!r}: shards are numbered 1 to N; for a 0-based job index i (Slurm "
                         "--array=0-3, Kubernetes JOB_COMPLETION_INDEX) pass $((i+1))/N")
    return k, n


# --- the groups -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelOptions:
    """Which model, and how it is fed and read.

    model: a built-in name (`camcli models`), a .keras/.h5 file, hub:PRESET, a `LoadedModel` from
    camcli.load_model / wrap_model, or a Keras model (wrapped with `preprocess`, default none)."""

    model: object = option(DEFAULT_MODEL)
    weights: str | None = option()  # built-in models: a weights file, or "none" for random weights
    preprocess: str | None = option()  # how pixels are scaled (catalog.PREPROCESS_MODES)
    labels_file: str | None = option()  # class names, one per line
    unsafe_load: bool = option(False)  # allow model files that hold code (Lambda layers)
    image_input: str | None = option()  # several inputs: the image's
    extra_inputs: object = option()  # a CSV/JSON table's path, or a callable: image key -> {input: values}
    output: str | None = option()  # several outputs: the explained one

    def __post_init__(self):
        model = self.model
        if isinstance(model, os.PathLike):
            _set(self, "model", os.fspath(model))
        elif not isinstance(model, str) and not (hasattr(model, "layers") or hasattr(model, "input_size")):
            raise UsageError(f"`model` takes a built-in name, a model file, a LoadedModel or a Keras model, not "
                             f"{type(model).__name__} {model!r:.40}")
        for name in ("weights", "labels_file", "image_input", "output"):
            _text(self, name)
        _choice(self, "preprocess", PREPROCESS_MODES, optional=True)
        _flags(self)
        if isinstance(self.extra_inputs, os.PathLike):
            _set(self, "extra_inputs", os.fspath(self.extra_inputs))

    @property
    def in_memory(self) -> bool:
        """A model object rather than a name or file: it cannot be sent to other processes."""
        return not isinstance(self.model, str)

    def load(self):
        """The LoadedModel (camcli.models.loading)."""
        from camcli.models.loading import LoadedModel, load_model, wrap_model

        interface = {"image_input": self.image_input, "extra_inputs": self.extra_inputs, "output": self.output}
        if isinstance(self.model, LoadedModel):
            chosen = {"weights": self.weights, "preprocess": self.preprocess, "labels_file": self.labels_file,
                      "unsafe_load": self.unsafe_load or None, **interface}  # a LoadedModel has them all already
            given = [name for name, value in chosen.items() if value is not None]
            if given:
                raise UsageError(f"`{given[0]}` goes to camcli.wrap_model or load_model, with the model")
            return self.model
        if isinstance(self.model, str):
            return load_model(self.model, weights=self.weights, preprocess=self.preprocess,
                              labels_file=self.labels_file, unsafe_load=self.unsafe_load, **interface)
        return wrap_model(self.model, preprocess=self.preprocess or "none", labels_file=self.labels_file,
                          **interface)


@dataclass(frozen=True)
class MapRequest:
    """The maps asked for. A string where a list is taken is one item (`methods="cam"`)."""

    methods: tuple[str, ...] = option(())  # default: gradcam; several share one pass per batch
    layers: tuple[str, ...] = option(())  # default: the last spatial layer before the head; several are fused
    classes: tuple[str, ...] = option(())  # index, label or topN; default: top1
    top_k: int | None = option()  # predictions recorded per image; default 5 (or every class)
    head: str = option("auto")  # how scores come from the output (HEADS)
    # The target and its mask enter the fingerprint as Explainer.target_record() (a callable's name, the
    # mask's digest), not as objects.
    target: object = option("class", fingerprint=False)  # TARGETS, or a callable (camcli.explain.targets)
    target_mask: object = option(fingerprint=False)  # target region: a picture's path, or a 2-D array
    token_grid: str | None = option()  # token layers: "HxW" when it cannot be inferred
    eigen_smooth: bool = option(False)
    aug_smooth: bool = option(False)
    max_channels: int | None = option()  # Score-CAM and AblationCAM: score only this many channels
    # finercam: the classes (indices or labels) each class is compared against; default: those whose logits lie nearest
    compare_with: tuple[str, ...] = option(())
    # target=box: explain the detections scored at least this (None: the detector's own threshold)
    min_score: float | None = option()
    # target=box: differentiate the sum of the class's logits over the raw predictions whose box overlaps the
    # detection's with IoU >= this (pytorch-grad-cam's box-score target); None: the detection's own anchor's logit
    box_overlap: float | None = option()
    masked_batch: int = option(MASKED_BATCH, cli=False, fingerprint=False)  # masked copies per pass
    precision: str = option(PRECISIONS[0])  # the step's compute dtype (PRECISIONS)

    def __post_init__(self):
        methods = tuple(dict.fromkeys(name.lower() for name in _names(self.methods, "methods"))) or ("gradcam",)
        _set(self, "methods", methods)
        _set(self, "layers", tuple(dict.fromkeys(_names(self.layers, "layers"))))
        _set(self, "classes", _names(self.classes, "classes"))
        _set(self, "compare_with", _names(self.compare_with, "compare_with"))
        from camcli.explain.methods import REGISTRY, max_channels_misplaced  # numpy, no TensorFlow

        unknown = [name for name in methods if name not in REGISTRY]
        if unknown:
            raise UsageError(f"unknown method {unknown[0]!r}: choose one of {', '.join(REGISTRY)}")
        _number(self, "top_k", 1, whole=True, optional=True)
        _choice(self, "head", HEADS)
        if self.target is None:
            _set(self, "target", "class")
        if not callable(self.target) and self.target not in TARGETS and not hasattr(self.target, "selected"):
            raise UsageError(f"unknown target {self.target!r}: choose one of {', '.join(TARGETS)}, or give a callable")
        if self.target_mask is not None and self.target != "region":
            raise UsageError("`target_mask` applies to `target=region`")
        parse_token_grid(self.token_grid)
        _flags(self)
        _number(self, "max_channels", 1, whole=True, optional=True)
        if self.max_channels is not None and not any(REGISTRY[name].scores_channels for name in methods):
            raise max_channels_misplaced(", ".join(methods))
        if self.compare_with and not any(REGISTRY[name].comparison is not None for name in methods):
            raise UsageError(f"`compare_with` applies to the finercam method, not {', '.join(methods)}")
        _number(self, "masked_batch", 1, whole=True)
        _choice(self, "precision", PRECISIONS)
        _number(self, "min_score", 0, 1, optional=True)
        _number(self, "box_overlap", 0, 1, optional=True)
        for name in ("min_score", "box_overlap"):
            if getattr(self, name) is not None and self.target != BOX_TARGET:
                raise UsageError(f"`{name}` applies to an object detector's detections: add `target=box`")

    def one_method(self, name: str) -> MapRequest:
        """This request for one of its methods (max_channels only where the method scores channels one by one,
        compare_with only where it compares classes)."""
        from camcli.explain.methods import REGISTRY

        keep = self.max_channels if REGISTRY[name].scores_channels else None
        compared = self.compare_with if REGISTRY[name].comparison is not None else ()
        return dataclasses.replace(self, methods=(name,), max_channels=keep, compare_with=compared)


@dataclass(frozen=True)
class FileOptions:
    """The files written for each map, and how they look."""

    alpha: float = option(0.5)  # heatmap opacity in the overlays
    colormap: str = option("jet")  # any matplotlib colour map
    box_threshold: float = option(DEFAULT_BOX_THRESHOLD)  # a box keeps pixels >= this fraction of the map's maximum
    draw_box: bool = option(False, help="Draw the box on the overlay (heatmaps only: no box on a guided "
                                        "method's gradient picture).")
    save_heatmap: bool = option(False, help="Also write each map as float32 .npy at the output size (the image's, "
                                             "or --max-size), values in [0, 1].")
    save_mask: bool = option(False, help="Also write each map's thresholded region as a binary PNG mask.")
    panel: bool = option(False, help="Also write a panel per map: the original, the heatmap with a colour bar, "
                                      "and the overlay.")
    overlay_format: str = option("auto")  # OVERLAY_FORMATS; auto: JPEG for photos, PNG otherwise
    max_size: int | None = option()  # longest side of the pictures written; None: the original size
    save_segmentation: bool = option(False, help="Also write a label map per image and method, "
                                                  "OUT/<stem>.<method>.segmentation.png: a palette PNG at the "
                                                  "original size, 0 background and 1, 2... the explained classes "
                                                  "(the JSON lists them).")
    bg_threshold: float | None = option()  # label maps: the background's score (None: DEFAULT_BG_THRESHOLD)
    refine: str = option("none")  # label maps: REFINEMENTS
    png_compress_level: int = option(1, cli=False)  # zlib level, with the Z_RLE strategy (runs.files.encode_png)

    def __post_init__(self):
        _number(self, "alpha", 0, 1)
        _number(self, "box_threshold", 0, 1)
        _number(self, "bg_threshold", 0, 1, optional=True)
        _flags(self)
        _choice(self, "overlay_format", OVERLAY_FORMATS)
        _number(self, "max_size", 16, whole=True, optional=True)
        _choice(self, "refine", REFINEMENTS)
        _number(self, "png_compress_level", 0, 9, whole=True)
        if not isinstance(self.colormap, str):
            raise UsageError(f"`colormap` takes a colour map's name, not {self.colormap!r}")
        from camcli.maps.overlay import colormap_lut  # matplotlib's table; an unknown name is one line

        colormap_lut(self.colormap)
        if self.refine != "none":
            from camcli.maps.refine import check_label_settings

            check_label_settings(self.label_threshold, self.refine)  # crf without its package is one line

    @property
    def label_threshold(self) -> float:
        """The background's score in label maps."""
        return DEFAULT_BG_THRESHOLD if self.bg_threshold is None else self.bg_threshold

    def check_label_maps_asked(self, where: str = "`save_segmentation`") -> None:
        """bg_threshold and refine shape label maps: refused when no label maps are made."""
        if self.bg_threshold is not None or self.refine != "none":
            raise UsageError(f"`bg_threshold` and `refine` shape the label maps: add {where}")


@dataclass(frozen=True)
class RunOptions:
    """The run: where it writes, how many images a step takes, and how it goes on after a failure."""

    out: Path | None = option(Path(DEFAULT_OUT))  # the output folder (evaluate: None writes nothing)
    batch_size: int = option(8)  # images per compiled step
    max_pixels: int | None = option()  # decode images of up to this many pixels (None: Pillow's limit)
    fail_fast: bool = option(False)
    resume: bool = option(False)  # skip images an earlier run completed with the same fingerprint
    shard: tuple[int, int] | None = option()  # (k, n) or "K/N": this process's share of the images
    report: bool = option(False)  # also write OUT/index.html
    debug: bool = option(False, cli=False)  # re-raise a bug instead of failing the image (the CLI's --debug)
    picture_budget: int = option(512 * 2**20, cli=False)  # bytes of decoded pictures held at once

    def __post_init__(self):
        if self.out is not None:
            if not isinstance(self.out, (str, os.PathLike)):
                raise UsageError(f"`out` takes a folder's path, not a {type(self.out).__name__}")
            if not str(os.fspath(self.out)).strip() or "\0" in str(os.fspath(self.out)):
                raise UsageError(f"`out={os.fspath(self.out)!r}` names no folder: give the output folder's path")
            _set(self, "out", Path(self.out))
        _number(self, "batch_size", 1, whole=True)
        _number(self, "max_pixels", 1, whole=True, optional=True)
        _number(self, "picture_budget", 1, whole=True)
        _flags(self)
        _set(self, "shard", parse_shard(self.shard))

    @property
    def out_dir(self) -> Path:
        return Path(DEFAULT_OUT) if self.out is None else self.out


@dataclass(frozen=True)
class RunHooks:
    """What a caller hears during a run: on_start(total, or None for a shard) once the images are found,
    on_progress(count) as images are done, on_failure(image, reason) per failed image; setting `stop`
    (a threading.Event) ends the run after the current batch."""

    on_start: Callable[[int | None], None] | None = option(cli=False)
    on_progress: Callable[[int], None] | None = option(cli=False)
    on_failure: Callable[[str, str], None] | None = option(cli=False)
    stop: object = option(cli=False)

    def __post_init__(self):
        for name in ("on_start", "on_progress", "on_failure"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise UsageError(f"`{name}` takes a function, not a {type(getattr(self, name)).__name__}")
        if self.stop is not None and not hasattr(self.stop, "is_set"):
            raise UsageError("`stop` takes a threading.Event")


@dataclass(frozen=True)
class ScoringOptions:
    """`evaluate`: what the maps are scored against, how, and the gates a CI run must pass."""

    truth: Path | None = option()  # boxes: a CSV, JSON or a folder of Pascal VOC XML
    truth_masks: Path | None = option()  # or pixel masks: a folder of VOC SegmentationClass PNGs
    mask_labels: Path | None = option()  # masks: VALUE,CLASS lines
    steps: int = option(50)  # deletion/insertion steps; 0 skips them
    road: bool = option(False)  # ROAD's MoRF, LeRF and combined (18 imputed copies per row)
    random_logit: bool = option(False)  # Quantus's random logit test (one more explanation per image)
    pointing_tolerance: float = option(0.0)  # pixels a peak may lie outside a box and still hit
    explain_class: str = option("predicted")  # EXPLAIN_CLASSES: whose map is scored
    fail_under: tuple[str, ...] = option(())  # METRIC=VALUE gates on higher-is-better metrics
    fail_over: tuple[str, ...] = option(())  # METRIC=VALUE gates on lower-is-better metrics

    def __post_init__(self):
        for name in ("truth", "truth_masks", "mask_labels"):
            _text(self, name)
        _number(self, "steps", 0, whole=True)
        _number(self, "pointing_tolerance", 0)
        _choice(self, "explain_class", EXPLAIN_CLASSES)
        _set(self, "fail_under", _names(self.fail_under, "fail_under"))
        _set(self, "fail_over", _names(self.fail_over, "fail_over"))


@dataclass(frozen=True)
class AuditOptions:
    """`audit`: how images are grouped, how their maps are clustered (SpRAy), and the flag rule
    (camcli.audit.rule.FlagRule, whose thresholds are set on generated scenes: `make bench-audit`)."""

    by: str = option("predicted")  # AUDIT_GROUPINGS: the top-1 class, or `truth_labels`
    truth_labels: Path | None = option()  # a CSV with image and label columns
    method: str | None = option(cli=False)  # the audited method (default: the first of `methods`; CLI: --method)
    neighbours: int = option(10)  # k of the k-nearest-neighbour affinity graph
    seed: int = option(0)  # of the clustering and the t-SNE picture
    max_share: float = option(0.3)  # flagged: at most this share of its class (small)
    min_tightness: float = option(0.85)  # flagged: its maps' mean cosine similarity to their mean (tight)
    min_away: float = option(0.25)  # without pictures: its border share exceeds the rest of the class's by this much
    max_spread: float = option(0.0625)  # a pile-up: maps whose peaks lie this close (a share of the side: 2/32)
    min_pattern: float = option(0.8)  # a picture carries a mark: its pixels there are this alike to the others'
    min_distinct: float = option(0.8)  # flagged: the carriers' share of them and the pictures that come near the mark
    min_reliance: float = option(0.25)  # with the model: a pasted mark gives the class this much more often
    min_reliance_not_distinct: float = option(0.4)  # with the model: the same, for a mark below min_distinct

    def __post_init__(self):
        _choice(self, "by", AUDIT_GROUPINGS)
        _text(self, "truth_labels")
        if self.by == "truth" and self.truth_labels is None:
            raise UsageError("`by=truth` needs the images' labels: give `truth_labels`, a CSV with image,label "
                             "columns")
        if self.method is not None:
            if not isinstance(self.method, str):
                raise UsageError(f"`method` takes one method's name, not {type(self.method).__name__} "
                                 f"{self.method!r:.40}")
            _set(self, "method", self.method.lower())
        _number(self, "neighbours", 2, whole=True)
        _number(self, "seed", whole=True)
        for name in ("max_share", "min_tightness", "min_away", "max_spread", "min_pattern", "min_distinct",
                     "min_reliance", "min_reliance_not_distinct"):
            _number(self, name, 0, 1)


@dataclass(frozen=True)
class SanityOptions:
    """The model-parameter randomisation test (Adebayo et al. 2018). The command line spells its
    fields `--sanity-images`...; its gate is `--fail-under sanity=VALUE`."""

    images: int = option(16)  # the first N images are explained at every depth
    depths: object = option(cli=False)  # checkpoints (default 6), or the numbers of layers to randomise
    seed: int = option(0, cli=False)
    threshold: float = option(0.5, cli=False)  # the score at which a method passes
    fail_under: object = option(cli=False)  # bounds on every method's score: numbers or "sanity=VALUE"

    cli_prefix = "sanity_"

    def __post_init__(self):
        _number(self, "images", 1, whole=True)
        _number(self, "seed", whole=True)
        _number(self, "threshold", 0, 1)
        depths = self.depths
        whole = [isinstance(d, int) and not isinstance(d, bool) for d in
                 (depths if isinstance(depths, (list, tuple)) else [depths])]
        if depths is not None and not all(whole):
            raise UsageError(f"`depths` takes a number of checkpoints or a list of layer counts (whole numbers), "
                             f"not {depths!r:.40}")


@dataclass(frozen=True)
class ProbeOptions:
    """camcli.keras.ExplainCallback: when and how its probe set is explained, logged and judged."""

    every: int = option(1)  # explain after every N-th epoch (and the last)
    at_start: bool = option(True)  # and once before training, as a baseline (logged, never judged)
    log_dir: str | None = option()  # TensorBoard folder (None: log nothing)
    max_pictures: int = option(8)  # overlays logged per method
    pointing_tolerance: float = option(0.0)
    warn_below: Mapping[str, float] | None = option()  # {metric or method/metric: bound}
    stop_below: Mapping[str, float] | None = option()  # the same, and training stops
    batch_size: int = option(32)  # probe images per step
    verbose: bool = option(True)  # a line per probe run

    def __post_init__(self):
        _number(self, "every", 1, whole=True)
        _number(self, "max_pictures", 1, whole=True)
        _number(self, "batch_size", 1, whole=True)
        _number(self, "pointing_tolerance", 0)
        _flags(self)
        _text(self, "log_dir")


GROUPS = (ModelOptions, MapRequest, FileOptions, RunOptions, RunHooks, ScoringOptions, AuditOptions, SanityOptions,
          ProbeOptions)


# --- routing keywords to groups ---------------------------------------------------------------------------


def field_names(group: type) -> tuple[str, ...]:
    return tuple(item.name for item in fields(group))


def field_default(group: type, name: str):
    item = next(item for item in fields(group) if item.name == name)
    return item.default


def gather(where: str, groups: Mapping[str, tuple[type, object]], keywords: Mapping[str, object],
           aliases: Mapping[str, str] | None = None) -> dict[str, object]:
    """The groups a call takes, by parameter name: `groups` maps each to (its class, the instance given
    or None); each keyword goes to the group with a field of its name (`aliases` may rename it first)
    and replaces that field. An unknown keyword is a UsageError naming the closest field."""
    owner = {name: key for key, (group, _) in groups.items() for name in field_names(group)}
    routed: dict[str, dict] = {key: {} for key in groups}
    for name, value in keywords.items():
        target = (aliases or {}).get(name, name)
        if target not in owner:
            raise UsageError(f"{where} takes no option {name!r}{_hint(where, name, owner, aliases)}")
        routed[owner[target]][target] = value
    made = {}
    for key, (group, given) in groups.items():
        if given is not None and not isinstance(given, group):
            raise UsageError(f"`{key}` takes a camcli.options.{group.__name__}, not a {type(given).__name__}")
        made[key] = dataclasses.replace(given, **routed[key]) if given is not None else group(**routed[key])
    return made


def _hint(where: str, name: str, owner: Mapping[str, str], aliases: Mapping[str, str] | None) -> str:
    """What to say of a keyword no group of the call has: the groups that do have it, else the closest field."""
    elsewhere = [group.__name__ for group in GROUPS if name in field_names(group)]
    if elsewhere:
        return f": it is a field of {' and '.join(elsewhere)}, which {where} does not take"
    close = difflib.get_close_matches(name, [*owner, *(aliases or {})], n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; it takes {', '.join(sorted(owner))}"


def fingerprint_fields(group) -> dict:
    """The fields of a group that shape the outputs, for a record's fingerprint: every field unless
    marked otherwise, so that a new option enters the fingerprint without anyone adding it."""
    return {item.name: _plain(getattr(group, item.name)) for item in fields(group)
            if item.metadata.get("fingerprint", True)}


def _plain(value):
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value
