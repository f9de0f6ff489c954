"""A probe set: a few images, explained again and again while a model trains (camcli.keras.ExplainCallback).

A `Probe` holds uint8 images with, optionally, each one's true class and truth boxes. `Probe.run(explainer)`
explains them all with the model as it is at that moment and returns a `ProbeResult`: per method, the
pointing game and the energy in the boxes (camcli.evaluate.metrics, the same functions `camcli evaluate`
scores with, on maps upsampled to each image's size), the probe's top-1 accuracy, and an overlay per
image with its truth boxes drawn, for TensorBoard. It changes nothing in the model.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from camcli.errors import UsageError
from camcli.evaluate.metrics import energy_in_boxes, pointing_hit
from camcli.maps.boxes import draw_box
from camcli.maps.overlay import colormap_lut, overlay_picture, upsample
from camcli.options import FileOptions, ProbeOptions, field_default

TRUTH_CLASS = "truth"  # the class request that explains each probe image's own label
PROBE_METRICS = ("pointing", "energy", "accuracy")
PICTURE_SIDE = 256  # the longest side of the overlays a ProbeResult holds


@dataclass
class ProbeResult:
    """One run of the probe set."""

    seconds: float  # wall time of the run: explaining, scoring and drawing
    metrics: dict[str, float] = field(default_factory=dict)  # "gradcam/pointing", "gradcam/energy", "accuracy"
    overlays: dict[str, np.ndarray] = field(default_factory=dict)  # image tag -> (n, h, w, 3) uint8
    empty_maps: dict[str, int] = field(default_factory=dict)  # method -> maps with no positive evidence


def _as_images(images) -> list[np.ndarray]:
    if isinstance(images, np.ndarray) and images.ndim == 3:
        raise UsageError("give a list of probe images, or one (n, height, width, 3) array")
    if isinstance(images, (str, bytes)) or not isinstance(images, Iterable):
        raise UsageError(f"give a list of probe images, or one (n, height, width, 3) array, not "
                         f"{type(images).__name__} {images!r:.40}")
    arrays = [np.asarray(image) for image in images]
    if not arrays:
        raise UsageError("the probe set is empty: give at least one image")
    for i, array in enumerate(arrays):
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            raise UsageError(f"probe image {i} is {array.dtype} {array.shape}; probe images are uint8 RGB arrays "
                             "(height, width, 3)")
    return arrays


def _as_boxes(boxes, count: int) -> list[list[tuple[float, float, float, float]]] | None:
    """Each image's truth boxes: one (x0, y0, x1, y1) per image, or a list of them per image."""
    if boxes is None:
        return None
    if isinstance(boxes, (str, bytes, Mapping)) or not isinstance(boxes, Iterable):
        raise UsageError(f"`boxes` takes one box (x0, y0, x1, y1), or a list of them, per probe image, not "
                         f"{type(boxes).__name__} {boxes!r:.40}")
    boxes = list(boxes)
    if len(boxes) != count:
        raise UsageError(f"{len(boxes)} truth boxes for {count} probe images: give one box (or a list of boxes) "
                         "per image")
    result = []
    for i, entry in enumerate(boxes):
        array = np.asarray(entry, dtype=np.float64)
        array = array.reshape(1, -1) if array.ndim == 1 else array
        if array.ndim != 2 or array.shape[1] != 4 or len(array) == 0 \
                or (array[:, 2] <= array[:, 0]).any() or (array[:, 3] <= array[:, 1]).any():
            raise UsageError(f"truth box {i} is {np.asarray(entry).tolist()}; a box is (x0, y0, x1, y1) in the "
                             "image's pixels, with x1 > x0 and y1 > y0")
        result.append([tuple(float(v) for v in row) for row in array])
    return result


class Probe:
    """Probe images (uint8 RGB), with optional `labels` (class indices or names) and truth `boxes`.

    classes: what each image's maps explain: "top1" (the prediction, the default), any `--class`
    request, or "truth" for each image's label. The metrics score each image's first map.
    """

    def __init__(self, images, labels: Sequence | None = None, boxes=None, *,
                 alpha: float = field_default(FileOptions, "alpha"),
                 colormap: str = field_default(FileOptions, "colormap"),
                 pointing_tolerance: float = field_default(ProbeOptions, "pointing_tolerance"),
                 max_pictures: int = field_default(ProbeOptions, "max_pictures")):
        self.images = _as_images(images)
        self.boxes = _as_boxes(boxes, len(self.images))
        if isinstance(labels, (str, bytes, Mapping)) or not (labels is None or isinstance(labels, Iterable)):
            raise UsageError(f"`truth_labels` takes one label (a class name or index) per probe image, not "
                             f"{type(labels).__name__} {labels!r:.40}")
        self.labels = None if labels is None else list(labels)
        if self.labels is not None and len(self.labels) != len(self.images):
            raise UsageError(f"{len(self.labels)} labels for {len(self.images)} probe images: give one per image")
        if not 0.0 <= alpha <= 1.0:
            raise UsageError(f"`alpha={alpha}` must lie between 0 and 1")
        if max_pictures < 0:
            raise UsageError(f"`max_pictures={max_pictures}` must be 0 or more")
        self.alpha, self.lut = alpha, colormap_lut(colormap)
        self.pointing_tolerance, self.max_pictures = pointing_tolerance, max_pictures

    def available(self) -> tuple[str, ...]:
        """The metrics this probe can score: pointing and energy need boxes, accuracy labels."""
        return tuple(name for name in PROBE_METRICS
                     if (name == "accuracy" and self.labels is not None) or (name != "accuracy" and self.boxes))

    def class_ids(self, label_names: Sequence[str]) -> np.ndarray:
        """Each image's label as a class index of the model (names are looked up in `label_names`)."""
        if self.labels is None:
            raise UsageError("`classes=\"truth\"` explains each probe image's label: give `truth_labels`")
        indices = []
        for label in self.labels:
            if isinstance(label, str) and not label.lstrip("-").isdigit():
                if label not in label_names:
                    raise UsageError(f"unknown probe label {label!r}: the model's classes are "
                                     f"{', '.join(label_names[:10])}{'...' if len(label_names) > 10 else ''}")
                indices.append(list(label_names).index(label))
            else:
                index = int(label)
                if not 0 <= index < len(label_names):
                    raise UsageError(f"probe label {index} is out of range: the model has {len(label_names)} classes")
                indices.append(index)
        return np.asarray(indices, dtype=np.int64)

    def run(self, explainer, truth_class: bool = False,
            batch_size: int = field_default(ProbeOptions, "batch_size")) -> ProbeResult:
        """Explain every probe image with `explainer` (an Explainer or a MethodSet on the model as it is
        now); with `truth_class`, each image's maps explain its label."""
        started = time.perf_counter()
        labels = self.class_ids(explainer.labels) if self.labels is not None else None
        results = []
        for start in range(0, len(self.images), batch_size):
            chunk = self.images[start:start + batch_size]
            forced = None
            if truth_class:
                forced = np.repeat(labels[start:start + len(chunk), None], len(explainer.requests), axis=1)
            results += explainer.explain(chunk, class_ids=forced)
        result = ProbeResult(0.0)
        if labels is not None:
            top1 = np.asarray([r.predictions[0].index for r in results])
            result.metrics["accuracy"] = float(np.mean(top1 == labels))
        self._score(results, explainer.method_names, result)
        result.seconds = time.perf_counter() - started
        return result

    def _score(self, results, methods: Sequence[str], result: ProbeResult) -> None:
        for method in methods:
            hits, energies, pictures, empty = [], [], {}, 0
            for i, (image, explanation) in enumerate(zip(self.images, results)):
                maps = [m for m in explanation.maps if m.method == method]
                empty += sum(m.empty for m in maps)
                height, width = image.shape[:2]
                if self.boxes is not None:
                    at_size = upsample(maps[0].heatmap, height=height, width=width)
                    hits.append(pointing_hit(at_size, self.boxes[i], self.pointing_tolerance))
                    energy = energy_in_boxes(at_size, self.boxes[i])
                    energies.append(0.0 if energy is None else energy)  # an empty map puts no energy in the boxes
                if i < self.max_pictures:
                    for slot, class_map in enumerate(maps):
                        pictures.setdefault(slot, []).append(self._picture(image, class_map.heatmap, i))
            if self.boxes is not None:
                result.metrics[f"{method}/pointing"] = float(np.mean(hits))
                result.metrics[f"{method}/energy"] = float(np.mean(energies))
            result.empty_maps[method] = empty
            for slot, drawn in pictures.items():
                result.overlays[method if slot == 0 else f"{method}/class{slot + 1}"] = _same_size(drawn)

    def _picture(self, image: np.ndarray, heatmap: np.ndarray, i: int) -> np.ndarray:
        picture = np.asarray(overlay_picture(Image.fromarray(image), heatmap, self.alpha, self.lut))
        for box in self.boxes[i] if self.boxes is not None else []:
            picture = draw_box(picture, box)
        return picture


def _same_size(pictures: list[np.ndarray]) -> np.ndarray:
    """The pictures as one (n, h, w, 3) array for TensorBoard: each fitted (aspect kept, padded black)
    into a box of the first picture's shape, at most PICTURE_SIDE on its longest side."""
    height, width = pictures[0].shape[:2]
    scale = min(1.0, PICTURE_SIDE / max(height, width))
    box_w, box_h = max(1, round(width * scale)), max(1, round(height * scale))
    fitted = []
    for picture in pictures:
        h, w = picture.shape[:2]
        s = min(box_w / w, box_h / h)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        small = Image.fromarray(picture).resize(size, Image.Resampling.BILINEAR) if size != (w, h) \
            else Image.fromarray(picture)
        canvas = Image.new("RGB", (box_w, box_h))
        canvas.paste(small, ((box_w - size[0]) // 2, (box_h - size[1]) // 2))
        fitted.append(np.asarray(canvas))
    return np.stack(fitted)


def bounded_figures(metrics: Mapping[str, float], name: str) -> list[tuple[str, float]]:
    """The (metric key, value) pairs a bound on `name` looks at: "pointing" is every method's pointing,
    "gradcam/pointing" one method's, "accuracy" the probe's accuracy."""
    if "/" in name or name == "accuracy":
        return [(name, metrics[name])] if name in metrics else []
    return [(key, value) for key, value in metrics.items() if key.endswith("/" + name)]


def check_bounds(bounds: Mapping[str, float] | None, available: Sequence[str], what: str) -> dict[str, float]:
    """`bounds` ({metric or "method/metric": value}) checked against what the probe can score."""
    checked = {}
    if bounds is not None and not isinstance(bounds, Mapping):
        raise UsageError(f"`{what}` takes {{metric: bound}}, e.g. {{'pointing': 0.6}}, not {type(bounds).__name__} "
                         f"{bounds!r:.40}")
    for name, value in (bounds or {}).items():
        metric = name.rsplit("/", 1)[-1]
        if metric not in PROBE_METRICS:
            raise UsageError(f"unknown metric {name!r} in `{what}`: choose from {', '.join(PROBE_METRICS)} "
                             "(or method/metric, e.g. gradcam/pointing)")
        if metric not in available:
            need = "labels" if metric == "accuracy" else "truth boxes"
            raise UsageError(f"`{what}` bounds {name!r}, which needs the probe's {need}: give `"
                             f"{'truth_labels' if metric == 'accuracy' else 'boxes'}`")
        if "/" in name and metric == "accuracy":
            raise UsageError(f"accuracy is the probe's, not a method's: write `{what}={{'accuracy': ...}}`")
        try:
            checked[name] = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"`{what}[{name!r}]` must be a number, not {value!r}") from None
    return checked
