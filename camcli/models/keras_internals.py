"""Every private Keras attribute camcli relies on, in one place, each behind one small function.

Keras has no public way to replay a Functional model's graph with some layers swapped for others
(camcli.explain.forward needs that to read a layer's activations and the logits in one pass without
changing the model), nor to ask which layer produced a tensor (camcli.models.layers reads the
output layer with it). Both use private attributes, so a Keras release may remove them. Here they
raise `KerasIncompatibleError`, which says which attribute is missing, which Keras is installed and
which versions camcli is tested with, instead of an AttributeError or a wrong diagnosis deep inside
a step. `check_keras_internals` verifies them all up front; tests/test_keras_internals.py keeps them
under test, so an upgrade that removes one fails CI.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import keras

from camcli.errors import CamcliError

TESTED_KERAS = ">=3.3,<4"  # the Keras versions camcli is tested with


class KerasIncompatibleError(CamcliError):
    """The installed Keras lacks a private attribute that camcli uses."""

    def __init__(self, attribute: str, purpose: str):
        self.attribute = attribute
        super().__init__(
            f"Keras {keras.__version__} has no {attribute}, which camcli uses to {purpose}; camcli is tested with "
            f"Keras {TESTED_KERAS}: install one of those (pip install 'keras{TESTED_KERAS}')"
        )


_REPLAY = "replay a Functional model's graph"
_OUTPUT_LAYER = "find the layer that computes a model's output"
_INPUT_LAYERS = "find the layers that feed a layer (a transformer's last attention block)"


def _functional_class() -> type:
    try:
        from keras.src.models.functional import Functional
    except ImportError:
        raise KerasIncompatibleError("keras.src.models.functional.Functional", _REPLAY) from None
    return Functional


def is_functional(model: object) -> bool:
    """Whether `model` is a Functional model (built from inputs and outputs, or a subclass of one)."""
    return isinstance(model, _functional_class())


def run_graph(model: keras.Model, inputs: object, operation_fn: Callable[[object], Callable]) -> object:
    """Run a Functional model's graph on `inputs`, each layer through `operation_fn(layer)(*args, **kwargs)`."""
    try:
        run = model._run_through_graph
    except AttributeError:
        raise KerasIncompatibleError(f"{type(model).__name__}._run_through_graph", _REPLAY) from None
    return run(inputs, operation_fn=operation_fn)


def producing_layer(tensor: object) -> keras.layers.Layer:
    """The layer (Keras operation) that computed a symbolic tensor, such as a model's output."""
    try:
        return tensor._keras_history.operation
    except AttributeError:
        raise KerasIncompatibleError("KerasTensor._keras_history.operation", _OUTPUT_LAYER) from None


def input_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers whose outputs `layer` is called on, over every call of it in a graph."""
    try:
        nodes = layer._inbound_nodes
        return [producing_layer(tensor) for node in nodes for tensor in node.input_tensors]
    except AttributeError:
        raise KerasIncompatibleError("Layer._inbound_nodes[].input_tensors", _INPUT_LAYERS) from None


def call_count(layer: keras.layers.Layer) -> int:
    """How many times `layer` is called in the graphs it belongs to (a shared layer: more than once)."""
    try:
        return len(layer._inbound_nodes)
    except AttributeError:
        raise KerasIncompatibleError("Layer._inbound_nodes", _INPUT_LAYERS) from None


def autocast(dtype: str):
    """A context in which Keras variables read as `dtype`, as inside a layer with a mixed-precision policy
    (a stand-in that calls a layer's `call` directly bypasses the layer's own autocasting)."""
    try:
        from keras.src.backend.common.variables import AutocastScope
    except ImportError:
        raise KerasIncompatibleError("keras.src.backend.common.variables.AutocastScope",
                                     "run a layer's call in its compute dtype") from None
    return AutocastScope(dtype)


def check_keras_internals() -> None:
    """KerasIncompatibleError unless every private attribute above exists in the installed Keras."""
    functional = _functional_class()
    run = getattr(functional, "_run_through_graph", None)
    if not callable(run):
        raise KerasIncompatibleError("Functional._run_through_graph", _REPLAY)
    if "operation_fn" not in inspect.signature(run).parameters:
        raise KerasIncompatibleError("the operation_fn argument of Functional._run_through_graph", _REPLAY)
    probe = keras.Input((1,), name="camcli_keras_internals_check")  # named: it takes no automatic layer name
    if not isinstance(producing_layer(probe), keras.layers.InputLayer):
        raise KerasIncompatibleError("KerasTensor._keras_history.operation (an InputLayer for an Input)",
                                     _OUTPUT_LAYER)
