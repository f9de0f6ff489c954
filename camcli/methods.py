"""The method registry: each CAM method is a small numpy function of activations and gradients.

The one TensorFlow step (camcli.explainer) hands every method the same `MapInputs`; a method returns
raw maps at the layer's resolution, and the shared code afterwards removes negative evidence (ReLU),
scales to [0, 1] and resizes. The CLI's `--method` choices, `camcli methods` and the README table all
come from `REGISTRY`. This module imports only numpy, so `camcli --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MapInputs:
    """What a method sees, for one requested class per image.

    activations: (batch, h, w, channels) activations A of the explained layer.
    gradients: (batch, h, w, channels) d y^c / d A of each image's own class score y^c (before the
        softmax); None for gradient-free methods.
    class_weights: (batch, channels) dense weights w^c of each image's class; only for CAM.
    """

    activations: np.ndarray
    gradients: np.ndarray | None = None
    class_weights: np.ndarray | None = None


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    paper: str
    compute: Callable[[MapInputs], np.ndarray]
    needs_gradients: bool
    needs_gap_head: bool = False


def weighted_channel_sum(activations: np.ndarray, channel_weights: np.ndarray) -> np.ndarray:
    """sum_k weights[b, k] * A[b, :, :, k], per image b."""
    return np.einsum("bhwk,bk->bhw", activations, channel_weights, optimize=True)


def gradcam(inputs: MapInputs) -> np.ndarray:
    # Selvaraju et al. 2017, Eq. 1: alpha_k^c = (1/Z) sum_ij dy^c/dA^k_ij, the spatial mean of the
    # gradient, taken per image (axes 1, 2 only: never across the batch).
    alpha = inputs.gradients.mean(axis=(1, 2))
    # Eq. 2: L^c = ReLU(sum_k alpha_k^c A^k); the ReLU is applied by the shared normalisation.
    return weighted_channel_sum(inputs.activations, alpha)


def cam(inputs: MapInputs) -> np.ndarray:
    # Zhou et al. 2016, Eq. 2 (Sec. 2): M_c(x, y) = sum_k w_k^c f_k(x, y), with w^c the weights of the
    # dense layer that follows global average pooling. No gradient and no extra pass are needed.
    return weighted_channel_sum(inputs.activations, inputs.class_weights)


REGISTRY: dict[str, Method] = {
    method.name: method
    for method in [
        Method("gradcam", "gradient-weighted class activation map; works at any conv layer",
               "Selvaraju et al. 2017, arXiv:1610.02391", gradcam, needs_gradients=True),
        Method("cam", "class activation map from the dense weights after global average pooling",
               "Zhou et al. 2016, arXiv:1512.04150", cam, needs_gradients=False, needs_gap_head=True),
    ]
}


def method_names() -> list[str]:
    return list(REGISTRY)
