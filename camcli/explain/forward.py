"""One forward pass that returns both the explained layer's activations and the pre-softmax logits.

Building a sub-model `Model(inputs, [layer.output, model.output])` breaks on nested models
("Graph disconnected"), and setting the last activation to linear would modify the user's model.
Instead the model's own graph is replayed call by call: the explained layer's output is recorded on
its way through, nested models on the way are replayed the same way, and the final softmax/sigmoid
is skipped (or its layer run as a linear copy). The user's model and its layers are never changed.
Keras replays a Functional model's graph through a private call, made in camcli.models.keras_internals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import keras

from camcli.models.keras_internals import check_keras_internals, run_graph
from camcli.models.layers import Head, is_model, layer_chain, require_graph_model


def _linear_copy(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A copy of `layer` with a linear activation and the same weights (for a Dense+softmax head)."""
    config = layer.get_config()
    config["activation"] = "linear"
    copy = type(layer).from_config(config)
    copy.build(tuple(layer.input.shape))
    copy.set_weights(layer.get_weights())
    return copy


def _path_to(model: keras.Model, target: keras.layers.Layer) -> list[keras.Model] | None:
    """The nested models from `model` down to the one holding `target` (empty if `model` holds it)."""
    for layer in model.layers:
        if layer is target:
            return []
        if is_model(layer):
            below = _path_to(layer, target)
            if below is not None:
                return [layer, *below]
    return None


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


def _guided_override(layer: keras.layers.Layer) -> Callable | None:
    """A stand-in for `layer` with guided ReLU gradients, or None when the layer applies no ReLU.

    ReLU and Activation("relu") layers keep their own forward computation; a conv or dense layer with
    a built-in ReLU is replaced by a linear copy (same weights) followed by the guided ReLU. The
    user's layer is never changed.
    """
    relu_layer = isinstance(layer, keras.layers.ReLU)
    if relu_layer or (isinstance(layer, keras.layers.Activation) and _is_relu(layer.activation)):
        guided = _guided(layer)
        return lambda x, *args, **kwargs: guided(x)
    if not is_model(layer) and _is_relu(getattr(layer, "activation", None)):
        linear = _linear_copy(layer)
        guided = _guided(layer.activation)
        return lambda x, *args, **kwargs: guided(linear(x, *args, **kwargs))
    return None


def _walk(model: keras.Model) -> Iterator[keras.layers.Layer]:
    for layer in model.layers:
        yield layer
        if is_model(layer):
            yield from _walk(layer)


class TappedForward:
    """Callable: `activations, logits = forward(images, extras, watch)`; works inside `tf.function`.

    `extras` are the model's other inputs, in order (empty for a one-input model); the images go in
    at position `image_input` among the model's inputs.
    `activations` lists the outputs of the tapped layers, in the order of `layer_paths`. `watch`,
    when given, is called with each of them the moment it exists (pass `tape.watch`), so that a
    gradient tape records everything computed from them. With `guided=True` every ReLU in the model
    passes back only positive gradients (guided backpropagation), on stand-in layers.
    """

    def __init__(self, model: keras.Model, layer_paths: Sequence[str], head: Head, guided: bool = False,
                 image_input: int = 0):
        check_keras_internals()
        self.model = model
        self.image_input = image_input
        targets = [layer_chain(model, path)[-1] for path in layer_paths]
        self._slots = {id(target): i for i, target in enumerate(targets)}
        self._captured = [None] * len(targets)
        self._watch = None
        self._overrides = {}
        replay_below = [*targets, head.final]
        if guided:
            for layer in _walk(model):
                override = _guided_override(layer)
                if override is not None:
                    self._overrides[id(layer)] = override
                    replay_below.append(layer)
        if head.strip == "layer":  # a separate Softmax/sigmoid layer: its input is the logits
            self._overrides[id(head.final)] = lambda x, *args, **kwargs: x
        elif head.strip == "activation":
            self._overrides[id(head.final)] = _linear_copy(head.final)
        for target in targets:  # an explained output layer (segmentation) is recorded as logits
            self._overrides[id(target)] = self._recorder(target, self._overrides.get(id(target), target))
        # Nested models that hold an overridden layer are replayed call by call too.
        self._replayed = {id(m) for layer in replay_below for m in (_path_to(model, layer) or [])}

    def _recorder(self, layer, run):
        slot = self._slots[id(layer)]

        def call(*args, **kwargs):
            output = run(*args, **kwargs)
            if self._watch is not None:
                self._watch(output)
            self._captured[slot] = output
            return output

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

    def __call__(self, images, extras: Sequence = (), watch: Callable | None = None) -> tuple[list, object]:
        self._captured, self._watch = [None] * len(self._slots), watch
        inputs = list(extras)
        inputs.insert(self.image_input, images)
        try:
            logits = self._replay(self.model, inputs if len(inputs) > 1 else images)
            return list(self._captured), logits
        finally:
            self._captured, self._watch = [None] * len(self._slots), None
