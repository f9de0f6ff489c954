"""The model-parameter randomisation test: do a method's maps depend on what the model learned?

Adebayo et al. 2018 ("Sanity Checks for Saliency Maps", NeurIPS) point out that a map can look
convincing and still say nothing about the model: guided backpropagation, for one, draws nearly the
same edges when the network's weights are random, because it mostly reconstructs the image. Their
check re-initialises the trained weights layer by layer from the output down (camcli.audit.randomise)
and measures how similar each method's maps stay to the trained model's. A method that explains the
model should lose the resemblance quickly.

For each image, the class explained is the trained model's top-1 class, at every depth (as in the
paper). The maps compared, per method:

    layer methods (gradcam, gradcam++, scorecam, ...)  camcli's heatmap at the layer's resolution: the
        map after its ReLU, scaled to [0, 1]. Spearman's rank correlation ignores the scaling; the
        ReLU is part of the method. These maps have no sign, so spearman equals spearman_abs.
    guidedbackprop  the guided input gradient g (H, W, 3) at the input's size, not the picture camcli
        saves (g centred and clipped for display) nor its heatmap (max |g| over the channels).
    guidedgradcam   g times the upsampled Grad-CAM map (camcli's heatmap for it is Grad-CAM's own).

As in the paper's code, an RGB map becomes a 2-D one in two ways: its colour channels summed (the
signed map, for `spearman`) and their absolute values summed (for `spearman_abs` and `ssim`).
Similarities per depth, each the mean over the images: `spearman` (rank correlation of the signed
maps), `spearman_abs` (of the absolute maps) and `ssim` (structural similarity of the absolute maps
scaled to [0, 1] by their maximum, data_range 1). A constant map (all zero, e.g. a Grad-CAM with no
positive evidence once the weights are random) has no ranking: its correlation is 1 when the two maps
are equal and 0 otherwise, and such comparisons are counted in `constant_maps`. NaN or infinite
values (a randomised network that overflowed) count as 0. Nothing is divided by zero.

Each method's `score` is 1 - the mean of spearman_abs over the randomised depths (every depth but the
trained model's), clipped to [0, 1]: higher means the map depends more on the weights. The mean over
the cascade, not the last depth alone, is what the paper's figures show: guided backprop's maps keep
their ranking while the top layers, then most of the network, are random (on MobileNetV2 0.84-0.995
until only the first layers are left), and only drop once the first layers are random too (0.36).
`passed` is score >= threshold (default 0.5: across the cascade the randomised models' maps keep less
than half the rank agreement). `--fail-under sanity=VALUE` fails a run when
any method's score is below VALUE. The report goes to OUT/sanity.json; `format_sanity_table` prints it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from camcli import __version__
from camcli.errors import ImageLoadError, UsageError
from camcli.evaluate.evaluation import Gate, GateResult, Metric, check_gates, parse_gate
from camcli.maps.similarity import finite_array as _finite_array
from camcli.maps.similarity import structural_similarity
from camcli.options import RunOptions, SanityOptions, field_default
from camcli.runs.decode import decode_image
from camcli.runs.files import save_json
from camcli.runs.layout import Layout, check_replaceable

DEFAULT_THRESHOLD = field_default(SanityOptions, "threshold")
DEFAULT_CHECKPOINTS = 6  # depths after "none", spread from the top layer to all of them (randomise.py)
SANITY = Metric("sanity", True, "1 - rank correlation of |map| with the trained model's once every layer is random")
SANITY_METRICS = {SANITY.name: SANITY}
NOTES = {
    "maps": "layer methods: the heatmap at the layer's resolution (after ReLU, scaled to [0, 1]); guidedbackprop: "
            "the guided input gradient; guidedgradcam: that gradient times the upsampled Grad-CAM map; RGB maps "
            "summed over the colour channels (spearman) and their absolute values summed (spearman_abs, ssim)",
    "class": "each image's top-1 class on the trained model, at every depth",
    "similarity": "mean over the images; ssim on |map| scaled to [0, 1] (data_range 1)",
    "constant_maps": "comparisons in which a map was constant: correlation 1 if the maps are equal, else 0",
    "score": "1 - the mean of spearman_abs over the randomised depths (all but depth 0), clipped to [0, 1]",
    "randomisation": "top-down, cumulative, each weight from its layer's own initializer (seeded); "
                     "BatchNormalization's moving statistics kept",
}


def require_packages_for_sanity() -> None:
    """UsageError, in one line, when SciPy or scikit-image is missing."""
    from camcli.maps.similarity import require_packages

    require_packages("the sanity check")


# --- similarity of two maps (numpy, SciPy, scikit-image) ---------------------------------------------


class Similarity(NamedTuple):
    spearman: float
    spearman_abs: float
    ssim: float
    constant: bool  # a map was constant, so the rank correlations are the convention's 1 or 0


def _is_constant(values: np.ndarray) -> bool:
    return values.size == 0 or bool(values.min() == values.max())


def rank_correlation(a, b) -> float:
    """Spearman's rank correlation of two maps of one shape; for a constant map, 1 when the maps are
    equal and 0 otherwise (see the module's docstring)."""
    from scipy.stats import spearmanr

    a, b = _finite_array(a).ravel(), _finite_array(b).ravel()
    if np.array_equal(a, b):
        return 1.0
    if _is_constant(a) or _is_constant(b):
        return 0.0
    rho = float(spearmanr(a, b).statistic)
    return float(np.clip(rho, -1.0, 1.0)) if math.isfinite(rho) else 0.0


def signed_and_magnitude(values) -> tuple[np.ndarray, np.ndarray]:
    """A (h, w) or (h, w, channels) map as two (h, w) maps: its channels summed, and their absolute
    values summed (the same map and its absolute value for a 2-D one)."""
    values = _finite_array(values)
    values = values if values.ndim == 3 else values[..., np.newaxis]
    return values.sum(axis=-1), np.abs(values).sum(axis=-1)


def compare_maps(original, other) -> Similarity:
    """How similar `other` is to `original`, two (h, w) or (h, w, channels) maps: the rank correlation
    of the signed maps and of the absolute ones, and the SSIM of the absolute ones."""
    (signed, magnitude), (other_signed, other_magnitude) = signed_and_magnitude(original), signed_and_magnitude(other)
    constant = any(_is_constant(m) for m in (signed, magnitude, other_signed, other_magnitude))
    return Similarity(rank_correlation(signed, other_signed), rank_correlation(magnitude, other_magnitude),
                      structural_similarity(magnitude, other_magnitude), constant)


# --- the maps compared ---------------------------------------------------------------------------------


def _explainers(built) -> list:
    return list(getattr(built, "explainers", [built]))


def batch_maps(built, batch: np.ndarray, class_ids: np.ndarray | None) -> tuple[list[list[np.ndarray]], np.ndarray]:
    """([method][image] compared maps, (B,) classes explained) of one preprocessed batch, through one
    step shared by the methods. class_ids: (B,) classes to explain; None: each image's top-1 class."""
    from camcli.explain.step import BatchRun

    explainers = _explainers(built)
    forced = None if class_ids is None else np.asarray(class_ids, dtype=np.int32)[:, np.newaxis]
    run = BatchRun(built.step, batch, explainers[0].forced_ids(batch, forced))
    maps = []
    for explainer in explainers:
        results = explainer.explain_run(run)
        guided = run.guided_gradients()[:, 0] if explainer.method.guided else [None] * len(results)
        # Each method says which of its maps the check compares (its `comparable_map`; see the module's docstring).
        maps.append([explainer.method.comparable_map(result.maps[0].heatmap, gradient, explainer.loaded.input_size)
                     for result, gradient in zip(results, guided)])
    return maps, np.array(run.outputs.class_ids[:, 0])


def all_maps(built, batches: Sequence[np.ndarray], class_ids: np.ndarray | None):
    """batch_maps over every batch: ([method][image] maps, (N,) classes)."""
    maps, classes, start = None, [], 0
    for batch in batches:
        ids = None if class_ids is None else class_ids[start:start + len(batch)]
        new_maps, new_classes = batch_maps(built, batch, ids)
        maps = new_maps if maps is None else [done + new for done, new in zip(maps, new_maps)]
        classes.append(new_classes)
        start += len(batch)
    return maps, np.concatenate(classes)


# --- the report ------------------------------------------------------------------------------------------


@dataclass
class MethodSanity:
    """One method's similarities, one value per depth (index 0: the trained model against itself)."""

    layer: str
    spearman: list[float] = field(default_factory=list)
    spearman_abs: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    constant_maps: list[int] = field(default_factory=list)

    def add_depth(self, similarities: Sequence[Similarity]) -> None:
        """The mean of one depth's similarities over the images."""
        self.spearman.append(float(np.mean([s.spearman for s in similarities])))
        self.spearman_abs.append(float(np.mean([s.spearman_abs for s in similarities])))
        self.ssim.append(float(np.mean([s.ssim for s in similarities])))
        self.constant_maps.append(sum(s.constant for s in similarities))

    @property
    def score(self) -> float:
        randomised = self.spearman_abs[1:] or self.spearman_abs
        return float(np.clip(1.0 - np.mean(randomised), 0.0, 1.0))

    def record(self, threshold: float) -> dict:
        rounded = {name: [round(v, 6) for v in getattr(self, name)] for name in ("spearman", "spearman_abs", "ssim")}
        return {**rounded, "score": round(self.score, 6), "passed": self.score >= threshold, "layer": self.layer,
                "constant_maps": list(self.constant_maps)}


@dataclass
class SanityReport:
    model: str
    layer: str
    images: list[str]
    seed: int
    threshold: float
    depths: list[str]  # "none", then the deepest layer randomised at each depth
    randomised: list[int]  # weighted layers randomised at each depth
    weighted_layers: int
    methods: dict[str, MethodSanity]
    seconds: float = 0.0
    gates: list[GateResult] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)  # {"image", "error"}: images that could not be read

    @property
    def failed_gates(self) -> list[GateResult]:
        return [result for result in self.gates if not result.passed]

    def record(self) -> dict:
        """What sanity.json holds (see the module's docstring for the numbers)."""
        return {
            "camcli_version": __version__, "kind": "sanity", "model": self.model, "layer": self.layer,
            "class": "top1", "images": list(self.images), "seed": self.seed, "threshold": self.threshold,
            "depths": list(self.depths),
            "methods": {name: method.record(self.threshold) for name, method in self.methods.items()},
            "seconds": round(self.seconds, 1), "randomised": list(self.randomised),
            "weighted_layers": self.weighted_layers, "gates": [result.record() for result in self.gates],
            "failures": list(self.failures), "notes": dict(NOTES),
        }

    def closing_lines(self, out_dir: Path | None = None) -> list[str]:
        """What a run ends by saying: unreadable images, failed gates, and what was done."""
        lines = [f"failed: {item['image']}: {item['error']}" for item in self.failures]
        lines += [result.message() for result in self.failed_gates]
        where = f" -> {Layout(out_dir).sanity_json}" if out_dir is not None else ""
        lines.append(f"sanity check: {len(self.images)} images, {len(self.depths) - 1} randomised depths of "
                     f"{self.weighted_layers} weighted layers in {self.seconds:.1f} s{where}")
        return lines


# --- gates, images and files -----------------------------------------------------------------------------


def is_sanity_gate(text: str) -> bool:
    return str(text).partition("=")[0].strip().lower() == SANITY.name


def sanity_gates(fail_under: float | str | Iterable[float | str] | None) -> list[Gate]:
    """The `fail_under` bounds on the score, each a number or "sanity=VALUE" in [0, 1]."""
    if fail_under is None:
        return []
    bounds = [fail_under] if isinstance(fail_under, (int, float, str)) else list(fail_under)
    return [parse_gate(bound if isinstance(bound, str) else f"{SANITY.name}={bound:g}", "under", SANITY_METRICS)
            for bound in bounds]


def split_sanity_gates(fail_under: Sequence[str], fail_over: Sequence[str] = ()) -> tuple[list[Gate], list[str]]:
    """(the `sanity=VALUE` gates of `fail_under`, parsed; its other gates as given). A sanity bound
    in `fail_over` is a UsageError: a higher score is better."""
    for text in fail_over:
        if is_sanity_gate(text):
            parse_gate(text, "over", SANITY_METRICS)  # raises, naming --fail-under
    return (sanity_gates([t for t in fail_under if is_sanity_gate(t)]),
            [t for t in fail_under if not is_sanity_gate(t)])


def decode_pictures(tasks, count: int, model_size: tuple[int, int]) -> tuple[list[tuple[str, np.ndarray]], list[dict]]:
    """The first `count` images of `tasks` that can be read, as (display, RGB uint8 at about the
    model's input size); the unreadable ones met on the way as {"image", "error"}."""
    pictures, failures = [], []
    for task in tasks:
        if len(pictures) == count:
            break
        try:
            decoded = decode_image(task.source, model_size=model_size, outputs=False)
        except ImageLoadError as error:
            failures.append({"image": task.display, "error": error.reason})
            continue
        pictures.append((task.display, np.asarray(decoded.model_view)))
    return pictures, failures


def check_model(loaded):
    """`loaded` (a LoadedModel), or a UsageError for a model the check refuses: an object detector, whose
    detections the randomised layers change."""
    from camcli.explain.detection import SANITY_REFUSAL, refuse_detector

    return refuse_detector(loaded, SANITY_REFUSAL)


def check_sanity_file(out_dir: Path) -> None:
    """UsageError before any work when OUT/sanity.json exists and camcli did not write it."""
    check_replaceable(Layout(out_dir).sanity_json)


def write_sanity(report: SanityReport, out_dir: Path) -> Path:
    """OUT/sanity.json, written atomically."""
    layout = Layout(out_dir)
    layout.out_dir.mkdir(parents=True, exist_ok=True)
    save_json(layout.sanity_json, report.record())
    return layout.sanity_json


# --- the run ---------------------------------------------------------------------------------------------


class _NoRetracingWarning(logging.Filter):
    """TensorFlow warns when several tf.functions of one Python function are traced. Each depth builds
    its explainer, and so its compiled steps, anew on purpose: there the warning says nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _without_retracing_warnings():
    logger, quiet = logging.getLogger("tensorflow"), _NoRetracingWarning()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def run_sanity(loaded, pictures: Sequence[tuple[str, np.ndarray]], explainer_for: Callable, *,
               depths: int | Sequence[int] | None = None, seed: int = field_default(SanityOptions, "seed"),
               threshold: float = DEFAULT_THRESHOLD,
               gates: Sequence[Gate] = (), batch_size: int = field_default(RunOptions, "batch_size"),
               failures: Sequence[dict] = ()) -> SanityReport:
    """The cascading randomisation test of every method `explainer_for(loaded)` builds (an Explainer,
    or a MethodSet for several methods) on `pictures`, [(display, RGB)].

    explainer_for is called once on the trained model and once per depth on its randomised copy (a
    LoadedModel like `loaded`, with the copy as its model); `loaded.model` itself is never changed.
    depths: see randomise.checkpoint_depths (None: DEFAULT_CHECKPOINTS of them).
    """
    from camcli.audit.randomise import CascadingRandomisation, checkpoint_depths

    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"`threshold={threshold}` must be in [0, 1]")
    if loaded.extra_input_names:
        raise UsageError(f"the sanity check explains one-input models, and {loaded.name} also takes "
                         f"{', '.join(loaded.extra_input_names)}")
    if not pictures:
        raise UsageError("the sanity check has no image to explain")
    if batch_size < 1:
        raise UsageError(f"`batch_size={batch_size}` must be at least 1")
    started = time.perf_counter()
    cascade = CascadingRandomisation(loaded.model, seed)
    counts = checkpoint_depths(len(cascade.layers), depths, DEFAULT_CHECKPOINTS)
    trained = explainer_for(loaded)
    names = [explainer.method.name for explainer in _explainers(trained)]
    rgbs = [rgb for _, rgb in pictures]
    batches = [trained.preprocess(rgbs[i:i + batch_size]) for i in range(0, len(rgbs), batch_size)]
    reference, classes = all_maps(trained, batches, None)
    methods = {name: MethodSanity(trained.layer) for name in names}
    for name, maps in zip(names, reference):
        methods[name].add_depth([compare_maps(m, m) for m in maps])
    with _without_retracing_warnings():
        for count in counts[1:]:
            cascade.randomise_top(count)
            randomised = dataclasses.replace(loaded, model=cascade.copy, source_model=cascade.copy, weights_path=None)
            maps, _ = all_maps(explainer_for(randomised), batches, classes)
            for name, originals, others in zip(names, reference, maps):
                methods[name].add_depth([compare_maps(o, r) for o, r in zip(originals, others)])
    scores = {name: {"metrics": {SANITY.name: method.score}} for name, method in methods.items()}
    return SanityReport(loaded.name, trained.layer, [display for display, _ in pictures], int(seed), float(threshold),
                        [cascade.label(count) for count in counts], counts, len(cascade.layers), methods,
                        time.perf_counter() - started, check_gates(scores, gates), list(failures))


# --- the printed table -----------------------------------------------------------------------------------

_TABLE_BLOCKS = (("spearman_abs", "rank correlation of |map| with the trained model's (1: unchanged)"),
           ("spearman", "rank correlation of the signed maps"),
           ("ssim", "structural similarity of |map| scaled to [0, 1]"))


def format_sanity_table(report: SanityReport) -> str:
    """Depths down, methods across: spearman_abs, spearman and ssim, then each method's score and verdict."""
    names = list(report.methods)
    width = max(len(label) for label in [*report.depths, "constant maps", "depth"])
    columns = [max(7, len(name)) for name in names]

    def row(label: str, values: Sequence[str], middle: str = "") -> str:
        return f"{label:<{width}}  {middle:>6}  " + "  ".join(f"{v:>{w}}" for v, w in zip(values, columns))

    lines = [f"sanity check (Adebayo et al. 2018): {report.model} at {report.layer}, {len(report.images)} images, "
             f"top-1 class of the trained model, seed {report.seed}"]
    for metric, meaning in _TABLE_BLOCKS:
        lines += ["", f"{metric}: {meaning}", row("depth", names, "random")]
        for d, label in enumerate(report.depths):
            values = [f"{getattr(report.methods[n], metric)[d]:.3f}" for n in names]
            lines.append(row(label, values, str(report.randomised[d])))
    lines += ["", f"score = 1 - the mean spearman_abs over the randomised depths ({report.weighted_layers} weighted "
              f"layers; higher: the map depends more on the weights); passed: score >= {report.threshold:g}",
              row("score", [f"{report.methods[n].score:.3f}" for n in names]),
              row("passed", ["yes" if report.methods[n].score >= report.threshold else "NO" for n in names])]
    constant = [sum(report.methods[n].constant_maps) for n in names]
    if any(constant):
        lines.append(row("constant maps", [str(c) for c in constant]))
    return "\n".join(lines)
