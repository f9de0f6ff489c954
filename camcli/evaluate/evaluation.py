"""`camcli evaluate`: score explanations against ground-truth boxes, per method, and gate a build on them.

For every image with truth and every method, one map is scored per group of boxes (the boxes of one
class). Which class's map, `--explain-class` decides:

    predicted (default)  the image's top-1 class: what the model based its decision on, as in the CAM
                         paper's localization protocol (Zhou et al. 2016, section 3). A model that
                         answers from a watermark or a corner tag has its map there, not on the
                         object, so this is what a CI gate on attention wants.
    truth                the boxes' label when the model knows it, else the top-1 class: the
                         "ground truth known" protocol of the pointing game (Zhang et al. 2016).

Each (image, method, class of boxes) gives one row of metrics, measured on the map upsampled to the original
image (localization) or to the model's input (faithfulness):

    pointing             the map's peak lies in one of the boxes (pointing game)
    energy               share of the map's mass inside the class's boxes (energy-based pointing game;
                         an empty map counts as 0)
    iou                  IoU of the map's box (CAM paper: largest component above --box-threshold)
                         with the best-matching truth box (0 without a box)
    corloc               iou >= 0.5
    loc_error            ILSVRC localization error: the top-1 class is not the box's class, or iou < 0.5;
                         only for rows whose truth label the model knows
    deletion/insertion   RISE AUCs over --steps steps (lower/higher is better); skipped with --steps 0
    roadmorf/roadlerf    ROAD (Rong et al. 2022, pytorch-grad-cam's ROAD*Average): the class score after
                         noisy linear imputation of the most (least) relevant 10%, ..., 90% of the
                         pixels, minus the image's, averaged (lower/higher is better); with --road
    roadcombined         (roadlerf - roadmorf) / 2, pytorch-grad-cam's ROADCombined (higher is better)
    average_drop         Grad-CAM++: max(0, Y - O) / Y, where O scores the image times its map
    confidence_increase  Grad-CAM++: O > Y
    confidence_change    O - Y (pytorch-grad-cam's CamMultImageConfidenceChange; higher is better)
    relevance_mass       Quantus's relevance mass accuracy (Arras et al. 2022): the share of the map's
                         mass inside the boxes; on camcli's non-negative maps, energy's value, except
                         that an empty map has none (Quantus divides by zero)
    relevance_rank       Quantus's relevance rank accuracy: the share of the K most relevant pixels
                         inside the boxes, K their pixel count
    random_logit         Quantus's random logit test (Sixt et al. 2020): SSIM of the map with the map of
                         a random other class (drawn as Quantus does, seed 42); lower is better; with
                         --random-logit (one more explanation per image)

Each method's figure is the mean over its rows (as a fraction; the papers print percentages).
Gates: `--fail-under M=V` fails when a higher-is-better metric is below V, `--fail-over M=V` when a
lower-is-better one (loc_error, deletion, average_drop) is above V; a metric with no value fails.

Outputs: `evaluation.json` (options, per-method metrics, gates, per-row records) and
`evaluation.csv` (one line per row), written atomically; `format_box_table` gives the stdout table.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from camcli import __version__
from camcli.errors import CamcliError, ImageLoadError, UsageError
from camcli.evaluate.metrics import (
    DEFAULT_BLUR_SIGMA,
    ROAD_NOISE,
    ROAD_PERCENTILES,
    average_drop_increase,
    best_iou,
    deletion_insertion_curves,
    energy_in_boxes,
    multiply_by_map,
    pointing_hit,
    relevance_rank,
    road_scores,
)
from camcli.evaluate.truth import Truth, TruthBox, match_images
from camcli.explain.classes import resolve_label, same_label_classes
from camcli.explain.explainer import distinct_method_names
from camcli.maps.boxes import box_from_map
from camcli.maps.overlay import upsample
from camcli.options import EXPLAIN_CLASSES, MASKED_BATCH, FileOptions, RunOptions, ScoringOptions, field_default
from camcli.runs.decode import decode_image
from camcli.runs.discovery import ImageTask, SkippedInput
from camcli.runs.files import save_json, write_bytes_atomic
from camcli.runs.layout import Layout, check_replaceable, is_camcli_csv

CORLOC_IOU = 0.5  # a box "localizes" the object at IoU >= 0.5 (PASCAL VOC's criterion, used by CorLoc and ILSVRC)
EXPLAIN_PREDICTED, EXPLAIN_TRUTH = EXPLAIN_CLASSES  # whose map is scored (see the module's docstring)


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    summary: str
    lowest: float = 0.0  # the least value it takes (the most is 1)


METRICS: dict[str, Metric] = {metric.name: metric for metric in (
    Metric("pointing", True, "share of maps whose peak lies in a truth box (pointing game)"),
    Metric("energy", True, "share of the map's mass inside the truth boxes (energy-based pointing game)"),
    Metric("iou", True, "IoU of the map's box with the best truth box"),
    Metric("corloc", True, "share of maps whose box has IoU >= 0.5 (CorLoc)"),
    Metric("loc_error", False, "ILSVRC localization error: top-1 class wrong or IoU < 0.5"),
    Metric("deletion", False, "deletion AUC (RISE): class score as the most salient pixels are removed"),
    Metric("insertion", True, "insertion AUC (RISE): class score as they return into a blurred copy"),
    Metric("roadmorf", False, "ROAD, most relevant first: score change as they are imputed away", -1.0),
    Metric("roadlerf", True, "ROAD, least relevant first: score change as they are imputed away", -1.0),
    Metric("roadcombined", True, "ROAD combined (pytorch-grad-cam): (roadlerf - roadmorf) / 2", -1.0),
    Metric("average_drop", False, "Average Drop (Grad-CAM++): score lost on the image times its map"),
    Metric("confidence_increase", True, "Increase in Confidence (Grad-CAM++): share whose score rises"),
    Metric("confidence_change", True, "score of the image times its map minus the image's (pytorch-grad-cam)",
           -1.0),
    Metric("relevance_mass", True, "share of the map's mass inside the truth boxes (Quantus, Arras et al. 2022)"),
    Metric("relevance_rank", True, "share of the K top pixels inside the boxes, K their size (Quantus)"),
    Metric("random_logit", False, "SSIM of the map with a random other class's map (Quantus, Sixt et al.)", -1.0),
)}
CURVE_METRICS = ("deletion", "insertion")
ROAD_METRICS = ("roadmorf", "roadlerf", "roadcombined")
RANDOM_LOGIT_SEED = 42  # Quantus's RandomLogit: np.random.seed(42) before each draw of the other class


def random_other_class(class_index: int, classes: int, seed: int = RANDOM_LOGIT_SEED) -> int | None:
    """Quantus's RandomLogit draw: a class other than `class_index`, chosen by
    np.random.RandomState(seed).choice over the others in order (None for a one-class model)."""
    others = [other for other in range(classes) if other != class_index]
    return int(np.random.RandomState(seed).choice(others)) if others else None


# --- gates ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    """`--fail-under METRIC=VALUE` (kind "under") or `--fail-over METRIC=VALUE` (kind "over")."""

    metric: str
    bound: float
    kind: str
    text: str  # METRIC=VALUE as the user wrote the value

    @property
    def option(self) -> str:
        return f"--fail-{self.kind}"


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    method: str
    value: float | None

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.gate.bound if self.gate.kind == "under" else self.value <= self.gate.bound

    def message(self) -> str:
        gate = self.gate
        if self.value is None:
            return f"{self.method} {gate.metric} has no value (no image was scored) for {gate.option} {gate.text}"
        relation = "below" if gate.kind == "under" else "above"
        if self.passed:
            relation = "not " + relation
        return f"{self.method} {gate.metric} {self.value:.4g} is {relation} {gate.option} {gate.text}"

    def record(self) -> dict:
        return {"option": self.gate.option, "metric": self.gate.metric, "bound": self.gate.bound,
                "method": self.method, "value": self.value, "passed": self.passed}


def parse_gate(text: str, kind: str = "under", metrics: Mapping[str, Metric] = METRICS) -> Gate:
    """Parse a `--fail-under` ("under") or `--fail-over` ("over") value, METRIC=VALUE with VALUE in [0, 1]
    and METRIC one of `metrics` (default: evaluate's; the sanity check has its own)."""
    option = f"--fail-{kind}"
    name, sep, value = str(text).partition("=")
    if not sep:
        raise UsageError(f"{option} {text!r} is not METRIC=VALUE, e.g. {option} pointing=0.8")
    metric = name.strip().lower().replace("-", "_")
    if metric not in metrics:
        raise UsageError(f"{option} {text}: unknown metric {name.strip()!r}; choose one of {', '.join(metrics)}")
    try:
        bound = float(value)
    except ValueError:
        raise UsageError(f"{option} {text}: {value.strip()!r} is not a number; write e.g. {metric}=0.8") from None
    lowest = metrics[metric].lowest
    if not lowest <= bound <= 1.0:
        if lowest < 0.0:
            raise UsageError(f"{option} {text}: {metric} lies in [{lowest:g}, 1]")
        raise UsageError(f"{option} {text}: metrics are fractions in [0, 1]; for 80% write {metric}=0.8")
    higher = metrics[metric].higher_is_better
    if higher != (kind == "under"):
        better, other = ("higher", "under") if higher else ("lower", "over")
        raise UsageError(f"{option} {text}: {better} is better for {metric}, so bound it with "
                         f"--fail-{other} {metric}=VALUE")
    return Gate(metric, bound, kind, f"{metric}={value.strip()}")


def check_gates(methods: dict[str, dict], gates: Iterable[Gate]) -> list[GateResult]:
    """Every gate against every method's metrics, in gate order then method order."""
    return [GateResult(gate, name, summary["metrics"].get(gate.metric)) for gate in gates
            for name, summary in methods.items()]


# --- classes to explain ---------------------------------------------------------------------------


@dataclass
class ClassBoxes:
    """The boxes scored against one class's map. class_index None: the image's top-1 class."""

    class_index: int | None
    truth_label: str | None
    boxes: list[tuple[float, float, float, float]]


def boxes_by_class(boxes: Sequence[TruthBox], labels: Sequence[str]) -> list[ClassBoxes]:
    """Group an image's boxes by the class they are scored against, in order of first appearance."""
    groups: dict[tuple, ClassBoxes] = {}
    for box in boxes:
        index = resolve_label(box.label, labels)
        key = ("class", index) if index is not None else ("top1", box.label)
        group = groups.setdefault(key, ClassBoxes(index, box.label, []))
        group.boxes.append(box.box)
    return list(groups.values())


def evaluation_classes(truth: Truth, labels: Sequence[str], tasks: Sequence[ImageTask] | None = None,
                       explain_class: str = EXPLAIN_PREDICTED) -> list[str]:
    """The `classes` to build each Explainer with. Explaining the predicted class needs one slot,
    "top1". Explaining the truth needs one "top1" slot per class an image needs (the most any image
    needs): `evaluate` fills the slots image by image with the truth classes (see `class_slots`), so
    each image is explained for its own classes only, at the cost of one map each. With `tasks`,
    only the truth of those images counts."""
    _check_explain_class(explain_class)
    if explain_class == EXPLAIN_PREDICTED:
        return ["top1"]
    keys = truth.keys() if tasks is None else [key for key, _ in match_images(truth, [t.source for t in tasks])
                                               if key is not None]
    most = max((len(boxes_by_class(truth[key], labels)) for key in keys), default=1)
    return ["top1"] * max(1, most)


def _check_explain_class(explain_class: str) -> None:
    if explain_class not in EXPLAIN_CLASSES:
        raise UsageError(f"`explain_class` {explain_class!r}: choose {' or '.join(EXPLAIN_CLASSES)}")


def explains_top1(group: ClassBoxes, explain_class: str) -> bool:
    """Whether `group`'s boxes are scored against the top-1 class's map (else their own class's)."""
    return explain_class == EXPLAIN_PREDICTED or group.class_index is None


def scored_classes(groups: Sequence[ClassBoxes], explain_class: str = EXPLAIN_PREDICTED) -> list[int]:
    """The class of each group's map: -1 (the image's top-1 class) when the predicted class is
    explained or the boxes' label is unknown, else the boxes' class."""
    return [-1 if explains_top1(t, explain_class) else t.class_index for t in groups]


def class_slots(classes_per_image: Sequence[Sequence[int]], slots: int) -> np.ndarray:
    """(images, slots) class indices for `Explainer.explain`: each image's classes (-1: its top-1
    class), cut to `slots` and padded by repeating the first (repeats give no map); an image
    without classes gets its top-1 class."""
    ids = np.full((len(classes_per_image), slots), -1, dtype=np.int32)
    for row, classes in zip(ids, classes_per_image):
        wanted = list(classes)[:slots] or [-1]
        row[:] = (wanted + [wanted[0]] * slots)[:slots]
    return ids


# --- options and report ---------------------------------------------------------------------------


@dataclass
class EvaluationOptions:
    out_dir: Path | None = None  # where evaluation.json and evaluation.csv go; None writes nothing
    box_threshold: float = field_default(FileOptions, "box_threshold")
    # deletion/insertion steps; 0 skips both curves (they cost 2 x (steps + 1) passes a row)
    steps: int = field_default(ScoringOptions, "steps")
    batch_size: int = field_default(RunOptions, "batch_size")  # images per explain call
    score_batch_size: int = MASKED_BATCH  # images per forward pass for the curves
    pointing_tolerance: float = field_default(ScoringOptions, "pointing_tolerance")  # pixels; Zhang et al. use 15
    blur_sigma: float = DEFAULT_BLUR_SIGMA
    road: bool = False  # ROAD's MoRF and LeRF (2 x 9 imputed copies a row, each a sparse solve)
    random_logit: bool = False  # one more explanation per image, for a random other class
    gates: Sequence[Gate] = ()
    truth_name: str | None = None  # how to name the truth in messages and the JSON
    explain_class: str = EXPLAIN_PREDICTED  # whose map is scored: the top-1 class, or the truth's

    def __post_init__(self):
        _check_explain_class(self.explain_class)

    def record(self) -> dict:
        return {"explain_class": self.explain_class, "box_threshold": self.box_threshold, "steps": self.steps,
                "pointing_tolerance": self.pointing_tolerance, "blur_sigma": self.blur_sigma,
                "deletion_baseline": 0.0, "corloc_iou": CORLOC_IOU, "road": self.road,
                "road_percentiles": list(ROAD_PERCENTILES), "road_noise": ROAD_NOISE,
                "random_logit": self.random_logit, "random_logit_seed": RANDOM_LOGIT_SEED}


@dataclass
class EvaluationReport:
    model: str
    options: EvaluationOptions
    methods: dict[str, dict]  # name -> {"layer": str, "rows": int, "metrics": {metric: float | None}}
    rows: list[dict]
    images: int
    evaluated: int
    without_truth: list[dict] = field(default_factory=list)  # {"image", "reason"}
    failures: list[dict] = field(default_factory=list)  # {"image", "error"}
    gates: list[GateResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False  # stopped by `stop` (SIGINT, SIGTERM): the figures cover part of the images

    @property
    def failed_gates(self) -> list[GateResult]:
        return [result for result in self.gates if not result.passed]

    def closing_lines(self, out_dir: Path | None = None, shown: int = 5) -> list[str]:
        """What a run ends by saying: images without truth (the first few), warnings, failed gates, counts."""
        lines = [f"skipped: {item['image']}: {item['reason']}" for item in self.without_truth[:shown]]
        if len(self.without_truth) > shown:
            where = f" (listed in {Layout(out_dir).evaluation_json})" if out_dir is not None else ""
            lines.append(f"skipped {len(self.without_truth) - shown} more images without truth{where}")
        lines += [f"warning: {warning}" for warning in self.warnings]
        lines += [result.message() for result in self.failed_gates]
        if self.interrupted:
            lines.append(f"interrupted: the metrics cover {self.evaluated} of {self.images} images; a partial run "
                         "passes no gate")
        lines.append(f"evaluated {self.evaluated} of {self.images} images ({len(self.failures)} failed, "
                     f"{len(self.without_truth)} without truth)" + (f" -> {out_dir}" if out_dir is not None else ""))
        return lines

    def record(self) -> dict:
        """What evaluation.json holds. `methods` maps each method to {"layer", "rows", "metrics"} (every
        name in METRICS, a fraction or null); `gates` lists {"option", "metric", "bound", "method",
        "value", "passed"}; `rows` has one record per (image, method, class): image, method,
        class_index, label, truth_label, class_source ("truth" or "top1"), top1_index, top1_label,
        score (Y), truth_boxes, empty, box ([x0, y0, x1, y1] or null, original pixels, x1/y1
        exclusive), the metrics (booleans for pointing, corloc, loc_error, confidence_increase;
        null where not computed) and masked_score (O)."""
        return {
            "camcli_version": __version__,
            "model": self.model,
            "truth": self.options.truth_name,
            "options": self.options.record(),
            "images": self.images,
            "evaluated": self.evaluated,
            "without_truth": self.without_truth,
            "failed": len(self.failures),
            "failures": self.failures,
            "methods": self.methods,
            "gates": [result.record() for result in self.gates],
            "passed": not self.failed_gates and not self.interrupted,
            "interrupted": self.interrupted,
            "warnings": self.warnings,
            "rows": self.rows,
        }


# --- scoring --------------------------------------------------------------------------------------


def clip_box(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float] | None:
    """The box cut to the image, or None when nothing of it is inside."""
    x0, y0, x1, y1 = max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


class TruthOutsideImage(CamcliError):
    """A truth box that misses its image entirely: the boxes belong to another size of the image."""


def clipped_to_image(groups: list[ClassBoxes], width: int, height: int) -> list[ClassBoxes]:
    """Groups of boxes cut to the image; raises TruthOutsideImage for a box wholly outside it."""
    for group in groups:
        clipped = [clip_box(box, width, height) for box in group.boxes]
        for box, inside in zip(group.boxes, clipped):
            if inside is None:
                raise TruthOutsideImage(f"truth box {list(box)} lies outside the {width}x{height} image; "
                                        "are the boxes in this image's pixels?")
        group.boxes = clipped
    return groups


def _find_map(result, class_index: int):
    return next((m for m in result.maps if m.class_index == class_index), None)


def _localization(heatmap: np.ndarray, group: ClassBoxes, options: EvaluationOptions, scale: float = 1.0) -> dict:
    """Pointing, energy, box and IoU of one map against its boxes, both at the measured picture's
    resolution (`scale` measured pixels per original pixel); the box is reported in original pixels."""
    box = box_from_map(heatmap, options.box_threshold)
    iou = best_iou(box, group.boxes)
    energy = energy_in_boxes(heatmap, group.boxes)
    return {
        "box": _in_original_pixels(box, scale) if box is not None else None,
        "pointing": pointing_hit(heatmap, group.boxes, options.pointing_tolerance * scale),
        "energy": 0.0 if energy is None else energy,  # an empty map puts no energy in the boxes
        "relevance_mass": energy,  # Quantus: no value for an empty map
        "relevance_rank": relevance_rank(heatmap, group.boxes),
        "iou": iou,
        "corloc": iou >= CORLOC_IOU,
    }


def _perturbation_scores(explainer, model_input: np.ndarray | None, heatmap: np.ndarray, class_index: int,
                         options: EvaluationOptions) -> dict:
    """RISE's deletion and insertion AUCs (without `steps`: None) and ROAD's MoRF, LeRF and combined scores
    (without `road`: None), at the model's input resolution: the preprocessed image and the map upsampled to
    it are made once for both."""
    scores = {"deletion": None, "insertion": None, **dict.fromkeys(ROAD_METRICS)}
    if model_input is None:
        return scores
    height, width = explainer.loaded.input_size
    saliency = upsample(heatmap, height=height, width=width)
    if options.steps > 0:
        curves = deletion_insertion_curves(explainer.class_scores, model_input, saliency, class_index,
                                           steps=options.steps, batch_size=options.score_batch_size,
                                           blur_sigma=options.blur_sigma)
        scores.update(deletion=curves.deletion_auc, insertion=curves.insertion_auc)
    if options.road:
        road = road_scores(explainer.class_scores, model_input, saliency, class_index,
                           batch_size=options.score_batch_size)
        scores.update(roadmorf=road.morf, roadlerf=road.lerf, roadcombined=road.combined)
    return scores


def _in_original_pixels(box, scale: float) -> list:
    if scale == 1.0:
        return list(box)
    return [round(value / scale, 2) for value in box]


def score_image(explainer, display: str, rgb: np.ndarray, result, groups: list[ClassBoxes],
                options: EvaluationOptions, warn: Callable[[str], None], scale: float = 1.0) -> list[dict]:
    """The rows of one image for one method (one per class of boxes), with Average Drop filled in.

    rgb: the picture the maps are measured on, `scale` of the original's size (photos larger than
    EVALUATION_SIDE are measured smaller, as explain's boxes are); groups: boxes in its pixels."""
    height, width = rgb.shape[:2]
    top1 = result.predictions[0]
    rows, masked = [], []
    perturbed = options.steps > 0 or options.road  # the curves and ROAD score copies of the model's input
    model_input = explainer.preprocess([rgb])[0] if perturbed else None
    for group in groups:
        from_top1 = explains_top1(group, options.explain_class)
        wanted = top1.index if from_top1 else group.class_index
        class_map = _find_map(result, wanted)
        if class_map is None:  # the explainer was built without this class: say so, score its first map
            class_map = result.maps[0]
            warn(f"{explainer.method.name} explained no map for class {wanted} of {display}: build the explainer "
                 "with classes=evaluation_classes(...); scored its first map instead")
        heatmap = upsample(class_map.heatmap, height=height, width=width)
        row = {
            "image": display,
            "method": explainer.method.name,
            "class_index": class_map.class_index,
            "label": class_map.label,
            "truth_label": group.truth_label,
            "class_source": "top1" if from_top1 else "truth",
            "top1_index": top1.index,
            "top1_label": top1.label,
            "score": class_map.score,
            "truth_boxes": [_in_original_pixels(box, scale) for box in group.boxes],
            "empty": class_map.empty,
            **_localization(heatmap, group, options, scale),
        }
        known = group.class_index is not None
        row["loc_error"] = (top1.index != group.class_index or not row["corloc"]) if known else None
        row.update(_perturbation_scores(explainer, model_input, class_map.heatmap, class_map.class_index, options))
        rows.append(row)
        masked.append(multiply_by_map(rgb, heatmap))
    # O: the class score of each image multiplied by its map, all of this image's rows in one pass.
    masked_scores = explainer.class_scores(explainer.preprocess(masked))
    for row, scores in zip(rows, masked_scores):
        row["masked_score"] = float(scores[row["class_index"]])
        drop, increase = average_drop_increase([row["score"]], [row["masked_score"]])
        row["average_drop"], row["confidence_increase"] = drop, bool(increase)
        row["confidence_change"] = row["masked_score"] - row["score"]
    return rows


def mean_present(values) -> float | None:
    """The mean of the values that exist (not None); None when none does."""
    values = [float(v) for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(rows: Sequence[dict]) -> dict[str, float | None]:
    """Each metric's mean over the rows (booleans as 0/1); None when no row has a value."""
    metrics = {name: mean_present(row.get(name) for row in rows) for name in METRICS}
    if rows:
        drop, increase = average_drop_increase([r["score"] for r in rows], [r["masked_score"] for r in rows])
        metrics["average_drop"], metrics["confidence_increase"] = drop, increase
    return metrics


# --- the run --------------------------------------------------------------------------------------


def match_tasks(truth: Truth, tasks: Sequence[ImageTask]) -> tuple[list[tuple[ImageTask, str]], list[dict]]:
    """(tasks with their truth key, [{"image", "reason"}] for those without truth)."""
    matched, without = [], []
    for task, (key, reason) in zip(tasks, match_images(truth, [task.source for task in tasks])):
        if key is None:
            without.append({"image": task.display, "reason": reason})
        else:
            matched.append((task, key))
    return matched, without


def check_matches(truth: Truth, tasks: Sequence[ImageTask], truth_name: str = "the ground truth") -> None:
    """Raise UsageError when no image has truth: the names in the truth file and the images differ."""
    matched, _ = match_tasks(truth, tasks)
    if tasks and not matched:
        example = next(iter(truth), "")
        raise UsageError(f"none of the {len(tasks)} images has boxes in {truth_name} (e.g. {tasks[0].display} vs "
                         f"{example!r}); name images by file name or by path relative to the truth file")


def check_computable(gates: Iterable[Gate], options: EvaluationOptions, truth: Truth) -> None:
    """Refuse gates on metrics this run cannot compute, before any work is done."""
    labelled = any(box.label is not None for boxes in truth.values() for box in boxes)
    for gate in gates:
        if gate.metric in CURVE_METRICS and options.steps <= 0:
            raise UsageError(f"{gate.option} {gate.text} needs the deletion/insertion curves; drop `steps=0`")
        if gate.metric in ROAD_METRICS and not options.road:
            raise UsageError(f"{gate.option} {gate.text} needs ROAD: give `road=True`")
        if gate.metric == "random_logit" and not options.random_logit:
            raise UsageError(f"{gate.option} {gate.text} needs the random-logit maps: give `random_logit=True`")
        if gate.metric == "loc_error" and not labelled:
            raise UsageError(f"{gate.option} {gate.text} needs class labels in the ground truth, and "
                             f"{options.truth_name or 'it'} has none")


# Maps are scored on a picture of at most this many pixels on its longest side (JPEG photos are
# decoded at a reduced scale for it): the maps come from grids of 7x7 to 28x28 cells, so a finer
# picture adds cost, not information. Smaller images are scored at their own size.
EVALUATION_SIDE = 1024


def _decode(task: ImageTask, boxes: list[TruthBox], labels: Sequence[str], model_size=None):
    """(rgb, groups, scale) for one image, or (None, reason, None) when it cannot be read or its truth
    misses it. The groups' boxes are in the pixels of rgb, which is `scale` of the original's size."""
    try:
        decoded = decode_image(task.source, max_side=EVALUATION_SIDE, model_size=model_size)
        groups = clipped_to_image(boxes_by_class(boxes, labels), *decoded.original_size)
        scale = decoded.scale
        if scale != 1.0:
            for group in groups:
                group.boxes = [tuple(value * scale for value in box) for box in group.boxes]
        return np.asarray(decoded.picture), groups, scale
    except ImageLoadError as error:
        return None, error.reason, None
    except TruthOutsideImage as error:
        return None, str(error), None


class MethodScoring:
    """What scoring several methods' maps shares, against boxes (here) or masks (camcli.evaluate.masks):
    the explainers and their names, one compiled step per batch when they can share it, each method's
    rows, and the failures."""

    def __init__(self, explainers: Sequence, on_failure: Callable[[str, str], None] | None):
        from camcli.explain.explainer import MethodSet

        if not explainers:
            raise UsageError("evaluate needs at least one explainer (`methods`)")
        self.explainers, self.on_failure = list(explainers), on_failure
        self.names = distinct_method_names(self.explainers)
        # One shared step per batch for every method, when they share the model, layers, head and
        # classes (as `camcli evaluate` builds them); other explainers explain on their own.
        shared = len(self.explainers) > 1 and MethodSet.can_share(self.explainers)
        self.methods = MethodSet(self.explainers) if shared else None
        self.labels = self.explainers[0].loaded.labels
        self.rows: dict[str, list[dict]] = {name: [] for name in self.names}
        self.failures: list[dict] = []

    def fail(self, display: str, reason: str) -> None:
        self.failures.append({"image": display, "error": reason})
        if self.on_failure:
            self.on_failure(display, reason)

    def explain(self, images: Sequence[np.ndarray], classes_per_image: Sequence[Sequence[int]]) -> list[list]:
        """[method][image] explanations of the RGB `images`, each for its own classes (class_slots)."""
        first = self.explainers[0]
        slots = class_slots(classes_per_image, len(first.requests))
        if self.methods is not None:  # the model's input prepared once, one step for every method
            return self.methods.explain_each(first.preprocess(images), slots)
        return [explainer.explain_batch(explainer.preprocess(images), slots) for explainer in self.explainers]

    def all_rows(self) -> list[dict]:
        """Every method's rows, method by method."""
        return [row for name in self.names for row in self.rows[name]]


class _Evaluation(MethodScoring):
    """One box evaluation's state: MethodScoring's, the truth, and the warnings."""

    def __init__(self, explainers: Sequence, truth: Truth, options: EvaluationOptions,
                 on_failure: Callable[[str, str], None] | None):
        super().__init__(explainers, on_failure)
        self.truth, self.options = truth, options
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def decode(self, chunk) -> list[tuple]:
        """(task, rgb, groups) of the images in `chunk` that decode; the others fail."""
        batch = []
        model_size = self.explainers[0].loaded.input_size
        for task, key in chunk:
            rgb, groups, scale = _decode(task, self.truth[key], self.labels, model_size)
            if rgb is None:
                self.fail(task.display, groups)
            else:
                batch.append((task, rgb, groups, scale))
        return batch

    def score(self, batch: list[tuple]) -> None:
        per_method = self.explain([rgb for _, rgb, _, _ in batch],
                                  [scored_classes(groups, self.options.explain_class) for _, _, groups, _ in batch])
        added: list[list[list[dict]]] = []  # [method][image] the rows this batch added
        for explainer, name, results in zip(self.explainers, self.names, per_method):
            added.append([])
            for (task, rgb, groups, scale), result in zip(batch, results):
                rows = score_image(explainer, task.display, rgb, result, groups, self.options, self.warn, scale)
                self.rows[name].extend(rows)
                added[-1].append(rows)
        if self.options.random_logit:
            self.random_logit([rgb for _, rgb, _, _ in batch], per_method, added)

    def random_logit(self, images: list[np.ndarray], per_method: list[list], added: list[list[list[dict]]]) -> None:
        """Each row's random_logit: SSIM (as the sanity check computes it) of its map with the map of a
        random other class (`random_other_class`), the other classes explained in one more call. The
        classes are the same for every method (the first method's rows say which)."""
        from camcli.maps.similarity import structural_similarity

        others = [[random_other_class(row["class_index"], len(self.labels)) for row in rows] for rows in added[0]]
        if all(other is None for image in others for other in image):
            return
        explained = self.explain(images, [[-1 if o is None else o for o in image] for image in others])
        for results, other_results, method_rows in zip(per_method, explained, added):
            for result, other_result, rows, image_others in zip(results, other_results, method_rows, others):
                for row, other in zip(rows, image_others):
                    own, off = _find_map(result, row["class_index"]), _find_map(other_result, other)
                    if own is not None and off is not None:
                        row["random_logit"] = structural_similarity(own.heatmap, off.heatmap)

    def method_summaries(self) -> dict[str, dict]:
        return {name: {"layer": explainer.layer, "rows": len(self.rows[name]), "metrics": summarize(self.rows[name])}
                for name, explainer in zip(self.names, self.explainers)}


def score_in_batches(items: Sequence, batch_size: int, decode: Callable[[Sequence], list],
                     score: Callable[[list], None], on_progress: Callable[[int], None] | None = None,
                     stop=None) -> Scored:
    """Decode and score `items` `batch_size` at a time; returns how many decoded (the others failed),
    and whether `stop` (a threading.Event, set by SIGINT or SIGTERM) ended the loop with items left: a
    signal after the last batch interrupts nothing."""
    evaluated = 0
    for start in range(0, len(items), batch_size):
        if stop is not None and stop.is_set():
            return Scored(evaluated, interrupted=True)
        chunk = items[start:start + batch_size]
        batch = decode(chunk)
        if batch:
            score(batch)
        evaluated += len(batch)
        if on_progress:
            on_progress(len(chunk))
    return Scored(evaluated, interrupted=False)


class Scored(NamedTuple):
    evaluated: int  # items decoded and scored
    interrupted: bool  # stopped with items left


def evaluate(explainers: Sequence | Callable[[], Sequence], tasks: Sequence[ImageTask], truth: Truth,
             options: EvaluationOptions,
             skipped: Iterable[SkippedInput] = (), on_failure: Callable[[str, str], None] | None = None,
             on_progress: Callable[[int], None] | None = None, stop=None) -> EvaluationReport:
    """Score every method's maps on every image that has truth; write the outputs; return the report.

    explainers: `camcli.Explainer`s on the same model, one per method, built with
    `classes=evaluation_classes(truth, loaded.labels, tasks, options.explain_class)`, so that every
    class to score gets its map; or a function that builds them, called once the truth and the
    gates have been checked (so a bad gate fails before a model loads).
    Images without truth are listed in `without_truth` and skipped; unreadable images (and `skipped`
    inputs) are failures, reported through on_failure(image, reason) as they happen. Setting `stop` (a
    threading.Event) ends the run after the current batch: the report, written, says `interrupted`.
    """
    check_computable(options.gates, options, truth)
    if options.random_logit:
        from camcli.maps.similarity import require_packages

        require_packages("`random_logit` compares maps by SSIM, which", ("skimage.metrics",))
    check_matches(truth, tasks, options.truth_name or "the ground truth")
    built = explainers() if callable(explainers) else explainers
    if built and getattr(built[0], "detects", False):  # an object detector: its matched detections' maps
        from camcli.evaluate.detections import DetectionEvaluation

        if options.road or options.random_logit:
            raise UsageError("`road` and `random_logit` score a classifier's class maps; on an object detector "
                             "evaluate scores each matched detection's pointing game and energy: drop them")

        run = DetectionEvaluation(built, truth, options, on_failure)
    else:
        run = _Evaluation(built, truth, options, on_failure)
    matched, without_truth = match_tasks(truth, tasks)
    check_unambiguous_labels(truth, matched, run.labels, options.truth_name or "the ground truth")
    skipped = list(skipped)
    for item in skipped:
        run.fail(item.display, item.reason)
    evaluated, interrupted = score_in_batches(matched, options.batch_size, run.decode, run.score, on_progress, stop)
    _warn_unknown_labels(truth, matched, run.labels, run.warn)
    methods = run.method_summaries()
    report = EvaluationReport(run.explainers[0].loaded.name, options, methods,
                              run.all_rows(), images=len(tasks) + len(skipped),
                              evaluated=evaluated, without_truth=without_truth, failures=run.failures,
                              gates=check_gates(methods, options.gates), warnings=run.warnings,
                              interrupted=interrupted)
    if options.out_dir is not None:
        write_evaluation(report, options.out_dir)
    return report


def check_unambiguous_labels(truth: Truth, matched, labels: Sequence[str], truth_name: str) -> None:
    """UsageError when a truth label names two classes of the model (ImageNet's two cranes): which one
    its boxes belong to is the truth file's to say, by index."""
    for label in sorted({box.label for _, key in matched for box in truth[key] if box.label is not None}):
        named = same_label_classes(label, labels)
        if named:
            listed = " and ".join(str(index) for index in named)
            raise UsageError(f"{truth_name}: the truth label {label!r} names classes {listed} of the model: write "
                             "the class index of its boxes instead")


def _warn_unknown_labels(truth: Truth, matched, labels: Sequence[str], warn) -> None:
    unknown = sorted({box.label for _, key in matched for box in truth[key]
                      if box.label is not None and resolve_label(box.label, labels) is None})
    if unknown:
        shown = ", ".join(repr(label) for label in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        warn(f"the model has no class {shown} (truth labels): their boxes were scored against each image's "
             "top-1 class, without loc_error")


# --- output ---------------------------------------------------------------------------------------

BOX_CSV_COLUMNS = ("image", "method", "class_index", "label", "truth_label", "class_source", "top1_label", "score",
               "truth_boxes", "box_x0", "box_y0", "box_x1", "box_y1", "empty", *METRICS, "masked_score")


# evaluation.csv of `evaluate --truth-masks` (camcli.evaluate.masks.mask_csv_text): one line per figure.
MASK_CSV_COLUMNS = ("record", "image", "method", "class_index", "label", "bg_threshold", "iou", "relevance_mass",
                    "relevance_rank")


def _csv_value(value):
    if isinstance(value, bool):
        return int(value)
    return "" if value is None else value


def box_csv_text(rows: Sequence[dict]) -> str:
    """One CSV line per row; booleans as 1/0, missing values empty, the map's box in four columns."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(BOX_CSV_COLUMNS)
    for row in rows:
        box = row["box"] or [None] * 4
        flat = {**row, "truth_boxes": len(row["truth_boxes"]),
                **dict(zip(("box_x0", "box_y0", "box_x1", "box_y1"), box))}
        writer.writerow([_csv_value(flat.get(column)) for column in BOX_CSV_COLUMNS])
    return buffer.getvalue()


def check_evaluation_files(out_dir: Path) -> None:
    """UsageError before any work when evaluation.json or evaluation.csv in `out_dir` is not camcli's
    (a box evaluation's or a mask evaluation's: either may replace the other)."""
    layout = Layout(out_dir)
    headers = (",".join(BOX_CSV_COLUMNS), ",".join(MASK_CSV_COLUMNS))
    check_replaceable(layout.evaluation_json)
    check_replaceable(layout.evaluation_csv, lambda p: any(is_camcli_csv(p, header) for header in headers))


def write_evaluation(report: EvaluationReport, out_dir: Path, record: dict | None = None,
                 csv: str | None = None) -> tuple[Path, Path]:
    """evaluation.json and evaluation.csv in `out_dir`, each written atomically: `record` (default
    the report's) and `csv` (default one line per row, `box_csv_text`)."""
    from camcli.runs.runner import writing_into

    layout = Layout(out_dir)
    with writing_into(layout.out_dir):  # a full disk or a read-only folder: one line
        layout.out_dir.mkdir(parents=True, exist_ok=True)
        save_json(layout.evaluation_json, report.record() if record is None else record)
        write_bytes_atomic(layout.evaluation_csv,
                           (box_csv_text(report.rows) if csv is None else csv).encode("utf-8"))
    return layout.evaluation_json, layout.evaluation_csv


def _format_value(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def format_box_table(report: EvaluationReport) -> str:
    """Metrics down, methods across, with which direction is better; '-' where a metric has no value."""
    names = list(report.methods)
    width = max(len(name) for name in [*METRICS, "metric", "rows"])
    columns = [max(6, len(name)) for name in names]
    header = f"{'metric':<{width}}  " + "  ".join(f"{n:>{w}}" for n, w in zip(names, columns)) + "  better"
    lines = [header]
    for metric in METRICS.values():
        values = [_format_value(report.methods[n]["metrics"].get(metric.name)) for n in names]
        better = "higher" if metric.higher_is_better else "lower"
        lines.append(f"{metric.name:<{width}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(values, columns))
                     + f"  {better}")
    counts = [str(report.methods[n]["rows"]) for n in names]
    lines.append(f"{'rows':<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(counts, columns)))
    return "\n".join(lines)
