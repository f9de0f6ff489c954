"""The compiled TensorFlow step, the only code in camcli that computes gradients.

One `Step` per model, layers, head and class requests. `Step.run` takes a preprocessed batch and
returns, from a single forward pass, the predictions, the layers' activations and, when it was built
with `gradients=True`, each image's own gradients for each requested class, as named, read-only
numpy arrays (`StepOutputs`). It also scores batches (forward only), scores masked copies of an image
(Score-CAM) and computes guided input gradients (guided backpropagation). Everything after it is numpy.

A `BatchRun` is one batch through one step: its outputs, and on demand the outputs of its augmented
copies (--aug-smooth) and its guided input gradients, each computed once however many methods read
them; `MethodSet` hands one to every method it runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from camcli.errors import CamcliError, UsageError, one_line
from camcli.explain.augment import augment_batch
from camcli.explain.classes import ClassRequest
from camcli.models.loading import LoadedModel, import_keras
from camcli.options import PRECISIONS

if TYPE_CHECKING:  # camcli.models.layers imports Keras, which camcli imports only through import_keras
    from camcli.explain.targets import Target
    from camcli.models.layers import Head, TokenGrid


PRECISION = PRECISIONS[0]  # float32: the user's own model computes; the others compute on a copy


class StepOutputs(NamedTuple):
    """What one step computes for a batch of B images and R class requests. Read-only numpy arrays."""

    activations: tuple[np.ndarray, ...]  # per layer: (B, h, w, channels) float32 (tokens: on their grid)
    gradients: tuple[np.ndarray, ...]  # per layer: (B, R, h, w, channels) d y^c / d A; () without gradients
    scores: np.ndarray  # (B, classes): the target's reported scores (for classes: probabilities)
    top_scores: np.ndarray  # (B, k): the k best scores, best first
    top_indices: np.ndarray  # (B, k): their class indices
    class_ids: np.ndarray  # (B, R) int32: the class explained for each image and request


def _one_line_errors(function, other_inputs: bool = False):
    """`function` (a tf.function), whose camcli errors keep one line: an error raised while TensorFlow traces
    it (a target callable's wrong shape) comes back with "in user code:" and a stack of frames in its message.
    With `other_inputs` (a model with extra inputs), an op that refuses its values (an embedding index out of
    range) is a CamcliError that says so, not an internal error."""

    def call(*args):
        import tensorflow as tf

        try:
            return function(*args)
        except CamcliError as error:
            if "\n" not in str(error):
                raise
            raise (UsageError if isinstance(error, UsageError) else CamcliError)(one_line(error)) from None
        except tf.errors.InvalidArgumentError as error:
            if not other_inputs:
                raise
            raise CamcliError(f"the model refused the inputs: {one_line(error)}; check the values of its other "
                              "inputs (`extra_inputs`)") from None

    return call


def _read_only(array: np.ndarray) -> np.ndarray:
    """Step outputs may be read by several methods: none may change them."""
    array.flags.writeable = False
    return array


def read_only_numpy(value):
    """A tensor, or a sequence of them (one per layer), as read-only numpy arrays."""
    if isinstance(value, (list, tuple)):
        return tuple(_read_only(tensor.numpy()) for tensor in value)
    return _read_only(value.numpy())


def _extra_arrays(extras: Sequence[np.ndarray], dtypes: Sequence[str]) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(array, dtype=dtype) for array, dtype in zip(extras, dtypes))


class Step:
    """The compiled steps of one model, its explained layers, its head, target and class requests.

    top_k: how many ranked predictions `run` returns (at least the highest requested rank).
    gradients: whether `run` also differentiates each requested class's target score with respect
    to the layers' activations (the gradient methods need it; CAM, Eigen-CAM and Score-CAM do not).
    target: what is differentiated (camcli.explain.targets; default: the class score). grids: per
    layer, the token grid of a (batch, tokens, dim) layer, None for a spatial one: tokens are
    reshaped onto it, activations and gradients alike. Every method takes the model's extra inputs
    (`extras`, in LoadedModel.extra_input_names order) next to the images. `runs` counts `run`.
    """

    def __init__(self, loaded: LoadedModel, layers: Sequence[str], head: Head, requests: Sequence[ClassRequest],
                 top_k: int, gradients: bool, target: Target | None = None,
                 grids: Sequence[TokenGrid | None] | None = None, precision: str = PRECISION):
        import_keras()
        import tensorflow as tf

        from camcli.explain.forward import TappedForward
        from camcli.explain.targets import Target
        from camcli.models.precision import ComputeCopy, gradient_scale, warn_if_slow

        self.loaded, self.layers, self.head = loaded, list(layers), head
        # The model that computes: the user's own in float32, else a copy in the precision's policy
        # (camcli.models.precision), whose head is the copy of the user's head layer.
        self.precision, self.compute_copy = precision, None
        self._model, self._compute_head = loaded.model, head
        if precision != PRECISION:
            warn_if_slow(precision)
            self.compute_copy = ComputeCopy(loaded.model, precision, keep=self.layers)
            self._model = self.compute_copy.model
            self._compute_head = dataclasses.replace(head, final=self.compute_copy.counterpart(head.final))
        self._gradient_scale = gradient_scale(precision)
        self.target = target or Target()
        self.grids = list(grids) if grids is not None else [None] * len(self.layers)
        self.requests, self.gradients = list(requests), gradients
        self.top_k = max(top_k, *(r.rank or 1 for r in self.requests))
        self.runs = 0
        self._forward = TappedForward(self._model, self.layers, self._compute_head, image_input=loaded.image_input)
        height, width = loaded.input_size
        extra_tensors = [tensor for i, tensor in enumerate(loaded.model.inputs) if i != loaded.image_input] \
            if len(loaded.input_names) > 1 else []
        self._extra_dtypes = [str(tensor.dtype) for tensor in extra_tensors]
        extras_spec = tuple(tf.TensorSpec(tuple(t.shape), t.dtype) for t in extra_tensors)
        self._images_spec = tf.TensorSpec((None, height, width, 3), tf.float32)
        self._ids_spec = tf.TensorSpec((None, len(self.requests)), tf.int32)
        compute = self._forward_and_backward if gradients else self._forward_only
        others = bool(extra_tensors)
        step = tf.function(compute, input_signature=[self._images_spec, self._ids_spec, extras_spec],
                           reduce_retracing=True)
        self._step = _one_line_errors(step, others)
        self._scores_step = _one_line_errors(tf.function(self._scores, input_signature=[self._images_spec, extras_spec],
                                                         reduce_retracing=True), others)
        self._masked_step = _one_line_errors(tf.function(self._masked_scores, reduce_retracing=True, input_signature=[
            tf.TensorSpec((height, width, 3), tf.float32), tf.TensorSpec((None, None, None), tf.float32),
            tf.TensorSpec((), tf.int32), extras_spec, tf.TensorSpec((None,), tf.float32),
            tf.TensorSpec((None, None, None), tf.float32)]), others)
        self._extras_spec = extras_spec
        self._ablated_steps: dict[int, object] = {}  # per explained layer, built when first used
        self._compared_steps: dict[tuple, object] = {}  # FinerCAM's, per comparison, built when first used
        self._second_order_step = None  # ShapleyCAM's, built when first used

    # -- the numpy interface ---------------------------------------------------------------------

    def run(self, batch: np.ndarray, forced_ids: np.ndarray, extras: Sequence[np.ndarray] = ()) -> StepOutputs:
        """The step on a preprocessed (B, height, width, 3) batch. `forced_ids` (B, R) overrides the
        requested class where it is >= 0."""
        self.runs += 1
        tensors = self._step(np.asarray(batch, dtype=np.float32), np.asarray(forced_ids, dtype=np.int32),
                             _extra_arrays(extras, self._extra_dtypes))
        return StepOutputs(**{name: read_only_numpy(value) for name, value in tensors._asdict().items()})

    def refresh(self) -> None:
        """Read the model's weights again where a stand-in layer holds a copy of them (a custom layer with
        a built-in softmax or ReLU; Keras' own layers are read live), and into the reduced-precision copy of the
        model where the step computes on one. Call it after training the model."""
        if self.compute_copy is not None:
            self.compute_copy.refresh()
        self._forward.refresh()
        for name in ("_guided_forward", "_full_forward"):  # the forward passes built when first used
            forward = self.__dict__.get(name)
            if forward is not None:
                forward.refresh()

    def scores(self, batch: np.ndarray, extras: Sequence[np.ndarray] = ()) -> np.ndarray:
        """The target's scores (for classes: probabilities) for every class, (B, classes); one forward pass."""
        return self._scores_step(np.asarray(batch, dtype=np.float32), _extra_arrays(extras, self._extra_dtypes)).numpy()

    def masked_scores(self, image: np.ndarray, masks: np.ndarray, class_index: int, extras: Sequence[np.ndarray] = (),
                      scales: np.ndarray | None = None, noise: np.ndarray | None = None) -> np.ndarray:
        """Score-CAM: the score of class `class_index` for `image` times each mask, (n,). The masks are
        channel maps (n, h, w) on the layer's grid, upsampled to the input and then min-max scaled to
        [0, 1] (a flat one masks everything out). `extras`: the image's extra inputs, each (1, ...).
        `scales` (n,) multiply the masks (IS-CAM), then `noise` (n, H, W) at the input's size is added
        to them (SS-CAM); by default 1 and 0."""
        count = len(masks)
        scales = np.ones((count,), np.float32) if scales is None else np.asarray(scales, np.float32)
        noise = np.zeros((count, 1, 1), np.float32) if noise is None else np.asarray(noise, np.float32)
        return self._masked_step(image, masks, np.int32(class_index), _extra_arrays(extras, self._extra_dtypes),
                                 scales, noise).numpy()

    def ablated_scores(self, image: np.ndarray, keep: np.ndarray, layer: int, class_index: int,
                       extras: Sequence[np.ndarray] = ()) -> np.ndarray:
        """AblationCAM: the differentiated score (for classes: the logit) of class `class_index` for
        `image`, once per row of `keep` (n, channels), with the channels of explained layer `layer`
        multiplied by that row (0: ablated), (n,)."""
        if layer not in self._ablated_steps:
            import tensorflow as tf

            height, width = self.loaded.input_size
            self._ablated_steps[layer] = _one_line_errors(tf.function(
                lambda *args: self._ablated(layer, *args), reduce_retracing=True, input_signature=[
                    tf.TensorSpec((height, width, 3), tf.float32), tf.TensorSpec((None, None), tf.float32),
                    tf.TensorSpec((), tf.int32), self._extras_spec]), bool(self._extras_spec))
        return self._ablated_steps[layer](np.asarray(image, np.float32), np.asarray(keep, np.float32),
                                          np.int32(class_index), _extra_arrays(extras, self._extra_dtypes)).numpy()

    def compared_gradients(self, batch: np.ndarray, class_ids: np.ndarray, compared: tuple[int, ...], nearest: int,
                           alpha: float, extras: Sequence[np.ndarray] = ()) -> tuple[np.ndarray, ...]:
        """FinerCAM: per layer, (B, R, h, w, channels) gradients of each image's class compared with others,
        sum_j p_j (y_c - alpha y_j) / sum_j p_j over the classes j in `compared`, or, when it is empty, over
        the `nearest` classes whose logits lie nearest y_c's; p is the softmax of the logits."""
        key = (tuple(compared), nearest, float(alpha))
        if key not in self._compared_steps:
            import tensorflow as tf

            if self.target.kind != "class":
                raise UsageError(f"finercam compares class scores; for `target={self.target.kind}` use another method")
            self._compared_steps[key] = _one_line_errors(tf.function(
                lambda *args: self._compared(*key, *args), reduce_retracing=True,
                input_signature=[self._images_spec, self._ids_spec, self._extras_spec]), bool(self._extras_spec))
        gradients = self._compared_steps[key](np.asarray(batch, np.float32), np.asarray(class_ids, np.int32),
                                              _extra_arrays(extras, self._extra_dtypes))
        return read_only_numpy(gradients)

    def second_order(self, batch: np.ndarray, class_ids: np.ndarray,
                     extras: Sequence[np.ndarray] = ()) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """ShapleyCAM: per layer, (B, R, h, w, channels) gradients g of each image's ReST score (its class's
        logit plus log-probability), and their Hessian-vector products H A with the layer's activations A."""
        if self.target.kind != "class":
            raise UsageError(f"shapleycam explains class scores; for `target={self.target.kind}` use another method")
        if self._second_order_step is None:
            import tensorflow as tf

            self._second_order_step = _one_line_errors(tf.function(
                self._second_order, reduce_retracing=True,
                input_signature=[self._images_spec, self._ids_spec, self._extras_spec]), bool(self._extras_spec))
        gradients, products = self._second_order_step(np.asarray(batch, np.float32), np.asarray(class_ids, np.int32),
                                                      _extra_arrays(extras, self._extra_dtypes))
        return read_only_numpy(gradients), read_only_numpy(products)

    def full_gradient_maps(self, batch: np.ndarray, class_ids: np.ndarray,
                           extras: Sequence[np.ndarray] = ()) -> np.ndarray:
        """FullGrad: (B, R, H, W) saliency of each image's class per request, at the input's size (see
        `_full_gradient_maps`)."""
        maps = self._full_gradient_step(np.asarray(batch, dtype=np.float32), np.asarray(class_ids, dtype=np.int32),
                                        _extra_arrays(extras, self._extra_dtypes))
        return _read_only(maps.numpy())

    def guided_gradients(self, batch: np.ndarray, class_ids: np.ndarray,
                         extras: Sequence[np.ndarray] = ()) -> np.ndarray:
        """d y^c / d input through guided ReLUs, for each image's class per request: (B, R, H, W, 3)."""
        gradients = self._guided_step(np.asarray(batch, dtype=np.float32), np.asarray(class_ids, dtype=np.int32),
                                      _extra_arrays(extras, self._extra_dtypes))
        return _read_only(gradients.numpy())

    # -- the TensorFlow side ---------------------------------------------------------------------

    def _on_grid(self, tensors):
        """Token layers' (B, tokens, dim) tensors on their (B, h, w, dim) grid, the leading tokens
        dropped; spatial layers' tensors as they are. Gradients go through it the same way."""
        import tensorflow as tf

        placed = []
        for tensor, grid in zip(tensors, self.grids):
            tensor = tf.cast(tensor, tf.float32)
            if grid is not None:
                tensor = tf.reshape(tensor[:, grid.prefix:, :], (-1, grid.height, grid.width, tensor.shape[-1]))
            placed.append(tensor)
        return placed

    def _select(self, logits, forced_ids):
        """The step's predictions (scores, top_scores, top_indices, class_ids by name), and each
        image's logit y^c per request, (B, R).

        `forced_ids` (B, R) overrides the class where it is >= 0: augmented copies of an image are
        explained for the original's class, whatever their own top class is.
        """
        import tensorflow as tf

        fixed = tf.constant([r.index if r.index is not None else -1 for r in self.requests], tf.int32)
        rank_positions = [(r.rank or 1) - 1 for r in self.requests]
        scores = self.target.scores(logits, self.head)
        top_scores, top_indices = tf.math.top_k(scores, k=self.top_k)
        ranked = tf.gather(top_indices, rank_positions, axis=1)
        class_ids = tf.where(fixed[tf.newaxis, :] >= 0, fixed[tf.newaxis, :], ranked)  # (B, R)
        class_ids = tf.where(forced_ids >= 0, forced_ids, class_ids)
        selected = self.target.selected(logits, class_ids, self.head)  # y^c per image and request
        predictions = {"scores": scores, "top_scores": top_scores, "top_indices": top_indices, "class_ids": class_ids}
        return predictions, selected

    def _forward_only(self, images, forced_ids, extras):
        activations, logits = self._forward(images, extras)
        predictions, _ = self._select(logits, forced_ids)
        return StepOutputs(activations=self._on_grid(activations), gradients=[], **predictions)

    def _forward_and_backward(self, images, forced_ids, extras):
        import tensorflow as tf

        with tf.GradientTape(persistent=len(self.requests) > 1) as tape:
            # Watching the activations records the head even in frozen models, whose weights the
            # tape would otherwise ignore.
            activations, logits = self._forward(images, extras, watch=tape.watch)
            predictions, selected = self._select(logits, forced_ids)
            # Summing y^c over the batch and differentiating gives each image its own gradient, as
            # the images do not interact at inference; nothing is averaged across the batch.
            # float16: a multiple of the score, so that small gradients keep their bits (divided out below).
            totals = [tf.reduce_sum(selected[:, r]) * self._gradient_scale for r in range(len(self.requests))]
        gradients = self._by_layer([tape.gradient(total, activations) for total in totals])
        return StepOutputs(activations=self._on_grid(activations), gradients=gradients, **predictions)

    def _by_layer(self, per_request):
        """[request][layer] derivatives of the scaled scores -> [layer]: (B, R, h, w, channels), unscaled, on
        each layer's grid."""
        import tensorflow as tf

        per_request = [self._unscaled(self._on_grid(layers)) for layers in per_request]
        return [tf.stack([layers[i] for layers in per_request], axis=1) for i in range(len(per_request[0]))]

    def _unscaled(self, gradients):
        """float32 gradients of the score itself, from those of its scaled multiple."""
        if self._gradient_scale == 1.0:
            return gradients
        return [gradient / self._gradient_scale for gradient in gradients]

    def _scores(self, images, extras):
        _, logits = self._forward(images, extras)
        return self.target.scores(logits, self.head)

    def _masked_scores(self, image, masks, class_index, extras, scales, noise):
        import tensorflow as tf

        height, width = self.loaded.input_size
        # Wang et al. 2020, Eq. 9 and the authors' code: upsample each channel first, then scale it to
        # [0, 1] by its own min and max (scaling first would leave the upsampled mask short of 0 and
        # 1, since bilinear interpolation rarely lands on the extreme cells' centres).
        upsampled = tf.image.resize(masks[..., tf.newaxis], (height, width), method="bilinear")
        low = tf.reduce_min(upsampled, axis=(1, 2, 3), keepdims=True)
        span = tf.reduce_max(upsampled, axis=(1, 2, 3), keepdims=True) - low
        unit = tf.math.divide_no_nan(upsampled - low, span)  # a flat channel: span 0, mask 0
        copies = image[tf.newaxis] * (unit * scales[:, tf.newaxis, tf.newaxis, tf.newaxis] + noise[..., tf.newaxis])
        if self.target.needs_reference:  # e.g. a region: the pixels the unmasked image predicts as the class
            copies = tf.concat([image[tf.newaxis], copies], axis=0)
        _, logits = self._forward(copies, [tf.repeat(e, tf.shape(copies)[0], axis=0) for e in extras])
        if self.target.needs_reference:
            return self.target.masked(logits[1:], class_index, self.head, reference=logits[:1])
        return self.target.masked(logits, class_index, self.head)

    def _compared(self, compared, nearest, alpha, images, class_ids, extras):
        import tensorflow as tf

        from camcli.explain.targets import class_logits_and_scores

        with tf.GradientTape(persistent=len(self.requests) > 1) as tape:
            activations, logits = self._forward(images, extras, watch=tape.watch)
            class_logits, _ = class_logits_and_scores(logits, self.head)
            # pytorch-grad-cam's FinerWeightedTarget: the weights are the softmax of the logits, in the graph.
            probabilities = tf.nn.softmax(class_logits, axis=-1)
            totals = []
            for r in range(len(self.requests)):
                own = tf.gather(class_logits, class_ids[:, r: r + 1], batch_dims=1)  # (B, 1)
                if compared:
                    others = tf.tile(tf.constant([compared], tf.int32), (tf.shape(own)[0], 1))
                else:  # the classes whose logits lie nearest the class's own, itself left out
                    distance = tf.abs(class_logits - own)
                    itself = tf.one_hot(class_ids[:, r], tf.shape(class_logits)[-1]) > 0
                    distance = tf.where(itself, tf.fill(tf.shape(distance), float("inf")), distance)
                    others = tf.math.top_k(-distance, k=nearest).indices
                weights = tf.gather(probabilities, others, batch_dims=1)
                differences = own - alpha * tf.gather(class_logits, others, batch_dims=1)
                score = tf.reduce_sum(weights * differences, axis=1) / (tf.reduce_sum(weights, axis=1) + 1e-9)
                totals.append(tf.reduce_sum(score) * self._gradient_scale)
        return self._by_layer([tape.gradient(total, activations) for total in totals])

    def _rest_scores(self, logits, class_ids):
        """(B, R): each image's ReST score per request (Cai et al. 2025; pytorch-grad-cam's ClassifierOutputReST),
        the class's logit plus its log-probability: y_c - cross-entropy = 2 y_c - logsumexp(y) under a softmax,
        y_c + log sigmoid(y_c) under a sigmoid."""
        import tensorflow as tf

        from camcli.explain.targets import class_logits_and_scores

        class_logits, _ = class_logits_and_scores(logits, self.head)
        own = tf.gather(class_logits, class_ids, batch_dims=1)  # (B, R)
        if self.head.binary or self.head.activation == "sigmoid":
            return own + tf.math.log_sigmoid(own)
        return own + own - tf.reduce_logsumexp(class_logits, axis=-1, keepdims=True)

    def _second_order(self, images, class_ids, extras):
        import tensorflow as tf

        requests = len(self.requests)
        zero = tf.UnconnectedGradients.ZERO  # a score linear in A has no Hessian: H A is 0, not None
        with tf.GradientTape(persistent=requests > 1) as outer:
            with tf.GradientTape(persistent=requests > 1) as inner:
                def watch(tensor):
                    outer.watch(tensor)
                    inner.watch(tensor)

                activations, logits = self._forward(images, extras, watch=watch)
                rest = self._rest_scores(logits, class_ids)
                # Summed over the batch as in the main step: images do not interact, so each image's gradient
                # and Hessian are its own (the Hessian of the sum is block-diagonal over the images).
                totals = [tf.reduce_sum(rest[:, r]) * self._gradient_scale for r in range(requests)]
            per_request = [inner.gradient(total, activations, unconnected_gradients=zero) for total in totals]
            # H A = d(g . A)/dA with A held fixed in the product: a Hessian-vector product without the Hessian.
            products = [tf.add_n([tf.reduce_sum(g * tf.stop_gradient(a)) for g, a in zip(gradients, activations)])
                        for gradients in per_request]
        hessian = [outer.gradient(product, activations, unconnected_gradients=zero) for product in products]
        return self._by_layer(per_request), self._by_layer(hessian)

    def _ablated(self, layer, image, keep, class_index, extras):
        import tensorflow as tf

        rows = tf.shape(keep)[0]

        def ablate(slot, output):
            if slot != layer:
                return output
            factors = keep
            for _ in range(len(output.shape) - 2):  # (n, channels) -> (n, 1, ..., 1, channels)
                factors = factors[:, tf.newaxis]
            return output * tf.cast(factors, output.dtype)

        if self.target.needs_reference:  # the unablated image first: e.g. a region's predicted pixels
            keep = tf.concat([tf.ones_like(keep[:1]), keep], axis=0)
        copies = tf.repeat(image[tf.newaxis], tf.shape(keep)[0], axis=0)
        _, logits = self._forward(copies, [tf.repeat(e, tf.shape(keep)[0], axis=0) for e in extras], change=ablate)
        class_ids = tf.fill((rows, 1), class_index)
        if self.target.needs_reference:
            reference = tf.repeat(logits[:1], rows, axis=0)
            return self.target.selected(logits[1:], class_ids, self.head, reference)[:, 0]
        return self.target.selected(logits, class_ids, self.head)[:, 0]

    @cached_property
    def _full_gradient_step(self):
        """Built when first used: a forward pass that taps every bias layer (camcli.models.layers.bias_layers).

        Srinivas & Fleuret 2019 (FullGrad, arXiv:1905.00780), Eq. 5, as pytorch-grad-cam's FullGrad computes
        it: S = psi(|x * dy/dx|) + sum over bias layers l of psi(|b_l * dy/dz_l|), z_l the layer's output where
        its bias is added (before a built-in activation), psi scaling each channel's map to [0, 1] over its
        locations (min-max) and resizing it bilinearly to the input; the channels' maps are summed. Summing
        before resizing is the same, the resize being linear, and costs one resize per grid. The reduction
        runs here, in the step, so that the gradients of a hundred layers never leave TensorFlow."""
        import tensorflow as tf

        from camcli.explain.forward import TappedForward
        from camcli.models.layers import bias_layers, effective_bias, layer_chain

        paths = [info.path for info in bias_layers(self._model)]
        if not paths:
            raise UsageError(f"fullgrad needs layers that add a bias (convolutions, batch normalisation); "
                             f"{self.loaded.name} has none: use gradcam")
        layers = [layer_chain(self._model, path)[-1] for path in paths]
        forward = TappedForward(self._model, paths, self._compute_head, image_input=self.loaded.image_input,
                                pre_activation=True)
        self._full_forward = forward
        height, width = self.loaded.input_size

        def unit_sum(magnitudes, kept=None):
            """(B, h, w, C) -> (B, h, w, 1): each channel min-max scaled over its locations, then summed, as
            sum_c (a_c - low_c) / span_c = a . (1 / span) - low . (1 / span): two reductions and one product
            instead of a scaled copy. `kept` (C,): 0 drops a channel (a zero bias)."""
            low = tf.reduce_min(magnitudes, axis=(1, 2))
            inverse = tf.math.divide_no_nan(tf.ones_like(low), tf.reduce_max(magnitudes, axis=(1, 2)) - low)
            if kept is not None:
                inverse = inverse * kept
            offset = tf.reduce_sum(low * inverse, axis=-1)[:, tf.newaxis, tf.newaxis]
            summed = tf.einsum("bhwc,bc->bhw", magnitudes, inverse) - offset
            return summed[..., tf.newaxis]

        def full_gradient_maps(images, class_ids, extras):
            with tf.GradientTape(persistent=len(self.requests) > 1) as tape:
                tape.watch(images)
                outputs, logits = forward(images, extras, watch=tape.watch)
                selected = self.target.selected(logits, class_ids, self.head)
                totals = [tf.reduce_sum(selected[:, r]) * self._gradient_scale for r in range(len(self.requests))]
            maps = []
            for total in totals:
                input_gradient, *gradients = self._unscaled(tape.gradient(
                    total, [images, *outputs], unconnected_gradients=tf.UnconnectedGradients.ZERO))
                by_grid = {(height, width): unit_sum(tf.abs(input_gradient * images))}
                for layer, gradient in zip(layers, gradients):  # summed per grid: one resize per grid, not per layer
                    # |b_c g| scaled by its own min and max is |g| scaled by |g|'s: the bias's size cancels, and
                    # only a zero bias (no term at all) remains to be told apart.
                    kept = tf.cast(tf.not_equal(effective_bias(layer), 0.0), tf.float32)
                    part = unit_sum(tf.abs(tf.cast(gradient, tf.float32)), kept)
                    grid = tuple(part.shape[1:3])
                    by_grid[grid] = by_grid[grid] + part if grid in by_grid else part
                saliency = tf.add_n([summed if grid == (height, width) else
                                     tf.image.resize(summed, (height, width), method="bilinear")
                                     for grid, summed in by_grid.items()])
                maps.append(saliency[..., 0])
            return tf.stack(maps, axis=1)

        return _one_line_errors(tf.function(full_gradient_maps, reduce_retracing=True, input_signature=[
            self._images_spec, self._ids_spec, self._extras_spec]), bool(self._extras_spec))

    @cached_property
    def _guided_step(self):
        """Built when first used: the guided forward pass copies every layer with a built-in ReLU."""
        import tensorflow as tf

        from camcli.explain.forward import TappedForward

        guided_forward = TappedForward(self._model, [], self._compute_head, guided=True,
                                       image_input=self.loaded.image_input)
        self._guided_forward = guided_forward

        def guided_gradients(images, class_ids, extras):
            with tf.GradientTape(persistent=len(self.requests) > 1) as tape:
                tape.watch(images)
                _, logits = guided_forward(images, extras)
                selected = self.target.selected(logits, class_ids, self.head)
                totals = [tf.reduce_sum(selected[:, r]) * self._gradient_scale for r in range(len(self.requests))]
            return tf.stack([self._unscaled([tape.gradient(total, images)])[0] for total in totals], axis=1)

        return _one_line_errors(tf.function(guided_gradients, reduce_retracing=True, input_signature=[
            self._images_spec, self._ids_spec, self._extras_spec]), bool(self._extras_spec))


class BatchRun:
    """One preprocessed batch through one Step: its outputs, and, when a method asks, the outputs of
    its augmented copies and its guided input gradients. Each is computed once, however many methods
    read it."""

    def __init__(self, step: Step, batch: np.ndarray, forced_ids: np.ndarray, extras: Sequence[np.ndarray] = ()):
        self.step = step
        self.batch = np.asarray(batch, dtype=np.float32)
        self.extras = tuple(extras)  # the model's other inputs, each (B, ...)
        self.outputs = step.run(self.batch, forced_ids, self.extras)
        self._augmented: dict[tuple[bool, float], tuple[np.ndarray, StepOutputs]] = {}
        self._guided: np.ndarray | None = None
        self._full_gradient: np.ndarray | None = None

    def augmented(self, flip: bool, zoom: float) -> tuple[np.ndarray, StepOutputs]:
        """The batch flipped and zoomed (--aug-smooth), and its step outputs for the same classes."""
        key = (bool(flip), float(zoom))
        if key not in self._augmented:
            copy = augment_batch(self.batch, flip, zoom)
            self._augmented[key] = (copy, self.step.run(copy, self.outputs.class_ids, self.extras))
        return self._augmented[key]

    def extras_of(self, b: int) -> tuple[np.ndarray, ...]:
        """Image b's extra inputs, each (1, ...)."""
        return tuple(extra[b: b + 1] for extra in self.extras)

    def guided_gradients(self) -> np.ndarray:
        """(B, R, H, W, 3): guided backpropagation's input gradient of each image's explained classes."""
        if self._guided is None:
            self._guided = self.step.guided_gradients(self.batch, self.outputs.class_ids, self.extras)
        return self._guided

    def full_gradient_maps(self) -> np.ndarray:
        """(B, R, H, W): FullGrad's saliency of each image's explained classes."""
        if self._full_gradient is None:
            self._full_gradient = self.step.full_gradient_maps(self.batch, self.outputs.class_ids, self.extras)
        return self._full_gradient
