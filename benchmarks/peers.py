"""Maps only: camcli's Grad-CAM against tf-keras-vis's `Gradcam` and the keras.io example, side by side.

Every tool gets the same preprocessed images (no decoding, no files written) and finds each image's
class as its users do:
- camcli: `Explainer.explain_batch`, which predicts and maps in one compiled step, 8 images a batch;
- tf-keras-vis (the `bench` extra): `model.predict` for the classes, then
  `Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)` with a `CategoricalScore` of those
  classes and `penultimate_layer` at camcli's layer, 8 images a call, as its README shows. It works on
  its own clone of the model: camcli's model is never the one modified (checked below);
- keras.io: the Grad-CAM example's `model.predict` and `make_gradcam_heatmap`, one image at a time.
The tools run interleaved over --rounds rounds, and each ratio is the median of the rounds' ratios.
VGG16, ResNet50 and Xception with weights=None (the cost of the real models, without a download).

    python benchmarks/peers.py [--images 16] [--rounds 3] [--models vgg16,resnet50,xception]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BATCH = 8


def camcli_maps(explainer, images: np.ndarray) -> None:
    for start in range(0, len(images), BATCH):
        explainer.explain_batch(images[start:start + BATCH])


def tf_keras_vis_maps(model, layer: str):
    """A callable mapping images the way tf-keras-vis users do, or None when it is not installed."""
    try:
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
        from tf_keras_vis.utils.scores import CategoricalScore
    except ImportError:
        return None
    gradcam = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)

    def run(images: np.ndarray) -> None:
        for start in range(0, len(images), BATCH):
            batch = images[start:start + BATCH]
            classes = np.argmax(model.predict(batch, verbose=0), axis=-1)
            gradcam(CategoricalScore(list(classes)), batch, penultimate_layer=layer)

    return run


def keras_io_maps(model, layer: str):
    """The keras.io example's two calls per image (benchmarks/throughput.py has the whole loop)."""
    import tensorflow as tf

    from camcli.models.loading import import_keras

    keras = import_keras()

    def make_gradcam_heatmap(img_array):
        grad_model = keras.models.Model(model.inputs, [model.get_layer(layer).output, model.output])
        with tf.GradientTape() as tape:
            last_conv_layer_output, preds = grad_model(img_array)
            class_channel = preds[:, tf.argmax(preds[0])]
        grads = tape.gradient(class_channel, last_conv_layer_output)
        pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
        heatmap = tf.squeeze(last_conv_layer_output[0] @ pooled_grads[..., tf.newaxis])
        return (tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap)).numpy()

    def run(images: np.ndarray) -> None:
        for image in images:
            model.predict(image[None], verbose=0)
            make_gradcam_heatmap(image[None])

    return run


def speed_over(seconds: dict, peer: str) -> float:
    """camcli's speed over `peer`'s: the median over rounds of the two tools' times in the same round."""
    if peer not in seconds:
        return float("nan")
    return statistics.median(theirs / ours for ours, theirs in zip(seconds["camcli"], seconds[peer]))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="vgg16,resnet50,xception")
    return parser.parse_args(argv)


def measure(name: str, images_count: int, rounds: int) -> dict:
    import camcli
    from camcli.models.catalog import BUILTIN_MODELS

    entry = BUILTIN_MODELS[name]
    loaded = camcli.load_model(name, weights="none")
    explainer = camcli.Explainer(loaded)
    rng = np.random.default_rng(0)
    images = rng.normal(0, 1, (images_count, *loaded.input_size, 3)).astype(np.float32)
    before = [w.numpy().copy() for w in loaded.model.weights[-2:]]
    activation = loaded.model.layers[-1].get_config().get("activation")
    tools = {"camcli": lambda batch: camcli_maps(explainer, batch),
             "keras.io": keras_io_maps(loaded.model, entry.default_layer)}
    peer = tf_keras_vis_maps(loaded.model, entry.default_layer)
    if peer is not None:
        tools["tf-keras-vis"] = peer
    for run in tools.values():  # one-off set-up (tracing, cloning) is not timed
        run(images[:2])
    seconds = {tool: [] for tool in tools}
    for index in range(rounds):
        for tool in (list(tools) if index % 2 == 0 else list(tools)[::-1]):
            started = time.perf_counter()
            tools[tool](images)
            seconds[tool].append(time.perf_counter() - started)
    after = [w.numpy() for w in loaded.model.weights[-2:]]
    unchanged = all(np.array_equal(a, b) for a, b in zip(before, after)) and \
        loaded.model.layers[-1].get_config().get("activation") == activation
    return {"seconds": seconds, "count": images_count, "unchanged": unchanged, "peer": peer is not None}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
    print(f"Grad-CAM maps only, {args.images} images per round, {args.rounds} rounds, weights=None; images/s, and "
          "camcli's speed over each peer's (median of the rounds' ratios)")
    print(f"{'model':<10}{'camcli':>9}{'tf-keras-vis':>14}{'keras.io':>10}{'camcli/tkv':>12}{'camcli/keras.io':>17}")
    for name in args.models.split(","):
        result = measure(name, args.images, args.rounds)
        seconds, count = result["seconds"], result["count"]
        speed = {tool: count / statistics.median(times) for tool, times in seconds.items()}
        tkv = f"{speed['tf-keras-vis']:14.2f}" if "tf-keras-vis" in speed else f"{'skipped':>14}"
        print(f"{name:<10}{speed['camcli']:9.2f}{tkv}{speed['keras.io']:10.2f}"
              f"{speed_over(seconds, 'tf-keras-vis'):12.2f}{speed_over(seconds, 'keras.io'):17.2f}")
        if not result["unchanged"]:
            print(f"  {name}: the model changed while the peers ran: camcli's model must never be modified")
            return 1
        if not result["peer"]:
            print("  tf-keras-vis skipped: not installed (pip install 'keras-camcli[bench]')")
    print("camcli's model was unchanged after every peer ran (its last weights and activation compared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
