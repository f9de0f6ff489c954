"""The library API: an `Explainer` holds a loaded model, a layer and a method, and explains batches.

The flow for one batch: the compiled step (camcli.explain.step) runs the forward pass and, for
gradient methods, each image's own gradients for each requested class; the method
(camcli.explain.methods) turns what it needs of that into maps, through the shared numpy code of
camcli.explain.evidence; the explainer labels them. A `MethodSet` runs several methods on one step.

    >>> from camcli import load_model, Explainer
    >>> explainer = Explainer(load_model("demo"), method="gradcam", classes="top1")
    >>> [result] = explainer.explain([image])  # uint8 or float [0, 1]; RGB, greyscale or RGBA
    >>> result.maps[0].heatmap  # (h, w) float32 in [0, 1] at the layer's resolution
    >>> result.maps[0].at_image_size()  # (H, W): the same map at the image's resolution
    >>> result  # in Jupyter: each map over the image, captioned (camcli.explain.display)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from camcli.errors import UsageError
from camcli.explain.classes import ClassRequest, compared_class_ids, forced_class_ids, parse_class_requests
from camcli.explain.evidence import BatchEvidence, MapOptions
from camcli.explain.methods import Method, MethodMap, resolve_method
from camcli.explain.step import BatchRun, Step, StepOutputs
from camcli.maps.overlay import upsample
from camcli.models.loading import LoadedModel, import_keras, input_values, wrap_model
from camcli.models.preprocess import as_rgb_picture, image_height_width, preprocess, resize_rgb
from camcli.options import MapRequest, fingerprint_fields, gather, parse_token_grid

__all__ = ["ClassMap", "ClassRequest", "Explainer", "ImageExplanation", "MethodSet", "Prediction",
           "distinct_method_names", "parse_class_requests"]

DEFAULT_TOP_K = 5


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
    # The image explained, as the caller gave it to `explain`: the same object for all its maps, not
    # a copy. None from `explain_batch`, which sees only the preprocessed batch.
    source_image: object = field(default=None, repr=False, compare=False)
    # An object detector's map: the detection it explains (camcli.explain.detection.Detection); None otherwise.
    detection: object = None

    def resized(self, *, height: int, width: int) -> np.ndarray:
        """The heatmap resized bilinearly to (height, width): float32 in [0, 1]."""
        return upsample(self.heatmap, height=height, width=width)

    def at_image_size(self) -> np.ndarray:
        """The heatmap at the explained image's resolution: (H, W) float32 in [0, 1]."""
        if self.source_image is None:
            raise UsageError("this map does not know its image (maps from `explain_batch` do not); "
                             "use resized(height=..., width=...)")
        height, width = image_height_width(self.source_image)
        return self.resized(height=height, width=width)

    def _repr_png_(self) -> bytes:
        """Jupyter's picture of the map: its overlay on the image, or the coloured heatmap."""
        from camcli.explain.display import map_picture, png_bytes  # display imports this module

        return png_bytes(map_picture(self))


@dataclass
class ImageExplanation:
    predictions: list[Prediction]
    maps: list[ClassMap] = field(default_factory=list)
    detections: list | None = None  # an object detector's: every explained detection (Detection), best first

    def _repr_html_(self) -> str:
        """Jupyter's view: every map, captioned with its method, class and score."""
        from camcli.explain.display import explanation_html

        return explanation_html(self)


# Explainer's keywords that name a MapRequest field in the singular (one method; a layer or a list).
EXPLAINER_ALIASES = {"method": "methods", "layer": "layers"}


class Explainer:
    """Explains batches of images with one model, one or more layers and one method.

    model: a Keras model, or a `LoadedModel` from `camcli.load_model` / `camcli.wrap_model`. A Keras
    model is wrapped, never modified, with `preprocess` (caffe, tf, torch, scale01 or none; default
    none: the model takes RGB values in 0..255) and `labels` (its class names; default: the class
    indices as text).
    maps: a camcli.options.MapRequest of one method, or its fields as keywords (`method` and `layer`
    stand for `methods` and `layers`): layer, a layer name or "outer/inner" path, or a list of them
    (their maps are fused: the mean of the per-layer maps scaled to [0, 1]), by default the last
    spatial layer before the head; classes, a `--class` style request or a list of them (default: the
    top-1 class); top_k, predictions reported per image; head, "auto" reads softmax/sigmoid from the
    model, "softmax" or "sigmoid" overrides it for models that output logits; eigen_smooth,
    aug_smooth, max_channels (Score-CAM), target, target_mask, token_grid. Several methods in one
    pass: camcli.MethodSet.of(model, methods=[...]).
    """

    def __init__(self, model, maps: MapRequest | None = None, *, preprocess: str | None = None,
                 labels: Sequence[str] | None = None, build_step: bool = True, **options):
        request = gather("Explainer", {"maps": (MapRequest, maps)}, options, aliases=EXPLAINER_ALIASES)["maps"]
        if not isinstance(build_step, bool):
            raise UsageError(f"`build_step` is true or false, not {build_step!r:.40}")
        if len(request.methods) != 1:
            raise UsageError(f"an Explainer runs one method, not {', '.join(request.methods)}: for several in one "
                             "pass, use camcli.MethodSet.of(model, methods=[...])")
        import_keras()
        from camcli.explain.targets import resolve_target
        from camcli.models.layers import layer_grid, resolve_layer

        loaded = loaded_model(model, preprocess, labels)
        self.loaded, self.request = loaded, request
        self.method: Method = resolve_method(request.methods[0])
        given_grid = parse_token_grid(request.token_grid)
        self.layers = list(dict.fromkeys(resolve_layer(loaded.model, name, loaded.input_size, given_grid)
                                         for name in request.layers or [loaded.default_layer]))
        self.grids = [layer_grid(loaded.model, path, loaded.input_size, given_grid) for path in self.layers]
        self.layer = "+".join(self.layers)
        self.target = resolve_target(request.target, request.target_mask)
        self.labels = self._checked_target(request.head)
        self.top_k = _checked_top_k(request.top_k, len(self.labels))
        self.requests = parse_class_requests(list(request.classes) or None, self.labels)
        self.method.check_options(request.eigen_smooth, request.aug_smooth, request.max_channels)
        self.options = MapOptions(request.eigen_smooth, request.aug_smooth, request.max_channels,
                                  request.masked_batch, compared_class_ids(request.compare_with, self.labels))
        self.masked_images_scored = 0  # Score-CAM's cost: masked copies run through the model so far
        if self.method.needs_gap_head:
            self._class_weights()  # a layer without a GAP -> dense head fails here, before any image
        self._step: Step | None = None
        if build_step:  # built now: a layer the replay cannot tap fails here, before any image
            self._step = self.new_step(self.top_k, self.method.needs_gradients)

    def new_step(self, top_k: int, gradients: bool) -> Step:
        """A compiled step for this explainer's model, layers, head, classes and target."""
        return Step(self.loaded, self.layers, self.head, self.requests, top_k, gradients, self.target, self.grids,
                    self.request.precision)

    @property
    def step(self) -> Step:
        """The compiled step: its own, or the one its MethodSet shares."""
        if self._step is None:
            self._step = self.new_step(self.top_k, self.method.needs_gradients)
        return self._step

    def _checked_target(self, head: str) -> list[str]:
        """Check the target against the explained output; set the head; return the target's labels."""
        from camcli.models.layers import analyse_head

        loaded = self.loaded
        output_shape = tuple(loaded.model.outputs[0].shape)
        where = f"model {loaded.name}" + (f" (output {loaded.output_name!r})" if loaded.output_name else "")
        self.target.check(output_shape, where)
        self.head = self.target.head_for(analyse_head(loaded.model, head))
        labels = self.target.labels(loaded.labels, output_shape)
        if not self.target.keeps_activation and self.head.num_classes != len(labels):
            if head != "auto":
                raise UsageError(f"`head={head}` reads {self.head.num_classes} class(es) from {where}'s output, "
                                 f"and its labels name {len(labels)}: leave `head` at auto")
            raise UsageError(f"the model has {self.head.num_classes} classes but {len(labels)} labels")
        return labels

    @property
    def precision(self) -> str:
        """The step's compute dtype (camcli.options.PRECISIONS); the maps' arithmetic is float32 in every one."""
        return self.request.precision

    @property
    def method_names(self) -> list[str]:
        """The methods whose maps `explain_batch` returns (one; see MethodSet for several)."""
        return [self.method.name]

    def settings(self) -> dict:
        """Everything about this explainer that shapes its maps and predictions (records' fingerprints): the
        request's fields (camcli.options.fingerprint_fields: a new field enters by itself) and what was
        resolved from them (the default layer, token grids, head, top-k, class texts, target)."""
        return {**fingerprint_fields(self.request), "methods": [self.method.name], "layers": list(self.layers),
                "grids": [None if grid is None else [grid.prefix, grid.height, grid.width] for grid in self.grids],
                "target": self.target_record(), "interface": self.loaded.interface(),
                "classes": [request.text for request in self.requests], "top_k": self.top_k,
                "head": [self.head.activation, self.head.strip], "max_channels": [self.options.max_channels]}

    def target_record(self) -> dict:
        """The target, as records hold it: its kind, and for a region mask a digest of the mask."""
        record = self.target.record()
        mask = getattr(self.target, "mask", None)
        if mask is not None:
            import hashlib

            record["mask_sha256"] = hashlib.sha256(np.ascontiguousarray(mask).tobytes()).hexdigest()
        return record

    @property
    def steps_run(self) -> int:
        """Compiled steps (forward, and backward for gradient methods) this explainer's step has run."""
        return self._step.runs if self._step is not None else 0

    def refresh(self) -> None:
        """After the model's weights change (training, set_weights): make sure every map uses the new ones.
        Keras' own layers are always read live; this re-reads the few stand-ins that copy a custom layer."""
        if self._step is not None:
            self._step.refresh()

    @property
    def class_weights(self) -> list[np.ndarray] | None:
        """CAM's (channels, classes) dense weights per layer, read now (a model that trains on is explained
        as it is now); None for the other methods."""
        return self._class_weights() if self.method.needs_gap_head else None

    def _class_weights(self) -> list[np.ndarray]:
        """CAM's (channels, classes) dense weights per layer; UsageError where a layer has none."""
        from camcli.models.layers import cam_weights

        if self.target.kind != "class":
            raise UsageError(f"`methods={self.method.name}` explains class scores; for `target={self.target.kind}` "
                             "use `methods=gradcam`")
        weights = [cam_weights(self.loaded.model, path, self.head) for path in self.layers]
        for path, layer_weights in zip(self.layers, weights):
            if layer_weights is None:
                raise UsageError(
                    f"`methods={self.method.name}` needs the layer to feed global-average-pooling -> dense, and "
                    f"{path!r} in {self.loaded.name} does not; use `methods=gradcam`, which works at any conv layer"
                )
        return weights

    def preprocess(self, images: Sequence) -> np.ndarray:
        """Images in any form `as_rgb_picture` takes (uint8 or float [0, 1]; RGB, greyscale or RGBA;
        Pillow), resized to the model's input, with its preprocessing applied."""
        return preprocess_images(images, self.loaded)

    def class_scores(self, batch: np.ndarray, extras: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """The model's scores (probabilities) for every class, (B, num_classes), of a preprocessed batch.

        One forward pass and nothing else; used by the faithfulness metrics, which score masked
        copies of the images.
        """
        return self.step.scores(batch, self.extra_tuple(extras, len(batch)))

    def explain(self, images: Sequence, class_ids: np.ndarray | None = None,
                extras: Mapping[str, np.ndarray] | None = None) -> list[ImageExplanation]:
        """Explain a list of images of any size, in any form `preprocess` takes; each map keeps its
        image (`ClassMap.source_image`). See `explain_batch` for `class_ids` and `extras`."""
        images = image_list(images)
        if not images:
            return []
        return with_images(self.explain_batch(self.preprocess(images), class_ids, extras), images)

    def extra_tuple(self, extras: Mapping[str, np.ndarray] | None, size: int) -> tuple[np.ndarray, ...]:
        """The model's extra inputs for a batch of `size` images, in the model's order; UsageError when
        one is missing or has another number of rows."""
        return extra_tuple(self.loaded, extras, size)

    def forced_ids(self, batch: np.ndarray, class_ids: np.ndarray | None = None) -> np.ndarray:
        """`class_ids` checked and shaped (B, requests) for the step; -1 everywhere when None."""
        return forced_class_ids(class_ids, len(batch), len(self.requests), self.loaded.num_classes)

    def explain_batch(self, batch: np.ndarray, class_ids: np.ndarray | None = None,
                      extras: Mapping[str, np.ndarray] | None = None) -> list[ImageExplanation]:
        """Explain a preprocessed float32 batch (B, height, width, 3).

        class_ids: optional (B, requests) class indices that replace the requests image by image
        (-1 keeps the request), e.g. each image's ground-truth class; repeats give one map.
        extras: for a model with several inputs, {input name: (B, ...) array} for each other input.
        """
        batch = checked_batch(batch, self.loaded)
        if not len(batch):
            return []
        return self.explain_run(BatchRun(self.step, batch, self.forced_ids(batch, class_ids),
                                         self.extra_tuple(extras, len(batch))))

    def explain_run(self, run: BatchRun) -> list[ImageExplanation]:
        """Explain a batch that has been through a step: this explainer's own, or the step a
        MethodSet shares among its explainers (same model, layers, head and classes)."""
        evidence = BatchEvidence(run, self.options, self.class_weights, self.loaded.input_size)
        maps = self.method.maps(evidence)  # [request][image]
        self.masked_images_scored += evidence.masked_images_scored
        results = [ImageExplanation(self._predictions(run.outputs, b)) for b in range(len(run.batch))]
        for r, row in enumerate(maps):
            for b, method_map in enumerate(row):
                index = int(run.outputs.class_ids[b, r])
                if all(m.class_index != index for m in results[b].maps):  # e.g. --class top1 --class tabby
                    results[b].maps.append(self._class_map(index, float(run.outputs.scores[b, index]), method_map))
        return results

    def _predictions(self, outputs: StepOutputs, b: int) -> list[Prediction]:
        ranked = zip(outputs.top_indices[b, : self.top_k], outputs.top_scores[b, : self.top_k])
        return [Prediction(rank + 1, int(index), self.labels[index], float(score))
                for rank, (index, score) in enumerate(ranked)]

    def _class_map(self, index: int, score: float, method_map: MethodMap) -> ClassMap:
        reads = self.method.reads  # a method that reads no single layer (fullgrad) says what it reads
        layer, layers = (reads, [reads]) if reads else (self.layer, list(self.layers))
        return ClassMap(self.method.name, layer, index, self.labels[index], score, method_map.heatmap,
                        method_map.raw_max, method_map.empty, layers, method_map.image)


def loaded_model(model, preprocess: str | None = None, labels: Sequence[str] | None = None) -> LoadedModel:
    """`model` itself when it is a LoadedModel, else the Keras model wrapped with `preprocess` and `labels`."""
    if isinstance(model, LoadedModel):
        if preprocess is not None or labels is not None:
            raise UsageError("`preprocess` and `labels` apply to a Keras model, and this LoadedModel has its own; "
                             "give them to camcli.wrap_model(keras_model, preprocess=..., labels=...) instead")
        return model
    keras = import_keras()
    if not isinstance(model, keras.Model):
        raise UsageError(f"the model must be a Keras model or a LoadedModel (camcli.load_model(\"demo\"), "
                         f"camcli.wrap_model(keras_model)), not {type(model).__name__}")
    return wrap_model(model, preprocess=preprocess or "none", labels=labels)


def preprocess_images(images: Sequence, loaded: LoadedModel) -> np.ndarray:
    """Images in any form `as_rgb_picture` takes, resized to the model's input, with its preprocessing applied."""
    pictures = [as_rgb_picture(image) for image in image_list(images)]
    batch = np.stack([resize_rgb(picture, loaded.input_size) for picture in pictures])
    return preprocess(batch, loaded.preprocess)


def image_list(images) -> list:
    """`images` as a list; UsageError for one image given alone, which would be read row by row, and
    for anything that is no list of images (a path, a number, None)."""
    if isinstance(images, Image.Image) or (isinstance(images, np.ndarray) and images.ndim < 4):
        raise UsageError("give a list of images (for one image, [image])")
    if isinstance(images, (str, bytes, os.PathLike)):
        raise UsageError(f"give a list of images (numpy arrays or Pillow images), not the path {images!r:.60}; "
                         "camcli.explain_paths reads and explains files")
    if isinstance(images, Mapping) or not isinstance(images, Iterable):
        raise UsageError(f"give a list of images (numpy arrays or Pillow images), not {type(images).__name__}")
    return list(images)


def checked_batch(batch, loaded: LoadedModel) -> np.ndarray:
    """`batch` as float32 (B, height, width, 3) at the model's input size (B may be 0); a UsageError
    naming what it is otherwise, never numpy's or TensorFlow's message."""
    height, width = loaded.input_size
    wanted = f"a float32 array (images, {height}, {width}, 3) of preprocessed images"
    hint = "Explainer.preprocess makes one, or Explainer.explain takes images as they are"
    if batch is None or isinstance(batch, (str, bytes, Mapping)):
        raise UsageError(f"`batch` is {wanted}, not {type(batch).__name__}; {hint}")
    try:
        array = np.asarray(batch, dtype=np.float32)
    except (ValueError, TypeError):
        raise UsageError(f"`batch` is {wanted}; it holds something else (text, or rows of different lengths); "
                         f"{hint}") from None
    if array.size == 0 and array.ndim < 4:
        return np.zeros((0, height, width, 3), np.float32)
    if array.ndim != 4 or tuple(array.shape[1:]) != (height, width, 3):
        raise UsageError(f"`batch` is {wanted}, not shape {tuple(array.shape)}; {hint}")
    return array


def with_images(results: list[ImageExplanation], images: list) -> list[ImageExplanation]:
    """The results, each map pointing at its image (the caller's object itself)."""
    for result, image in zip(results, images):
        for class_map in result.maps:
            class_map.source_image = image
    return results


def _checked_top_k(top_k: int | None, num_classes: int) -> int:
    if top_k is None:
        return min(DEFAULT_TOP_K, num_classes)
    if not 1 <= top_k <= num_classes:
        raise UsageError(f"`top_k={top_k}` is out of range: the model has {num_classes} classes")
    return top_k


def extra_tuple(loaded: LoadedModel, extras: Mapping[str, np.ndarray] | None, size: int) -> tuple[np.ndarray, ...]:
    names = loaded.extra_input_names
    if not names:
        if extras:
            raise UsageError(f"model {loaded.name} takes only the image; drop `extras`")
        return ()
    if extras is not None and not isinstance(extras, Mapping):
        raise UsageError(f"`extras` is {{input name: array with one row per image}}, not {type(extras).__name__}")
    missing = [name for name in names if name not in (extras or {})]
    if missing:
        unknown = [name for name in extras or {} if name not in names]
        hint = f" (it has no input {unknown[0]!r})" if unknown else ""
        raise UsageError(f"model {loaded.name} also takes {', '.join(missing)}{hint}; pass `extras` "
                         "({input name: array with one row per image})")
    return tuple(_extra_array(loaded, name, extras[name], size) for name in names)


def _extra_array(loaded: LoadedModel, name: str, given, size: int) -> np.ndarray:
    """One extra input of a batch, as its input takes it: (images, *the input's shape); UsageError otherwise."""
    tensor = loaded.model.inputs[loaded.input_names.index(name)]
    shape = tuple(tensor.shape)[1:]
    array = input_values(given, str(tensor.dtype), f"extra input {name!r}")
    if array.ndim == 0 or len(array) != size:
        raise UsageError(f"extra input {name!r} has {len(array) if array.ndim else 'no'} rows for {size} images")
    if None not in shape and array.shape[1:] != shape:
        raise UsageError(f"extra input {name!r} is shaped {array.shape[1:]} per image, and the model's input "
                         f"takes {shape}")
    return array


def distinct_method_names(explainers: Sequence[Explainer]) -> list[str]:
    """The explainers' method names, in order; UsageError when one is given twice."""
    names = [explainer.method.name for explainer in explainers]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(f"`methods={repeated[0]}` is given twice; give each method once")
    return names


class MethodSet:
    """Several Explainers on one model, layer, head and classes, run as one: `camcli explain --method a
    --method b`. Each image gets one ImageExplanation holding every method's maps, in method order,
    with the predictions of the first (they are the same model's scores).

    The set owns one Step for all its explainers, with gradients if any of them needs them, and
    runs it once per batch (and once per augmented copy with --aug-smooth): a run of several
    gradient methods costs one forward and backward pass, plus each method's numpy work and outputs.
    Score-CAM's masked passes come on top, and the guided methods' one backward pass to the input.
    Explainers made with `build_step=False` (as `MethodSet.of` makes them) take the set's step as
    theirs, so the set builds one compiled step in all.
    """

    @classmethod
    def of(cls, model, maps: MapRequest | None = None, *, preprocess: str | None = None,
           labels: Sequence[str] | None = None, **options) -> MethodSet:
        """A set of one Explainer per method of `maps` (or of the keywords, as Explainer takes them):
        MethodSet.of(model, methods=["gradcam", "scorecam"], classes="top1")."""
        request = gather("MethodSet.of", {"maps": (MapRequest, maps)}, options, aliases=EXPLAINER_ALIASES)["maps"]
        loaded = loaded_model(model, preprocess, labels)
        return cls([Explainer(loaded, request.one_method(name), build_step=False) for name in request.methods])

    @staticmethod
    def can_share(explainers: Sequence) -> bool:
        """Whether these explainers can run on one compiled step: Explainers of one model, layers, token
        grids, head, target, classes and precision (the one rule; `camcli evaluate` asks it too)."""
        if not explainers or not all(isinstance(e, Explainer) for e in explainers):
            return False
        first = explainers[0]
        return all(other.loaded == first.loaded and other.layers == first.layers and other.head == first.head
                   and other.requests == first.requests and other.grids == first.grids
                   and other.target_record() == first.target_record()
                   and other.request.precision == first.request.precision for other in explainers[1:])

    def __init__(self, explainers: Sequence[Explainer]):
        explainers = list(explainers)
        if not explainers:
            raise UsageError("give at least one method (`methods`)")
        if not self.can_share(explainers):
            raise UsageError("the methods of one run must share the model, the layers, the head, the target, "
                             "the classes and the precision")
        first = explainers[0]
        self.method_names = distinct_method_names(explainers)
        self.explainers = explainers
        self.loaded, self.layer, self.layers = first.loaded, first.layer, first.layers
        self.requests, self.top_k, self.target, self.labels = first.requests, first.top_k, first.target, first.labels
        self.precision = first.precision
        self.step = first.new_step(max(e.top_k for e in explainers), any(e.method.needs_gradients for e in explainers))
        for explainer in explainers:
            if explainer._step is None:
                explainer._step = self.step

    def settings(self) -> dict:
        """Every method's settings: those they share, with the methods and their Score-CAM channels listed."""
        first = self.explainers[0].settings()
        return {**first, "methods": list(self.method_names),
                "max_channels": [e.options.max_channels for e in self.explainers],
                "top_k": self.top_k}

    @property
    def masked_images_scored(self) -> int:
        return sum(e.masked_images_scored for e in self.explainers)

    def _steps(self) -> list[Step]:
        """The set's step and any step of its explainers' own, each once."""
        steps = {id(self.step): self.step}
        steps.update((id(e._step), e._step) for e in self.explainers if e._step is not None)
        return list(steps.values())

    @property
    def steps_run(self) -> int:
        """Compiled steps run: the set's shared step, and any its explainers ran on their own."""
        return sum(step.runs for step in self._steps())

    @property
    def steps_built(self) -> int:
        return len(self._steps())

    def refresh(self) -> None:
        for step in self._steps():
            step.refresh()

    def preprocess(self, images: Sequence) -> np.ndarray:
        return self.explainers[0].preprocess(images)

    def class_scores(self, batch: np.ndarray, extras: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        return self.step.scores(batch, extra_tuple(self.loaded, extras, len(batch)))

    def target_record(self) -> dict:
        return self.explainers[0].target_record()

    def explain(self, images: Sequence, class_ids: np.ndarray | None = None,
                extras: Mapping[str, np.ndarray] | None = None) -> list[ImageExplanation]:
        images = image_list(images)
        if not images:
            return []
        return with_images(self.explain_batch(self.preprocess(images), class_ids, extras), images)

    def explain_each(self, batch: np.ndarray, class_ids: np.ndarray | None = None,
                     extras: Mapping[str, np.ndarray] | None = None) -> list[list[ImageExplanation]]:
        """[method][image]: each explainer's own results, all from one run of the shared step."""
        batch = checked_batch(batch, self.loaded)
        if not len(batch):
            return [[] for _ in self.explainers]
        run = BatchRun(self.step, batch, self.explainers[0].forced_ids(batch, class_ids),
                       extra_tuple(self.loaded, extras, len(batch)))
        return [explainer.explain_run(run) for explainer in self.explainers]

    def explain_batch(self, batch: np.ndarray, class_ids: np.ndarray | None = None,
                      extras: Mapping[str, np.ndarray] | None = None) -> list[ImageExplanation]:
        """Like `Explainer.explain_batch`, with every method's maps for each image."""
        return [ImageExplanation(results[0].predictions, [m for result in results for m in result.maps])
                for results in zip(*self.explain_each(batch, class_ids, extras))]
