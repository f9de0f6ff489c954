"""What is explained: the one score per image, and per requested class, that the maps differentiate.

- `class` (the default): the class's score before the softmax (or sigmoid), for (batch, classes)
  outputs. Reported scores are the probabilities.
- `region`, for segmentation models with per-pixel scores (batch, height, width, classes): the sum
  of class c's pre-softmax scores over the pixels where the model predicts c, or over a given mask
  (pytorch-grad-cam's SemanticSegmentationTarget idea). Reported scores are the share of pixels
  predicted as each class, and classes are ranked by it.
- `value`, `increase`, `decrease`, for regression outputs (batch, values): the value itself, as the
  model outputs it; its negation (what pushes it down); or the value times its sign (what holds it
  away from zero, i.e. supports the prediction as it is). The "classes" are the output's units.
- `box`, for object detectors (camcli.explain.detection): each detection's class logit, before the
  sigmoid, at the anchor that produced it; or, with `box_overlap`, the sum of that class's logits over
  every raw prediction whose box overlaps the detection's. The "classes" are the detections.
- a callable, in the library: `target(outputs) -> (batch,)` from the model's output tensor, as the
  model computes it (after its final activation), in TensorFlow / keras.ops. One "class": `target`.

Each target knows which outputs it takes, the labels of its classes, the step's reported scores
and differentiated values, and Score-CAM's score of a masked copy. Built and called inside the
compiled step (TensorFlow), so TensorFlow is imported inside the methods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from camcli.errors import UsageError, one_line
from camcli.models.loading import index_labels, shape_text
from camcli.options import BOX_TARGET, REGRESSION_TARGETS, TARGETS


def class_logits_and_scores(logits, head):
    """Per-class logits (what is differentiated) and scores (what is reported), on the last axis."""
    import tensorflow as tf

    logits = tf.cast(logits, tf.float32)
    if head.binary:  # one sigmoid unit z: class 1 has logit z, class 0 has -z
        class_logits = tf.concat([-logits, logits], axis=-1)
        return class_logits, tf.sigmoid(class_logits)  # sigmoid(-z) = 1 - sigmoid(z)
    if head.activation == "sigmoid":  # multi-label: independent per-class probabilities
        return logits, tf.sigmoid(logits)
    return logits, tf.nn.softmax(logits, axis=-1)


class Target:
    """A class-score target; subclasses change what is differentiated. `kind` goes into the records."""

    kind = "class"
    keeps_activation = False  # True: differentiate the output as the model computes it
    needs_reference = False  # True: masked copies are scored against the unmasked image's output

    def head_for(self, head):
        """The head the forward pass uses: softmax/sigmoid stripped, unless the target keeps it."""
        return dataclasses.replace(head, strip=None, binary=False) if self.keeps_activation else head

    def check(self, output_shape: tuple, where: str) -> None:
        if len(output_shape) == 2:
            return
        if len(output_shape) == 4:
            raise UsageError(f"{where} outputs {shape_text(output_shape)}, a score per pixel: explain a region of "
                             "it with `target=region`")
        raise UsageError(f"{where} outputs {shape_text(output_shape)}, not (batch, classes); give `target` a "
                         "callable that returns one score per image")

    def labels(self, labels: Sequence[str], output_shape: tuple) -> list[str]:
        return list(labels)

    def scores(self, output, head):
        return class_logits_and_scores(output, head)[1]

    def selected(self, output, class_ids, head, reference=None):
        """(B, R): the differentiated score of each image's class per request."""
        import tensorflow as tf

        return tf.gather(class_logits_and_scores(output, head)[0], class_ids, batch_dims=1)

    def masked(self, output, class_index, head, reference=None):
        """(n,): Score-CAM's score of each masked copy: the class's probability (Wang et al. 2020). A
        channel's weight is its copy's score minus the baseline copy's (camcli.explain.methods.scorecam)."""
        return self.scores(output, head)[:, class_index]

    def record(self) -> dict:
        return {"kind": self.kind}


class RegionTarget(Target):
    """Segmentation: class c's pre-softmax scores summed over its predicted pixels, or over `mask`."""

    kind = "region"
    needs_reference = True

    def __init__(self, mask: np.ndarray | None = None, mask_name: str | None = None):
        self.mask = None if mask is None else np.asarray(mask, dtype=np.float32)
        self.mask_name = mask_name

    def check(self, output_shape: tuple, where: str) -> None:
        if len(output_shape) != 4:
            raise UsageError(f"{where} outputs {shape_text(output_shape)}; `target=region` needs per-pixel "
                             "scores (batch, height, width, classes)")
        if self.mask is not None:
            self.mask = fit_mask(self.mask, tuple(output_shape[1:3]), self.mask_name)

    def scores(self, output, head):
        import tensorflow as tf

        _, probabilities = class_logits_and_scores(output, head)
        predicted = tf.one_hot(tf.argmax(probabilities, axis=-1), tf.shape(probabilities)[-1])
        return tf.reduce_mean(predicted, axis=(1, 2))  # the share of pixels predicted as each class

    def _region(self, reference, head):
        import tensorflow as tf

        if self.mask is not None:
            return tf.constant(self.mask)[tf.newaxis, :, :, tf.newaxis]
        _, probabilities = class_logits_and_scores(reference, head)
        return tf.one_hot(tf.argmax(probabilities, axis=-1), tf.shape(probabilities)[-1])

    def _region_scores(self, output, head, reference):
        import tensorflow as tf

        class_logits, _ = class_logits_and_scores(output, head)
        region = self._region(output if reference is None else reference, head)
        return tf.reduce_sum(class_logits * region, axis=(1, 2))  # (B, classes)

    def selected(self, output, class_ids, head, reference=None):
        import tensorflow as tf

        return tf.gather(self._region_scores(output, head, reference), class_ids, batch_dims=1)

    def masked(self, output, class_index, head, reference=None):
        return self._region_scores(output, head, reference)[:, class_index]

    def record(self) -> dict:
        return {"kind": self.kind, "mask": self.mask_name}


class RegressionTarget(Target):
    """A regression output's value (`value`, `increase`, `decrease`), per output unit."""

    keeps_activation = True
    needs_reference = True

    def __init__(self, kind: str):
        self.kind = kind

    def check(self, output_shape: tuple, where: str) -> None:
        if len(output_shape) != 2:
            raise UsageError(f"{where} outputs {shape_text(output_shape)}; `target={self.kind}` needs values "
                             "(batch, values)")

    def labels(self, labels: Sequence[str], output_shape: tuple) -> list[str]:
        units = int(output_shape[-1])
        return list(labels) if len(labels) == units else index_labels(units)

    def scores(self, output, head):
        import tensorflow as tf

        return tf.cast(output, tf.float32)

    def _signed(self, values, reference_values):
        import tensorflow as tf

        if self.kind == "increase":
            return values
        if self.kind == "decrease":
            return -values
        return tf.stop_gradient(tf.sign(reference_values)) * values  # value: away from zero

    def selected(self, output, class_ids, head, reference=None):
        import tensorflow as tf

        values = tf.gather(self.scores(output, head), class_ids, batch_dims=1)
        reference_values = values if reference is None else tf.gather(self.scores(reference, head), class_ids,
                                                                       batch_dims=1)
        return self._signed(values, reference_values)

    def masked(self, output, class_index, head, reference=None):
        values = self.scores(output, head)[:, class_index]
        return self._signed(values, self.scores(reference, head)[:, class_index])


class BoxTarget(Target):
    """An object detector's detections (camcli.explain.detection computes the scores; this object says which).

    overlap None: each detection's class logit at the anchor that produced it. A number: the sum of the
    class's logits over the raw predictions whose decoded box overlaps the detection's with IoU >= overlap
    (pytorch-grad-cam's box-score target, before the sigmoid)."""

    kind = BOX_TARGET

    def __init__(self, overlap: float | None = None):
        self.overlap = overlap

    def check(self, output_shape: tuple, where: str) -> None:
        """A model that reaches here is no detector (detectors are explained by DetectionExplainer)."""
        other = "region" if len(output_shape) == 4 else "class"
        raise UsageError(f"`target=box` explains the detections of an object detector (a KerasHub "
                         f"ObjectDetector, hub:PRESET), and {where} outputs {shape_text(output_shape)}: use "
                         f"`target={other}`")

    def record(self) -> dict:
        return {"kind": self.kind, "score": "anchor" if self.overlap is None else "overlap",
                **({"box_overlap": self.overlap} if self.overlap is not None else {})}


class CallableTarget(Target):
    """The library's `target=callable`: outputs -> one score per image."""

    kind = "callable"
    keeps_activation = True

    def __init__(self, function: Callable):
        self.function = function
        self.name = getattr(function, "__qualname__", type(function).__name__)

    def check(self, output_shape: tuple, where: str) -> None:
        return None

    def labels(self, labels: Sequence[str], output_shape: tuple) -> list[str]:
        return ["target"]

    def scores(self, output, head):
        import tensorflow as tf

        try:
            value = tf.cast(self.function(output), tf.float32)
        except Exception as error:  # noqa: BLE001 - the caller's function failed, not camcli
            raise UsageError(f"the target {self.name} failed on the model's output: {type(error).__name__}: "
                             f"{one_line(error)}") from error
        if value.shape.rank not in (None, 1) and not (value.shape.rank == 2 and value.shape[-1] == 1):
            raise UsageError(f"the target {self.name} returned shape {tuple(value.shape)}; return one score per "
                             "image, (batch,)")
        return tf.reshape(value, (-1, 1))

    def selected(self, output, class_ids, head, reference=None):
        import tensorflow as tf

        return tf.repeat(self.scores(output, head), tf.shape(class_ids)[1], axis=1)

    def masked(self, output, class_index, head, reference=None):
        return self.scores(output, head)[:, 0]

    def record(self) -> dict:
        return {"kind": self.kind, "name": self.name}


def fit_mask(mask: np.ndarray, size: tuple[int, int], name: str | None) -> np.ndarray:
    """A mask (any size; nonzero = inside) resized to the output's (height, width) by nearest neighbour."""
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask.max(axis=-1)
    if mask.ndim != 2:
        raise UsageError(f"the target mask {name or ''} has shape {mask.shape}; give a 2-D mask".replace("  ", " "))
    rows = (np.arange(size[0]) * mask.shape[0] // size[0]).clip(0, mask.shape[0] - 1)
    columns = (np.arange(size[1]) * mask.shape[1] // size[1]).clip(0, mask.shape[1] - 1)
    fitted = (mask[rows][:, columns] > 0).astype(np.float32)
    if not fitted.any():
        raise UsageError(f"the target mask {name or ''} selects no pixel; mark the region with nonzero pixels"
                         .replace("  ", " "))
    return fitted


def read_mask(path: str) -> np.ndarray:
    """A mask image (PNG, nonzero = inside) as a 2-D numpy array."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            return np.asarray(picture.convert("L"))
    except (OSError, UnidentifiedImageError) as error:
        raise UsageError(f"cannot read the target mask {path}: {error}; give an image, nonzero inside the "
                         "region") from None


def resolve_target(target: str | Callable | Target | None, mask=None) -> Target:
    """A Target from `target` ("class", "region", "value", "increase", "decrease", a callable, or a
    Target) and, for region, an optional mask (a path or a 2-D array)."""
    if isinstance(target, Target):
        return target
    if callable(target):
        chosen = CallableTarget(target)
    elif target is None or target == "class":
        chosen = Target()
    elif target == "region":
        mask_name = str(mask) if isinstance(mask, str) else (None if mask is None else "array")
        chosen = RegionTarget(read_mask(mask) if isinstance(mask, str) else mask, mask_name)
    elif target == BOX_TARGET:
        chosen = BoxTarget()
    elif target in REGRESSION_TARGETS:
        chosen = RegressionTarget(target)
    else:
        raise UsageError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)}, or give a callable")
    if mask is not None and not isinstance(chosen, RegionTarget):
        raise UsageError("`target_mask` applies to `target=region`")
    return chosen
