"""The library API: an `Explainer` holds a loaded model, a layer and a method, and explains batches.

This is the only module that runs TensorFlow gradient code. One compiled step per explainer takes a
batch and returns, from a single forward pass, the predictions, the explained layer's activations
and, for gradient methods, each image's own gradients for each requested class. Everything after
that step is numpy (camcli.methods, camcli.overlay).

    >>> from camcli import load_model, Explainer
    >>> explainer = Explainer(load_model("demo"), method="gradcam", classes=["top1"])
    >>> [result] = explainer.explain([rgb_uint8_image])
    >>> result.maps[0].heatmap  # (h, w) float32 in [0, 1] at the layer's resolution
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from camcli.errors import UsageError
from camcli.images import resize_rgb
from camcli.loading import LoadedModel, import_keras
from camcli.methods import REGISTRY, MapInputs, Method
from camcli.overlay import normalize_map
from camcli.preprocess import preprocess

DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class ClassRequest:
    """A class to explain: a fixed index, or the k-th ranked prediction of each image."""

    text: str
    index: int | None = None
    rank: int | None = None  # 1-based


@dataclass(frozen=True)
class Prediction:
    rank: int
    index: int
    label: str
    score: float


@dataclass
class ClassMap:
    method: str
    layer: str
    class_index: int
    label: str
    score: float  # the model's score (probability) for this class
    heatmap: np.ndarray  # (h, w) float32 in [0, 1] at the layer's resolution; all zero when empty
    raw_max: float  # the map's maximum before scaling (after removing negative evidence)
    empty: bool  # no positive evidence at all: the map is all zero


@dataclass
class ImageExplanation:
    predictions: list[Prediction]
    maps: list[ClassMap] = field(default_factory=list)


def parse_class_requests(values: Sequence[str] | None, labels: Sequence[str]) -> list[ClassRequest]:
    """Parse `--class` values: an index, a label (case-insensitive), or top1..topK."""
    if not values:
        return [ClassRequest("top1", rank=1)]
    by_name = {}
    for index, label in enumerate(labels):
        by_name.setdefault(label.lower(), index)
        by_name.setdefault(label.lower().replace("_", " "), index)
    requests = []
    for value in values:
        text = str(value).strip()
        lowered = text.lower()
        if lowered.startswith("top") and lowered[3:].isdigit():
            rank = int(lowered[3:])
            if not 1 <= rank <= len(labels):
                raise UsageError(f"--class {text}: the model has {len(labels)} classes, so use top1..top{len(labels)}")
            requests.append(ClassRequest(text, rank=rank))
        elif text.lstrip("-").isdigit():
            index = int(text)
            if not 0 <= index < len(labels):
                raise UsageError(f"--class {text} is out of range: class indices run from 0 to {len(labels) - 1}")
            requests.append(ClassRequest(text, index=index))
        elif lowered in by_name or lowered.replace("_", " ") in by_name:
            requests.append(ClassRequest(text, index=by_name.get(lowered, by_name.get(lowered.replace("_", " ")))))
        else:
            close = difflib.get_close_matches(lowered, [label.lower() for label in labels], n=3, cutoff=0.6)
            hint = f"closest: {', '.join(close)}" if close else "give a class index, a label or top1..topK"
            raise UsageError(f"unknown class {text!r} ({hint})")
    return requests


def resolve_method(name: str) -> Method:
    method = REGISTRY.get(name.lower())
    if method is None:
        raise UsageError(f"unknown method {name!r}: choose one of {', '.join(REGISTRY)}")
    return method


class Explainer:
    """Explains batches of images with one model, one layer and one method.

    loaded: from `camcli.load_model`. layer: a layer name or "outer/inner" path; None picks the last
    spatial layer before the head. classes: `--class` style requests (default: the top-1 class).
    top_k: predictions reported per image (default: 5, or every class when there are fewer).
    head: "auto" reads softmax/sigmoid from the model; "softmax" or "sigmoid" overrides it for models
    that output logits.
    """

    def __init__(self, loaded: LoadedModel, layer: str | None = None, method: str = "gradcam",
                 classes: Sequence[str] | None = None, top_k: int | None = None, head: str = "auto"):
        import_keras()
        import tensorflow as tf

        from camcli.forward import TappedForward
        from camcli.layers import analyse_head, cam_weights, resolve_layer

        self.loaded = loaded
        model = loaded.model
        self.method = resolve_method(method)
        self.layer = resolve_layer(model, layer)
        self.head = analyse_head(model, head)
        if self.head.num_classes != loaded.num_classes:
            raise UsageError(f"the model has {self.head.num_classes} classes but {loaded.num_classes} labels")
        if top_k is None:
            top_k = min(DEFAULT_TOP_K, loaded.num_classes)
        if not 1 <= top_k <= loaded.num_classes:
            raise UsageError(f"--top-k {top_k} is out of range: the model has {loaded.num_classes} classes")
        self.top_k = top_k
        self.requests = parse_class_requests(classes, loaded.labels)
        self.class_weights = None
        if self.method.needs_gap_head:
            self.class_weights = cam_weights(model, self.layer, self.head)
            if self.class_weights is None:
                raise UsageError(
                    f"--method {self.method.name} needs the layer to feed global-average-pooling -> dense, and "
                    f"{self.layer!r} in {loaded.name} does not; use --method gradcam, which works at any conv layer"
                )
        self._forward = TappedForward(model, self.layer, self.head)
        height, width = loaded.input_size
        self._step = tf.function(
            self._compute, input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32)],
            reduce_retracing=True,
        )

    # -- the TensorFlow step ------------------------------------------------------------------

    def _class_logits_and_scores(self, logits):
        """Per-class logits (what is differentiated) and scores (what is reported)."""
        import tensorflow as tf

        logits = tf.cast(logits, tf.float32)
        if self.head.binary:  # one sigmoid unit z: class 1 has logit z, class 0 has -z
            class_logits = tf.concat([-logits, logits], axis=-1)
            return class_logits, tf.sigmoid(class_logits)  # sigmoid(-z) = 1 - sigmoid(z)
        if self.head.activation == "sigmoid":  # multi-label: independent per-class probabilities
            return logits, tf.sigmoid(logits)
        return logits, tf.nn.softmax(logits, axis=-1)

    def _select(self, logits):
        """Scores, the top-k, each image's class per request, and those classes' logits y^c."""
        import tensorflow as tf

        k = max(self.top_k, *(r.rank or 1 for r in self.requests))
        fixed = tf.constant([r.index if r.index is not None else -1 for r in self.requests], tf.int32)
        rank_positions = [(r.rank or 1) - 1 for r in self.requests]
        class_logits, scores = self._class_logits_and_scores(logits)
        top_scores, top_indices = tf.math.top_k(scores, k=k)
        ranked = tf.gather(top_indices, rank_positions, axis=1)
        class_ids = tf.where(fixed[tf.newaxis, :] >= 0, fixed[tf.newaxis, :], ranked)  # (batch, requests)
        selected = tf.gather(class_logits, class_ids, batch_dims=1)  # y^c per image and request
        return scores, top_scores, top_indices, class_ids, selected

    def _compute(self, images):
        import tensorflow as tf

        if not self.method.needs_gradients:  # one forward pass and nothing else
            activations, logits = self._forward(images)
            scores, top_scores, top_indices, class_ids, _ = self._select(logits)
            gradients = tf.zeros((0,), tf.float32)
            return tf.cast(activations, tf.float32), gradients, scores, top_scores, top_indices, class_ids
        with tf.GradientTape(persistent=len(self.requests) > 1) as tape:
            # Watching the activations records the head even in frozen models, whose weights the
            # tape would otherwise ignore.
            activations, logits = self._forward(images, watch=tape.watch)
            scores, top_scores, top_indices, class_ids, selected = self._select(logits)
            # Summing y^c over the batch and differentiating gives each image its own gradient, as
            # the images do not interact at inference; nothing is averaged across the batch.
            totals = [tf.reduce_sum(selected[:, r]) for r in range(len(self.requests))]
        gradients = tf.stack([tf.cast(tape.gradient(total, activations), tf.float32) for total in totals], axis=1)
        return tf.cast(activations, tf.float32), gradients, scores, top_scores, top_indices, class_ids

    # -- the numpy side -------------------------------------------------------------------------

    def preprocess(self, images_rgb: Sequence[np.ndarray]) -> np.ndarray:
        """Resize RGB uint8 images to the model's input and apply its preprocessing."""
        batch = np.stack([resize_rgb(image, self.loaded.input_size) for image in images_rgb])
        return preprocess(batch, self.loaded.preprocess)

    def explain(self, images_rgb: Sequence[np.ndarray]) -> list[ImageExplanation]:
        """Explain RGB uint8 images of any size (H, W, 3)."""
        return self.explain_batch(self.preprocess(images_rgb))

    def explain_batch(self, batch: np.ndarray) -> list[ImageExplanation]:
        """Explain a preprocessed float32 batch (B, height, width, 3)."""
        outputs = self._step(np.asarray(batch, dtype=np.float32))
        activations, gradients, scores, top_scores, top_indices, class_ids = (t.numpy() for t in outputs)
        labels = self.loaded.labels
        results = [
            ImageExplanation([
                Prediction(rank + 1, int(index), labels[index], float(score))
                for rank, (index, score) in enumerate(zip(top_indices[b, : self.top_k], top_scores[b, : self.top_k]))
            ])
            for b in range(len(batch))
        ]
        for r in range(len(self.requests)):
            ids = class_ids[:, r]
            inputs = MapInputs(
                activations,
                gradients[:, r] if self.method.needs_gradients else None,
                self.class_weights[:, ids].T if self.class_weights is not None else None,
            )
            raw_maps = self.method.compute(inputs)
            for b, raw in enumerate(raw_maps):
                index = int(ids[b])
                if any(m.class_index == index for m in results[b].maps):
                    continue  # e.g. --class top1 --class tabby when tabby is the top class
                heatmap, raw_max, empty = normalize_map(raw)
                results[b].maps.append(ClassMap(self.method.name, self.layer, index, labels[index],
                                                float(scores[b, index]), heatmap, raw_max, empty))
        return results
