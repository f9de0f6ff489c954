"""The library API: an `Explainer` holds a loaded model, a layer and a method, and explains batches.

This is the only module that runs TensorFlow gradient code. One compiled step per explainer takes a
batch and returns, from a single forward pass, the predictions, the explained layer's activations
and, for gradient methods, each image's own gradients for each requested class. Everything after
that step is numpy (camcli.explain.methods, camcli.maps.overlay).

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
from camcli.explain.methods import REGISTRY, MapInputs, Method
from camcli.maps.overlay import normalize_map, upsample
from camcli.models.loading import LoadedModel, import_keras
from camcli.models.preprocess import preprocess, resize_rgb

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
    layers: list[str] = field(default_factory=list)  # every explained layer (several with a repeated --layer)
    image: np.ndarray | None = None  # guided methods: (H, W, 3) float32 RGB in [0, 1] at the input size


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


def _unique(items):
    return list(dict.fromkeys(items))


def _read_only(array: np.ndarray) -> np.ndarray:
    """The step's outputs may be shared by several methods (SharedStep): none may change them."""
    array.flags.writeable = False
    return array


class Explainer:
    """Explains batches of images with one model, one or more layers and one method.

    loaded: from `camcli.load_model`. layer: a layer name or "outer/inner" path, or a list of them
    (their maps are fused: the mean of the per-layer maps scaled to [0, 1]); None picks the last
    spatial layer before the head. classes: `--class` style requests (default: the top-1 class).
    top_k: predictions reported per image (default: 5, or every class when there are fewer).
    head: "auto" reads softmax/sigmoid from the model; "softmax" or "sigmoid" overrides it for models
    that output logits. eigen_smooth: reduce the method's weighted activations by their first
    principal component. aug_smooth: average the maps of flipped and zoomed copies. max_channels:
    Score-CAM scores only this many channels. score_batch_size: masked images per Score-CAM pass.
    """

    def __init__(self, loaded: LoadedModel, layer: str | Sequence[str] | None = None, method: str = "gradcam",
                 classes: Sequence[str] | None = None, top_k: int | None = None, head: str = "auto",
                 eigen_smooth: bool = False, aug_smooth: bool = False, max_channels: int | None = None,
                 score_batch_size: int = 32):
        import_keras()
        import tensorflow as tf

        from camcli.explain.forward import TappedForward
        from camcli.models.layers import analyse_head, cam_weights, resolve_layer

        self.loaded = loaded
        model = loaded.model
        self.method = resolve_method(method)
        requested = [layer] if layer is None or isinstance(layer, str) else list(layer) or [None]
        self.layers = _unique(resolve_layer(model, name) for name in requested)
        self.layer = "+".join(self.layers)
        self.head = analyse_head(model, head)
        if self.head.num_classes != loaded.num_classes:
            raise UsageError(f"the model has {self.head.num_classes} classes but {loaded.num_classes} labels")
        if top_k is None:
            top_k = min(DEFAULT_TOP_K, loaded.num_classes)
        if not 1 <= top_k <= loaded.num_classes:
            raise UsageError(f"--top-k {top_k} is out of range: the model has {loaded.num_classes} classes")
        self.top_k = top_k
        self.requests = parse_class_requests(classes, loaded.labels)
        self._check_options(eigen_smooth, aug_smooth, max_channels, score_batch_size)
        self.eigen_smooth, self.aug_smooth = eigen_smooth, aug_smooth
        self.max_channels, self.score_batch_size = max_channels, score_batch_size
        self.masked_images_scored = 0  # Score-CAM's cost: masked copies run through the model so far
        self.steps_run = 0  # compiled steps (forward, and backward for gradient methods) run so far
        self.class_weights = None
        if self.method.needs_gap_head:
            self.class_weights = [cam_weights(model, path, self.head) for path in self.layers]
            for path, weights in zip(self.layers, self.class_weights):
                if weights is None:
                    raise UsageError(
                        f"--method {self.method.name} needs the layer to feed global-average-pooling -> dense, and "
                        f"{path!r} in {loaded.name} does not; use --method gradcam, which works at any conv layer"
                    )
        self._forward = TappedForward(model, self.layers, self.head)
        height, width = loaded.input_size
        images_spec = tf.TensorSpec((None, height, width, 3), tf.float32)
        ids_spec = tf.TensorSpec((None, len(self.requests)), tf.int32)
        self._step = tf.function(self._compute, input_signature=[images_spec, ids_spec], reduce_retracing=True)
        self._scores_step = tf.function(self._scores, input_signature=[images_spec], reduce_retracing=True)
        if self.method.guided:
            self._guided_forward = TappedForward(model, [], self.head, guided=True)
            self._guided_step = tf.function(self._guided_gradients, input_signature=[images_spec, ids_spec],
                                            reduce_retracing=True)
        if self.method.needs_masked_scores:
            self._masked_step = tf.function(self._masked_scores, reduce_retracing=True, input_signature=[
                tf.TensorSpec((height, width, 3), tf.float32), tf.TensorSpec((None, None, None), tf.float32),
                tf.TensorSpec((), tf.int32)])

    @property
    def method_names(self) -> list[str]:
        """The methods whose maps `explain_batch` returns (one; see MethodSet for several)."""
        return [self.method.name]

    def _check_options(self, eigen_smooth, aug_smooth, max_channels, score_batch_size):
        name = self.method.name
        if aug_smooth and self.method.guided == "backprop":
            raise UsageError(f"--aug-smooth smooths class activation maps; {name} has none (try guidedgradcam)")
        if eigen_smooth and self.method.guided == "backprop":
            raise UsageError(f"--eigen-smooth applies to layer maps; {name} has none (try guidedgradcam)")
        if max_channels is not None:
            if not self.method.needs_masked_scores:
                raise UsageError(f"--max-channels applies to --method scorecam, not {name}")
            if max_channels < 1:
                raise UsageError(f"--max-channels {max_channels} must be at least 1")
        if score_batch_size < 1:
            raise UsageError(f"the Score-CAM batch size must be at least 1, not {score_batch_size}")

    # -- the TensorFlow steps -------------------------------------------------------------------

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

    def _select(self, logits, forced_ids):
        """Scores, the top-k, each image's class per request, and those classes' logits y^c.

        `forced_ids` (batch, requests) overrides the class where it is >= 0: augmented copies of an
        image are explained for the original's class, whatever their own top class is.
        """
        import tensorflow as tf

        k = max(self.top_k, *(r.rank or 1 for r in self.requests))
        fixed = tf.constant([r.index if r.index is not None else -1 for r in self.requests], tf.int32)
        rank_positions = [(r.rank or 1) - 1 for r in self.requests]
        class_logits, scores = self._class_logits_and_scores(logits)
        top_scores, top_indices = tf.math.top_k(scores, k=k)
        ranked = tf.gather(top_indices, rank_positions, axis=1)
        class_ids = tf.where(fixed[tf.newaxis, :] >= 0, fixed[tf.newaxis, :], ranked)  # (batch, requests)
        class_ids = tf.where(forced_ids >= 0, forced_ids, class_ids)
        selected = tf.gather(class_logits, class_ids, batch_dims=1)  # y^c per image and request
        return scores, top_scores, top_indices, class_ids, selected

    def _scores(self, images):
        _, logits = self._forward(images)
        return self._class_logits_and_scores(logits)[1]

    def _compute(self, images, forced_ids):
        import tensorflow as tf

        if not self.method.needs_gradients:  # one forward pass and nothing else
            activations, logits = self._forward(images)
            scores, top_scores, top_indices, class_ids, _ = self._select(logits, forced_ids)
            activations = [tf.cast(a, tf.float32) for a in activations]
            return activations, [], scores, top_scores, top_indices, class_ids
        with tf.GradientTape(persistent=len(self.requests) > 1) as tape:
            # Watching the activations records the head even in frozen models, whose weights the
            # tape would otherwise ignore.
            activations, logits = self._forward(images, watch=tape.watch)
            scores, top_scores, top_indices, class_ids, selected = self._select(logits, forced_ids)
            # Summing y^c over the batch and differentiating gives each image its own gradient, as
            # the images do not interact at inference; nothing is averaged across the batch.
            totals = [tf.reduce_sum(selected[:, r]) for r in range(len(self.requests))]
        per_request = [tape.gradient(total, activations) for total in totals]  # [request][layer]
        gradients = [
            tf.stack([tf.cast(per_request[r][i], tf.float32) for r in range(len(totals))], axis=1)
            for i in range(len(activations))
        ]  # [layer]: (batch, requests, h, w, channels)
        activations = [tf.cast(a, tf.float32) for a in activations]
        return activations, gradients, scores, top_scores, top_indices, class_ids

    def _guided_gradients(self, images, class_ids):
        """d y^c / d input through the guided-ReLU stand-ins: (batch, requests, H, W, 3)."""
        import tensorflow as tf

        with tf.GradientTape(persistent=len(self.requests) > 1) as tape:
            tape.watch(images)
            _, logits = self._guided_forward(images)
            class_logits, _ = self._class_logits_and_scores(logits)
            selected = tf.gather(class_logits, class_ids, batch_dims=1)
            totals = [tf.reduce_sum(selected[:, r]) for r in range(len(self.requests))]
        return tf.stack([tape.gradient(total, images) for total in totals], axis=1)

    def _masked_scores(self, image, masks, class_index):
        """Score-CAM: the class score of `image` multiplied by each upsampled mask, (n,)."""
        import tensorflow as tf

        height, width = self.loaded.input_size
        upsampled = tf.image.resize(masks[..., tf.newaxis], (height, width), method="bilinear")
        _, logits = self._forward(image[tf.newaxis] * upsampled)
        return self._class_logits_and_scores(logits)[1][:, class_index]

    # -- the numpy side -------------------------------------------------------------------------

    def preprocess(self, images_rgb: Sequence[np.ndarray]) -> np.ndarray:
        """Resize RGB uint8 images to the model's input and apply its preprocessing."""
        batch = np.stack([resize_rgb(image, self.loaded.input_size) for image in images_rgb])
        return preprocess(batch, self.loaded.preprocess)

    def class_scores(self, batch: np.ndarray) -> np.ndarray:
        """The model's scores (probabilities) for every class, (B, num_classes), of a preprocessed batch.

        One forward pass and nothing else; used by Score-CAM and the faithfulness metrics, which score
        masked copies of the images.
        """
        return self._scores_step(np.asarray(batch, dtype=np.float32)).numpy()

    def explain(self, images_rgb: Sequence[np.ndarray], class_ids: np.ndarray | None = None) -> list[ImageExplanation]:
        """Explain RGB uint8 images of any size (H, W, 3); see `explain_batch` for `class_ids`."""
        return self.explain_batch(self.preprocess(images_rgb), class_ids)

    def _score_masks(self, image: np.ndarray, class_index: int, masks: np.ndarray) -> np.ndarray:
        scores = []
        for start in range(0, len(masks), self.score_batch_size):
            chunk = masks[start: start + self.score_batch_size]
            scores.append(self._masked_step(image, chunk, np.int32(class_index)).numpy())
            self.masked_images_scored += len(chunk)
        return np.concatenate(scores) if scores else np.zeros((0,), np.float32)

    def _layer_maps(self, batch, activations, gradients, class_ids) -> list[list[tuple[np.ndarray, float]]]:
        """[request][image] -> (unit map on the finest layer's grid, raw max over the layers)."""
        from camcli.explain.methods import layer_map

        grid = max((a.shape[1:3] for a in activations), key=lambda hw: hw[0] * hw[1])
        out = []
        for r in range(len(self.requests)):
            ids = class_ids[:, r]
            per_layer = []
            for i, layer_activations in enumerate(activations):
                inputs = MapInputs(
                    layer_activations,
                    gradients[i][:, r] if self.method.needs_gradients else None,
                    self.class_weights[i][:, ids].T if self.class_weights is not None else None,
                    (lambda b, masks, ids=ids: self._score_masks(batch[b], int(ids[b]), masks))
                    if self.method.needs_masked_scores else None,
                    self.max_channels,
                )
                per_layer.append(layer_map(self.method, inputs, self.eigen_smooth))
            images = []
            for b in range(len(batch)):
                units, raw_max = [], 0.0
                for raw in per_layer:
                    unit, layer_max, _ = normalize_map(raw[b])
                    units.append(unit if unit.shape == tuple(grid) else upsample(unit, (grid[1], grid[0])))
                    raw_max = max(raw_max, layer_max)
                images.append((units[0] if len(units) == 1 else np.mean(units, axis=0), raw_max))
            out.append(images)
        return out

    @property
    def step_signature(self) -> tuple:
        """Explainers with equal signatures compute the same step outputs for the same batch."""
        head = self.head
        return (id(self.loaded), tuple(self.layers), tuple(self.requests), self.top_k,
                id(head.final), head.activation, head.strip, head.binary)

    def _run(self, batch, forced_ids):
        self.steps_run += 1
        outputs = self._step(batch, forced_ids)
        activations, gradients = ([_read_only(t.numpy()) for t in group] for group in outputs[:2])
        return (activations, gradients, *(_read_only(t.numpy()) for t in outputs[2:]))

    def explain_batch(self, batch: np.ndarray, class_ids: np.ndarray | None = None,
                      shared: SharedStep | None = None) -> list[ImageExplanation]:
        """Explain a preprocessed float32 batch (B, height, width, 3).

        class_ids: optional (B, requests) class indices that replace the requests image by image
        (-1 keeps the request), e.g. each image's ground-truth class; repeats give one map.
        shared: this batch's SharedStep when several explainers explain it (see `shared_steps`);
        the compiled step then runs once for all of them.
        """
        from camcli.explain.augment import AUGMENTATIONS, average_maps, restore_map

        batch = np.asarray(batch, dtype=np.float32)
        shared = shared if shared is not None else SharedStep(self)
        forced = np.full((len(batch), len(self.requests)), -1, dtype=np.int32)
        if class_ids is not None:
            forced = np.asarray(class_ids, dtype=np.int32).reshape(forced.shape)
            if forced.max(initial=-1) >= self.loaded.num_classes:
                raise UsageError(f"class index {forced.max()} is out of range: the model has "
                                 f"{self.loaded.num_classes} classes")
        _, (activations, gradients, scores, top_scores, top_indices, class_ids) = shared.run(batch, forced)
        labels = self.loaded.labels
        results = [
            ImageExplanation([
                Prediction(rank + 1, int(index), labels[index], float(score))
                for rank, (index, score) in enumerate(zip(top_indices[b, : self.top_k], top_scores[b, : self.top_k]))
            ])
            for b in range(len(batch))
        ]
        if self.method.guided == "backprop":
            maps = None
        elif not self.aug_smooth:
            maps = self._layer_maps(batch, activations, gradients, class_ids)
        else:
            maps = self._layer_maps(batch, activations, gradients, class_ids)
            collected = [[[restore_map(unit, False, 1.0)] for unit, _ in row] for row in maps]
            for flip, zoom in AUGMENTATIONS[1:]:
                augmented, (a, g, *_) = shared.run(batch, class_ids.astype(np.int32), (flip, zoom))
                for r, row in enumerate(self._layer_maps(augmented, a, g, class_ids)):
                    for b, (unit, _) in enumerate(row):
                        collected[r][b].append(restore_map(unit, flip, zoom))
            maps = [[(average_maps(collected[r][b]), maps[r][b][1]) for b in range(len(batch))]
                    for r in range(len(self.requests))]
        guided = self._guided_step(batch, class_ids.astype(np.int32)).numpy() if self.method.guided else None
        for r in range(len(self.requests)):
            for b in range(len(batch)):
                index = int(class_ids[b, r])
                if any(m.class_index == index for m in results[b].maps):
                    continue  # e.g. --class top1 --class tabby when tabby is the top class
                results[b].maps.append(self._class_map(index, float(scores[b, index]),
                                                       maps[r][b] if maps else None,
                                                       guided[b, r] if guided is not None else None))
        return results

    def _class_map(self, index, score, unit_and_max, input_gradient) -> ClassMap:
        from camcli.explain.methods import gradient_image, guided_gradcam, guided_magnitude

        label = self.loaded.labels[index]
        image = None
        if self.method.guided == "backprop":
            heatmap, raw_max, _ = normalize_map(guided_magnitude(input_gradient))
            image, empty = gradient_image(input_gradient)
            return ClassMap(self.method.name, self.layer, index, label, score, heatmap, raw_max, empty,
                            list(self.layers), image)
        unit, raw_max = unit_and_max
        heatmap, _, empty = normalize_map(unit)  # rescale fused or averaged maps to a maximum of 1
        if self.method.guided == "gradcam":
            height, width = self.loaded.input_size
            image, guided_empty = gradient_image(guided_gradcam(input_gradient, upsample(heatmap, (width, height))))
            empty = empty or guided_empty
        return ClassMap(self.method.name, self.layer, index, label, score, heatmap, raw_max if not empty else 0.0,
                        empty, list(self.layers), image)


class SharedStep:
    """One batch's compiled step, run once for several Explainers.

    Explainers with the same `step_signature` (model, layers, classes, head, top-k) compute the same
    step outputs, and a gradient method's outputs (activations, gradients, scores) hold everything a
    gradient-free method needs. The first explainer that asks runs `runner`'s step, on the batch and
    then on each augmented copy (--aug-smooth); the others reuse the outputs. Make a fresh one per
    batch, with `shared_steps`.
    """

    def __init__(self, runner: Explainer):
        self.runner = runner
        self._outputs = {}

    def run(self, batch: np.ndarray, forced_ids: np.ndarray, augmentation: tuple[bool, float] | None = None):
        """(the batch explained, its step outputs): `batch` itself, or its copy augmented by (flip, zoom)
        for --aug-smooth. Computed on the first call for this batch, classes and augmentation."""
        from camcli.explain.augment import augment_batch

        key = (id(batch), augmentation, forced_ids.tobytes())
        if key not in self._outputs:
            explained = batch if augmentation is None else augment_batch(batch, *augmentation)
            # `batch` is kept with its outputs, so that its id is not reused while this step lives.
            self._outputs[key] = (batch, explained, self.runner._run(explained, forced_ids))
        return self._outputs[key][1:]


def shared_steps(explainers: Sequence[Explainer]) -> list[SharedStep]:
    """One fresh SharedStep per explainer, for one batch: explainers whose steps agree get the same
    one, run by a gradient method among them if there is one."""
    groups: dict[tuple, list[Explainer]] = {}
    for explainer in explainers:
        groups.setdefault(explainer.step_signature, []).append(explainer)
    by_signature = {
        signature: SharedStep(next((e for e in group if e.method.needs_gradients), group[0]))
        for signature, group in groups.items()
    }
    return [by_signature[explainer.step_signature] for explainer in explainers]


def distinct_method_names(explainers: Sequence[Explainer]) -> list[str]:
    """The explainers' method names, in order; UsageError when one is given twice."""
    names = [explainer.method.name for explainer in explainers]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(f"--method {repeated[0]} is given twice; give each method once")
    return names


class MethodSet:
    """Several Explainers on one model, layer and classes, run as one: `camcli explain --method a
    --method b`. Each image gets one ImageExplanation holding every method's maps, in method order,
    with the predictions of the first (they are the same model's scores). The methods share one
    compiled step per batch (SharedStep): a run of several gradient methods costs one forward and
    backward pass, plus each method's numpy work and outputs. Score-CAM's masked passes and the
    guided methods' backward pass to the input come on top, per method.
    """

    def __init__(self, explainers: Sequence[Explainer]):
        explainers = list(explainers)
        if not explainers:
            raise UsageError("give at least one --method")
        first = explainers[0]
        for other in explainers[1:]:
            if other.loaded is not first.loaded or other.layers != first.layers or \
                    [r.text for r in other.requests] != [r.text for r in first.requests]:
                raise UsageError("the methods of one run must share the model, the layers and the classes")
        names = distinct_method_names(explainers)
        self.explainers = explainers
        self.loaded, self.layer, self.layers = first.loaded, first.layer, first.layers
        self.requests, self.top_k = first.requests, first.top_k
        self.method_names = names

    @property
    def masked_images_scored(self) -> int:
        return sum(e.masked_images_scored for e in self.explainers)

    @property
    def steps_run(self) -> int:
        return sum(e.steps_run for e in self.explainers)

    def preprocess(self, images_rgb: Sequence[np.ndarray]) -> np.ndarray:
        return self.explainers[0].preprocess(images_rgb)

    def explain(self, images_rgb: Sequence[np.ndarray], class_ids: np.ndarray | None = None) -> list[ImageExplanation]:
        return self.explain_batch(self.preprocess(images_rgb), class_ids)

    def explain_batch(self, batch: np.ndarray, class_ids: np.ndarray | None = None) -> list[ImageExplanation]:
        batch = np.asarray(batch, dtype=np.float32)
        per_method = [explainer.explain_batch(batch, class_ids, shared)
                      for explainer, shared in zip(self.explainers, shared_steps(self.explainers))]
        return [ImageExplanation(results[0].predictions, [m for result in results for m in result.maps])
                for results in zip(*per_method)]
