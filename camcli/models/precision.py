"""Explaining in bfloat16 or float16: a compute copy of the user's model, never the model itself.

`ComputeCopy(model, "bfloat16")` clones the model (keras.models.clone_model, nested models too) with
every layer under Keras' mixed-precision policy (`mixed_bfloat16` or `mixed_float16`: variables stay
float32, each layer casts them and its inputs to the compute dtype), and copies the weights in. The
user's model and Keras' global policy are left as they were.

On the way, each batch normalisation that only follows a convolution is folded into it (Ioffe and
Szegedy 2015, Alg. 2, inference: BN(x) = gamma * (x - mean) / sqrt(var + eps) + beta is a per-channel
scale s and shift, so conv(x) * s + (b - mean) * s + beta is one convolution with its kernel's output
channels scaled by s and a new bias). Under a mixed policy batch normalisation computes in float32 and
casts around itself; folded, ResNet50 and Xception run conv after conv in the compute dtype.

The copy holds its own snapshot of the weights: `refresh()` copies (and folds) them again, as
camcli.keras.ExplainCallback does after each epoch. What is computed stays float32 from the step on:
the logits are cast back before any score, the activations and gradients before any method reads them.
"""

from __future__ import annotations

import functools
import warnings

import keras
import numpy as np

from camcli.errors import UsageError
from camcli.models.keras_internals import call_count, input_layers, producing_layer
from camcli.models.layers import layer_chain, walk_layers

# Keras' mixed-precision policy for each reduced precision.
POLICIES = {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}

# float16 gradients of a class score at a late layer are often 1e-4 to 1e-6, where float16 has few or
# no significant bits (its smallest normal number is 6.1e-5). The step differentiates this multiple of
# the score and divides the float32 gradients by it, as loss scaling does in mixed-precision training
# (Micikevicius et al. 2018, Sec. 3.2); bfloat16 has float32's exponent range and needs none.
FLOAT16_GRADIENT_SCALE = 1024.0

# float16 on a CPU without float16 arithmetic: on the development machine (AMD EPYC with AVX-512 BF16,
# no AVX-512 FP16; TensorFlow 2.21, oneDNN), the Grad-CAM step at batch 8 ran at 0.57x float32's speed
# for VGG16, 0.73x for Xception and 0.96x for ResNet50 (make bench's precision section).
FLOAT16_CPU_SPEED = "slower than float32 (0.6-1.0x measured on an AVX-512 CPU)"

_CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.DepthwiseConv1D,
                 keras.layers.DepthwiseConv2D, keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)


# Layers whose weights the copy stores in the reduced dtype (their mixed-policy arithmetic is the same).
_STORED_REDUCED = (*_CONVOLUTIONS, keras.layers.Dense, keras.layers.EinsumDense)


def gradient_scale(precision: str) -> float:
    """The factor the step multiplies a score by before differentiating it (see FLOAT16_GRADIENT_SCALE)."""
    return FLOAT16_GRADIENT_SCALE if precision == "float16" else 1.0


class ComputeCopy:
    """`model` cloned to compute in `precision` ("bfloat16" or "float16"), its batch normalisations folded
    into the convolutions before them, except where a convolution's own output is explained (`keep`:
    the explained layers' paths)."""

    def __init__(self, model: keras.Model, precision: str, keep=()):
        if precision not in POLICIES:
            raise UsageError(f"unknown precision {precision!r}: choose one of float32, {', '.join(POLICIES)}")
        self.original, self.precision = model, precision
        kept = {id(layer_chain(model, path)[-1]) for path in keep}
        self._folds = _foldable(model, kept)  # id(conv) -> its batch normalisation
        folded_norms = {id(norm) for norm in self._folds.values()}
        self._copies: dict[int, keras.layers.Layer] = {}  # id(original layer) -> its copy
        self._sources: list[keras.layers.Layer] = []
        policy = POLICIES[precision]

        def copy_layer(layer):
            if id(layer) in folded_norms:  # its conv now computes what it did
                copy = _FoldedNormalization(name=layer.name, dtype=policy)
            else:
                config = layer.get_config()
                if getattr(layer, "quantization_mode", None) is None:
                    # Convolutions and dense layers keep their weights in the compute dtype itself: the mixed
                    # policy would cast each float32 kernel on every call (for VGG16, 138M weights a batch),
                    # to the same values.
                    config["dtype"] = precision if isinstance(layer, _STORED_REDUCED) else policy
                if id(layer) in self._folds:
                    config["use_bias"] = True
                try:
                    copy = type(layer).from_config(config)
                except Exception as error:  # noqa: BLE001 - a custom layer's from_config can raise anything
                    raise UsageError(
                        f"precision {precision} explains a copy of the model, and its layer {layer.name!r} "
                        f"({type(layer).__name__}) cannot be made again from its config ({type(error).__name__}: "
                        f"{str(error).splitlines()[0][:160] if str(error) else 'no message'}); use precision "
                        "float32") from None
            self._copies[id(layer)] = copy
            self._sources.append(layer)
            return copy

        try:
            self.model = keras.models.clone_model(model, clone_function=copy_layer, recursive=True)
        except UsageError:
            raise
        except Exception as error:  # noqa: BLE001 - Keras refuses some graphs in its own words
            raise UsageError(f"precision {precision} explains a copy of the model, and Keras could not copy it "
                             f"({type(error).__name__}: {str(error).splitlines()[0][:160]}); use precision "
                             "float32") from None
        self.refresh()

    def counterpart(self, layer: keras.layers.Layer) -> keras.layers.Layer:
        """The copy of one of the original model's (non-model) layers."""
        return self._copies[id(layer)]

    @property
    def folded(self) -> int:
        """How many batch normalisations were folded into convolutions."""
        return len(self._folds)

    def refresh(self) -> None:
        """Copy the original model's current weights into the copy, folding where it folds."""
        for layer in self._sources:
            if not layer.weights:
                continue
            copy = self._copies[id(layer)]
            if id(layer) in self._folds:
                copy.set_weights(_folded_weights(layer, self._folds[id(layer)]))
            elif not isinstance(copy, _FoldedNormalization):
                copy.set_weights(layer.get_weights())


class _FoldedNormalization(keras.layers.Layer):
    """Where a batch normalisation stood once folded into its convolution: passes its input through, and
    takes the arguments the normalisation was called with."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, training=None, mask=None):
        return inputs


def _foldable(model: keras.Model, kept: set[int]) -> dict[int, keras.layers.Layer]:
    """id(conv) -> batch normalisation, for each normalisation whose only input is a convolution that
    feeds nothing else, has no activation and is not explained itself."""
    layers = list(walk_layers(model))
    readers: dict[int, int] = {}
    for layer in layers:
        for source in input_layers(layer):
            readers[id(source)] = readers.get(id(source), 0) + 1
    for tensor in model.outputs:
        source = producing_layer(tensor)
        readers[id(source)] = readers.get(id(source), 0) + 1
    folds = {}
    for norm in layers:
        if type(norm) is not keras.layers.BatchNormalization or call_count(norm) != 1:
            continue
        sources = input_layers(norm)
        if len(sources) != 1:
            continue
        conv = sources[0]
        if (isinstance(conv, _CONVOLUTIONS) and id(conv) not in kept and readers.get(id(conv)) == 1
                and call_count(conv) == 1 and _folds_cleanly(conv, norm)):
            folds[id(conv)] = norm
    return folds


def _folds_cleanly(conv: keras.layers.Layer, norm: keras.layers.Layer) -> bool:
    rank = len(conv.output.shape)
    axis = norm.axis if isinstance(norm.axis, int) else (norm.axis[0] if len(norm.axis) == 1 else None)
    return (getattr(conv, "data_format", "channels_last") == "channels_last"
            and getattr(conv.activation, "__name__", "") == "linear"
            and getattr(conv, "quantization_mode", None) is None and not getattr(norm, "renorm", False)
            and axis is not None and axis % rank == rank - 1)


def _folded_weights(conv: keras.layers.Layer, norm: keras.layers.Layer) -> list[np.ndarray]:
    """The convolution's weights with the normalisation folded in: kernel(s), then the new bias."""
    mean = np.asarray(norm.moving_mean, dtype=np.float64)
    variance = np.asarray(norm.moving_variance, dtype=np.float64)
    gamma = np.asarray(norm.gamma, dtype=np.float64) if norm.gamma is not None else 1.0
    beta = np.asarray(norm.beta, dtype=np.float64) if norm.beta is not None else 0.0
    scale = gamma / np.sqrt(variance + norm.epsilon)
    bias = np.asarray(conv.bias, dtype=np.float64) if conv.bias is not None else 0.0
    new_bias = ((bias - mean) * scale + beta).astype(np.float32)
    if isinstance(conv, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        return [np.asarray(conv.depthwise_kernel), (np.asarray(conv.pointwise_kernel) * scale).astype(np.float32),
                new_bias]
    kernel = np.asarray(conv.kernel)
    if isinstance(conv, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        # output channel c * multiplier + m comes from input channel c (kernel (..., in, multiplier))
        return [(kernel * scale.reshape(kernel.shape[-2:])).astype(np.float32), new_bias]
    return [(kernel * scale).astype(np.float32), new_bias]


class PrecisionWarning(UserWarning):
    """The machine has no fast path for the precision asked for."""


def warn_if_slow(precision: str) -> None:
    """Warn (once per process, as Python shows a warning once per place) when `precision` gains nothing here."""
    message = hardware_warning(precision)
    if message is not None:
        warnings.warn(message, PrecisionWarning, stacklevel=3)


def hardware_warning(precision: str) -> str | None:
    """One line when this machine has no fast path for `precision`, saying what to expect; None where it has
    one (a GPU, or a CPU with bfloat16 dot products for bfloat16)."""
    if precision == "float32":
        return None
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return None
    flags = _cpu_flags()
    if precision == "bfloat16":
        if flags is not None and ({"avx512_bf16", "amx_bf16"} & flags):
            return None
        known = "this CPU has" if flags is not None else "camcli cannot tell whether this CPU has"
        return (f"precision bfloat16: {known} bfloat16 instructions (AVX512_BF16 or AMX), and without them "
                "bfloat16 runs no faster than float32, often slower (it is emulated); use float32 here, or "
                "bfloat16 on a CPU that has them or a GPU")
    if flags is not None and ({"avx512_fp16", "amx_fp16"} & flags):
        return None
    return (f"precision float16: this machine has no GPU and its CPU no float16 arithmetic (AVX512_FP16 or AMX), "
            f"so expect it to run {FLOAT16_CPU_SPEED}; use bfloat16 on a CPU")


@functools.cache
def _cpu_flags() -> frozenset[str] | None:
    """The CPU's x86 feature flags (Linux /proc/cpuinfo), None where there are none to read (another OS, or an
    Arm CPU, whose "Features" line names bfloat16 otherwise): the warning then says it cannot tell."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None
