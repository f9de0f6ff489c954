"""`camcli evaluate` on an object detector: each detection's maps scored against the truth box it found.

An image's detections (camcli.explain.detection, the detector's own, best first) are matched to its truth
boxes greedily, as detection benchmarks match them: each detection takes the unmatched truth box of its class
(a truth box without a label, of any class) with which its box has the highest IoU, when that IoU is at least
0.5. Each method's map of a matched detection gives one row, measured on the map upsampled to the picture:

    pointing   the map's peak lies in the matched truth box (pointing game; --pointing-tolerance pixels)
    energy     the share of the map's mass inside it (energy-based pointing game; an empty map counts 0)

A detection without a match, and a truth box no detection found, give no row: they are the detector's
errors, not its maps'. The per-method figures are the rows' means; the other box metrics, made for one
class map per image, have no value here (a gate on them fails, as on any metric without a value).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from camcli.evaluate.evaluation import (
    CORLOC_IOU,
    METRICS,
    EvaluationOptions,
    _Evaluation,
    _in_original_pixels,
    mean_present,
)
from camcli.evaluate.metrics import box_iou, energy_in_boxes, pointing_hit
from camcli.evaluate.truth import Truth
from camcli.maps.overlay import upsample

MATCH_IOU = CORLOC_IOU  # a detection finds a truth box at IoU >= 0.5 (PASCAL VOC's criterion)


def match_detections(detections: Sequence, boxes: Sequence[Sequence[float]],
                     truth: Sequence[tuple[int | None, Sequence[float]]]) -> dict[int, tuple[int, float]]:
    """{detection index: (truth index, IoU)}: greedy, best detection first; `boxes` are the detections' boxes
    and `truth` (class index or None, box) pairs, all in the same pixels."""
    matched: dict[int, tuple[int, float]] = {}
    taken: set[int] = set()
    for detection, box in zip(detections, boxes, strict=True):
        candidates = [(box_iou(box, truth_box), t) for t, (class_index, truth_box) in enumerate(truth)
                      if t not in taken and class_index in (None, detection.class_index)]
        best = max(candidates, default=(0.0, -1))
        if best[0] >= MATCH_IOU:
            matched[detection.index] = (best[1], best[0])
            taken.add(best[1])
    return matched


class DetectionEvaluation(_Evaluation):
    """One box evaluation of a detector: its DetectionExplainer (every method in one step), the truth, the rows."""

    def __init__(self, explainers: Sequence, truth: Truth, options: EvaluationOptions,
                 on_failure: Callable[[str, str], None] | None):
        [self.explainer] = explainers
        self.explainers, self.on_failure = list(explainers), on_failure
        self.names = list(self.explainer.method_names)
        self.labels = self.explainer.loaded.labels
        self.rows: dict[str, list[dict]] = {name: [] for name in self.names}
        self.failures: list[dict] = []
        self.truth, self.options = truth, options
        self.warnings: list[str] = []
        self.counts = {"detections": 0, "truth_boxes": 0, "matched": 0}

    def score(self, batch: list[tuple]) -> None:
        results = self.explainer.explain([rgb for _, rgb, _, _ in batch])
        for (task, rgb, groups, scale), result in zip(batch, results, strict=True):
            height, width = rgb.shape[:2]
            truth = [(group.class_index, box) for group in groups for box in group.boxes]
            boxes = [d.box_in_pixels(width, height) for d in result.detections]
            matched = match_detections(result.detections, boxes, truth)
            self.counts["detections"] += len(result.detections)
            self.counts["truth_boxes"] += len(truth)
            self.counts["matched"] += len(matched)
            for class_map in result.maps:
                if class_map.detection.index in matched:
                    truth_index, overlap = matched[class_map.detection.index]
                    self.rows[class_map.method].append(self._row(task.display, class_map, truth[truth_index][1],
                                                                 boxes[class_map.detection.index], overlap,
                                                                 rgb.shape[:2], scale))

    def _row(self, display: str, class_map, truth_box, box, overlap: float, size: tuple[int, int],
             scale: float) -> dict:
        heatmap = upsample(class_map.heatmap, height=size[0], width=size[1])
        energy = energy_in_boxes(heatmap, [truth_box])
        return {"image": display, "method": class_map.method, "detection": class_map.detection.index,
                "class_index": class_map.class_index, "label": class_map.label, "score": class_map.score,
                "box": _in_original_pixels([round(v, 2) for v in box], scale),
                "truth_boxes": [_in_original_pixels(list(truth_box), scale)], "match_iou": round(overlap, 4),
                "empty": class_map.empty,
                "pointing": pointing_hit(heatmap, [truth_box], self.options.pointing_tolerance * scale),
                "energy": 0.0 if energy is None else energy}

    def method_summaries(self) -> dict[str, dict]:
        return {name: {"layer": self.explainer.layer, "rows": len(self.rows[name]), **self.counts,
                       "metrics": {metric: mean_present(row.get(metric) for row in self.rows[name])
                                   for metric in METRICS}}
                for name in self.names}
