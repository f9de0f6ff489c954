"""An object detector's detections, each explained by its own map (`target=box`).

The flow for one batch, in one compiled step (`DetectionStep`):

1. One forward pass through the detector (the graph replay of camcli.explain.forward, which records the
   explained layers) gives every anchor's raw prediction: class logits and box deltas.
2. The deltas are decoded against the anchors and the detector's own non-max suppression keeps the
   best boxes, with its own IoU threshold and maximum (camcli.models.detectors), as `predict` does; the
   anchor of each detection is kept. `min_score` replaces the decoder's confidence threshold, and
   `classes` keeps the detections of some classes (an index or label) or the K best (topK).
3. For gradient methods, one backward pass per detection slot: the gradient, with respect to the
   explained layers, of each image's detection's score. The score is the detection's class logit,
   before the sigmoid, at the anchor that produced it (with `box_overlap`, the sum of that class's
   logits over every anchor whose box overlaps the detection's with IoU >= box_overlap). Slot r holds
   the r-th detection of every image of the batch; summing their scores and differentiating gives each
   image its own gradient, since images do not interact at inference: nothing is averaged across the
   batch, and an image's maps do not depend on what the other images hold.

Everything after the step is the classifiers' numpy: each detection is a "request" for the methods'
shared code (camcli.explain.evidence), whose maps are scaled and fused as for any class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from camcli.errors import UsageError
from camcli.explain.classes import ClassRequest, parse_detection_requests
from camcli.explain.evidence import BatchEvidence, MapOptions
from camcli.explain.explainer import (
    DEFAULT_TOP_K,
    EXPLAINER_ALIASES,
    ClassMap,
    ImageExplanation,
    Prediction,
    checked_batch,
    image_list,
    loaded_model,
    preprocess_images,
    with_images,
)
from camcli.explain.methods import REGISTRY, resolve_method
from camcli.explain.step import read_only_numpy
from camcli.explain.targets import BoxTarget
from camcli.models.loading import LoadedModel, import_keras
from camcli.options import BOX_TARGET, PRECISIONS, MapRequest, fingerprint_fields, gather


@dataclass(frozen=True)
class Detection:
    """One detection of one image, as the detector's own suppression kept it.

    index: its place among the image's explained detections, best first (its maps' file names use it).
    score: the detector's confidence (the sigmoid of `logit`); logit: the class logit at its anchor.
    box: (x0, y0, x1, y1) as fractions of the input's width and height (the image is squashed to the
    input, so the same fractions of the image's own size are its box in the image's pixels).
    anchor: the index of the raw prediction that produced it.
    """

    index: int
    class_index: int
    label: str
    score: float
    logit: float
    box: tuple[float, float, float, float]
    anchor: int

    def box_in_pixels(self, width: int, height: int) -> list[float]:
        """[x0, y0, x1, y1] in the pixels of an image of this size, clipped to it."""
        x0, y0, x1, y1 = self.box
        return [float(np.clip(x0 * width, 0, width)), float(np.clip(y0 * height, 0, height)),
                float(np.clip(x1 * width, 0, width)), float(np.clip(y1 * height, 0, height))]

    def record(self, width: int, height: int) -> dict:
        """The record's entry (camcli.runs.records), its box in pixels of a width x height image."""
        return {"index": self.index, "class_index": self.class_index, "label": self.label, "score": self.score,
                "logit": self.logit, "box": [round(value, 2) for value in self.box_in_pixels(width, height)],
                "anchor": self.anchor}


class DetectionOutputs(NamedTuple):
    """What one detection step computes for a batch of B images with at most R explained detections each
    (named as camcli.explain.step.StepOutputs, whose shared code reads activations, gradients, class_ids)."""

    activations: tuple[np.ndarray, ...]  # per layer: (B, h, w, channels)
    gradients: tuple[np.ndarray, ...]  # per layer: (B, R, h, w, channels); () without gradients
    class_ids: np.ndarray  # (B, R) int32: each detection's class, -1 past the image's count
    scores: np.ndarray  # (B, R): the detector's confidences
    logits: np.ndarray  # (B, R): the class logit at each detection's anchor
    boxes: np.ndarray  # (B, R, 4): yxyx, in input pixels
    anchors: np.ndarray  # (B, R) int32
    counts: np.ndarray  # (B,) int32: how many detections each image has


def _box_iou(boxes, box):
    """IoU of every box (B, A, 4) with one box per image (B, 4), all yxyx: (B, A)."""
    import tensorflow as tf

    box = box[:, tf.newaxis, :]
    top, left = tf.maximum(boxes[..., 0], box[..., 0]), tf.maximum(boxes[..., 1], box[..., 1])
    bottom, right = tf.minimum(boxes[..., 2], box[..., 2]), tf.minimum(boxes[..., 3], box[..., 3])
    inter = tf.maximum(bottom - top, 0.0) * tf.maximum(right - left, 0.0)

    def area(b):
        return tf.maximum(b[..., 2] - b[..., 0], 0.0) * tf.maximum(b[..., 3] - b[..., 1], 0.0)

    return tf.math.divide_no_nan(inter, area(boxes) + area(box) - inter)


class DetectionStep:
    """The compiled step of one detector, its explained layers and its detection requests.

    requests: `classes` as detection requests (an index keeps that class's detections, a rank the best
    ones; none: every detection). gradients: whether `run` also takes one backward pass per detection.
    `runs` counts `run`, `backward_passes` the detection slots differentiated so far.
    """

    def __init__(self, loaded: LoadedModel, layers: Sequence[str], requests: Sequence[ClassRequest],
                 target: BoxTarget, gradients: bool, min_score: float | None = None):
        import_keras()
        import tensorflow as tf

        from camcli.explain.forward import TappedForward

        self.loaded, self.head, self.layers = loaded, loaded.detector, list(layers)
        self.target, self.min_score, self.gradients = target, min_score, gradients
        self._forward = TappedForward(loaded.model, self.layers, self.head.forward_head())
        self._classes = [r.index for r in requests if r.index is not None]
        self._best = max((r.rank for r in requests if r.rank is not None), default=0)
        self._filtered = bool(requests)
        self.runs = self.backward_passes = 0
        height, width = loaded.input_size
        spec = tf.TensorSpec((None, height, width, 3), tf.float32)
        compute = self._with_gradients if gradients else self._forward_only
        self._step = tf.function(compute, input_signature=[spec], reduce_retracing=True)

    def run(self, batch: np.ndarray) -> DetectionOutputs:
        """The step on a preprocessed (B, height, width, 3) batch."""
        self.runs += 1
        tensors = self._step(np.asarray(batch, dtype=np.float32))
        outputs = DetectionOutputs(**{name: read_only_numpy(value) for name, value in tensors._asdict().items()})
        if self.gradients:
            self.backward_passes += outputs.class_ids.shape[1]
        return outputs

    # -- the TensorFlow side ---------------------------------------------------------------------

    def _detections(self, images, activations, outputs) -> dict:
        """The explained detections of each image, best first, padded to the batch's most: a dict of
        DetectionOutputs' fields (those after the gradients), and `valid` (B, R)."""
        import tensorflow as tf

        from camcli.models.detectors import confidences, decode_predictions, suppress

        boxes, logits = decode_predictions(self.head, outputs, images)
        probabilities = confidences(self.head, logits)
        confidence = tf.reduce_max(probabilities, axis=-1)
        labels = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        indices, count = suppress(self.head, tf.stop_gradient(boxes), tf.stop_gradient(confidence), self.min_score)
        indices = tf.cast(indices, tf.int32)
        positions = tf.range(tf.shape(indices)[1])[tf.newaxis, :]
        kept = positions < tf.cast(count, tf.int32)[:, tf.newaxis]
        chosen = tf.where(kept, tf.gather(confidence, indices, batch_dims=1), -1.0)
        order = tf.argsort(chosen, axis=1, direction="DESCENDING", stable=True)  # best first, whatever NMS gave
        indices, kept = tf.gather(indices, order, batch_dims=1), tf.gather(kept, order, batch_dims=1)
        if self._filtered:
            classes = tf.gather(labels, indices, batch_dims=1)
            wanted = tf.reduce_any(classes[..., tf.newaxis] == tf.constant(self._classes or [-1], tf.int32), axis=-1)
            kept = kept & (wanted | (positions < self._best))
        moved = tf.argsort(tf.cast(~kept, tf.int32), axis=1, stable=True)  # the kept ones first, in order
        indices = tf.gather(indices, moved, batch_dims=1)
        counts = tf.reduce_sum(tf.cast(kept, tf.int32), axis=1)
        slots = tf.reduce_max(tf.concat([counts, [0]], axis=0))
        anchors = indices[:, :slots]
        valid = tf.range(slots)[tf.newaxis, :] < counts[:, tf.newaxis]
        classes = tf.gather(labels, anchors, batch_dims=1)
        return {"class_ids": tf.where(valid, classes, -1), "scores": tf.gather(confidence, anchors, batch_dims=1),
                "logits": tf.gather(tf.gather(logits, anchors, batch_dims=1), classes, batch_dims=2),
                "boxes": tf.gather(boxes, anchors, batch_dims=1), "anchors": anchors, "counts": counts,
                "valid": valid, "all_boxes": boxes, "classes": classes}

    def _slot_weights(self, found: dict, r, logits_shape):
        """(B, anchors, classes): where slot r's score sits among the raw class logits, per image (zero for
        an image with fewer detections). Differentiating the logits against it gives d score / d layer."""
        import tensorflow as tf

        anchors, classes = logits_shape[1], logits_shape[2]
        if self.target.overlap is None:  # the anchor that produced the detection
            where = tf.one_hot(found["anchors"][:, r], anchors)
        else:  # every raw prediction that overlaps it (pytorch-grad-cam's box-score target)
            iou = _box_iou(tf.stop_gradient(found["all_boxes"]), found["boxes"][:, r])
            where = tf.cast(iou >= self.target.overlap, tf.float32)
        which = tf.one_hot(found["classes"][:, r], classes) * tf.cast(found["valid"][:, r], tf.float32)[:, tf.newaxis]
        return where[:, :, tf.newaxis] * which[:, tf.newaxis, :]

    def _forward_only(self, images):
        activations, outputs = self._forward(images)
        found = self._detections(images, activations, outputs)
        return DetectionOutputs(activations=[_as_float32(a) for a in activations], gradients=[],
                                **{key: found[key] for key in DetectionOutputs._fields[2:]})

    def _with_gradients(self, images):
        import tensorflow as tf

        with tf.GradientTape(persistent=True) as tape:
            activations, outputs = self._forward(images, watch=tape.watch)
            logits = outputs[self.head.logits_output]
        found = self._detections(images, activations, outputs)
        slots = tf.shape(found["anchors"])[1]

        def one_pass_per_slot():
            def body(r, arrays):
                weights = self._slot_weights(found, r, tf.shape(logits))
                gradients = tape.gradient(logits, activations, output_gradients=weights)
                return r + 1, [array.write(r, _as_float32(g)) for array, g in zip(arrays, gradients)]

            arrays = [tf.TensorArray(tf.float32, size=slots) for _ in activations]
            _, arrays = tf.while_loop(lambda r, _: r < slots, body, [0, arrays])
            return [tf.transpose(array.stack(), [1, 0, 2, 3, 4]) for array in arrays]

        def nothing():  # no detection in the whole batch: no backward pass
            return [tf.zeros(tf.concat([tf.shape(a)[:1], [0], tf.shape(a)[1:]], axis=0)) for a in activations]

        gradients = tf.cond(slots > 0, one_pass_per_slot, nothing)
        return DetectionOutputs(activations=[_as_float32(a) for a in activations], gradients=gradients,
                                **{key: found[key] for key in DetectionOutputs._fields[2:]})


def _as_float32(tensor):
    import tensorflow as tf

    return tf.cast(tensor, tf.float32)


class _DetectionRun:
    """One batch through a DetectionStep, as the methods' shared code (BatchEvidence) reads a BatchRun."""

    extras = ()

    def __init__(self, batch: np.ndarray, outputs: DetectionOutputs):
        self.batch, self.outputs = batch, outputs

    def extras_of(self, b: int) -> tuple:
        return ()


def explains_detections(method) -> bool:
    """Whether a method's maps come from the step's activations and gradients alone, as a detection's do: no
    passes of its own (masked or noisy copies, guided gradients) and no dense head (CAM)."""
    return not (method.own_passes or method.needs_gap_head)


# What the commands other than explain and evaluate make of a detector's detections: not yet anything.
AUDIT_REFUSAL = ("the audit clusters each class's maps, one per image, and its maps are one per detection; explain "
                 "its detections with camcli explain --target box")
SANITY_REFUSAL = ("the sanity check (`sanity`) does not apply to its detections yet (the randomised layers change "
                  "which detections there are); drop it")


def refuse_detector(loaded: LoadedModel, refusal: str) -> LoadedModel:
    """`loaded`, or a UsageError that says why the work (AUDIT_REFUSAL, SANITY_REFUSAL) refuses an object detector."""
    if loaded.detector is not None:
        raise UsageError(f"{loaded.name} is an object detector: {refusal}")
    return loaded


def check_detector_request(loaded: LoadedModel, request: MapRequest) -> None:
    """UsageError for what a detector's maps cannot honour: another target, the guided and Score-CAM and
    CAM methods, --aug-smooth, reduced precision, token grids."""
    if request.target != BOX_TARGET:
        raise UsageError(f"{loaded.name} is an object detector: explain its detections with `target=box`, not "
                         f"`target={request.target}`")
    for name in request.methods:
        if not explains_detections(resolve_method(name)):
            usable = ", ".join(other for other, method in REGISTRY.items() if explains_detections(method))
            raise UsageError(f"`methods={name}` does not explain detections yet; use a method of the detector's "
                             f"features: {usable}")
    refused = {"aug_smooth": request.aug_smooth, "token_grid": request.token_grid,
               "precision": request.precision != PRECISIONS[0]}
    for name, given in refused.items():
        if given:
            raise UsageError(f"`{name}` does not apply to an object detector's detections yet; drop it")


class DetectionExplainer:
    """Explains an object detector's detections with one or more layer methods, from one shared step: each
    explained detection of an image gets one map per method (camcli.explain.detection's flow).

    model: a LoadedModel of a KerasHub object detector (`camcli.load_model("hub:PRESET")`). maps: a
    MapRequest with `target="box"`, or its fields as keywords: methods (or method), layers (default: the
    backbone's output at the finest pyramid level), classes (an index or label keeps that class's
    detections, topK the K best; default every detection), min_score (default: the detector's own
    threshold), box_overlap, top_k (detections listed as predictions), eigen_smooth.
    """

    detects = True  # the runner asks it for the maps an earlier record must hold (wanted_maps)

    def __init__(self, model, maps: MapRequest | None = None, *, preprocess: str | None = None,
                 labels: Sequence[str] | None = None, **options):
        request = gather("DetectionExplainer", {"maps": (MapRequest, maps)}, options,
                         aliases=EXPLAINER_ALIASES)["maps"]
        import_keras()
        from camcli.models.layers import resolve_layer

        loaded = loaded_model(model, preprocess, labels)
        if loaded.detector is None:
            raise UsageError(f"{loaded.name} is no object detector; explain it with camcli.Explainer")
        check_detector_request(loaded, request)
        self.loaded, self.request, self.labels = loaded, request, list(loaded.labels)
        self.methods = [resolve_method(name) for name in request.methods]
        self.method_names = [method.name for method in self.methods]  # distinct: MapRequest keeps each once
        self.layers = list(dict.fromkeys(resolve_layer(loaded.model, name, loaded.input_size)
                                         for name in request.layers)) or [loaded.default_layer]
        self.layer = "+".join(self.layers)
        self.target = BoxTarget(request.box_overlap)
        self.requests = parse_detection_requests(request.classes, self.labels)
        self.top_k = request.top_k or DEFAULT_TOP_K
        self.options = MapOptions(request.eigen_smooth, False, None, request.masked_batch)
        self.step = DetectionStep(loaded, self.layers, self.requests, self.target,
                                  any(method.needs_gradients for method in self.methods), request.min_score)

    @property
    def precision(self) -> str:
        return self.request.precision

    def settings(self) -> dict:
        """Everything that shapes the maps and detections (records' fingerprints)."""
        return {**fingerprint_fields(self.request), "methods": list(self.method_names), "layers": list(self.layers),
                "target": self.target_record(), "interface": self.loaded.interface(),
                "classes": [request.text for request in self.requests], "top_k": self.top_k,
                "detector": self.loaded.detector.settings()}

    def target_record(self) -> dict:
        return self.target.record()

    def wanted_maps(self, record: dict) -> set[tuple[str, int]] | None:
        """The (method, class) maps an earlier record must hold: one per method and listed detection."""
        try:
            return {(method, d["class_index"]) for d in record["detections"] for method in self.method_names}
        except (KeyError, TypeError):
            return {("", -1)}  # matches nothing: recompute

    def preprocess(self, images: Sequence) -> np.ndarray:
        return preprocess_images(images, self.loaded)

    def explain(self, images: Sequence) -> list[ImageExplanation]:
        """Explain a list of images of any size (as camcli.Explainer.explain takes them)."""
        images = image_list(images)
        if not images:
            return []
        return with_images(self.explain_batch(self.preprocess(images)), images)

    def explain_batch(self, batch: np.ndarray, class_ids=None, extras=None) -> list[ImageExplanation]:
        """Explain a preprocessed float32 batch: each image's detections and one map per method and detection."""
        if class_ids is not None or extras:
            raise UsageError("a detector's detections are chosen with `classes` and `min_score`; `class_ids` and "
                             "`extras` do not apply")
        batch = checked_batch(batch, self.loaded)
        if self.step.gradients and len(batch) > 1:
            # One image per step: its gradients hold detections x the layer's cells x channels floats (100
            # detections at a 640 px ResNet-50's P3: 1.3 GB), which a batch would multiply. Each image still
            # has one forward pass, and one backward pass per detection.
            return [result for b in range(len(batch)) for result in self.explain_batch(batch[b:b + 1])]
        if not len(batch):
            return []
        outputs = self.step.run(batch)
        height, width = self.loaded.input_size
        detections = [self._detections(outputs, b, height, width) for b in range(len(batch))]
        results = [ImageExplanation([Prediction(d.index + 1, d.class_index, d.label, d.score)
                                     for d in found[:self.top_k]], detections=found) for found in detections]
        for method in self.methods:
            for b, row in enumerate(self._maps(method, batch, outputs)):
                results[b].maps += [ClassMap(method.name, self.layer, d.class_index, d.label, d.score,
                                             method_map.heatmap, method_map.raw_max, method_map.empty,
                                             list(self.layers), detection=d)
                                    for d, method_map in zip(detections[b], row)]
        return results

    def _maps(self, method, batch: np.ndarray, outputs: DetectionOutputs) -> list[list]:
        """[image][detection]: the method's maps. A gradient-free method's map is the same for every
        detection of an image (it has no target), so it is computed once per image."""
        if not method.needs_gradients:
            one = outputs._replace(class_ids=outputs.class_ids[:, :1], gradients=())
            row = method.maps(BatchEvidence(_DetectionRun(batch, one), self.options, None, self.loaded.input_size))
            shared = row[0] if row else []
            return [[shared[b]] * int(outputs.counts[b]) if shared else [] for b in range(len(batch))]
        rows = method.maps(BatchEvidence(_DetectionRun(batch, outputs), self.options, None, self.loaded.input_size))
        return [[rows[r][b] for r in range(int(outputs.counts[b]))] for b in range(len(batch))]

    def _detections(self, outputs: DetectionOutputs, b: int, height: int, width: int) -> list[Detection]:
        found = []
        for r in range(int(outputs.counts[b])):
            top, left, bottom, right = (float(v) for v in outputs.boxes[b, r])
            class_index = int(outputs.class_ids[b, r])
            found.append(Detection(r, class_index, self.labels[class_index], float(outputs.scores[b, r]),
                                   float(outputs.logits[b, r]), (left / width, top / height, right / width,
                                                                 bottom / height), int(outputs.anchors[b, r])))
        return found
