"""One forward pass that returns both the explained layer's activations and the pre-softmax logits.

Building a sub-model `Model(inputs, [layer.output, model.output])` breaks on nested models
("Graph disconnected"), and setting the last activation to linear would modify the user's model.
Instead the model's own graph is replayed call by call: the explained layer's output is recorded on
its way through, nested models on the way are replayed the same way, and the final softmax/sigmoid
is skipped (or its layer run without its activation, on the layer's own weights). The user's model
and its layers are never changed.
Keras replays a Functional model's graph through a private call, made in camcli.models.keras_internals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from camcli.models.keras_internals import autocast, check_keras_internals, run_graph
from camcli.models.layers import Head, is_model, layer_chain, require_graph_model, walk_layers


class _LinearView:
    """`layer` run without its activation, on the layer's own variables: a stand-in that reads every
    attribute from the layer except `activation`, and calls the layer class's own `call` on itself.

    Unlike a copy, it never goes stale: a model that is still training (camcli.keras.ExplainCallback)
    or whose weights are set again is explained with the weights it has at that moment. It is used
    for Keras' own Dense and convolution layers, whose `call` reads `self.activation` last and uses
    no `super()`; any other layer gets a copy (`_LinearCopy`).
    """

    activation = None

    def __init__(self, layer: keras.layers.Layer):
        self._layer = layer
        self._call = type(layer).call

    def __getattr__(self, name: str):
        return getattr(self._layer, name)

    def __call__(self, x, *args, **kwargs):
        compute = self._layer.compute_dtype
        if compute == self._layer.variable_dtype:
            return self._call(self, x, *args, **kwargs)
        # A layer under a mixed-precision policy (a reduced-precision step's copy of the model): Keras' own
        # __call__, which this bypasses, casts the inputs and reads the variables in the compute dtype.
        with autocast(compute):
            return self._call(self, keras.ops.cast(x, compute), *args, **kwargs)


class _LinearCopy:
    """A copy of `layer` with a linear activation and a snapshot of its weights; `refresh()` copies
    them again."""

    def __init__(self, layer: keras.layers.Layer):
        config = layer.get_config()
        config["activation"] = "linear"
        self._layer = layer
        self._copy = type(layer).from_config(config)
        self._copy.build(tuple(layer.input.shape))
        self.refresh()

    def refresh(self) -> None:
        self._copy.set_weights(self._layer.get_weights())

    def __call__(self, x, *args, **kwargs):
        return self._copy(x, *args, **kwargs)


# The layer classes whose `call` ends with `if self.activation is not None: x = self.activation(x)`.
_VIEWABLE_CALLS = ("keras.src.layers.core.dense", "keras.src.layers.core.einsum_dense",
                   "keras.src.layers.convolutional.base_conv", "keras.src.layers.convolutional.base_separable_conv",
                   "keras.src.layers.convolutional.base_depthwise_conv",
                   "keras.src.layers.convolutional.base_conv_transpose")


def _linear(layer: keras.layers.Layer) -> _LinearView | _LinearCopy:
    """`layer` without its activation (a Dense+softmax head, a conv with a built-in ReLU): a view on
    its own weights where the layer is one of Keras' own, else a copy."""
    if type(layer).call.__module__ in _VIEWABLE_CALLS and getattr(layer, "quantization_mode", None) is None:
        return _LinearView(layer)
    return _LinearCopy(layer)


def _path_to(model: keras.Model, layer: keras.layers.Layer) -> list[keras.Model] | None:
    """The nested models from `model` down to the one holding `layer` (empty if `model` holds it)."""
    for inner in model.layers:
        if inner is layer:
            return []
        if is_model(inner):
            below = _path_to(inner, layer)
            if below is not None:
                return [inner, *below]
    return None


def _has_activation(layer: keras.layers.Layer) -> bool:
    """Whether the layer ends with a built-in activation other than the identity."""
    activation = getattr(layer, "activation", None)
    return (not is_model(layer) and activation is not None
            and getattr(activation, "__name__", "") != "linear" and type(layer).call.__module__ in _VIEWABLE_CALLS)


def _is_relu(function: object) -> bool:
    return getattr(function, "__name__", "") in ("relu", "relu6")


def _guided(function: Callable) -> Callable:
    """`function` (a ReLU-like map) with the guided-backprop gradient: the usual local derivative,
    applied only to the positive part of the incoming gradient (Springenberg et al. 2014, Eq. in
    Fig. 1c: R_l = (f_l > 0) * (R_{l+1} > 0) * R_{l+1})."""
    import tensorflow as tf

    @tf.custom_gradient
    def apply(x):
        def gradient(upstream):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = function(x)
            return tape.gradient(y, x, output_gradients=tf.nn.relu(upstream))

        return function(x), gradient

    return apply


def _guided_override(layer: keras.layers.Layer, linear: Callable = _linear) -> Callable | None:
    """A stand-in for `layer` with guided ReLU gradients, or None when the layer applies no ReLU.

    ReLU and Activation("relu") layers keep their own forward computation; a conv or dense layer with
    a built-in ReLU runs without it (`linear(layer)`, on the same weights), followed by the guided
    ReLU. The user's layer is never changed.
    """
    relu_layer = isinstance(layer, keras.layers.ReLU)
    if relu_layer or (isinstance(layer, keras.layers.Activation) and _is_relu(layer.activation)):
        guided = _guided(layer)
        return lambda x, *args, **kwargs: guided(x)
    if not is_model(layer) and _is_relu(getattr(layer, "activation", None)):
        pre_activation = linear(layer)
        guided = _guided(layer.activation)
        return lambda x, *args, **kwargs: guided(pre_activation(x, *args, **kwargs))
    return None


class TappedForward:
    """Callable: `activations, logits = forward(images, extras, watch)`; works inside `tf.function`.

    `extras` are the model's other inputs, in order (empty for a one-input model); the images go in
    at position `image_input` among the model's inputs.
    `activations` lists the outputs of the tapped layers, in the order of `layer_paths` (in the model's
    compute dtype); `logits` are float32 whatever the model computes in. `watch`,
    when given, is called with each of them the moment it exists (pass `tape.watch`), so that a
    gradient tape records everything computed from them. `change`, when given, is called as
    `change(slot, output)` with each tapped layer's output and its position in `layer_paths`, and what it
    returns goes on through the model in its place (AblationCAM's ablated channels). With `guided=True`
    every ReLU in the model passes back only positive gradients (guided backpropagation), on stand-in layers.
    With `pre_activation=True` a tapped layer with a built-in activation (a conv with a ReLU) is recorded
    before it: the layer runs without it on its own weights, is recorded, then the activation is applied
    (FullGrad's bias gradients are taken where the bias is added).
    """

    def __init__(self, model: keras.Model, layer_paths: Sequence[str], head: Head, guided: bool = False,
                 image_input: int = 0, pre_activation: bool = False):
        check_keras_internals()
        self.model = model
        self.image_input = image_input
        tapped = [layer_chain(model, path)[-1] for path in layer_paths]
        self._slots = {id(layer): i for i, layer in enumerate(tapped)}
        self._captured = [None] * len(tapped)
        self._watch = None
        self._change = None
        self._overrides = {}
        self._copies: list[_LinearCopy] = []  # stand-ins holding a snapshot of weights (see refresh)
        replay_below = [*tapped, head.final]
        if guided:
            for layer in walk_layers(model):
                override = _guided_override(layer, self._linear)
                if override is not None:
                    self._overrides[id(layer)] = override
                    replay_below.append(layer)
        if head.strip == "layer":  # a separate Softmax/sigmoid layer: its input is the logits
            self._overrides[id(head.final)] = lambda x, *args, **kwargs: x
        elif head.strip == "activation":
            self._overrides[id(head.final)] = self._linear(head.final)
        for layer in tapped:  # an explained output layer (segmentation) is recorded as logits
            run, then = self._overrides.get(id(layer), layer), None
            if pre_activation and id(layer) not in self._overrides and _has_activation(layer):
                run, then = self._linear(layer), layer.activation
            self._overrides[id(layer)] = self._recorder(layer, run, then)
        # Nested models that hold an overridden layer are replayed call by call too.
        self._replayed = {id(m) for layer in replay_below for m in (_path_to(model, layer) or [])}

    def _linear(self, layer: keras.layers.Layer) -> _LinearView | _LinearCopy:
        stand_in = _linear(layer)
        if isinstance(stand_in, _LinearCopy):
            self._copies.append(stand_in)
        return stand_in

    def refresh(self) -> None:
        """Copy the model's current weights into the stand-ins that hold a snapshot of them (only layers
        that are not Keras' own Dense or convolutions have such copies; the others read live)."""
        for copy in self._copies:
            copy.refresh()

    def _recorder(self, layer, run, then: Callable | None = None):
        """`run`, its output recorded (and changed, and watched); then `then` applied to it, when given."""
        slot = self._slots[id(layer)]

        def call(*args, **kwargs):
            output = run(*args, **kwargs)
            if self._change is not None:
                output = self._change(slot, output)
            if self._watch is not None:
                self._watch(output)
            self._captured[slot] = output
            return output if then is None else then(output)

        return call

    def _operation(self, operation):
        override = self._overrides.get(id(operation))
        if override is not None:
            return override
        if id(operation) in self._replayed:
            return lambda inputs, *args, **kwargs: self._replay(operation, inputs)
        return operation

    def _replay(self, model, inputs):
        if isinstance(model, keras.Sequential):
            x = inputs
            for layer in model.layers:
                x = self._operation(layer)(x)
            return x
        require_graph_model(model)
        return run_graph(model, inputs, self._operation)  # a Functional model: Keras runs its graph for us

    def __call__(self, images, extras: Sequence = (), watch: Callable | None = None,
                 change: Callable | None = None) -> tuple[list, object]:
        self._captured, self._watch, self._change = [None] * len(self._slots), watch, change
        inputs = list(extras)
        inputs.insert(self.image_input, images)
        try:
            logits = self._replay(self.model, inputs if len(inputs) > 1 else images)
            # A reduced-precision copy computes bfloat16 or float16 logits: every score is float32. A detector
            # outputs a dict of raw predictions (class logits, box deltas): each is cast.
            return list(self._captured), keras.tree.map_structure(lambda t: keras.ops.cast(t, "float32"), logits)
        finally:
            self._captured, self._watch, self._change = [None] * len(self._slots), None, None
