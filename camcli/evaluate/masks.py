"""`camcli evaluate --truth-masks`: label maps from class activation maps scored against pixel masks.

The protocol of weakly supervised semantic segmentation (PSA, Ahn & Kwak 2018; IRN, Ahn et al. 2019;
AMN, Lee et al. 2022), on the maps of each image's truth classes:

1. each image is explained for the classes its mask holds (the truth, not the prediction: the
   question is how well a class's map outlines that class);
2. the maps are normalised, refined (`refine`) and labelled: each pixel takes the argmax of
   [background threshold, map_1, ..., map_K] (camcli.maps.segmentation.label_map), on the picture at
   most SEGMENTATION_SIDE pixels long, then enlarged to the mask's size;
3. one confusion matrix over the whole folder gives each class's IoU (background included, as in
   VOC) and their mean, `miou`;
4. the background threshold is swept (AMN, "Threshold Matters", shows it is the seeds' bottleneck):
   the mIoU at every threshold of `sweep` is reported, and the best of them.

Masks are PASCAL VOC `SegmentationClass` PNGs named as the images (`<mask dir>/<relative path>.png`,
or `<mask dir>/<file stem>.png`): 0 background, k the model's class k - 1, 255 ignored. A mask-labels
file names other values (`VALUE,CLASS` lines). A mask whose size is not its image's, or a value
that names no class, is a usage error: the masks belong to other images or another model.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from camcli.errors import ImageLoadError, UsageError
from camcli.evaluate.evaluation import (
    MASK_CSV_COLUMNS,
    EvaluationReport,
    Gate,
    MethodScoring,
    Metric,
    check_gates,
    mean_present,
    score_in_batches,
    write_evaluation,
)
from camcli.evaluate.metrics import energy_in_mask, relevance_rank_in_mask
from camcli.explain.classes import resolve_label
from camcli.maps.label_settings import DEFAULT_BG_THRESHOLD, SEGMENTATION_SIDE
from camcli.maps.overlay import upsample
from camcli.maps.refine import check_label_settings, refine
from camcli.maps.segmentation import (
    DEFAULT_SWEEP,
    IGNORE,
    MAX_CLASSES,
    confusion_matrix,
    iou_per_class,
    label_map,
    labels_at_size,
    mean_iou,
    normalise_maps,
)
from camcli.options import FileOptions, RunOptions, field_default
from camcli.runs.decode import decode_image
from camcli.runs.discovery import ImageTask, SkippedInput
from camcli.runs.label_files import read_palette_mask

SEGMENTATION_METRICS: dict[str, Metric] = {
    "miou": Metric("miou", True, "mean IoU of the label maps with the truth masks (background included)"),
    "relevance_mass": Metric("relevance_mass", True, "share of a class map's mass on the class's pixels (Quantus, "
                             "Arras et al. 2022), mean over the images' classes"),
    "relevance_rank": Metric("relevance_rank", True, "share of a class map's K top pixels on the class's K pixels "
                             "(Quantus), mean over the images' classes"),
}
RELEVANCE_METRICS = ("relevance_mass", "relevance_rank")
BACKGROUND = "background"


@dataclass
class SegmentationOptions:
    out_dir: Path | None = None  # where evaluation.json and evaluation.csv go; None writes nothing
    bg_threshold: float = DEFAULT_BG_THRESHOLD
    refine: str = field_default(FileOptions, "refine")
    sweep: Sequence[float] = DEFAULT_SWEEP
    batch_size: int = field_default(RunOptions, "batch_size")
    gates: Sequence[Gate] = ()
    truth_name: str | None = None  # the mask folder, as named in messages and the JSON

    def __post_init__(self):
        check_label_settings(self.bg_threshold, self.refine)
        # The chosen threshold is always one of the sweep's, so the sweep's row at it is `miou`.
        self.sweep = tuple(sorted({round(float(t), 6) for t in (*self.sweep, self.bg_threshold)}))

    def record(self) -> dict:
        return {"protocol": "truth classes", "bg_threshold": self.bg_threshold, "refine": self.refine,
                "sweep": list(self.sweep), "ignore": IGNORE, "side": SEGMENTATION_SIDE}


# --- the masks ------------------------------------------------------------------------------------


def read_mask_labels(path) -> dict[int, str]:
    """{mask value: class name} from a file of `VALUE,CLASS` lines (a header, blank lines and `#`
    comments allowed). 0 may not be renamed: it is the background. 255 is VOC's "ignore" unless named:
    binary masks (0 and 255) name it, e.g. `255,cat`."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read the mask labels {path}: {error}") from None
    table: dict[int, str] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if len(cells) < 2 or not cells[1]:
            raise UsageError(f"{path}, line {number}: write VALUE,CLASS (e.g. 15,person)")
        if not cells[0].isdigit():
            if number == 1 and not table and not _looks_numeric(cells[0]):
                continue  # a header such as value,label
            raise UsageError(f"{path}, line {number}: {cells[0]!r} is not a pixel value (0..255)")
        value = int(cells[0])
        _check_mask_value(value, f"{path}, line {number}")
        if value in table:
            raise UsageError(f"{path}, line {number}: value {value} is named twice")
        table[value] = cells[1]
    if not table:
        raise UsageError(f"{path} names no mask value; write VALUE,CLASS lines (e.g. 15,person)")
    return table


def _looks_numeric(text: str) -> bool:
    """A number that is no pixel value (-1, 1.5): a mistake to name, never a header."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_mask_value(value: int, where: str) -> None:
    """UsageError unless `value` may be named in a mask labels file: 1..MAX_CLASSES, or IGNORE."""
    if value == 0 or (MAX_CLASSES < value != IGNORE):
        why = "0 is the background" if value == 0 else f"masks hold 8-bit values, 0..{IGNORE}"
        raise UsageError(f"{where}: value {value}: {why}; name values 1..{MAX_CLASSES}, or {IGNORE} (the object of "
                         "binary masks)")


def mask_path(folder: Path, task: ImageTask) -> Path | None:
    """The mask of `task`: `<folder>/<relative path>.png`, else `<folder>/<file stem>.png`."""
    for candidate in (folder / f"{task.out_stem}.png", folder / f"{Path(task.out_stem).name}.png"):
        if candidate.is_file():
            return candidate
    return None


@dataclass
class MaskedTask:
    task: ImageTask
    mask: Path
    values: tuple[int, ...]  # the mask's class values (not 0, nor 255 unless the mask labels name it), ascending


def survey_masks(folder: Path, tasks: Sequence[ImageTask], mask_labels: dict[int, str] | None = None
                 ) -> tuple[list[MaskedTask], list[dict]]:
    """Each image's mask and the values it holds (a malformed mask is a UsageError), and the images
    without a mask ({"image", "reason"}). Masks of which none holds a class pixel are a UsageError:
    there would be nothing to score (see `check_scorable`). 255 is a class value only when
    `mask_labels` names it."""
    if not folder.is_dir():
        raise UsageError(f"--truth-masks {folder}: not a folder; give the folder of the masks (VOC's "
                         "SegmentationClass)")
    ignored = (0,) if mask_labels is not None and IGNORE in mask_labels else (0, IGNORE)
    matched, without, holding = [], [], set()
    for task in tasks:
        path = mask_path(folder, task)
        if path is None:
            without.append({"image": task.display, "reason": f"no mask {Path(task.out_stem).name}.png in {folder}"})
            continue
        values = [int(v) for v in np.unique(read_palette_mask(path))]
        holding.update(values)
        matched.append(MaskedTask(task, path, tuple(v for v in values if v not in ignored)))
    if tasks and not matched:
        raise UsageError(f"none of the {len(tasks)} images has a mask in {folder} (e.g. {tasks[0].display} needs "
                         f"{Path(tasks[0].out_stem).name}.png)")
    check_scorable(folder, matched, holding)
    return matched, without


def check_scorable(folder: Path, matched: Sequence[MaskedTask], holding: set[int]) -> None:
    """UsageError when no mask holds a class pixel: background alone scores a meaningless IoU of 1 (every
    pixel labelled background is right), and a gate would pass on it. `holding`: every value found."""
    if not matched or any(item.values for item in matched):
        return
    example = matched[0].mask
    if IGNORE in holding:
        raise UsageError(f"the masks in {folder} hold only 0 and {IGNORE} (e.g. {example}): {IGNORE} is VOC's "
                         f"\"ignore\", so no class would be scored; for binary masks give --mask-labels FILE with "
                         f"the line {IGNORE},CLASS")
    raise UsageError(f"the masks in {folder} hold no class pixels, only the background 0 (e.g. {example}): "
                     "there is nothing to score; give masks whose values name classes (k for class k - 1, as in "
                     "VOC, or --mask-labels FILE)")


def value_classes(masked: Sequence[MaskedTask], labels: Sequence[str],
                  mask_labels: dict[int, str] | None = None) -> dict[int, int]:
    """{mask value: the model's class index} for every value the masks hold. VOC's rule without
    `mask_labels` (value k is class k - 1); a value that names no class is a UsageError."""
    table: dict[int, int] = {}
    for item in masked:
        for value in item.values:
            if value in table:
                continue
            if mask_labels is None:
                if value - 1 >= len(labels):
                    raise UsageError(
                        f"{item.mask}: value {value} is not a class: the model has {len(labels)} classes, so values "
                        f"1..{len(labels)} (class k - 1, as in VOC; 0 background, {IGNORE} ignored); name other "
                        "values with --mask-labels FILE")
                table[value] = value - 1
            else:
                name = mask_labels.get(value)
                if name is None:
                    raise UsageError(f"{item.mask}: value {value} is not in the mask labels; add a line {value},CLASS")
                index = resolve_label(name, labels)
                if index is None:
                    raise UsageError(f"the mask labels name {name!r} (value {value}), which the model does not know")
                table[value] = index
    return table


# --- counting -------------------------------------------------------------------------------------


class IouCounts:
    """True positives, false positives and false negatives per class (0 the background, c + 1 the
    model's class c) at each background threshold, summed over the images."""

    def __init__(self, classes: int, thresholds: int):
        shape = (thresholds, classes + 1)
        self.true_positive, self.false_positive, self.false_negative = (np.zeros(shape, np.int64) for _ in range(3))

    def add(self, threshold_index: int, confusion: np.ndarray, ids: np.ndarray) -> None:
        """One image's (K+1, K+1) confusion matrix over its own classes, `ids` their global ids."""
        hits = np.diag(confusion)
        self.true_positive[threshold_index, ids] += hits
        self.false_positive[threshold_index, ids] += confusion.sum(axis=0) - hits
        self.false_negative[threshold_index, ids] += confusion.sum(axis=1) - hits

    def iou(self, threshold_index: int) -> np.ndarray:
        """Each class's IoU at one threshold; NaN for a class neither in the truth nor predicted."""
        hits = self.true_positive[threshold_index]
        union = hits + self.false_positive[threshold_index] + self.false_negative[threshold_index]
        return np.divide(hits, union, out=np.full(hits.shape, np.nan), where=union > 0)


def _miou(iou: np.ndarray) -> float | None:
    return None if np.isnan(iou).all() else float(np.nanmean(iou))


def image_confusions(maps: np.ndarray, rgb: np.ndarray, truth: np.ndarray, options: SegmentationOptions
                     ) -> list[np.ndarray]:
    """One image's confusion matrices, one per threshold of the sweep: (K, h, w) class maps on the
    (h, w, 3) picture, against (H, W) `truth` in local ids (0 background, k the k-th map, IGNORE)."""
    refined = refine(normalise_maps(maps), rgb, options.refine)
    height, width = truth.shape
    confusions = []
    for threshold in options.sweep:
        labels = labels_at_size(label_map(refined, threshold), height, width)
        confusions.append(confusion_matrix(labels, truth, maps.shape[0] + 1))
    return confusions


# --- the run --------------------------------------------------------------------------------------


@dataclass
class _Image:
    task: ImageTask
    rgb: np.ndarray
    truth: np.ndarray  # local ids
    ids: np.ndarray  # global id of each local id
    classes: list[int]  # the model's class of each map, in local order


class _SegmentationRun(MethodScoring):
    """One mask evaluation's state: MethodScoring's, each method's confusion counts at every threshold
    of the sweep, and the model's class of each mask value."""

    def __init__(self, explainers: Sequence, options: SegmentationOptions, masked: Sequence[MaskedTask],
                 mask_labels: dict[int, str] | None, on_failure: Callable[[str, str], None] | None):
        super().__init__(explainers, on_failure)
        self.options = options
        self.values = value_classes(masked, self.labels, mask_labels)
        self.counts = {name: IouCounts(len(self.labels), len(options.sweep)) for name in self.names}
        # Per method, each (image, class) pair's relevance mass and rank (None: an empty map has no mass).
        self.relevance = {name: {metric: [] for metric in RELEVANCE_METRICS} for name in self.names}
        self.chosen = options.sweep.index(round(options.bg_threshold, 6))

    def load_all(self, items: Sequence[MaskedTask]) -> list[_Image]:
        return [image for image in map(self.load, items) if image is not None]

    def load(self, item: MaskedTask) -> _Image | None:
        try:
            decoded = decode_image(item.task.source, max_side=SEGMENTATION_SIDE,
                                   model_size=self.explainers[0].loaded.input_size)
        except ImageLoadError as error:
            self.fail(item.task.display, error.reason)
            return None
        mask = read_palette_mask(item.mask)
        width, height = decoded.original_size
        if mask.shape != (height, width):
            raise UsageError(f"{item.mask} is {mask.shape[1]}x{mask.shape[0]} and its image {item.task.display} is "
                             f"{width}x{height}: a mask must have its image's size")
        classes = list(dict.fromkeys(self.values[value] for value in item.values))
        lookup = np.full(256, IGNORE, dtype=np.uint8)
        lookup[0] = 0
        for value in item.values:
            lookup[value] = classes.index(self.values[value]) + 1
        ids = np.array([0] + [c + 1 for c in classes], dtype=np.int64)
        return _Image(item.task, np.asarray(decoded.picture), lookup[mask], ids, classes)

    def score(self, batch: list[_Image]) -> None:
        per_method = self.explain([image.rgb for image in batch], [image.classes for image in batch])
        for name, results in zip(self.names, per_method):
            for image, result in zip(batch, results):
                self._score_one(name, image, result)

    def _score_one(self, name: str, image: _Image, result) -> None:
        height, width = image.rgb.shape[:2]
        by_class = {class_map.class_index: class_map for class_map in result.maps}
        maps = np.stack([upsample(by_class[c].heatmap, height=height, width=width) for c in image.classes]) \
            if image.classes else np.zeros((0, height, width), np.float32)
        confusions = image_confusions(maps, image.rgb, image.truth, self.options)
        for index, confusion in enumerate(confusions):
            self.counts[name].add(index, confusion, image.ids)
        chosen = confusions[self.chosen]
        iou = iou_per_class(chosen)
        relevance = self._relevance(name, image, maps)
        self.rows[name].append({
            "image": image.task.display, "method": name, "bg_threshold": self.options.bg_threshold,
            "classes": [{"class_index": c, "label": self.labels[c]} for c in image.classes],
            "miou": mean_iou(chosen), "iou": {self._name(int(i)): (None if math.isnan(v) else float(v))
                                        for i, v in zip(image.ids, iou)},
            "relevance": relevance,
            **{metric: mean_present([entry[metric] for entry in relevance.values()]) for metric in RELEVANCE_METRICS},
        })

    def _relevance(self, name: str, image: _Image, maps: np.ndarray) -> dict[str, dict]:
        """{label: {relevance_mass, relevance_rank}} of each class's map (K, h, w on the picture) against the
        class's pixels of the truth, sampled at the picture's pixels (nearest); ignored pixels are left out
        of both the map's mass and its ranking."""
        truth = labels_at_size(image.truth, *maps.shape[1:]) if len(maps) else image.truth
        counted = truth != IGNORE
        out = {}
        for k, class_index in enumerate(image.classes):
            inside = truth == k + 1
            entry = {"relevance_mass": energy_in_mask(maps[k], inside, counted),
                     "relevance_rank": relevance_rank_in_mask(maps[k], inside, counted)}
            for metric, value in entry.items():
                self.relevance[name][metric].append(value)
            out[self.labels[class_index]] = entry
        return out

    def _name(self, global_id: int) -> str:
        return BACKGROUND if global_id == 0 else self.labels[global_id - 1]

    def method_summaries(self) -> dict[str, dict]:
        summaries = {}
        for name, explainer in zip(self.names, self.explainers):
            counts = self.counts[name]
            iou = counts.iou(self.chosen)
            sweep = [{"bg_threshold": t, "miou": _miou(counts.iou(i))} for i, t in enumerate(self.options.sweep)]
            scored = [entry for entry in sweep if entry["miou"] is not None]
            best = max(scored, key=lambda entry: entry["miou"]) if scored else None
            summaries[name] = {
                "layer": explainer.layer, "rows": len(self.rows[name]),
                "metrics": {"miou": _miou(iou), **{metric: mean_present(values)
                                                   for metric, values in self.relevance[name].items()}},
                "iou_per_class": [{"class_index": None if i == 0 else i - 1, "label": self._name(i), "iou": float(v)}
                                  for i, v in enumerate(iou) if not math.isnan(v)],
                "bg_sweep": sweep,
                "best_bg_threshold": best["bg_threshold"] if best else None,
                "best_miou": best["miou"] if best else None,
            }
        return summaries


def evaluate_masks(explainers: Sequence | Callable[[Sequence[MaskedTask]], Sequence], tasks: Sequence[ImageTask],
                   mask_folder: Path, options: SegmentationOptions, mask_labels: dict[int, str] | None = None,
                   skipped: Iterable[SkippedInput] = (), on_failure: Callable[[str, str], None] | None = None,
                   on_progress: Callable[[int], None] | None = None, stop=None) -> EvaluationReport:
    """Score every method's label maps against the masks in `mask_folder`; write the outputs; return
    the report (its methods' `metrics` hold `miou`; also `iou_per_class`, `bg_sweep`, `best_bg_threshold`).

    explainers: `camcli.Explainer`s on the same model, one per method, built with
    `classes=["top1"] * n` for n at least the most classes one mask holds (`mask_classes_needed`); or
    a function of the surveyed masks that builds them, called once the masks have been read. Setting
    `stop` (a threading.Event) ends the run after the current batch: the report says `interrupted`.
    """
    masked, without = survey_masks(Path(mask_folder), tasks, mask_labels)
    built = explainers(masked) if callable(explainers) else explainers
    run = _SegmentationRun(built, options, masked, mask_labels, on_failure)
    skipped = list(skipped)
    for item in skipped:
        run.fail(item.display, item.reason)
    evaluated, interrupted = score_in_batches(masked, options.batch_size, run.load_all, run.score, on_progress,
                                              stop)
    methods = run.method_summaries()
    report = EvaluationReport(built[0].loaded.name, options, methods, run.all_rows(),
                              images=len(tasks) + len(skipped),
                              evaluated=evaluated, without_truth=without, failures=run.failures,
                              gates=check_gates(methods, options.gates), interrupted=interrupted)
    if options.out_dir is not None:
        write_evaluation(report, options.out_dir, {**report.record(), "kind": "segmentation"}, mask_csv_text(report))
    return report


def mask_classes_needed(masked: Sequence[MaskedTask], mask_labels: dict[int, str] | None = None) -> int:
    """The most classes one mask holds (at least 1): the class slots each Explainer needs."""
    if mask_labels is None:
        return max((len(item.values) for item in masked), default=1) or 1
    return max((len({mask_labels.get(v, v) for v in item.values}) for item in masked), default=1) or 1


# --- output ---------------------------------------------------------------------------------------


def _csv_number(value) -> str:
    return "" if value is None else f"{value:.6g}"


def mask_csv_text(report: EvaluationReport) -> str:
    """evaluation.csv of a mask evaluation, one line per figure: `record` is image (an image's mIoU
    over its own classes), class (a class's IoU over the folder), miou, or sweep (the mIoU at one
    background threshold). The last two columns hold the relevance mass and rank of an image's class maps
    (their mean, on `image` rows) and of the method's (on the `miou` row)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MASK_CSV_COLUMNS)
    threshold = report.options.bg_threshold
    for row in report.rows:
        labels = ";".join(c["label"] for c in row["classes"])
        writer.writerow(["image", row["image"], row["method"], "", labels, threshold, _csv_number(row["miou"]),
                         *(_csv_number(row[metric]) for metric in RELEVANCE_METRICS)])
    for name, summary in report.methods.items():
        for entry in summary["iou_per_class"]:
            index = "" if entry["class_index"] is None else entry["class_index"]
            writer.writerow(["class", "", name, index, entry["label"], threshold, _csv_number(entry["iou"]), "", ""])
        writer.writerow(["miou", "", name, "", "", threshold, _csv_number(summary["metrics"]["miou"]),
                         *(_csv_number(summary["metrics"][metric]) for metric in RELEVANCE_METRICS)])
        for entry in summary["bg_sweep"]:
            writer.writerow(["sweep", "", name, "", "", entry["bg_threshold"], _csv_number(entry["miou"]), "", ""])
    return buffer.getvalue()


def _value(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def format_mask_table(report: EvaluationReport) -> str:
    """mIoU, each class's IoU and the background sweep, methods across; '-' where there is no value."""
    names = list(report.methods)
    classes = list(dict.fromkeys(entry["label"] for summary in report.methods.values()
                                 for entry in summary["iou_per_class"]))
    sweep = [entry["bg_threshold"] for entry in next(iter(report.methods.values()))["bg_sweep"]] if names else []
    width = max([len(name) for name in classes] + [len("best bg_threshold"), 8])
    columns = [max(6, len(name)) for name in names]

    def line(title: str, values: Sequence[str]) -> str:
        return f"{title:<{width}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(values, columns))

    options = report.options
    lines = [line(f"bg {options.bg_threshold:g}, {options.refine}", names),
             line("miou", [_value(report.methods[n]["metrics"]["miou"]) for n in names]),
             *(line(metric.replace("_", " "), [_value(report.methods[n]["metrics"][metric]) for n in names])
               for metric in RELEVANCE_METRICS),
             line("images", [str(report.methods[n]["rows"]) for n in names]), "", line("IoU per class", names)]
    for label in classes:
        lines.append(line(label, [_value(next((e["iou"] for e in report.methods[n]["iou_per_class"]
                                               if e["label"] == label), None)) for n in names]))
    lines += ["", line("mIoU by bg_threshold", names)]
    for index, threshold in enumerate(sweep):
        lines.append(line(f"{threshold:g}", [_value(report.methods[n]["bg_sweep"][index]["miou"]) for n in names]))
    lines.append(line("best bg_threshold", [_value(report.methods[n]["best_bg_threshold"]) for n in names]))
    lines.append(line("best miou", [_value(report.methods[n]["best_miou"]) for n in names]))
    return "\n".join(lines)
