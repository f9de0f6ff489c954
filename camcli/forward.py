"""One forward pass that returns both the explained layer's activations and the pre-softmax logits.

Building a sub-model `Model(inputs, [layer.output, model.output])` breaks on nested models
("Graph disconnected"), and setting the last activation to linear would modify the user's model.
Instead the model's own graph is replayed call by call: the explained layer's output is recorded on
its way through, nested models on the way are replayed the same way, and the final softmax/sigmoid
is skipped (or its layer run as a linear copy). The user's model and its layers are never changed.
"""

from __future__ import annotations

import keras

from camcli.errors import UsageError
from camcli.layers import Head, is_model, layer_chain


def _linear_copy(layer):
    """A copy of `layer` with a linear activation and the same weights (for a Dense+softmax head)."""
    config = layer.get_config()
    config["activation"] = "linear"
    copy = type(layer).from_config(config)
    copy.build(tuple(layer.input.shape))
    copy.set_weights(layer.get_weights())
    return copy


def _path_to(model, target) -> list | None:
    """The nested models from `model` down to the one holding `target` (empty if `model` holds it)."""
    for layer in model.layers:
        if layer is target:
            return []
        if is_model(layer):
            below = _path_to(layer, target)
            if below is not None:
                return [layer, *below]
    return None


class TappedForward:
    """Callable: `activations, logits = forward(images, watch)`; works inside `tf.function`.

    `watch`, when given, is called with the activations the moment they exist (pass
    `tape.watch`), so that a gradient tape records everything computed from them.
    """

    def __init__(self, model, layer_path: str, head: Head):
        self.model = model
        target = layer_chain(model, layer_path)[-1]
        self._captured = None
        self._watch = None
        self._overrides = {id(target): self._recorder(target)}
        if head.strip == "layer":  # a separate Softmax/sigmoid layer: its input is the logits
            self._overrides[id(head.final)] = lambda x, *args, **kwargs: x
        elif head.strip == "activation":
            self._overrides[id(head.final)] = _linear_copy(head.final)
        # Nested models that hold an overridden layer are replayed call by call too.
        self._replayed = {id(m) for layer in (target, head.final) for m in (_path_to(model, layer) or [])}

    def _recorder(self, layer):
        def call(*args, **kwargs):
            output = layer(*args, **kwargs)
            if self._watch is not None:
                self._watch(output)
            self._captured = output
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
        if hasattr(model, "_run_through_graph"):  # a Functional model: Keras runs its graph for us
            return model._run_through_graph(inputs, operation_fn=self._operation)
        raise UsageError(
            f"model {model.name!r} is a subclassed model; camcli explains Functional and Sequential models"
        )

    def __call__(self, images, watch=None):
        self._captured, self._watch = None, watch
        try:
            logits = self._replay(self.model, images)
            return self._captured, logits
        finally:
            self._captured, self._watch = None, None
