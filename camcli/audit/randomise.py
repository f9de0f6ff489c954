"""Cascading model-parameter randomisation, on a copy of the model: the user's model is never touched.

Adebayo et al. 2018 ("Sanity Checks for Saliency Maps", NeurIPS, Sec. 3.1) re-initialise a trained
network's weights one layer after another, from the output towards the input, keeping each layer
randomised once it is: if a saliency method's maps barely change while the model they explain is
destroyed, the maps do not show what the model learned.

A *weighted layer* owns weights other than running statistics (Conv2D, Dense, DepthwiseConv2D,
BatchNormalization's gamma and beta...), whether or not it is frozen: a frozen backbone is still part
of the model a map should depend on. Layers inside nested models count one by one, named by their
"outer/inner" path. Depth d means the top d weighted layers (from the output back) are re-initialised.

Each weight is re-initialised with its layer's own initializer (`kernel_initializer`,
`bias_initializer`, `depthwise_initializer`, `gamma_initializer`, ...), seeded from (seed, the layer's
rank from the top, the weight's index), so depth d+1 re-initialises the same top d layers to the same
values as depth d, and a run is reproducible. A weight without an initializer of its own is drawn from
a normal distribution with its trained mean and standard deviation. BatchNormalization's moving mean
and variance are kept: with Keras' default initializers gamma becomes 1 and beta 0, so a randomised
batch norm standardises its input with the statistics of the (still trained) layers below it, and
the activations stay in a sensible range instead of exploding; the layers below are randomised later
anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from camcli.errors import UsageError, one_line
from camcli.models.loading import import_keras
from camcli.options import SanityOptions, field_default

# Running statistics, kept as they are (see the module's docstring): BatchNormalization's, and the
# Normalization preprocessing layer's. A layer with nothing else is not a weighted layer.
KEPT_STATISTICS = frozenset({"moving_mean", "moving_variance", "mean", "variance", "count"})
# Weights whose initializer attribute is not "<weight>_initializer".
_OTHER_INITIALIZERS = {"kernel": ("depthwise_initializer",)}


@dataclass(frozen=True)
class WeightedLayer:
    path: str  # the layer's name, "outer/inner" inside nested models
    layer: object  # the keras layer (of the copy)


def _leaf_layers(model, prefix: str = "") -> Iterator[tuple[str, object]]:
    from camcli.models.layers import is_model

    for layer in model.layers:
        if is_model(layer):
            yield from _leaf_layers(layer, f"{prefix}{layer.name}/")
        else:
            yield f"{prefix}{layer.name}", layer


def _weight_name(variable) -> str:
    return variable.name.rsplit("/", 1)[-1]


def weighted_layers(model) -> list[WeightedLayer]:
    """The model's weighted layers, from the output back to the input (the order they are randomised in)."""
    found = [WeightedLayer(path, layer) for path, layer in _leaf_layers(model)
             if any(_weight_name(v) not in KEPT_STATISTICS for v in layer.weights)]
    return found[::-1]


def copy_model(model):
    """A copy of the Keras model with its own layers and the same weights."""
    keras = import_keras()
    try:
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
    except Exception as error:  # noqa: BLE001 - Keras raises anything for a model it cannot rebuild
        raise UsageError(f"the sanity check randomises a copy of the model, and Keras cannot copy "
                         f"{getattr(model, 'name', 'it')}: {one_line(error)}") from None
    return copy


def _seed(seed: int, rank: int, index: int) -> int:
    """A seed of its own for weight `index` of the layer at `rank` (0 = the top)."""
    return int(np.random.SeedSequence([seed, rank, index]).generate_state(1)[0])


def _own_initializer(layer, weight: str, seed: int):
    """The layer's initializer for `weight`, reseeded; None when the layer has none."""
    keras = import_keras()
    for attribute in (f"{weight}_initializer", *_OTHER_INITIALIZERS.get(weight, ())):
        initializer = getattr(layer, attribute, None)
        if isinstance(initializer, keras.initializers.Initializer):
            config = initializer.get_config()
            if "seed" in config:  # random initializers; Zeros and Ones take no seed
                config["seed"] = seed
            return type(initializer).from_config(config)
    return None


def reinitialise(layer, seed: int, rank: int) -> None:
    """Draw the layer's weights afresh (running statistics excepted), reproducibly for (seed, rank)."""
    keras = import_keras()
    for index, variable in enumerate(layer.weights):
        weight = _weight_name(variable)
        if weight in KEPT_STATISTICS:
            continue
        shape, dtype, own_seed = tuple(variable.shape), variable.dtype, _seed(seed, rank, index)
        initializer = _own_initializer(layer, weight, own_seed)
        if initializer is not None:
            values = keras.ops.convert_to_numpy(initializer(shape, dtype=dtype))
        else:
            trained = keras.ops.convert_to_numpy(variable).astype(np.float64)
            values = np.random.default_rng(own_seed).normal(trained.mean(), trained.std(), shape)
        variable.assign(np.asarray(values, dtype=dtype))


class CascadingRandomisation:
    """A copy of `model` whose weighted layers are re-initialised from the top down, cumulatively:
    after `randomise_top(d)` the top d weighted layers of `copy` are random and the others trained.

    >>> cascade = CascadingRandomisation(keras_model, seed=0)
    >>> cascade.randomise_top(2); cascade.copy  # the top 2 weighted layers re-initialised
    >>> cascade.label(2)  # the deepest layer randomised so far: "dense_1"
    """

    def __init__(self, model, seed: int = field_default(SanityOptions, "seed")):
        self.copy = copy_model(model)
        self.layers = weighted_layers(self.copy)
        if not self.layers:
            raise UsageError(f"model {getattr(model, 'name', '')} has no weights to randomise")
        self.seed = int(seed)
        self.depth = 0

    def randomise_top(self, depth: int) -> None:
        """Re-initialise the weighted layers down to `depth` (those above are random already)."""
        if not self.depth <= depth <= len(self.layers):
            raise ValueError(f"depth {depth} is not between {self.depth} (randomised so far) and {len(self.layers)}")
        for rank in range(self.depth, depth):
            reinitialise(self.layers[rank].layer, self.seed, rank)
        self.depth = depth

    def label(self, depth: int) -> str:
        """What depth `depth` is called: "none", or the path of the deepest layer it randomises."""
        return "none" if depth == 0 else self.layers[depth - 1].path


def checkpoint_depths(total: int, depths: int | list[int] | tuple[int, ...] | None = None,
                      default: int = 6) -> list[int]:
    """The depths to evaluate, from 0 (the original) to `total` (every weighted layer random).

    depths None: `default` checkpoints after 0, spread evenly on a log scale from 1 to `total` (the
    top layers, where few change much, are looked at more closely; every depth when there are
    fewer layers); an int: that many checkpoints; a list: those depths, with 0 and `total` added.
    """
    if depths is None or isinstance(depths, int):
        count = default if depths is None else depths
        if count < 1:
            raise UsageError(f"`depths={count}` must be at least 1 (the last one randomises every layer)")
        spread = np.geomspace(1, total, num=min(count, total)) if count > 1 else [total]
        chosen = {int(round(d)) for d in spread}
    else:
        chosen = {int(d) for d in depths}
        outside = sorted(d for d in chosen if not 0 <= d <= total)
        if outside:
            raise UsageError(f"`depths` {outside[0]} is out of range: the model has {total} weighted layers")
    return sorted(chosen | {0, total})
