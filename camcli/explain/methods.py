"""The method registry: each method is a small object that supplies its part of the maps.

A layer method (`LayerMethod`) is a numpy function of one layer's `MapInputs`: the per-channel
*contributions* (batch, h, w, channels) whose sum over channels is the map, for example
alpha_k * A^k for Grad-CAM. Summing them gives the map; `--eigen-smooth` instead takes their first
principal component. The shared code (camcli.explain.evidence) builds the inputs from the compiled
step, removes negative evidence (ReLU), scales to [0, 1], fuses layers and smooths.

Two methods work at the input instead of a layer. `GuidedBackprop` needs guided backpropagation's
input gradient and shows it as an RGB image; `GuidedGradCAM` composes Grad-CAM's layer map with it.
Each method asks the shared code (`Evidence`) only for what it uses.

The CLI's `--method` choices, `camcli methods` and the README table all come from `REGISTRY`. This
module imports only numpy (and camcli.errors), so `camcli --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from camcli.errors import UsageError


@dataclass(frozen=True)
class MapInputs:
    """What a method sees, for one requested class per image, at one layer.

    activations: (batch, h, w, channels) activations A of the explained layer.
    gradients: (batch, h, w, channels) d y^c / d A of each image's own class score y^c (before the
        softmax); None when the step computed none (gradient-free methods run on their own).
    class_weights: (batch, channels) dense weights w^c of each image's class; only for CAM.
    masked_scores: for Score-CAM, `masked_scores(b, masks)` takes channel maps (n, h, w) at the
        layer's resolution, upsamples each to the input and min-max scales it into a mask in [0, 1] (a
        flat map gives the all-zero mask), multiplies image b by each and returns the target's score
        (for classes: the probability) of image b's class on each masked copy, shape (n,).
        `masked_scores(b, masks, changes)` first changes each mask as `changes` (a MaskChanges) says.
    max_channels: for Score-CAM and AblationCAM, score only this many channels (those whose activation
        varies most, `score_channels`); the others weigh 0.
    ablated_scores: for AblationCAM, `ablated_scores(b, keep)` takes (n, channels) factors, runs image b
        once per row with the layer's channels multiplied by the row (0: ablated) and returns the
        target's differentiated score (for classes: the logit) of image b's class on each, shape (n,).
    noisy_gradients: for Smooth Grad-CAM++, per noisy copy of the batch (the method's InputNoise), its
        gradients d y^c / d A (batch, h, w, channels) for the same classes.
    hessian_products: for ShapleyCAM, H A (batch, h, w, channels): the Hessian of the differentiated
        score with respect to A, times A itself; `gradients` are then that score's (the ReST score's).
    """

    activations: np.ndarray
    gradients: np.ndarray | None = None
    class_weights: np.ndarray | None = None
    masked_scores: Callable[..., np.ndarray] | None = None
    max_channels: int | None = None
    ablated_scores: Callable[[int, np.ndarray], np.ndarray] | None = None
    noisy_gradients: tuple[np.ndarray, ...] | None = None
    hessian_products: np.ndarray | None = None


@dataclass(frozen=True)
class InputNoise:
    """Noisy copies of each image (SmoothGrad, Smilkov et al. 2017): copy m adds `share` x (the image's
    largest value - its smallest) x z_m, z_m ~ N(0, 1) per pixel and colour drawn from seed m, the same
    z_m for every image, so that a map never depends on its batch."""

    copies: int
    share: float

    def copy(self, batch: np.ndarray, m: int) -> np.ndarray:
        """Copy m of a (B, H, W, 3) batch."""
        spread = (batch.max(axis=(1, 2, 3)) - batch.min(axis=(1, 2, 3)))[:, np.newaxis, np.newaxis, np.newaxis]
        noise = np.random.default_rng(m).standard_normal(batch.shape[1:]).astype(np.float32)
        return (batch + self.share * spread * noise).astype(np.float32)


@dataclass(frozen=True)
class ClassComparison:
    """FinerCAM's comparison (Zhang et al. 2025): the class's score against `classes` others (the given
    ones, or by default those whose logits lie nearest), y_c - alpha y_j, weighted by their probabilities."""

    classes: int
    alpha: float


@dataclass(frozen=True)
class MaskChanges:
    """How a method changes Score-CAM's masks before they multiply the image, one entry per mask:
    each mask is scaled by `scales` (IS-CAM's path from the baseline), then Gaussian noise of standard
    deviation `noise_std` is added at the input's size (SS-CAM), drawn from `noise_seeds`, one seed per
    mask: the same seed gives the same noise whatever the batch and the chunk."""

    scales: np.ndarray | None = None
    noise_seeds: np.ndarray | None = None
    noise_std: float = 0.0

    def part(self, start: int, stop: int, size: tuple[int, int]) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(scales, noise) of masks start..stop, noise (n, height, width); None where unchanged."""
        scales = None if self.scales is None else self.scales[start:stop]
        if self.noise_seeds is None:
            return scales, None
        return scales, np.stack([mask_noise(int(seed), self.noise_std, size) for seed in self.noise_seeds[start:stop]])


def mask_noise(seed: int, std: float, size: tuple[int, int]) -> np.ndarray:
    """SS-CAM's noise for one mask: (height, width) float32 from N(0, std^2), drawn from `seed`; zero for a
    negative seed (a mask left as it is, such as the baseline's)."""
    if seed < 0:
        return np.zeros(size, np.float32)
    return np.random.default_rng(seed).normal(0.0, std, size).astype(np.float32)


@dataclass(frozen=True)
class MethodMap:
    """A method's map of one class for one image, ready to report.

    heatmap: (h, w) float32 in [0, 1]; all zero when empty. raw_max: the map's maximum before the
    scaling (after removing negative evidence), 0.0 when empty. empty: no evidence at all.
    image: guided methods only, (H, W, 3) float32 RGB in [0, 1] at the input size.
    """

    heatmap: np.ndarray
    raw_max: float
    empty: bool
    image: np.ndarray | None = None


class Evidence(Protocol):
    """What the shared code computes for one batch, on request: a method asks for what it uses.

    `layer_maps(method)` runs the layer method on each explained layer's `MapInputs` (and on each
    augmented copy with --aug-smooth), fuses the layers and returns [request][image] maps.
    `guided_gradients()` is guided backpropagation's input gradient, (batch, requests, H, W, 3).
    `full_gradient_maps()` is FullGrad's saliency, (batch, requests, H, W).
    `input_size` is the model's (height, width).
    """

    input_size: tuple[int, int]

    def layer_maps(self, method: LayerMethod) -> list[list[MethodMap]]: ...

    def guided_gradients(self) -> np.ndarray: ...

    def full_gradient_maps(self) -> np.ndarray: ...

# -- the methods ----------------------------------------------------------------------------------


def _scale_channels(activations: np.ndarray, channel_weights: np.ndarray) -> np.ndarray:
    """w[b, k] * A[b, :, :, k]: the contributions of a method that weights whole channels."""
    return activations * channel_weights[:, np.newaxis, np.newaxis, :]


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, and 0 wherever the denominator is 0 (no NaN, no warning)."""
    shape = np.broadcast_shapes(numerator.shape, denominator.shape)
    out = np.zeros(shape, dtype=np.result_type(numerator, denominator))
    return np.divide(numerator, denominator, out=out, where=denominator != 0)


def gradcam(inputs: MapInputs) -> np.ndarray:
    # Selvaraju et al. 2017, Eq. 1: alpha_k^c = (1/Z) sum_ij dy^c/dA^k_ij, the spatial mean of the
    # gradient, taken per image (axes 1, 2 only: never across the batch).
    alpha = inputs.gradients.mean(axis=(1, 2))
    # Eq. 2: L^c = ReLU(sum_k alpha_k^c A^k); the ReLU is applied by the shared normalisation.
    return _scale_channels(inputs.activations, alpha)


def gradcam_plus_plus(inputs: MapInputs) -> np.ndarray:
    # Chattopadhyay et al. 2018, Eqs. 10 and 19. With the class score taken as Y = exp(S), the
    # second and third derivatives of Y are exp(S) times the powers g^2 and g^3 of the first
    # derivative g = dS/dA (exact for piecewise-linear networks), so
    #   a_ij^k = g_ij^2 / (2 g_ij^2 + sum_ab A_ab^k g_ij^3),
    #   w_k = sum_ij a_ij^k ReLU(exp(S) g_ij^k).
    # exp(S) is one positive number per image, so it only scales the map and is dropped before the
    # scaling to [0, 1] (the closed form needs no extra backward pass).
    g = inputs.gradients
    return _plus_plus(inputs.activations, g, g * g, g * g * g)


def smooth_gradcam_plus_plus(inputs: MapInputs) -> np.ndarray:
    # Omeiza et al. 2019 (Smooth Grad-CAM++, arXiv:1908.01224), Eqs. 5-7: Grad-CAM++'s first, second and
    # third derivatives each averaged over n copies of the image with Gaussian noise added (SmoothGrad),
    # D^p = (1/n) sum_m g_m^p, in Grad-CAM++'s closed form (see gradcam_plus_plus). The activations are
    # the image's own. TorchCAM's SmoothGradCAMpp weighs ReLU of the last noisy copy's gradient and
    # draws the map on that copy's activations; camcli takes the averaged D^1 and the image's own, as
    # the paper writes it.
    noisy = np.stack(inputs.noisy_gradients).astype(np.float64)  # (copies, batch, h, w, channels)
    return _plus_plus(inputs.activations, noisy.mean(axis=0), (noisy ** 2).mean(axis=0), (noisy ** 3).mean(axis=0))


def _plus_plus(activations: np.ndarray, first: np.ndarray, second: np.ndarray, third: np.ndarray) -> np.ndarray:
    """Grad-CAM++'s contributions from the first, second and third derivatives (Chattopadhyay et al. 2018,
    Eq. 19): a_ij^k = D2_ij / (2 D2_ij + sum_ab A_ab^k D3_ij), w_k = sum_ij a_ij^k ReLU(D1_ij)."""
    activation_sums = activations.sum(axis=(1, 2), keepdims=True)
    alpha = _safe_divide(second, 2.0 * second + activation_sums * third)
    weights = (alpha * np.maximum(first, 0.0)).sum(axis=(1, 2))
    return _scale_channels(activations, weights)


def xgradcam(inputs: MapInputs) -> np.ndarray:
    # Fu et al. 2020 (Axiom-based Grad-CAM), Eq. 13: w_k = sum_ij (A_ij^k / sum_ab A_ab^k) dy^c/dA_ij^k,
    # the gradient averaged with the activation as weights instead of uniformly. Channels with no
    # activation get weight 0.
    activations = inputs.activations.astype(np.float64)
    activation_sums = activations.sum(axis=(1, 2), keepdims=True)
    weights = (_safe_divide(activations, activation_sums) * inputs.gradients).sum(axis=(1, 2))
    return _scale_channels(inputs.activations, weights)


def layercam(inputs: MapInputs) -> np.ndarray:
    # Jiang et al. 2021, Eqs. 5-6: each location keeps its own weight, ReLU(dy^c/dA_ij^k), so
    # M = ReLU(sum_k ReLU(g_ij^k) A_ij^k). This is what lets it work at early, fine layers.
    return np.maximum(inputs.gradients, 0.0) * inputs.activations


def hirescam(inputs: MapInputs) -> np.ndarray:
    # Draelos & Carin 2020, Sec. 3.2: the gradient multiplies the activation element-wise instead of
    # being averaged first, M = sum_k g^k * A^k, so the map shows the locations the score used.
    return inputs.gradients * inputs.activations


def eigengradcam(inputs: MapInputs) -> np.ndarray:
    # The gradient-weighted activations g * A, reduced by their first principal component (the
    # Eigen-CAM projection applied to the class-discriminative product, as pytorch-grad-cam does).
    return inputs.gradients * inputs.activations


def eigencam(inputs: MapInputs) -> np.ndarray:
    # Muhammad & Yeasin 2020: the projection of the activations on their first principal component;
    # no class and no gradient (see first_principal_component for the sign).
    return inputs.activations


def cam(inputs: MapInputs) -> np.ndarray:
    # Zhou et al. 2016, Eq. 2 (Sec. 2): M_c(x, y) = sum_k w_k^c f_k(x, y), with w^c the weights of the
    # dense layer that follows global average pooling. No gradient and no extra pass are needed.
    return _scale_channels(inputs.activations, inputs.class_weights)


def shapleycam(inputs: MapInputs) -> np.ndarray:
    # Cai et al. 2025 (ShapleyCAM, arXiv:2501.06261), as pytorch-grad-cam's ShapleyCAM computes it. A
    # channel's weight approximates its Shapley value: with the score taken to second order around the
    # all-zero activation, a feature's Shapley value is A (g - H A / 2), g the gradient at A and H the
    # Hessian (g - H A / 2 is the mean of the gradients at the baseline and at A). Averaged over the
    # locations like Grad-CAM's: w_k = mean_ij (g - H A / 2)_ij^k. The score differentiated is the
    # ReST score (the step's), since on a piecewise-linear network the logit alone has no curvature.
    weights = (inputs.gradients.astype(np.float64) - 0.5 * inputs.hessian_products).mean(axis=(1, 2))
    return _scale_channels(inputs.activations, weights)


def gradcam_elementwise(inputs: MapInputs) -> np.ndarray:
    # pytorch-grad-cam's GradCAMElementWise (after HiResCAM, Draelos & Carin 2020): the ReLU is taken
    # of each element of g^k * A^k before the sum over channels, M = sum_k ReLU(g_ij^k A_ij^k), so a
    # channel's negative evidence at a location cannot cancel another's positive evidence there.
    return np.maximum(inputs.gradients * inputs.activations, 0.0)


def fem(inputs: MapInputs, k: float = 2.0) -> np.ndarray:
    # Fuad et al. 2020 (Feature Explanation Method, IPTA 2020, hal-02963298), as pytorch-grad-cam's FEM
    # computes it: channel k's locations are binarised by the k-sigma rule, A_ij^k > mu_k + k sigma_k
    # (its spatial mean and standard deviation), and the channel weighs the share of its locations
    # that pass, w_k = mean_ij [A_ij^k > mu_k + k sigma_k]: channels with a few strong, localised
    # responses count. No class and no gradient.
    activations = inputs.activations.astype(np.float64)
    means = activations.mean(axis=(1, 2), keepdims=True)
    spreads = activations.std(axis=(1, 2), keepdims=True)
    weights = (activations > means + k * spreads).mean(axis=(1, 2))
    return _scale_channels(activations, weights)


def kernel_principal_component(activations: np.ndarray, gamma: float | None = None,
                               coef0: float = 1.0) -> np.ndarray:
    """(batch, h, w, channels) -> (batch, h, w): each image's projection on the first kernel principal
    component of its locations (Schölkopf et al. 1998), with the sigmoid kernel
    k(x, y) = tanh(gamma <x, y> + coef0) on the channel-centred activations, gamma = 1 / channels:
    scikit-learn's KernelPCA(n_components=1, kernel="sigmoid"), which pytorch-grad-cam's KPCA-CAM runs.
    The projection of location i is sqrt(lambda) v_i, (lambda, v) the top eigenpair of the centred
    kernel matrix. Its sign is fixed as Eigen-CAM's is (first_principal_component)."""
    gamma = 1.0 / activations.shape[-1] if gamma is None else gamma

    def project(centred: np.ndarray) -> np.ndarray | None:
        kernel = np.tanh(gamma * centred @ centred.T + coef0)
        # Centre the kernel in feature space: K - 1K - K1 + 1K1, with 1 the matrix of 1/n.
        kernel = kernel - kernel.mean(axis=0) - kernel.mean(axis=1, keepdims=True) + kernel.mean()
        values, vectors = np.linalg.eigh(kernel)
        return vectors[:, -1] * np.sqrt(values[-1]) if values[-1] > 0 else None

    return _projected(activations, project)


def nmf(data: np.ndarray, components: int, iterations: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """A non-negative (rows, columns) matrix V ~ W H, W (rows, components) and H (components, columns):
    Lee & Seung 2001's multiplicative updates for the Frobenius norm, from scikit-learn's "random"
    start with seed 0 (sqrt(mean(V) / components) |N(0, 1)|, H drawn first), for a fixed number of
    iterations. This is scikit-learn's NMF(init="random", random_state=0, solver="mu", tol=0)."""
    rng = np.random.RandomState(0)
    scale = np.sqrt(data.mean() / components)
    h = np.abs(scale * rng.standard_normal((components, data.shape[1])))
    w = np.abs(scale * rng.standard_normal((data.shape[0], components)))
    tiny = np.finfo(np.float32).eps  # scikit-learn's guard against a zero denominator
    for _ in range(iterations):
        denominator = w @ (h @ h.T)
        w = w * (data @ h.T) / np.where(denominator == 0, tiny, denominator)
        denominator = (w.T @ w) @ h
        h = h * (w.T @ data) / np.where(denominator == 0, tiny, denominator)
    return w, h


DFF_CONCEPTS = 5  # the concepts DFF factorises each image into


def deep_feature_factorization(inputs: MapInputs, components: int = DFF_CONCEPTS) -> np.ndarray:
    # Collins et al. 2018 (arXiv:1806.10206), as pytorch-grad-cam's dff(): each channel is shifted to a
    # minimum of 0 and the (channels x locations) activations are factorised, V ~ W H, into
    # `components` concepts: W's columns are the concepts' channel profiles (shifted back), H's rows
    # their maps. pytorch-grad-cam labels each concept by running the classifier on its profile; the
    # class's map here is the map of the concept that raises the class score most to first order,
    # (W_j + shift) . dy^c/dA averaged over the locations. On a global-average-pooling -> dense head
    # that average is w^c / (h w), so the concept chosen is the one pytorch-grad-cam's classifier
    # scores highest for the class; the gradient extends the rule to any layer.
    activations = inputs.activations.astype(np.float64)
    batch, height, width, channels = activations.shape
    keep = min(components, channels, height * width)
    contributions = np.zeros((batch, height, width, 1), dtype=np.float64)
    for b in range(batch):
        # One image at a time, where pytorch-grad-cam factorises the batch together: an image's map
        # must not depend on the other images in its batch.
        data = activations[b].reshape(height * width, channels).T  # (channels, locations)
        shift = data.min(axis=1, keepdims=True)
        shifted = data - shift
        if not shifted.any():
            continue  # no variation: no concept, an empty map
        profiles, concept_maps = nmf(shifted, keep)
        relevance = (profiles + shift).T @ inputs.gradients[b].mean(axis=(0, 1))  # (components,)
        contributions[b, :, :, 0] = concept_maps[int(np.argmax(relevance))].reshape(height, width)
    return contributions


def scorecam(inputs: MapInputs) -> np.ndarray:
    # Wang et al. 2020, Sec. 3 and Algorithm 1. Each channel A^k is upsampled to the input and scaled
    # to [0, 1] (min-max, Eq. 9) into a mask H^k (the step does both, in that order); the map is
    # ReLU(sum_k alpha_k A^k). With --max-channels N only N channels are scored (the others weigh 0),
    # chosen by `score_channels` below: the cost is N forward passes, plus one for the baseline.
    return _scored_channels(inputs, inputs.masked_scores)


SSCAM_SAMPLES = 35  # SS-CAM's noisy copies of each mask (TorchCAM's default)
ISCAM_STEPS = 10  # IS-CAM's steps from the blank input to the masked image (TorchCAM's default)


def sscam(inputs: MapInputs, samples: int = SSCAM_SAMPLES, std: float = 0.25) -> np.ndarray:
    # Wang, Naidu et al. 2020 (SS-CAM, arXiv:2006.14255), as TorchCAM's SSCAM computes its scores: each
    # channel's score is averaged over `samples` copies of its mask with Gaussian noise added at the
    # input's size, (1/N) sum_s f(X * (H^k + delta_s)), delta_s ~ N(0, std^2) (TorchCAM's N = 35), and
    # weighed as Score-CAM's are, minus the baseline's (see _scored_channels). The baseline is the
    # all-zero mask under the same noise, averaged over as many samples. camcli's std is 0.25 of the
    # mask's [0, 1], not TorchCAM's 2: noise of std 2 buries the mask (TorchCAM's softmax over channels
    # hides that), and on MobileNetV2's cat photo every channel's score then fell below the noisy blank
    # input's, an empty map, with either baseline; at 0.25 the map's peak lies on the cat.
    def scores(b: int, masks: np.ndarray) -> np.ndarray:
        count = len(masks) - 1  # the baseline's samples first, then the channels'; each copy its own noise
        seeds = np.arange(samples * (count + 1))
        copies = np.concatenate([np.repeat(masks[:1], samples, axis=0), np.tile(masks[1:], (samples, 1, 1))])
        scored = inputs.masked_scores(b, copies, MaskChanges(noise_seeds=seeds, noise_std=std))
        return np.concatenate([[scored[:samples].mean()], scored[samples:].reshape(samples, count).mean(axis=0)])

    return _scored_channels(inputs, scores)


def iscam(inputs: MapInputs, samples: int = ISCAM_STEPS) -> np.ndarray:
    # Naidu et al. 2020 (IS-CAM, arXiv:2010.03023): Score-CAM's score integrated along the path from the
    # baseline to the masked image, (1/N) sum_{i=1..N} f(X * (i/N) H^k), as Integrated Gradients
    # integrates (TorchCAM's default N = 10), weighed as Score-CAM's are, minus the baseline's. The
    # paper's Eq. and TorchCAM sum the fractions cumulatively (sum_{j<=i} j/N), which multiplies the
    # image by up to (N + 1) / 2 = 5.5 on the way, beyond the image itself; camcli's path ends at it.
    def scores(b: int, masks: np.ndarray) -> np.ndarray:
        count = len(masks) - 1
        scales = np.concatenate([[1.0], np.repeat(np.arange(1, samples + 1) / samples, count)])
        copies = np.concatenate([masks[:1], np.tile(masks[1:], (samples, 1, 1))])
        scored = inputs.masked_scores(b, copies, MaskChanges(scales=scales))
        return np.concatenate([scored[:1], scored[1:].reshape(samples, count).mean(axis=0)])

    return _scored_channels(inputs, scores)


def _scored_channels(inputs: MapInputs, scores: Callable[[int, np.ndarray], np.ndarray]) -> np.ndarray:
    """The Score-CAM family's contributions: for each image b, `scores(b, masks)` scores the channel
    maps (n + 1, h, w) at the layer's resolution, the baseline's (all zero) first, and each scored
    channel weighs its score minus the baseline's."""
    activations = inputs.activations
    batch, height, width, channels = activations.shape
    keep = channels if inputs.max_channels is None else min(inputs.max_channels, channels)
    weights = np.zeros((batch, channels), dtype=np.float64)
    for b in range(batch):
        per_channel = activations[b].reshape(height * width, channels)
        chosen = score_channels(per_channel, keep)
        maps = per_channel[:, chosen].T.reshape(keep, height, width).astype(np.float32)
        # The baseline X_b = X * 0 is one more masked copy, scored in the same batched passes, once
        # per image: an all-zero map is flat, and a flat map's mask is all zero.
        baseline = np.zeros((1, height, width), dtype=np.float32)
        scored = scores(b, np.concatenate([baseline, maps])).astype(np.float64)
        # Wang et al. 2020, Eq. 7: channel k's weight is its increase of confidence, f(X * H^k) - f(X_b),
        # the target's score (for classes: the softmax probability) over the baseline's. A constant
        # offset on the outputs cancels, whatever the target. (TorchCAM instead takes the softmax over
        # the channels of the logits' gains, which such an offset also leaves alone.)
        weights[b, chosen] = scored[1:] - scored[0]
    return _scale_channels(activations, weights)


def ablationcam(inputs: MapInputs) -> np.ndarray:
    # Desai & Ramaswamy 2020 (Ablation-CAM, WACV), Eq. 3, as pytorch-grad-cam's AblationCAM: channel k
    # weighs the share of the class score y^c (before the softmax) that is lost when the channel is
    # set to zero, w_k = (y^c - y^c_k) / y^c, and the map is ReLU(sum_k w_k A^k). One forward pass per
    # channel, batched. pytorch-grad-cam sets a layer whose minimum is not 0 (no ReLU) to that minimum
    # minus 1e7 instead of zero; camcli zeroes every layer, as the paper does. y^c = 0 gives no weights.
    # With max_channels N, only the N channels Score-CAM would score are ablated (`score_channels`: those
    # whose activation varies most); the others weigh 0. pytorch-grad-cam's ratio_channels_to_ablate keeps
    # the channels whose mass lies most inside an Eigen-CAM mask instead, an experimental rule of its own.
    activations = inputs.activations
    batch, height, width, channels = activations.shape
    weights = np.zeros((batch, channels), dtype=np.float64)
    every = inputs.max_channels is None or inputs.max_channels >= channels
    # The unablated image first (its score is y^c), then each channel ablated in turn: with every channel
    # ablated, the same rows for every image.
    keep = _ablation_rows(np.arange(channels), channels) if every else None
    for b in range(batch):
        chosen = (np.arange(channels) if every else
                  score_channels(activations[b].reshape(height * width, channels), inputs.max_channels))
        scores = inputs.ablated_scores(b, keep if every else _ablation_rows(chosen, channels)).astype(np.float64)
        weights[b, chosen] = _safe_divide(scores[0] - scores[1:], np.full(len(chosen), scores[0]))
    return _scale_channels(activations, weights)


def _ablation_rows(chosen: np.ndarray, channels: int) -> np.ndarray:
    """(1 + len(chosen), channels) factors: all ones (the unablated image), then one row per chosen channel
    with that channel set to 0."""
    rows = np.ones((1 + len(chosen), channels), np.float32)
    rows[1 + np.arange(len(chosen)), chosen] = 0.0
    return rows


def score_channels(per_channel: np.ndarray, keep: int) -> np.ndarray:
    """The `keep` channels Score-CAM scores, in channel order, from one image's (locations, channels)
    activations: those whose activation varies most over the locations. This is Faster Score-CAM's
    rule (the Score-CAM authors' repository; tf-keras-vis's `max_N`): a channel that is flat
    masks nothing in particular. On the five real photos in ../shared with MobileNetV2 (1280
    channels), its maps correlate with full Score-CAM's at 0.916/0.916/0.951/0.980/0.992 for N =
    16/32/64/128/256, against 0.877/0.884/0.954/0.981/0.992 for the channels with the largest total
    activation (camcli's rule before), with a smaller mean difference at every N
    (benchmarks/scorecam_channels.py, `make bench-scorecam`; measured with the baseline of Eq. 7)."""
    if keep >= per_channel.shape[1]:
        return np.arange(per_channel.shape[1])
    spread = per_channel.astype(np.float64).var(axis=0)
    return np.sort(np.argsort(-spread, kind="stable")[:keep])


def first_principal_component(contributions: np.ndarray) -> np.ndarray:
    """(batch, h, w, k) -> (batch, h, w): each image's projection on its first principal component.

    The locations are the samples and the channels the features; the data are centred per channel
    (a principal component is defined on centred data; Muhammad & Yeasin 2020 project without
    centring). An eigenvector's sign is arbitrary, so it is fixed here: the projection must correlate
    positively with the plain channel sum (the map the method would give without this step), and,
    failing that, its largest-magnitude value must be positive. So the same image gives the same map.
    """
    def project(centred: np.ndarray) -> np.ndarray:
        # The projection on the first right singular vector v is sigma u, with u the top eigenvector
        # of the (locations x locations) Gram matrix: a small eigen-problem (h*w is 49 at ResNet50's
        # last layer, against 2048 channels), rather than an SVD of the whole matrix.
        if centred.shape[0] <= centred.shape[1]:
            values, vectors = np.linalg.eigh(centred @ centred.T)
            return vectors[:, -1] * np.sqrt(max(values[-1], 0.0))
        _, vectors = np.linalg.eigh(centred.T @ centred)
        return centred @ vectors[:, -1]

    return _projected(contributions, project)


def _projected(contributions: np.ndarray, project: Callable[[np.ndarray], np.ndarray | None]) -> np.ndarray:
    """(batch, h, w, k) -> (batch, h, w): each image's locations, centred per channel, projected by
    `project` ((locations, k) -> (locations,), or None for no component), signed like the channel sum.
    An image without variation gets an empty map."""
    batch, height, width, channels = contributions.shape
    maps = np.zeros((batch, height, width), dtype=np.float64)
    for b in range(batch):
        data = contributions[b].reshape(height * width, channels).astype(np.float64)
        centred = data - data.mean(axis=0)
        projection = project(centred) if np.any(centred) else None
        if projection is not None:
            maps[b] = _signed_like_the_sum(projection, data).reshape(height, width)
    return maps


def _signed_like_the_sum(projection: np.ndarray, data: np.ndarray) -> np.ndarray:
    """A projection of (locations, channels) data on a component, whose sign is arbitrary, signed so
    that it correlates positively with the plain channel sum, or, failing that, so that its
    largest-magnitude value is positive."""
    reference = data.sum(axis=1)
    agreement = float(np.dot(projection - projection.mean(), reference - reference.mean()))
    if agreement < 0 or (agreement == 0 and projection[np.argmax(np.abs(projection))] < 0):
        return -projection
    return projection


def gradient_image(input_gradients: np.ndarray) -> tuple[np.ndarray, bool]:
    """An (H, W, 3) input gradient as an RGB image in [0, 1]: `(image, empty)`.

    The usual way to show a guided-backprop gradient (Springenberg et al. 2014, Fig. 1): centre it,
    scale to a standard deviation of 0.1 and shift to mid-grey, then clip. A zero gradient is
    reported as empty and shown as plain grey; nothing is divided by zero.
    """
    g = np.asarray(input_gradients, dtype=np.float64)
    spread = float(g.std())
    if not np.isfinite(g).all() or not spread > 0.0:
        return np.full(g.shape, 0.5, dtype=np.float32), True
    return np.clip(0.5 + 0.1 * (g - g.mean()) / spread, 0.0, 1.0).astype(np.float32), False


def guided_gradcam(input_gradients: np.ndarray, gradcam_map: np.ndarray) -> np.ndarray:
    # Selvaraju et al. 2017, Sec. 3.1: Guided Grad-CAM is the element-wise product of guided
    # backpropagation and the Grad-CAM map upsampled to the input (bilinear), per colour channel.
    return input_gradients * gradcam_map[..., np.newaxis]


def guided_magnitude(input_gradients: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W): where the gradient is large, for the peak, box and empty flag."""
    return np.abs(input_gradients).max(axis=-1)


# -- the method objects ---------------------------------------------------------------------------


def max_channels_misplaced(names: str) -> UsageError:
    """The one-line error for `max_channels` given to methods (`names`) that score no channels one by one."""
    takers = ", ".join(name for name, method in REGISTRY.items() if method.scores_channels)
    return UsageError(f"`max_channels` applies to the methods that score channels one by one ({takers}), "
                      f"not {names}")


def _check_max_channels(name: str, max_channels: int | None, scores_channels: bool) -> None:
    if max_channels is None:
        return
    if not scores_channels:
        raise max_channels_misplaced(name)
    if max_channels < 1:
        raise UsageError(f"`max_channels={max_channels}` must be at least 1")


@dataclass(frozen=True)
class LayerMethod:
    """A class activation map at a layer: the method supplies its contributions, the shared code
    (Evidence.layer_maps) does the rest.

    contributions: MapInputs -> (batch, h, w, channels), summed over channels for the map.
    projection: the map is this projection of the contributions, (batch, h, w, k) -> (batch, h, w),
        instead of their sum: the first principal component (Eigen-CAM), or a kernel one (KPCA-CAM).
        `--eigen-smooth` takes the first principal component of any other method's contributions.
    needs_gradients / needs_gap_head / needs_masked_scores / needs_ablated_scores: what the MapInputs
        must hold: the layer gradients, the dense weights after global average pooling (CAM), masked
        scores (Score-CAM and its variants), ablated scores (AblationCAM).
    passes: what the method's own passes cost, in words, where it makes any (masked, ablated or noisy copies).
    input_noise: the noisy copies of each image whose gradients the method averages (Smooth Grad-CAM++).
    comparison: the gradients are those of the class's score compared with other classes' (FinerCAM),
        from a backward pass of the method's own.
    second_order: the gradients are those of the class's ReST score, and the MapInputs carry their
        Hessian-vector product with the activations (ShapleyCAM), from passes of the method's own.
    """

    name: str
    summary: str
    paper: str
    contributions: Callable[[MapInputs], np.ndarray]
    needs_gradients: bool = False
    needs_gap_head: bool = False
    needs_masked_scores: bool = False
    needs_ablated_scores: bool = False
    projection: Callable[[np.ndarray], np.ndarray] | None = None
    passes: str | None = None
    input_noise: InputNoise | None = None
    comparison: ClassComparison | None = None
    second_order: bool = False
    guided = False  # no guided backward pass to the input
    reads = None  # its maps come from the explained layers (the records' `layer`)

    @property
    def scores_channels(self) -> bool:
        """Whether the method runs the model once per channel (masked or ablated), so that `max_channels`
        can limit its cost."""
        return self.needs_masked_scores or self.needs_ablated_scores

    @property
    def own_passes(self) -> bool:
        """Whether the method runs the model on copies of its own, beyond the shared step."""
        return self.scores_channels or self.input_noise is not None or self.comparison is not None or self.second_order

    @property
    def cost(self) -> str:
        if self.passes is not None:
            return f"gradients, plus {self.passes}" if self.needs_gradients else self.passes
        return "gradients" if self.needs_gradients else "forward pass only"

    def check_options(self, eigen_smooth: bool, aug_smooth: bool, max_channels: int | None) -> None:
        """UsageError for an option this method cannot honour (every layer map can be smoothed)."""
        _check_max_channels(self.name, max_channels, self.scores_channels)

    def raw_map(self, inputs: MapInputs, eigen_smooth: bool = False) -> np.ndarray:
        """The raw (batch, h, w) map at one layer, before ReLU and scaling."""
        contributions = self.contributions(inputs)
        if self.projection is not None:
            return self.projection(contributions)
        if eigen_smooth:
            return first_principal_component(contributions)
        return contributions.sum(axis=-1)

    def maps(self, evidence: Evidence) -> list[list[MethodMap]]:
        return evidence.layer_maps(self)

    def comparable_map(self, heatmap: np.ndarray, input_gradient: np.ndarray | None,
                       input_size: tuple[int, int]) -> np.ndarray:
        """What the method computed for one image, as a comparison of two models' maps reads it (the
        sanity check): the heatmap at the layer's resolution, after its ReLU and scaling."""
        return np.asarray(heatmap, dtype=np.float64)


def guided_backprop_map(input_gradient: np.ndarray) -> MethodMap:
    """One (H, W, 3) guided input gradient as a map: the gradient's magnitude as the heatmap (for
    the peak and the box), the gradient itself as the image."""
    from camcli.maps.overlay import normalize_map  # numpy and Pillow; imported here, when first used

    heatmap, raw_max, _ = normalize_map(guided_magnitude(input_gradient))
    image, empty = gradient_image(input_gradient)
    return MethodMap(heatmap, raw_max, empty, image)


@dataclass(frozen=True)
class GuidedBackprop:
    """Guided backpropagation (Springenberg et al. 2014): the input gradient through guided ReLUs,
    shown as an RGB image. It has no layer map, so nothing smooths it."""

    name: str
    summary: str
    paper: str
    needs_gradients = False
    needs_gap_head = False
    needs_masked_scores = False
    scores_channels = False
    comparison = None  # no class comparison (FinerCAM's); options read it off every method
    own_passes = True  # a guided backward pass
    reads = None
    guided = True  # needs Evidence.guided_gradients

    @property
    def cost(self) -> str:
        return "a guided backward pass to the input"

    def check_options(self, eigen_smooth: bool, aug_smooth: bool, max_channels: int | None) -> None:
        if aug_smooth:
            raise UsageError(f"`aug_smooth` smooths class activation maps; {self.name} has none (try guidedgradcam)")
        if eigen_smooth:
            raise UsageError(f"`eigen_smooth` applies to layer maps; {self.name} has none (try guidedgradcam)")
        _check_max_channels(self.name, max_channels, False)

    def input_gradients(self, evidence: Evidence) -> np.ndarray:
        return evidence.guided_gradients()

    def maps(self, evidence: Evidence) -> list[list[MethodMap]]:
        gradients = self.input_gradients(evidence)  # (batch, requests, H, W, 3)
        return [[guided_backprop_map(gradient) for gradient in gradients[:, r]] for r in range(gradients.shape[1])]

    def comparable_map(self, heatmap: np.ndarray, input_gradient: np.ndarray | None,
                       input_size: tuple[int, int]) -> np.ndarray:
        """The guided input gradient itself, (H, W, 3): not the picture shown (centred and clipped)
        nor the heatmap (its magnitude)."""
        return np.asarray(input_gradient, dtype=np.float64)


def guided_gradcam_map(cam_map: MethodMap, input_gradient: np.ndarray, input_size: tuple[int, int]) -> MethodMap:
    """Grad-CAM's map of one image and class, with the guided Grad-CAM picture as its image."""
    from camcli.maps.overlay import upsample  # numpy and Pillow; imported here, when first used

    height, width = input_size
    upsampled = upsample(cam_map.heatmap, height=height, width=width)
    image, guided_empty = gradient_image(guided_gradcam(input_gradient, upsampled))
    empty = cam_map.empty or guided_empty
    return MethodMap(cam_map.heatmap, 0.0 if empty else cam_map.raw_max, empty, image)


@dataclass(frozen=True)
class GuidedGradCAM:
    """Guided Grad-CAM (Selvaraju et al. 2017, Sec. 3.1): a layer method's map (Grad-CAM's) times
    guided backpropagation's input gradient. The heatmap is the layer map; the image is the product."""

    name: str
    summary: str
    paper: str
    cam: LayerMethod
    backprop: GuidedBackprop
    needs_gap_head = False
    needs_masked_scores = False
    scores_channels = False
    comparison = None
    own_passes = True
    guided = True
    reads = None

    @property
    def needs_gradients(self) -> bool:
        return self.cam.needs_gradients

    @property
    def cost(self) -> str:
        return f"{self.cam.cost}, plus {self.backprop.cost}"

    def check_options(self, eigen_smooth: bool, aug_smooth: bool, max_channels: int | None) -> None:
        _check_max_channels(self.name, max_channels, False)  # the layer map may be smoothed

    def maps(self, evidence: Evidence) -> list[list[MethodMap]]:
        gradients = self.backprop.input_gradients(evidence)  # (batch, requests, H, W, 3)
        return [[guided_gradcam_map(cam_map, gradients[b, r], evidence.input_size) for b, cam_map in enumerate(row)]
                for r, row in enumerate(self.cam.maps(evidence))]

    def comparable_map(self, heatmap: np.ndarray, input_gradient: np.ndarray | None,
                       input_size: tuple[int, int]) -> np.ndarray:
        """The guided input gradient times the layer map upsampled to the input, (H, W, 3) (the heatmap
        of this method is the layer map's own)."""
        from camcli.maps.overlay import upsample  # numpy and Pillow; imported here, when first used

        cam = upsample(heatmap, height=input_size[0], width=input_size[1])
        return guided_gradcam(np.asarray(input_gradient, dtype=np.float64), cam)


@dataclass(frozen=True)
class FullGradient:
    """FullGrad (Srinivas & Fleuret 2019): the input gradient times the input, plus every bias layer's bias
    times its gradient, each made absolute and scaled channel by channel (camcli.explain.step computes the
    sum, at the input's size). It reads every bias layer of the model, so `--layer` does not shape it."""

    name: str
    summary: str
    paper: str
    needs_gradients = False  # its backward pass is its own, to the input and every bias layer
    reads = "input+biases"  # what its maps are made from, in the records' `layer` of each map (not --layer)
    needs_gap_head = False
    needs_masked_scores = False
    scores_channels = False
    comparison = None
    own_passes = True
    guided = False  # a heatmap over the image, not a gradient picture

    @property
    def cost(self) -> str:
        return "a forward and backward pass of its own, to the input and every bias layer"

    def check_options(self, eigen_smooth: bool, aug_smooth: bool, max_channels: int | None) -> None:
        for given, option in ((eigen_smooth, "eigen_smooth"), (aug_smooth, "aug_smooth")):
            if given:
                raise UsageError(f"`{option}` smooths one layer's maps; {self.name} sums every bias layer's "
                                 "(leave it out, or use gradcam)")
        _check_max_channels(self.name, max_channels, False)

    def maps(self, evidence: Evidence) -> list[list[MethodMap]]:
        from camcli.maps.overlay import normalize_map  # numpy and Pillow; imported here, when first used

        saliency = evidence.full_gradient_maps()  # (batch, requests, H, W), non-negative
        return [[MethodMap(*normalize_map(saliency[b, r])) for b in range(saliency.shape[0])]
                for r in range(saliency.shape[1])]

    def comparable_map(self, heatmap: np.ndarray, input_gradient: np.ndarray | None,
                       input_size: tuple[int, int]) -> np.ndarray:
        """The saliency at the input's size, scaled to [0, 1]."""
        return np.asarray(heatmap, dtype=np.float64)


Method = LayerMethod | GuidedBackprop | GuidedGradCAM | FullGradient

_GRADCAM = LayerMethod("gradcam", "gradient-weighted class activation map; works at any conv layer",
                       "Selvaraju et al. 2017, arXiv:1610.02391", gradcam, needs_gradients=True)
_SMOOTHING_NOISE = InputNoise(copies=4, share=0.15)  # Smooth Grad-CAM++'s copies (TorchCAM's count)
_NEAREST_CLASSES = ClassComparison(classes=3, alpha=1.0)  # FinerCAM's default comparison (pytorch-grad-cam's)
_GUIDED_BACKPROP = GuidedBackprop(
    "guidedbackprop", "input gradient with negative gradients stopped at every ReLU (RGB, full resolution)",
    "Springenberg et al. 2014, arXiv:1412.6806")

REGISTRY: dict[str, Method] = {
    method.name: method
    for method in [
        _GRADCAM,
        LayerMethod("gradcam++", "Grad-CAM with per-location weights from higher-order terms; better with several "
                    "objects", "Chattopadhyay et al. 2018, arXiv:1710.11063", gradcam_plus_plus, needs_gradients=True),
        LayerMethod("smoothgradcam++", f"Grad-CAM++ with its derivatives averaged over {_SMOOTHING_NOISE.copies} "
                    "noisy copies of the image", "Omeiza et al. 2019, arXiv:1908.01224", smooth_gradcam_plus_plus,
                    needs_gradients=True, input_noise=_SMOOTHING_NOISE,
                    passes=f"a forward and backward pass of each of {_SMOOTHING_NOISE.copies} noisy copies"),
        LayerMethod("finercam", "Grad-CAM of the class's score minus those of the classes most like it (the "
                    f"{_NEAREST_CLASSES.classes} nearest logits, or --compare-with)",
                    "Zhang et al. 2025, CVPR, arXiv:2501.11309", gradcam, comparison=_NEAREST_CLASSES,
                    passes="a forward and backward pass of its own, of the class against the others"),
        LayerMethod("shapleycam", "channels weighted by a second-order estimate of their Shapley values: the "
                    "gradient minus half the Hessian-vector product, of the logit plus the log-probability",
                    "Cai et al. 2025, arXiv:2501.06261", shapleycam, second_order=True,
                    passes="a forward pass and two backward passes of its own (the gradient, then a "
                    "Hessian-vector product)"),
        LayerMethod("xgradcam", "Grad-CAM with activation-weighted gradient averages (axiom-based)",
                    "Fu et al. 2020, arXiv:2008.02312", xgradcam, needs_gradients=True),
        LayerMethod("layercam", "per-location positive gradients times activations; works at early layers",
                    "Jiang et al. 2021, IEEE TIP 30:5875", layercam, needs_gradients=True),
        LayerMethod("hirescam", "element-wise gradient times activation; shows the locations the score used",
                    "Draelos & Carin 2020, arXiv:2011.08891", hirescam, needs_gradients=True),
        LayerMethod("eigencam", "first principal component of the activations; class-agnostic, no gradients",
                    "Muhammad & Yeasin 2020, arXiv:2008.00299", eigencam,
                    projection=first_principal_component),
        LayerMethod("eigengradcam", "first principal component of gradient times activation",
                    "Muhammad & Yeasin 2020, arXiv:2008.00299 (on Grad-CAM's product)", eigengradcam,
                    needs_gradients=True, projection=first_principal_component),
        LayerMethod("gradcamelementwise", "ReLU of each gradient-times-activation element, summed over channels",
                    "pytorch-grad-cam's GradCAMElementWise, after Draelos & Carin 2020, arXiv:2011.08891",
                    gradcam_elementwise, needs_gradients=True),
        LayerMethod("scorecam", "gradient-free: channels weighted by the score the image masked by them gains "
                    "over a blank input",
                    "Wang et al. 2020, arXiv:1910.01279", scorecam, needs_masked_scores=True,
                    passes="one forward pass per scored channel, and one for the baseline (batched; see "
                    "--max-channels)"),
        LayerMethod("sscam", f"Score-CAM with each channel's score averaged over {SSCAM_SAMPLES} noisy copies of "
                    "its mask", "Wang, Naidu et al. 2020, arXiv:2006.14255", sscam, needs_masked_scores=True,
                    passes=f"{SSCAM_SAMPLES} forward passes per scored channel, and {SSCAM_SAMPLES} for the "
                    "baseline (batched; see --max-channels)"),
        LayerMethod("iscam", "Score-CAM with each channel's score integrated from a blank input to its masked "
                    f"copy ({ISCAM_STEPS} steps)", "Naidu et al. 2020, arXiv:2010.03023", iscam,
                    needs_masked_scores=True, passes=f"{ISCAM_STEPS} forward passes per scored channel, and one "
                    "for the baseline (batched; see --max-channels)"),
        LayerMethod("ablationcam", "gradient-free: channels weighted by the share of the class score lost when "
                    "each is set to zero", "Desai & Ramaswamy 2020, WACV", ablationcam, needs_ablated_scores=True,
                    passes="one forward pass per channel, and one for the score (batched; see --max-channels)"),
        LayerMethod("cam", "class activation map from the dense weights after global average pooling",
                    "Zhou et al. 2016, arXiv:1512.04150", cam, needs_gap_head=True),
        LayerMethod("fem", "gradient-free: each channel weighted by the share of its locations above its mean + "
                    "2 standard deviations", "Fuad et al. 2020, IPTA, hal-02963298", fem),
        LayerMethod("kpcacam", "first kernel principal component of the activations (sigmoid kernel); "
                    "class-agnostic, no gradients", "Karmani et al. 2024, arXiv:2410.00267", eigencam,
                    projection=kernel_principal_component),
        LayerMethod("dff", f"deep feature factorization: the map of the NMF concept (of {DFF_CONCEPTS}) that raises "
                    "the class score most", "Collins et al. 2018, arXiv:1806.10206", deep_feature_factorization,
                    needs_gradients=True),
        FullGradient("fullgrad", "input gradient times input, plus every bias times its gradient, each "
                     "scaled per channel and summed (full resolution; --layer not used)",
                     "Srinivas & Fleuret 2019, arXiv:1905.00780"),
        _GUIDED_BACKPROP,
        GuidedGradCAM("guidedgradcam", "guided backprop times the upsampled Grad-CAM map (RGB, full resolution)",
                      "Selvaraju et al. 2017, arXiv:1610.02391", cam=_GRADCAM, backprop=_GUIDED_BACKPROP),
    ]
}


def resolve_method(name: str) -> Method:
    """The registered method called `name` (any case); UsageError naming the choices otherwise."""
    method = REGISTRY.get(name.lower())
    if method is None:
        raise UsageError(f"unknown method {name!r}: choose one of {', '.join(REGISTRY)}")
    return method


def describe(method: Method) -> str:
    """What the method costs and needs, in words (for `camcli methods` and the README)."""
    return method.cost + ("; needs a GAP -> dense head" if method.needs_gap_head else "")


def markdown_table() -> str:
    """The README's methods table (`camcli methods --markdown`); a test keeps the README in step."""
    rows = ["| method | what it computes | paper | cost |", "| --- | --- | --- | --- |"]
    rows += [f"| `{m.name}` | {m.summary} | {m.paper} | {describe(m)} |" for m in REGISTRY.values()]
    return "\n".join(rows)
