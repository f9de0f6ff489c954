"""camcli's maps and metrics against the reference implementations themselves: pytorch-grad-cam and Quantus.

Twin networks: the same tiny CNN built in Keras (NHWC, what camcli explains) and in PyTorch (NCHW, what
pytorch-grad-cam explains), with the same seeded weights copied across (a Keras conv kernel (kh, kw, in, out)
is PyTorch's (out, in, kh, kw); a dense (in, out) is a Linear's (out, in)):

    16x16x3 -> conv1 (3->8, 3x3 same, bias) -> ReLU -> target (8->8, 3x3 same, bias) -> ReLU (target_relu)
            -> global average pooling -> dense (8->5) -> softmax in Keras; the PyTorch twin ends at the logits.

camcli strips the softmax and differentiates the logit; pytorch-grad-cam's ClassifierOutputTarget takes the
logit of a model that outputs logits, so both differentiate the same number. The maps are explained at
`target` (the conv's output, before its ReLU) unless a row says otherwise. Nothing pools before it, so its
grid is the input's and pytorch-grad-cam's resize to the input is the identity. 4 seeded random images,
each explained for its top-1 and its third class (camcli's `classes=["top1", "top3"]`; the same class
indices are handed to pytorch-grad-cam's targets). The PyTorch twin computes the maps in float64, so a
difference is mostly camcli's own float32 rounding; the metrics run on its float32 copy.

Normalisation. camcli's heatmap is ReLU(raw) / max; pytorch-grad-cam's is ReLU(raw), then
(x - min) / (max - min + 1e-7). Both are brought to the same scale by one more min-max, (x - min) / (max -
min) (a map with max = min becomes zeros), which turns either into (ReLU(raw) - min) / (max - min) of its
own raw map; the table gives the largest absolute difference of those unit maps over every image and
class. Methods whose map is a principal component (eigencam, eigengradcam, kpcacam) have a sign that
pytorch-grad-cam leaves to the SVD (or KernelPCA) and camcli fixes (positive correlation with the channel
sum): their note also gives the difference once pytorch-grad-cam's own projection
(`pytorch_grad_cam.utils.svd_on_activations`) is signed by camcli's rule. Where a row differs by design
(Score-CAM's weights, the small epsilons pytorch-grad-cam adds in Grad-CAM++ and FullGrad), its note restates
each rule on the torch twin and says how far camcli and pytorch-grad-cam each lie from their own rule.
Guided backpropagation is compared on the guided input gradient itself (camcli's step), relative to its
largest magnitude, since camcli's picture of it is centred, scaled and clipped for display.

Metrics: ROAD (pytorch_grad_cam.metrics.road) and the confidence change of the image multiplied by its map
(pytorch_grad_cam.metrics.cam_mult_image) against camcli.evaluate.metrics and camcli's evaluation
(camcli/evaluate/evaluation.py), on the same maps and the two twins' probabilities
(ClassifierOutputSoftmaxTarget); Quantus's RelevanceMassAccuracy and RelevanceRankAccuracy against
`energy_in_boxes` and `relevance_rank` on the same maps and seeded boxes.

Environment: `make bench-anchors` makes .venv-anchors (not .venv, whose requirements it leaves alone) with
camcli and TensorFlow (the `cpu` extra), torch, grad-cam and, where it installs, quantus. TensorFlow and
PyTorch share that one environment and this one process, so nothing goes through files; but PyTorch must
be imported first (`import_torch_first`): imported after TensorFlow, torchvision's import loads Triton's
library and the process dies of a segmentation fault. Where PyTorch's CPU index cannot be reached (as on
the machine this was written on), the ordinary index's torch and torchvision are installed: CUDA builds,
which this script runs on the CPU (a CPU torch from elsewhere beside PyPI's torchvision, a CUDA build,
cannot load torchvision's operators). Run by hand: `.venv-anchors/bin/python benchmarks/anchors.py`.
Deterministic (seeded); it measures no time.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZE, CHANNELS, CLASSES, IMAGES = 16, 8, 5, 4
REQUESTS = ("top1", "top3")
LAYER = "target"
LIMIT = 1e-4  # differences above this get an explanation in the note

# pytorch-grad-cam's class for each camcli method (the last two may not be in camcli's registry yet).
COUNTERPARTS = {
    "gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "layercam": "LayerCAM",
    "hirescam": "HiResCAM", "eigencam": "EigenCAM", "eigengradcam": "EigenGradCAM",
    "gradcamelementwise": "GradCAMElementWise", "scorecam": "ScoreCAM", "ablationcam": "AblationCAM",
    "fem": "FEM", "kpcacam": "KPCA_CAM", "finercam": "FinerCAM", "shapleycam": "ShapleyCAM", "fullgrad": "FullGrad",
}
NOT_COMPARED = {
    "sscam": "random noise on the masks; pytorch-grad-cam has no SS-CAM (TorchCAM's)",
    "iscam": "pytorch-grad-cam has no IS-CAM (TorchCAM's); camcli's path also ends at the image by design",
    "smoothgradcam++": "random noise on the inputs; pytorch-grad-cam has no Smooth Grad-CAM++ (TorchCAM's)",
    "dff": "pytorch-grad-cam factorises the whole batch together and names concepts with the classifier; "
           "camcli factorises each image (NMF checked against scikit-learn in tests/test_methods.py)",
    "cam": "pytorch-grad-cam has no plain CAM",
    "guidedgradcam": "guidedbackprop's gradient (compared above) times gradcam's map (compared above); "
                     "pytorch-grad-cam has no class for the product",
}


# --- the twins ------------------------------------------------------------------------------------


def seeded_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """The twins' weights in Keras's layout, drawn once (He-like scales so that the logits stay spread)."""
    rng = np.random.default_rng(seed)
    return {
        "conv1/kernel": rng.normal(0, np.sqrt(2 / 27), (3, 3, 3, CHANNELS)),
        "conv1/bias": rng.normal(0, 0.1, CHANNELS),
        "target/kernel": rng.normal(0, np.sqrt(2 / 72), (3, 3, CHANNELS, CHANNELS)),
        "target/bias": rng.normal(0, 0.1, CHANNELS),
        "head/kernel": rng.normal(0, 1.5, (CHANNELS, CLASSES)),
        "head/bias": rng.normal(0, 0.1, CLASSES),
    }


def keras_twin(weights: dict[str, np.ndarray]):
    import keras

    x = keras.Input((SIZE, SIZE, 3))
    y = keras.layers.Conv2D(CHANNELS, 3, padding="same", name="conv1")(x)
    y = keras.layers.ReLU(name="relu1")(y)
    y = keras.layers.Conv2D(CHANNELS, 3, padding="same", name="target")(y)
    y = keras.layers.ReLU(name="target_relu")(y)
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    y = keras.layers.Dense(CLASSES, activation="softmax", name="head")(y)
    model = keras.Model(x, y, name="twin")
    for name in ("conv1", "target", "head"):
        model.get_layer(name).set_weights([weights[f"{name}/kernel"].astype("float32"),
                                           weights[f"{name}/bias"].astype("float32")])
    return model


def torch_twin(weights: dict[str, np.ndarray]):
    import torch

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, CHANNELS, 3, padding=1)
            self.relu1 = torch.nn.ReLU()
            self.target = torch.nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1)
            self.target_relu = torch.nn.ReLU()
            self.head = torch.nn.Linear(CHANNELS, CLASSES)

        def forward(self, x):
            y = self.target_relu(self.target(self.relu1(self.conv1(x))))
            return self.head(y.mean(dim=(2, 3)))  # the logits: no softmax

    model = Twin().double().eval()
    with torch.no_grad():
        for name in ("conv1", "target"):
            # Keras (kh, kw, in, out) -> PyTorch (out, in, kh, kw)
            getattr(model, name).weight.copy_(torch.from_numpy(weights[f"{name}/kernel"].transpose(3, 2, 0, 1).copy()))
            getattr(model, name).bias.copy_(torch.from_numpy(weights[f"{name}/bias"]))
        model.head.weight.copy_(torch.from_numpy(weights["head/kernel"].T.copy()))
        model.head.bias.copy_(torch.from_numpy(weights["head/bias"]))
    return model


# --- helpers --------------------------------------------------------------------------------------


def unit(m: np.ndarray) -> np.ndarray:
    """One more min-max scaling of a map: puts camcli's (/max) and pytorch-grad-cam's (min-max + 1e-7) on
    the same footing. A flat map becomes zeros."""
    m = np.asarray(m, dtype=np.float64)
    m = m - m.min()
    top = m.max()
    return m / top if top > 0 else np.zeros_like(m)


def signed_like_camcli(projection: np.ndarray, data: np.ndarray) -> np.ndarray:
    """A (h, w) projection of (channels, h, w) data, signed by camcli's rule: positively correlated with the
    channel sum, or else with its largest-magnitude value positive."""
    flat, total = projection.ravel(), data.reshape(data.shape[0], -1).sum(axis=0)
    agreement = float(np.dot(flat - flat.mean(), total - total.mean()))
    if agreement < 0 or (agreement == 0 and flat[np.argmax(np.abs(flat))] < 0):
        return -projection
    return projection


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    return f"{value:.1e}" if abs(value) < 1e-2 or abs(value) >= 1e3 else f"{value:.4f}"


class Table:
    def __init__(self):
        self.rows: list[tuple[str, str, str, str, str]] = []

    def add(self, what: str, camcli: str, reference: str, difference: float | None, note: str = "") -> None:
        self.rows.append((what, camcli, reference, fmt(difference), note))

    def print(self) -> None:
        print("| what | camcli | reference | max abs difference | note |")
        print("| --- | --- | --- | --- | --- |")
        for row in self.rows:
            print("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")


# --- the comparison -------------------------------------------------------------------------------


class Anchors:
    def __init__(self):
        import torch

        torch.manual_seed(0)
        self.torch = torch
        self.weights = seeded_weights()
        self.keras_model = keras_twin(self.weights)
        self.torch_model = torch_twin(self.weights)
        rng = np.random.default_rng(1)
        self.rgb = rng.integers(0, 256, (IMAGES, SIZE, SIZE, 3), dtype=np.uint8)
        self.batch = (self.rgb / np.float32(255)).astype(np.float32)  # camcli's scale01, done here once
        self.x = torch.from_numpy(self.batch.transpose(0, 3, 1, 2).astype(np.float64))
        # The metrics in float32: pytorch-grad-cam's imputer writes float32 values into the image it imputes.
        self.x32, self.torch_model32 = self.x.float(), torch_twin(self.weights).float()
        self.table = Table()
        self.class_ids: np.ndarray | None = None  # (IMAGES, requests), from camcli's first explainer

    # camcli's side

    def explainer(self, method: str, layer: str | None = LAYER):
        import camcli

        options = {"methods": method, "classes": list(REQUESTS)}
        if layer is not None:
            options["layers"] = layer
        return camcli.Explainer(self.keras_model, preprocess="scale01", labels=[f"class{i}" for i in range(CLASSES)],
                                **options)

    def camcli_maps(self, method: str, layer: str | None = LAYER) -> np.ndarray:
        """(IMAGES, requests, h, w) heatmaps; the class ids are kept from the first call."""
        results = self.explainer(method, layer).explain_batch(self.batch)
        ids = np.array([[m.class_index for m in r.maps] for r in results])
        if self.class_ids is None:
            self.class_ids = ids
        elif not np.array_equal(ids, self.class_ids):
            raise RuntimeError(f"{method} explained classes {ids.tolist()}, not {self.class_ids.tolist()}")
        return np.stack([[m.heatmap for m in r.maps] for r in results]).astype(np.float64)

    # pytorch-grad-cam's side

    def targets(self, kind: str, r: int) -> list:
        from pytorch_grad_cam.utils import model_targets

        return [getattr(model_targets, kind)(int(c)) for c in self.class_ids[:, r]]

    def reference_maps(self, class_name: str, layer: str = LAYER) -> np.ndarray:
        """(IMAGES, requests, H, W) maps of a pytorch-grad-cam class, with the logit's target (ReST for ShapleyCAM)."""
        import pytorch_grad_cam

        maps = []
        for r in range(len(REQUESTS)):
            layers = [] if class_name == "FullGrad" else [getattr(self.torch_model, layer)]
            cam = getattr(pytorch_grad_cam, class_name)(model=self.torch_model, target_layers=layers)
            kind = "ClassifierOutputReST" if class_name == "ShapleyCAM" else "ClassifierOutputTarget"
            if class_name == "FinerCAM":
                maps.append(cam(self.x, targets=self.finer_targets(r)))
            else:
                maps.append(cam(input_tensor=self.x, targets=self.targets(kind, r)))
        return np.stack(maps, axis=1).astype(np.float64)

    def finer_targets(self, r: int) -> list:
        """FinerCAM's targets for camcli's classes: each against the 3 classes whose logits lie nearest it,
        alpha 1 (FinerCAM's own choice when it picks the class itself)."""
        from pytorch_grad_cam.utils.model_targets import FinerWeightedTarget

        with self.torch.no_grad():
            logits = self.torch_model(self.x).numpy()
        targets = []
        for b, c in enumerate(self.class_ids[:, r]):
            distance = np.abs(logits[b] - logits[b, c])
            distance[c] = np.inf
            targets.append(FinerWeightedTarget(int(c), [int(j) for j in np.argsort(distance, kind="stable")[:3]], 1.0))
        return targets

    def activations_and_gradients(self, layer: str = LAYER) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per request: the torch twin's (IMAGES, channels, h, w) activations at `layer` and the gradients of
        each image's logit (computed here with a hook; only for the sign-aligned notes)."""
        torch = self.torch
        kept = {}
        module = getattr(self.torch_model, layer)
        handle = module.register_forward_hook(lambda _m, _i, out: kept.__setitem__("a", out))
        activations, gradients = [], []
        try:
            for r in range(len(REQUESTS)):
                logits = self.torch_model(self.x)
                ids = torch.from_numpy(self.class_ids[:, r].astype(np.int64))
                chosen = logits.gather(1, ids[:, None]).sum()
                (grad,) = torch.autograd.grad(chosen, kept["a"])
                activations.append(kept["a"].detach().numpy())
                gradients.append(grad.numpy())
        finally:
            handle.remove()
        return activations, gradients

    # rows

    def compare_methods(self) -> None:
        from camcli.explain.methods import REGISTRY

        self.camcli_maps("gradcam")  # fixes the classes first
        for method, class_name in COUNTERPARTS.items():
            what, reference = f"{method} @ {LAYER}", f"pytorch-grad-cam {class_name}"
            if method not in REGISTRY:
                self.table.add(method, "not in camcli", reference, None, "not in camcli's REGISTRY yet")
                continue
            try:
                ours = self.camcli_maps(method, None if method == "fullgrad" else LAYER)
                theirs = self.reference_maps(class_name)
            except Exception as error:  # report, and go on with the other rows
                self.table.add(what, "failed", reference, None, f"{type(error).__name__}: {error}"[:200])
                continue
            if method == "fullgrad":
                what = "fullgrad (every conv bias)"
            difference = max_difference(ours, theirs)
            self.table.add(what, f"`{method}`", reference, difference, self.method_note(method, ours, difference))
        # AblationCAM again after the ReLU: pytorch-grad-cam's ablation zeroes a channel there, as camcli does.
        try:
            ours = self.camcli_maps("ablationcam", "target_relu")
            theirs = self.reference_maps("AblationCAM", "target_relu")
            difference = max_difference(ours, theirs)
            self.table.add("ablationcam @ target_relu", "`ablationcam`", "pytorch-grad-cam AblationCAM", difference,
                           "after the ReLU the layer's minimum is 0, so pytorch-grad-cam ablates to 0 too")
        except Exception as error:
            self.table.add("ablationcam @ target_relu", "failed", "pytorch-grad-cam AblationCAM", None,
                           f"{type(error).__name__}: {error}"[:200])
        self.compare_guided_backprop()
        for method, reason in NOT_COMPARED.items():
            if method in REGISTRY:
                self.table.add(method, f"`{method}`", "-", None, f"not compared: {reason}")
        for method in REGISTRY:  # a method added to camcli since this script was written
            if method not in COUNTERPARTS and method not in NOT_COMPARED and method != "guidedbackprop":
                self.table.add(method, f"`{method}`", "-", None, "not compared: no counterpart listed here yet")

    def compare_guided_backprop(self) -> None:
        """The guided input gradient itself, not the picture camcli draws from it (centred, std 0.1, clipped):
        camcli's step against pytorch-grad-cam's GuidedBackpropReLUModel, one image and class at a time (it
        differentiates output[0]). Each gradient is divided by the reference's largest magnitude."""
        from pytorch_grad_cam import GuidedBackpropReLUModel

        what, reference = "guidedbackprop (input gradient)", "pytorch-grad-cam GuidedBackpropReLUModel"
        try:
            explainer = self.explainer("guidedbackprop")
            ours = explainer.step.guided_gradients(self.batch, self.class_ids)  # (IMAGES, requests, H, W, 3)
            guided = GuidedBackpropReLUModel(torch_twin(self.weights))  # it swaps the ReLUs of its own copy
            difference = 0.0
            for b in range(IMAGES):
                for r in range(len(REQUESTS)):
                    theirs = guided(self.x[b: b + 1].clone(), int(self.class_ids[b, r]))
                    scale = np.abs(theirs).max()
                    difference = max(difference, float(np.abs(ours[b, r] - theirs).max() / scale))
        except Exception as error:
            self.table.add(what, "failed", reference, None, f"{type(error).__name__}: {error}"[:200])
            return
        self.table.add(what, "`guidedbackprop`", reference, difference,
                       "relative to the largest magnitude; camcli's picture of it is drawn from this gradient")

    def method_note(self, method: str, ours: np.ndarray, difference: float) -> str:
        if method in ("eigencam", "eigengradcam", "kpcacam"):
            aligned = max_difference(ours, self.signed_projections(method))
            note = f"signed by camcli's rule, pytorch-grad-cam's own projection differs by {fmt(aligned)}"
            if difference > LIMIT:
                note = "the component's sign: pytorch-grad-cam keeps the SVD's, camcli fixes it; " + note
            return note
        if method == "scorecam":
            restated = max_difference(ours, self.scorecam_restated())
            return ("by design: pytorch-grad-cam weighs channel k by softmax over the channels of the logit of X*H^k; "
                    "camcli by the probability gained over a blank input, p(X*H^k) - p(0) (Wang et al. Eq. 7). "
                    f"camcli's rule restated on the torch twin (same masks): {fmt(restated)}")
        if method == "ablationcam":
            return ("the conv's output has a minimum below 0, so pytorch-grad-cam ablates a channel to min - 1e7 "
                    "where camcli zeroes it (as the paper); the ReLU that follows makes both 0")
        if method == "gradcam++":
            return ("pytorch-grad-cam adds eps = 1e-6 to a_ij's denominator 2 g^2 + sum(A) g^3; this net's gradients "
                    "are small (2 g^2 is often below 1e-4), so the eps moves channel weights by percents; camcli "
                    "takes the closed form as written. Restated on the torch twin: without the eps "
                    f"{fmt(max_difference(ours, self.plus_plus_restated(0.0)))} from camcli, with it "
                    f"{fmt(max_difference(self.reference_maps('GradCAMPlusPlus'), self.plus_plus_restated(1e-6)))} "
                    "from pytorch-grad-cam")
        if method == "fullgrad":
            return ("map at the input's resolution (FullGrad ignores the layer). pytorch-grad-cam scales each "
                    "channel by (x - min) / (max - min + 1e-7); conv1's |bias x gradient| spans only ~1e-6 to 1e-3 "
                    "here, so the 1e-7 shrinks its channels by up to a few percent; camcli divides by the span "
                    "itself. Restated on the torch twin: without the 1e-7 "
                    f"{fmt(max_difference(ours, self.fullgrad_restated(0.0)))} from camcli, with it "
                    f"{fmt(max_difference(self.reference_maps('FullGrad'), self.fullgrad_restated(1e-7)))} "
                    "from pytorch-grad-cam")
        if method == "shapleycam":
            return "target ClassifierOutputReST (logit - cross-entropy)"
        if method == "finercam":
            return "targets FinerWeightedTarget(class, its 3 nearest logits, alpha 1)"
        return ""

    def plus_plus_restated(self, eps: float) -> np.ndarray:
        """Grad-CAM++ from the torch twin's activations and gradients, eps added to a_ij's denominator (0:
        the closed form camcli computes; 1e-6: pytorch-grad-cam's guard): (IMAGES, requests, h, w), ReLU."""
        activations, gradients = self.activations_and_gradients()
        maps = []
        for a, g in zip(activations, gradients):
            totals = a.sum(axis=(2, 3), keepdims=True)
            denominator = 2 * g ** 2 + totals * g ** 3 + eps
            share = np.divide(g ** 2, denominator, out=np.zeros_like(g), where=(g != 0) & (denominator != 0))
            weights = (np.maximum(g, 0) * share).sum(axis=(2, 3))
            maps.append(np.maximum((weights[:, :, None, None] * a).sum(axis=1), 0))
        return np.stack(maps, axis=1)

    def fullgrad_restated(self, eps: float) -> np.ndarray:
        """FullGrad on the torch twin: |x dy/dx| plus |b dy/dz| of each conv (z its output, where the bias is
        added), each channel shifted to a minimum of 0 and divided by its new maximum + eps, then summed over
        channels and parts: (IMAGES, requests, H, W)."""
        torch, model = self.torch, self.torch_model

        def channels_scaled(part: np.ndarray) -> np.ndarray:
            part = part - part.min(axis=(2, 3), keepdims=True)
            top = part.max(axis=(2, 3), keepdims=True) + eps
            return np.divide(part, top, out=np.zeros_like(part), where=top > 0).sum(axis=1)

        kept = {}
        handles = [getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: kept.__setitem__(name, out)) for name in ("conv1", "target")]
        maps = []
        try:
            for r in range(len(REQUESTS)):
                x = self.x.clone().requires_grad_(True)
                ids = torch.from_numpy(self.class_ids[:, r].astype(np.int64))
                chosen = model(x).gather(1, ids[:, None]).sum()
                grad_x, *grads = torch.autograd.grad(chosen, [x, kept["conv1"], kept["target"]])
                saliency = channels_scaled(np.abs(grad_x.numpy() * self.x.numpy()))
                for name, grad in zip(("conv1", "target"), grads):
                    bias = getattr(model, name).bias.detach().numpy()[None, :, None, None]
                    saliency = saliency + channels_scaled(np.abs(bias * grad.numpy()))
                maps.append(saliency)
        finally:
            for handle in handles:
                handle.remove()
        return np.stack(maps, axis=1)

    def signed_projections(self, method: str) -> np.ndarray:
        """pytorch-grad-cam's projection functions on the torch twin's activations (times the gradients for
        EigenGradCAM), signed by camcli's rule, ReLU: (IMAGES, requests, h, w)."""
        from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection, get_2d_projection_kernel

        activations, gradients = self.activations_and_gradients()
        maps = []
        for a, g in zip(activations, gradients):
            data = a * g if method == "eigengradcam" else a
            projected = get_2d_projection_kernel(data) if method == "kpcacam" else get_2d_projection(data)
            maps.append([np.maximum(signed_like_camcli(p.astype(np.float64), d), 0) for p, d in zip(projected, data)])
        return np.stack(maps, axis=1)

    def scorecam_restated(self) -> np.ndarray:
        """camcli's Score-CAM weights computed on the torch twin: channel k weighs p_c(X * H^k) - p_c(0), H^k
        the channel min-max scaled to [0, 1] (no resize: the layer's grid is the input's)."""
        torch = self.torch
        activations, _ = self.activations_and_gradients()
        maps = []
        for r, a in enumerate(activations):
            per_request = []
            for b in range(IMAGES):
                low = a[b].min(axis=(1, 2), keepdims=True)
                span = a[b].max(axis=(1, 2), keepdims=True) - low
                masks = np.divide(a[b] - low, span, out=np.zeros_like(a[b]), where=span > 0)
                copies = torch.from_numpy(np.concatenate([np.zeros((1, 3, SIZE, SIZE)),
                                                          self.x[b].numpy()[None] * masks[:, None]]))
                with torch.no_grad():
                    p = torch.softmax(self.torch_model(copies), dim=-1)[:, int(self.class_ids[b, r])].numpy()
                weights = p[1:] - p[0]
                per_request.append(np.maximum((weights[:, None, None] * a[b]).sum(axis=0), 0))
            maps.append(per_request)
        return np.stack(maps, axis=1)

    # metrics

    def metric_maps(self) -> np.ndarray:
        """The maps the ROAD rows score: camcli's Grad-CAM maps of the top-1 class (at the input's size),
        plus seeded noise of 1e-4 so that no two pixels tie (ties are broken differently by a percentile
        threshold and by a ranking), in [0, 1]."""
        maps = self.camcli_maps("gradcam")[:, 0]
        jitter = np.random.default_rng(2).uniform(0, 1, maps.shape)
        return (maps + 1e-4 * jitter) / (1 + 1e-4)

    def compare_road(self) -> None:
        from pytorch_grad_cam.metrics.perturbation_confidence import (
            PerturbationConfidenceMetric,
            RemoveLeastRelevantFirst,
            RemoveMostRelevantFirst,
        )
        from pytorch_grad_cam.metrics.road import NoisyLinearImputer, ROADCombined

        from camcli.evaluate.metrics import road_scores

        cams = self.metric_maps()
        top1 = self.class_ids[:, 0]
        explainer = self.explainer("gradcam")
        targets = self.targets("ClassifierOutputSoftmaxTarget", 0)
        pixels = SIZE * SIZE
        # Without noise, one percentile at a time. pytorch-grad-cam's percentile q keeps the pixels below the
        # map's q-th percentile (MoRF; LeRF: of 1 - map) and imputes the others, (100 - q)% of them: camcli's
        # curve point at 100 - q, which imputes round((100 - q)% of the pixels).
        for name, remove, most in (("MoRF", RemoveMostRelevantFirst, True), ("LeRF", RemoveLeastRelevantFirst, False)):
            same, other, counts = [], [], []
            for q in range(10, 100, 10):
                metric = PerturbationConfidenceMetric(remove(q, NoisyLinearImputer(noise=0.0)))
                theirs = metric(self.x32, cams, targets, self.torch_model32)
                ours = np.array([
                    getattr(road_scores(explainer.class_scores, self.batch[b], cams[b], int(top1[b]),
                                        percentiles=(100 - q,), noise=0.0), "morf_curve" if most else "lerf_curve")[0]
                    for b in range(IMAGES)])
                scored = cams if most else 1 - cams
                removed_theirs = [int((m >= np.percentile(m, q)).sum()) for m in scored]
                removed_ours = int(np.rint((100 - q) / 100 * pixels))
                difference = float(np.abs(ours - theirs).max())
                if all(n == removed_ours for n in removed_theirs):
                    same.append(difference)
                else:
                    other.append(difference)
                    counts.append(f"q={q}: {removed_theirs[0]} against {removed_ours}")
            note = f"noise 0 on both; the {len(same)} percentiles that impute the same pixels"
            if other:
                note += (f"; at the other {len(other)} the counts differ by design ({'; '.join(counts)}: a "
                         f"percentile threshold against camcli's round(p x pixels)), difference {fmt(max(other))}")
            self.table.add(f"ROAD {name} per percentile 10..90", "`road_scores(noise=0)`",
                           f"pytorch-grad-cam {remove.__name__} + NoisyLinearImputer(noise=0)", max(same), note)
        # The averages as both ship them: noise 0.01, torch's generator against camcli's seeded numpy one.
        torch = self.torch
        torch.manual_seed(0)
        from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage

        theirs = {
            "MoRF": ROADMostRelevantFirstAverage()(self.x32, cams, targets, self.torch_model32),
            "LeRF": ROADLeastRelevantFirstAverage()(self.x32, cams, targets, self.torch_model32),
            "Combined": ROADCombined()(self.x32, cams, targets, self.torch_model32),
        }
        scores = [road_scores(explainer.class_scores, self.batch[b], cams[b], int(top1[b])) for b in range(IMAGES)]
        ours = {"MoRF": [s.morf for s in scores], "LeRF": [s.lerf for s in scores],
                "Combined": [s.combined for s in scores]}
        spread = np.abs(np.array(ours["MoRF"])).mean()
        for name, reference in (("MoRF", "ROADMostRelevantFirstAverage"), ("LeRF", "ROADLeastRelevantFirstAverage"),
                                ("Combined", "ROADCombined")):
            attribute = {"MoRF": "morf", "LeRF": "lerf", "Combined": "combined"}[name]
            difference = float(np.abs(np.array(ours[name]) - theirs[name]).max())
            self.table.add(f"ROAD {name} (mean of 10..90)", f"`RoadScores.{attribute}`",
                           f"pytorch-grad-cam {reference}", difference,
                           f"noise 0.01 on both from different generators (mean /MoRF/ here {fmt(spread)}), "
                           "and the pixel counts above")

    def compare_confidence(self) -> None:
        from pytorch_grad_cam.metrics.cam_mult_image import (
            CamMultImageConfidenceChange,
            DropInConfidence,
            IncreaseInConfidence,
        )

        from camcli.evaluate.metrics import average_drop_increase, multiply_by_map

        maps = self.camcli_maps("gradcam")[:, 0]  # unjittered: the map as evaluate scores it
        top1 = self.class_ids[:, 0]
        explainer = self.explainer("gradcam")
        targets = self.targets("ClassifierOutputSoftmaxTarget", 0)
        maps32 = maps.astype(np.float32)  # the float32 twin multiplies its input by them
        # camcli's evaluation: Y of the image, O of the uint8 image times its map (camcli/evaluate/evaluation.py)
        rows = np.arange(IMAGES)
        score = explainer.class_scores(self.batch)[rows, top1].astype(np.float64)
        masked_rgb = [multiply_by_map(self.rgb[b], maps[b]) for b in range(IMAGES)]
        masked = explainer.class_scores(explainer.preprocess(masked_rgb))[rows, top1].astype(np.float64)
        exact = explainer.class_scores((self.batch * maps[..., None]).astype(np.float32))[rows, top1]
        change = CamMultImageConfidenceChange()(self.x32, maps32, targets, self.torch_model32)
        uint8_note = ("camcli multiplies the uint8 picture and rounds to uint8 (evaluate scores pictures); "
                      "pytorch-grad-cam multiplies the model's input in float; the float product scored by camcli's "
                      f"twin differs by {fmt(float(np.abs(exact - score - change).max()))}")
        self.table.add("confidence change O - Y (Grad-CAM, top-1)", "evaluation's `confidence_change`",
                       "pytorch-grad-cam CamMultImageConfidenceChange", float(np.abs(masked - score - change).max()),
                       uint8_note)
        drops = np.array([average_drop_increase([y], [o])[0] for y, o in zip(score, masked)])
        theirs_drop = DropInConfidence()(self.x32, maps32, targets, self.torch_model32)
        self.table.add("drop in confidence", "`average_drop_increase` drop x Y",
                       "pytorch-grad-cam DropInConfidence", float(np.abs(drops * score - theirs_drop).max()),
                       "by design camcli's Average Drop is relative, max(0, Y - O) / Y (Grad-CAM++ Sec. 6.1), "
                       "pytorch-grad-cam's absolute; compared here after x Y, and the uint8 rounding above")
        increase = average_drop_increase(score, masked)[1]
        theirs_increase = float(np.mean(IncreaseInConfidence()(self.x32, maps32, targets, self.torch_model32)))
        self.table.add("increase in confidence (share of images)", "`average_drop_increase` increase",
                       "pytorch-grad-cam IncreaseInConfidence", abs(increase - theirs_increase), "")

    def compare_quantus(self) -> None:
        from camcli.evaluate.metrics import boxes_mask, energy_in_boxes, relevance_rank

        try:
            import quantus
        except Exception as error:  # noqa: BLE001 - any import failure means no Quantus rows
            for what in ("relevance mass", "relevance rank"):
                self.table.add(what, "-", "Quantus", None,
                               f"quantus unavailable: {type(error).__name__}: {error}"[:160])
            return
        maps = self.camcli_maps("gradcam")[:, 0]  # the maps as explain gives them: ReLU zeros tie
        rng = np.random.default_rng(3)
        boxes = []
        for _ in range(IMAGES):
            w, h = rng.integers(4, 11, 2)
            x0, y0 = rng.integers(0, SIZE - w + 1), rng.integers(0, SIZE - h + 1)
            boxes.append((int(x0), int(y0), int(x0 + w), int(y0 + h)))
        masks = np.stack([boxes_mask((SIZE, SIZE), [box]) for box in boxes])[:, None].astype(np.float64)
        x, y, a = self.x.numpy(), self.class_ids[:, 0], maps[:, None]
        jittered = self.metric_maps()[:, None]
        for what, ours_fn, metric in (("relevance mass", energy_in_boxes, quantus.RelevanceMassAccuracy),
                                      ("relevance rank", relevance_rank, quantus.RelevanceRankAccuracy)):
            for label, attributions in (("", a), (" (no ties)", jittered)):
                ours = np.array([ours_fn(attributions[b, 0], [boxes[b]]) for b in range(IMAGES)])
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        theirs = np.array(metric(disable_warnings=True)(
                            model=self.torch_model, x_batch=x, y_batch=y, a_batch=attributions, s_batch=masks,
                            channel_first=True, device="cpu"), dtype=np.float64)
                except Exception as error:
                    self.table.add(what + label, f"`{ours_fn.__name__}`", f"Quantus {metric.__name__}", None,
                                   f"Quantus failed: {type(error).__name__}: {error}"[:200])
                    continue
                difference = float(np.abs(ours - theirs).max())
                note = ("Grad-CAM's maps as explain gives them (zeros tie)" if not label
                        else "the same maps with seeded 1e-4 noise: no ties")
                if difference > LIMIT and ours_fn is relevance_rank and not label:
                    note += ("; ties at the top-K boundary: Quantus ranks by np.argsort(-a) (quicksort, not "
                             "stable), camcli by a stable ascending sort whose last K it keeps")
                self.table.add(what + label, f"`{ours_fn.__name__}`", f"Quantus {metric.__name__}", difference,
                               note)


def max_difference(ours: np.ndarray, theirs: np.ndarray) -> float:
    """The largest |unit(ours) - unit(theirs)| over every image and request."""
    if ours.shape != theirs.shape:
        raise ValueError(f"camcli's maps are {ours.shape}, the reference's {theirs.shape}")
    return max(float(np.abs(unit(o) - unit(t)).max())
               for o_row, t_row in zip(ours, theirs) for o, t in zip(o_row, t_row))


def import_torch_first() -> None:
    """PyTorch's side before TensorFlow's: with TensorFlow loaded first, importing torchvision (which loads
    Triton's library through torch._dynamo) crashed this process with a segmentation fault; in this order
    both work. Quantus imports TensorFlow itself when it is installed, so it comes after."""
    import pytorch_grad_cam  # noqa: F401
    import torch  # noqa: F401
    import torchvision.ops  # noqa: F401


def main() -> int:
    import_torch_first()
    import torch

    warnings.filterwarnings("ignore")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # one Explainer per method and layer: their retracing warnings say nothing here
    torch.set_num_threads(2)
    anchors = Anchors()
    anchors.compare_methods()
    anchors.compare_road()
    anchors.compare_confidence()
    anchors.compare_quantus()
    import importlib.metadata as metadata

    versions = []
    for name in ("keras-camcli", "tensorflow-cpu", "keras", "torch", "grad-cam", "quantus"):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} not installed")
    print(f"Twin CNNs, {IMAGES} images of {SIZE}x{SIZE}, classes {list(REQUESTS)} -> "
          f"{anchors.class_ids.tolist()}; {', '.join(versions)}\n")
    anchors.table.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
