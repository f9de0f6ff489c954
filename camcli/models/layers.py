"""Finding the layer to explain, and reading the classifier head, in Sequential and Functional models.

Layers inside nested models (a backbone used as one layer of a bigger model) are addressed by a
path of names joined with "/", e.g. "resnet50/conv5_block3_out". Nothing here changes the model.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import keras
import numpy as np

from camcli.errors import UsageError
from camcli.models.keras_internals import is_functional, producing_layer

SEPARATOR = "/"
_POOLING = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
            keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


@dataclass(frozen=True)
class LayerInfo:
    path: str  # "outer/inner" for a layer inside a nested model
    layer: keras.layers.Layer
    output_shape: tuple  # (None, height, width, channels) for spatial layers

    @property
    def type_name(self) -> str:
        return type(self.layer).__name__


def is_model(layer: object) -> bool:
    return isinstance(layer, keras.Model)


def _output_shape(layer: keras.layers.Layer) -> tuple | None:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):  # shared layers have no single output; unbuilt layers none
        return None


def all_layers(model: keras.Model, prefix: str = "") -> list[LayerInfo]:
    """Every layer, depth first, nested models expanded (the nested model itself is listed first)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        path = prefix + layer.name
        found.append(LayerInfo(path, layer, _output_shape(layer)))
        if is_model(layer):
            found.extend(all_layers(layer, path + SEPARATOR))
    return found


def is_spatial(info: LayerInfo) -> bool:
    return info.output_shape is not None and len(info.output_shape) == 4


def spatial_layers(model: keras.Model) -> list[LayerInfo]:
    """The layers that can be explained: every non-model layer with a 4-D (batch, h, w, c) output."""
    return [info for info in all_layers(model) if is_spatial(info) and not is_model(info.layer)]


def default_layer(model: keras.Model) -> str:
    """The last spatial layer before the head, looking inside a nested backbone when it is last.

    Pooling layers (VGG's block5_pool) and layers pooled down to 1x1 (MobileNet's keep-dims pooling
    and its 1x1 classifier) belong to the head, so they are passed over while another spatial
    layer exists: the map should come from the last layer that still computes features.
    """
    path = ""
    current = model
    while True:
        tops = [info for info in all_layers(current) if SEPARATOR not in info.path and is_spatial(info)]
        if not tops:
            raise UsageError(f"model {model.name!r} has no layer with a spatial (4-D) output to explain")
        wide = [info for info in tops
                if tuple(info.output_shape[1:3]) != (1, 1) and not isinstance(info.layer, _POOLING)]
        chosen = (wide or tops)[-1]
        path += chosen.path
        if not is_model(chosen.layer):
            return path
        path += SEPARATOR
        current = chosen.layer


def resolve_layer(model: keras.Model, name: str | None) -> str:
    """Return the full path of the layer to explain; raise a UsageError that suggests names."""
    if name is None:
        return default_layer(model)
    layers = {info.path: info for info in all_layers(model)}
    info = layers.get(name)
    if info is None:
        # A bare inner name ("conv5_block3_out") is accepted when it is unique in the model.
        matches = [p for p in layers if p.rsplit(SEPARATOR, 1)[-1] == name]
        if len(matches) == 1:
            info = layers[matches[0]]
    if info is None:
        spatial = [i.path for i in spatial_layers(model)]
        close = difflib.get_close_matches(name, spatial, n=5, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else "see `camcli layers --model ...`"
        raise UsageError(f"no layer named {name!r} in model {model.name!r} ({hint})")
    if is_model(info.layer):  # a nested backbone stands for its own last spatial layer
        return info.path + SEPARATOR + default_layer(info.layer)
    if not is_spatial(info):
        shape = "unknown" if info.output_shape is None else str(info.output_shape)
        raise UsageError(
            f"layer {info.path!r} ({info.type_name}) has output shape {shape}, not (batch, height, width, "
            f"channels): class activation maps need a spatial layer; try {default_layer(model)!r}"
        )
    return info.path


def layer_chain(model: keras.Model, path: str) -> list[keras.layers.Layer]:
    """The layers along a path: [outer nested model, ..., target layer]."""
    chain = []
    current = model
    for name in path.split(SEPARATOR):
        current = current.get_layer(name)
        chain.append(current)
    return chain


# ---------------------------------------------------------------------------------------------
# The head: which activation turns logits into scores, and the dense weights CAM needs.

_SCORE_ACTIVATIONS = {"softmax", "sigmoid"}
# Layers that leave a pooled feature vector unchanged at inference.
_PASS_THROUGH = (keras.layers.Dropout, keras.layers.Reshape, keras.layers.Flatten)


def _passes_vector_through(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, _PASS_THROUGH):
        return True
    return isinstance(layer, keras.layers.Activation) and _activation_name(layer) == "linear"


def _activation_name(layer: keras.layers.Layer) -> str | None:
    """'softmax', 'sigmoid', 'linear'... for layers with an activation; None for other layers."""
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    name = getattr(activation, "__name__", None)
    return name if isinstance(name, str) else None


def require_graph_model(model: keras.Model) -> None:
    """UsageError unless `model` is Sequential or Functional: camcli reads and replays its graph of layers."""
    if not isinstance(model, keras.Sequential) and not is_functional(model):
        raise UsageError(
            f"model {model.name!r} is a subclassed model; camcli explains Functional and Sequential models"
        )


def final_layer(model: keras.Model) -> keras.layers.Layer:
    """The layer that produces the model's (single) output, looking inside a nested last model."""
    require_graph_model(model)
    if isinstance(model, keras.Sequential):
        last = model.layers[-1]
    elif len(model.outputs) > 1:
        raise UsageError(
            f"model {model.name!r} has {len(model.outputs)} outputs; camcli explains single-output classifiers"
        )
    else:
        last = producing_layer(model.outputs[0])
    return final_layer(last) if is_model(last) else last


@dataclass(frozen=True)
class Head:
    """How the model's output relates to class scores.

    activation: "softmax" or "sigmoid": applied by camcli to the logits to get scores.
    strip: "layer" when the final layer is a pure Softmax/sigmoid Activation (skip it to read logits),
           "activation" when the final layer computes logits then applies softmax/sigmoid (run a
           linear copy of it), None when the model already outputs logits.
    binary: a single sigmoid unit: class 1 is the logit, class 0 its negation.
    """

    final: keras.layers.Layer
    activation: str
    strip: str | None
    binary: bool
    num_outputs: int

    @property
    def num_classes(self) -> int:
        return 2 if self.binary else self.num_outputs


def analyse_head(model: keras.Model, override: str = "auto") -> Head:
    final = final_layer(model)
    name = _activation_name(final)
    num_outputs = int(model.outputs[0].shape[-1]) if not isinstance(model, keras.Sequential) else int(
        model.layers[-1].output.shape[-1]
    )
    if isinstance(final, (keras.layers.Activation, keras.layers.Softmax)) and name in _SCORE_ACTIVATIONS:
        strip, activation = "layer", name
    elif name in _SCORE_ACTIVATIONS:
        strip, activation = "activation", name
    else:  # the model outputs logits; a single unit is a binary logit, several are softmax logits
        strip, activation = None, ("sigmoid" if num_outputs == 1 else "softmax")
    if override != "auto":
        activation = override
    binary = activation == "sigmoid" and num_outputs == 1
    return Head(final, activation, strip, binary=binary, num_outputs=num_outputs)


def cam_weights(model: keras.Model, path: str, head: Head) -> np.ndarray | None:
    """The (channels, classes) matrix W with class score y^c = sum_k W[k, c] * mean_ij A^k_ij + b_c.

    It exists when everything after the explained layer is global average pooling, layers that
    pass a vector through unchanged, and one dense (or 1x1 convolution) layer; that is the head the
    CAM paper requires (Zhou et al. 2016, Sec. 2). Returns None for any other head.
    """
    chain = layer_chain(model, path)
    owners = [model, *chain[:-1]]  # the model that directly holds each element of the chain
    tail = []  # layers after the explained one, innermost model first
    for owner, member in reversed(list(zip(owners, chain))):
        ordered = [layer for layer in owner.layers if not isinstance(layer, keras.layers.InputLayer)]
        tail.extend(ordered[ordered.index(member) + 1 :])
    if not tail or not isinstance(tail[0], keras.layers.GlobalAveragePooling2D):
        return None
    dense = [layer for layer in tail[1:] if not _passes_vector_through(layer)]
    if head.strip == "layer":
        dense = dense[:-1]  # the trailing Softmax/sigmoid Activation is undone by reading logits
    if len(dense) != 1:
        return None
    linear = dense[0]
    if isinstance(linear, keras.layers.Dense):
        kernel = linear.kernel.numpy()
    elif isinstance(linear, keras.layers.Conv2D) and tuple(linear.kernel.shape[:2]) == (1, 1):
        kernel = linear.kernel.numpy()[0, 0]
    else:
        return None
    if _activation_name(linear) not in (None, "linear", *_SCORE_ACTIVATIONS):
        return None
    if head.binary:  # class 0's score is the negated logit
        kernel = np.concatenate([-kernel, kernel], axis=1)
    return kernel.astype(np.float32)
