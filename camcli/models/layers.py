"""Finding the layer to explain, and reading the classifier head, in Sequential and Functional models.

Layers inside nested models (a backbone used as one layer of a bigger model) are addressed by a
path of names joined with "/", e.g. "resnet50/conv5_block3_out". Nothing here changes the model.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass

import keras
import numpy as np

from camcli.errors import UsageError
from camcli.models.keras_internals import input_layers, is_functional, producing_layer

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



def walk_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer object of `model`, nested models' layers after the nested model itself."""
    for layer in model.layers:
        yield layer
        if is_model(layer):
            yield from walk_layers(layer)

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


_SCALING = ("Rescaling", "Normalization")  # preprocessing layers that scale pixels inside the model


def input_scaling(model: keras.Model) -> str | None:
    """The path of the Rescaling or Normalization layer at the model's input (before any layer with
    weights of its own), or None: a model that scales its own pixels wants them as 0..255."""
    for info in all_layers(model):
        if type(info.layer).__name__ in _SCALING:
            return info.path
        if info.layer.weights and not is_model(info.layer):
            return None
    return None


def is_spatial(info: LayerInfo) -> bool:
    return info.output_shape is not None and len(info.output_shape) == 4


def is_tokens(info: LayerInfo) -> bool:
    """A (batch, tokens, dim) output with both sizes known: a transformer's sequence of tokens, or a
    1-D sequence (see `sequence_layers`), which is not."""
    shape = info.output_shape
    return shape is not None and len(shape) == 3 and None not in shape[1:] and not is_model(info.layer)


# Layers that mix neighbouring steps of a (batch, steps, channels) sequence: after one, the steps are
# a signal's or a text's positions, not image patches in row-major order, whatever their number.
_SEQUENCE = (keras.layers.Conv1D, keras.layers.Conv1DTranspose, keras.layers.SeparableConv1D,
             keras.layers.DepthwiseConv1D, keras.layers.MaxPooling1D, keras.layers.AveragePooling1D,
             keras.layers.UpSampling1D, keras.layers.ZeroPadding1D, keras.layers.RNN, keras.layers.Bidirectional)


def sequence_layers(model: keras.Model) -> set[int]:
    """The ids of the 1-D sequence layers (Conv1D, 1-D pooling, recurrent layers...) and of every layer
    computed from one (nested models included): their 3-D outputs are no patch tokens."""
    found: set[int] = set()
    for info in all_layers(model):
        layer = info.layer
        if is_model(layer):
            inner = any(isinstance(i.layer, _SEQUENCE) for i in all_layers(layer))
            upstream = any(id(up) in found for up in input_layers(layer))
            if inner or upstream:
                found.add(id(layer))
        elif isinstance(layer, _SEQUENCE) or any(id(up) in found for up in input_layers(layer)):
            found.add(id(layer))
    return found


def token_layers(model: keras.Model) -> list[LayerInfo]:
    """The layers whose (batch, tokens, dim) output may be a transformer's patch tokens, in order."""
    sequences = sequence_layers(model)
    return [info for info in all_layers(model) if is_tokens(info) and id(info.layer) not in sequences]


def _sequence_refusal(model: keras.Model, info: LayerInfo) -> UsageError:
    shape = "x".join(str(d) for d in info.output_shape[1:])
    return UsageError(f"layer {info.path!r} ({info.type_name}) of model {model.name!r} outputs a 1-D sequence "
                      f"({shape}), not image patches: camcli explains layers with a (batch, height, width, "
                      "channels) output or a vision transformer's patch tokens")


# ---------------------------------------------------------------------------------------------
# Token layers (vision transformers): the tokens after the class, distillation and register tokens
# are the patches, in row-major order, so they reshape into the patch grid (pytorch-grad-cam's
# "reshape transform" for ViTs does the same by hand).

MAX_PREFIX_TOKENS = 16  # class + distillation + register tokens looked for when inferring a grid


@dataclass(frozen=True)
class TokenGrid:
    """How a (batch, tokens, dim) output becomes a (batch, height, width, dim) map: the first `prefix`
    tokens (class, distillation, register tokens) are dropped, the rest fill the grid row by row."""

    prefix: int
    height: int
    width: int

    def describe(self, tokens: int, dim: int) -> str:
        dropped = f", {self.prefix} leading token{'s' if self.prefix != 1 else ''} dropped" if self.prefix else ""
        return f"{tokens} tokens -> {self.height}x{self.width}x{dim} grid{dropped}"


def patch_size(model: keras.Model) -> tuple[int, int] | None:
    """The patch size of a ViT's patch embedding: the first convolution whose stride equals its
    kernel (non-overlapping patches), looking inside nested models; None when there is none."""
    for info in all_layers(model):
        layer = info.layer
        if isinstance(layer, keras.layers.Conv2D) and not is_model(layer):
            kernel, strides = tuple(layer.kernel_size), tuple(layer.strides)
            if kernel == strides and max(strides) > 1:
                return kernel
    return None


def token_grid(model: keras.Model, info: LayerInfo, input_size: tuple[int, int],
               given: tuple[int, int] | None = None) -> TokenGrid | None:
    """The grid of a token layer: `given` (the user's HxW), else the input size over the patch size,
    else the grid with the input's aspect ratio left after the fewest leading tokens. None: no grid."""
    tokens = int(info.output_shape[1])
    if given is not None:
        return TokenGrid(tokens - given[0] * given[1], *given) if _given_grid_problem(
            model, tokens, input_size, given) is None else None
    patched = _patch_grid(model, tokens, input_size)
    if patched is not None:
        return patched
    height, width = input_size
    for prefix in range(min(MAX_PREFIX_TOKENS, tokens - 1) + 1):
        cells = tokens - prefix
        rows = round((cells * height / width) ** 0.5)
        # Patches tile the input: a grid whose cells are no whole number of pixels is no patch grid.
        if rows > 1 and cells % rows == 0 and height % rows == 0 and width % (cells // rows) == 0 \
                and rows * width == (cells // rows) * height:
            return TokenGrid(prefix, rows, cells // rows)
    return None


def _patch_grid(model: keras.Model, tokens: int, input_size: tuple[int, int]) -> TokenGrid | None:
    """The grid the input size and the patch embedding's patch size make, with the few leading tokens
    before it; None when the model has no patch embedding or the tokens do not fit it."""
    height, width = input_size
    patch = patch_size(model)
    if patch is not None and height % patch[0] == 0 and width % patch[1] == 0:
        rows, columns = height // patch[0], width // patch[1]
        if 0 <= tokens - rows * columns <= MAX_PREFIX_TOKENS:
            return TokenGrid(tokens - rows * columns, rows, columns)
    return None


def _given_grid_problem(model: keras.Model, tokens: int, input_size: tuple[int, int],
                        given: tuple[int, int]) -> str | None:
    """Why the user's grid cannot hold a layer's `tokens`, or None: a grid drops only the few leading
    special tokens (class, distillation, registers), never patch tokens."""
    rows, columns = given
    if tokens < rows * columns:
        return f"fewer than the {rows}x{columns} grid given"
    patched = _patch_grid(model, tokens, input_size)
    if patched is not None and (patched.height, patched.width) != given:
        dropped = patched.height * patched.width - rows * columns
        misread = f"would drop {dropped} patch tokens" if dropped > 0 else "would misplace the patches"
        leading = f"{patched.prefix} leading token{'s' if patched.prefix != 1 else ''} and " if patched.prefix else ""
        return (f"{leading}a {patched.height}x{patched.width} grid of patches (the "
                f"{input_size[0]}x{input_size[1]} input in the patch embedding's patches): {rows}x{columns} "
                f"{misread}; give `token_grid={patched.height}x{patched.width}`, or leave it out")
    if tokens - rows * columns > MAX_PREFIX_TOKENS:
        return (f"so {rows}x{columns} would drop {tokens - rows * columns} leading tokens, more than the "
                f"{MAX_PREFIX_TOKENS} class, distillation and register tokens a transformer has; give the grid of "
                "its patches")
    return None


def spatial_layers(model: keras.Model) -> list[LayerInfo]:
    """The layers with a 4-D (batch, h, w, c) output, nested models excluded."""
    return [info for info in all_layers(model) if is_spatial(info) and not is_model(info.layer)]


def explainable_layers(model: keras.Model, input_size: tuple[int, int],
                       given_grid: tuple[int, int] | None = None) -> list[tuple[LayerInfo, TokenGrid | None]]:
    """The layers that can be explained, each with its token grid (None for a spatial layer): the
    spatial layers, and the token layers whose tokens form a patch grid."""
    found = []
    tokens = {id(info.layer) for info in token_layers(model)}
    for info in all_layers(model):
        if is_spatial(info) and not is_model(info.layer):
            found.append((info, None))
        elif id(info.layer) in tokens:
            grid = token_grid(model, info, input_size, given_grid)
            if grid is not None:
                found.append((info, grid))
    return found


def _feeds_attention(layer: keras.layers.Layer, model: keras.Model) -> bool:
    attention = [info.layer for info in all_layers(model)
                 if isinstance(info.layer, keras.layers.MultiHeadAttention)]
    return any(layer in input_layers(block) for block in attention)


def default_token_layer(model: keras.Model, input_size: tuple[int, int],
                        given_grid: tuple[int, int] | None = None) -> str | None:
    """A transformer's layer to explain: the normalisation in front of the last attention block.

    The last block's output is no good with a class-token head: only the class token reaches the
    classifier from there, so the patch tokens' gradients are zero. In front of the last attention,
    every patch token still reaches the class token (pytorch-grad-cam's advice for ViTs,
    `model.blocks[-1].norm1`). Without such a layer: the last token layer that has a grid.
    """
    three_d = [info for info in all_layers(model) if is_tokens(info)]
    tokens = token_layers(model)
    if not tokens or three_d[-1].path != tokens[-1].path:
        return None  # the last sequence is a 1-D one (Conv1D, LSTM...): not a transformer's head
    spatial = [info.path for info in spatial_layers(model)]
    order = [info.path for info in all_layers(model)]
    if spatial and order.index(spatial[-1]) > order.index(tokens[-1].path):
        return None  # the tokens come before the convolutions: not a transformer's head
    norms = [info.path for info in tokens
             if isinstance(info.layer, keras.layers.LayerNormalization) and _feeds_attention(info.layer, model)]
    if norms:
        return norms[-1]  # a transformer: its grid is checked (or refused, in one line) when it is explained
    gridded = [info.path for info in tokens if token_grid(model, info, input_size, given_grid) is not None]
    return gridded[-1] if gridded else None


def image_size_of(model: keras.Model) -> tuple[int, int] | None:
    """(height, width) of the model's first (batch, height, width, channels) input, if fixed."""
    for tensor in getattr(model, "inputs", None) or []:
        shape = tuple(tensor.shape)
        if len(shape) == 4 and None not in shape[1:3]:
            return int(shape[1]), int(shape[2])
    return None


def default_layer(model: keras.Model, input_size: tuple[int, int] | None = None,
                  given_grid: tuple[int, int] | None = None, backbone: bool = False) -> str:
    """The last spatial layer before the head, looking inside a nested backbone when it is last; for
    a vision transformer, the normalisation in front of its last attention block.

    Pooling layers (VGG's block5_pool) and layers pooled down to 1x1 (MobileNet's keep-dims pooling
    and its 1x1 classifier) belong to the head, so they are passed over while another spatial
    layer exists: the map should come from the last layer that still computes features. The layer
    that computes a segmentation model's per-pixel output is its head too (not for a `backbone`,
    a nested model given as the layer, whose last layer is its feature output).
    """
    size = input_size or image_size_of(model)
    tokens = default_token_layer(model, size, given_grid) if size is not None else None
    if tokens is not None:
        return tokens
    if given_grid is not None:  # never a spatial layer in place of the token layer the grid was given for
        raise _no_layer_for_grid(model, given_grid)
    path = ""
    current = model
    while True:
        outputs = {id(producing_layer(tensor)) for tensor in getattr(current, "outputs", None) or []
                   if current is model and not backbone}
        tops = [info for info in all_layers(current) if SEPARATOR not in info.path and is_spatial(info)]
        # A segmentation model's per-pixel output layer is the head, not a feature layer.
        tops = [info for info in tops if id(info.layer) not in outputs] or tops
        if not tops:
            _refuse_sequences(current)
            raise UsageError(f"model {model.name!r} has no layer with a spatial (4-D) or token (3-D) output to "
                             "explain")
        wide = [info for info in tops
                if tuple(info.output_shape[1:3]) != (1, 1) and not isinstance(info.layer, _POOLING)]
        chosen = (wide or tops)[-1]
        path += chosen.path
        if not is_model(chosen.layer):
            return path
        path += SEPARATOR
        current = chosen.layer


def _no_layer_for_grid(model: keras.Model, given: tuple[int, int]) -> UsageError:
    layers = token_layers(model)
    if not layers:
        return UsageError(f"`token_grid` reshapes a vision transformer's tokens, and model {model.name!r} has no "
                          "token layer: drop `token_grid`")
    listed = ", ".join(f"{info.path} ({info.output_shape[1]})" for info in layers[-3:])
    return UsageError(f"no token layer of model {model.name!r} fits the {given[0]}x{given[1]} grid given (tokens: "
                      f"{listed}); give the grid of its patches, or leave `token_grid` out")


def _refuse_sequences(model: keras.Model) -> None:
    """The one-line refusal naming the last 1-D sequence layer of a model that has one."""
    sequences = sequence_layers(model)
    last = [info for info in all_layers(model) if is_tokens(info) and id(info.layer) in sequences]
    if last:
        raise _sequence_refusal(model, last[-1])


def _find_layer(model: keras.Model, name: str) -> LayerInfo:
    layers = {info.path: info for info in all_layers(model)}
    info = layers.get(name)
    if info is None:
        # A bare inner name ("conv5_block3_out") is accepted when it is unique in the model.
        matches = [p for p in layers if p.rsplit(SEPARATOR, 1)[-1] == name]
        if len(matches) == 1:
            info = layers[matches[0]]
    if info is None and any(layer.name == name for layer in model.layers
                            if isinstance(layer, keras.layers.InputLayer)):
        raise UsageError(f"{name!r} is the input of model {model.name!r}, not a layer with activations to "
                         "explain (see `camcli layers --model ...`)")
    if info is None:
        candidates = [i.path for i in all_layers(model) if is_spatial(i) or is_tokens(i)]
        close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else "see `camcli layers --model ...`"
        raise UsageError(f"no layer named {name!r} in model {model.name!r} ({hint})")
    return info


def resolve_layer(model: keras.Model, name: str | None, input_size: tuple[int, int] | None = None,
                  given_grid: tuple[int, int] | None = None) -> str:
    """Return the full path of the layer to explain; raise a UsageError that suggests names."""
    if name is None:
        return default_layer(model, input_size, given_grid)
    info = _find_layer(model, name)
    if is_model(info.layer):  # a nested backbone stands for its own last spatial layer
        return info.path + SEPARATOR + default_layer(info.layer, input_size, given_grid, backbone=True)
    if is_tokens(info):  # checks the grid (and refuses a 1-D sequence)
        layer_grid(model, info.path, input_size or image_size_of(model) or (0, 0), given_grid)
        return info.path
    if not is_spatial(info):
        shape = "unknown" if info.output_shape is None else str(info.output_shape)
        raise UsageError(
            f"layer {info.path!r} ({info.type_name}) has output shape {shape}, not (batch, height, width, "
            f"channels) or (batch, tokens, dim): class activation maps need a spatial or token layer; try "
            f"{default_layer(model, input_size, given_grid)!r}"
        )
    return info.path


def layer_grid(model: keras.Model, path: str, input_size: tuple[int, int],
               given_grid: tuple[int, int] | None = None) -> TokenGrid | None:
    """The token grid of the layer at `path` (None for a spatial layer); UsageError when its tokens
    form no grid."""
    info = _find_layer(model, path)
    if not is_tokens(info):
        if given_grid is not None and is_spatial(info):
            raise UsageError(f"`token_grid` reshapes a vision transformer's tokens, and layer {path!r} "
                             f"({info.type_name}) outputs a {info.output_shape[1]}x{info.output_shape[2]} map "
                             "already: drop `token_grid`")
        return None
    if id(info.layer) in sequence_layers(model):
        raise _sequence_refusal(model, info)
    grid = token_grid(model, info, input_size, given_grid)
    if grid is None:
        tokens = info.output_shape[1]
        if given_grid is not None:
            reason = _given_grid_problem(model, tokens, input_size, given_grid)
            if not reason.startswith("fewer"):
                raise UsageError(f"layer {path!r} outputs {tokens} tokens, {reason}")
        else:
            reason = f"which do not form a patch grid of the {input_size[0]}x{input_size[1]} input"
        raise UsageError(f"layer {path!r} outputs {tokens} tokens, {reason}; give the patch grid with "
                         "`token_grid=HxW` (its first tokens beyond HxW, e.g. a class token, are dropped)")
    return grid


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


_BIASED_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
                        keras.layers.Conv2DTranspose)


def bias_layers(model: keras.Model) -> list[LayerInfo]:
    """The spatial layers that add a bias (FullGrad's, Srinivas & Fleuret 2019): 2-D convolutions with one,
    and batch normalisations (whose inference form x * gamma / sqrt(var + eps) + (beta - mean * gamma /
    sqrt(var + eps)) adds one), channels last, each called once, nested models included."""
    found = []
    for info in all_layers(model):
        layer = info.layer
        if not is_spatial(info) or len(getattr(layer, "_inbound_nodes", ())) > 1:
            continue  # a shared layer has several outputs, and no single place its bias is added
        if isinstance(layer, _BIASED_CONVOLUTIONS):
            keep = getattr(layer, "bias", None) is not None and getattr(layer, "data_format", "") == "channels_last"
        else:
            keep = isinstance(layer, keras.layers.BatchNormalization) and layer.axis in (-1, 3)
        if keep:
            found.append(info)
    return found


def effective_bias(layer: keras.layers.Layer):
    """A bias layer's (channels,) bias as a float32 tensor, read now (see `bias_layers`)."""
    if not isinstance(layer, keras.layers.BatchNormalization):
        return keras.ops.cast(layer.bias, "float32")
    mean = keras.ops.cast(layer.moving_mean, "float32")
    scale = keras.ops.rsqrt(keras.ops.cast(layer.moving_variance, "float32") + layer.epsilon)
    if layer.scale:
        scale = scale * keras.ops.cast(layer.gamma, "float32")
    shift = keras.ops.cast(layer.beta, "float32") if layer.center else 0.0
    return shift - mean * scale


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
