"""Explaining every detection of an image, against the detector's own predict (issue 31's target).

A KerasHub RetinaNet on the smallest ResNet (ResNet-18's config: basic blocks 2-2-2-2), random weights,
COCO's 91 classes, its default heads and decoder (IoU 0.5, confidence 0.5, at most 100 detections), a
640x640 input: nothing downloads. The box head's last layer is scaled down, so that boxes stay near their
anchors as a trained detector's do (random deltas throw them off the picture). Random class logits put
many anchors above the threshold, so an image has up to the decoder's 100 detections: each is explained.

Timed in one process, side by side, each the median of --repeats runs after a warm-up (which compiles):
- predict: `detector.predict` on the image at its input size (the converter, decoding, suppression);
- eigencam: camcli's step without gradients (one forward pass, decoding, suppression) and its maps;
- gradcam: one forward pass and one backward pass per detection, and every detection's map.
It prints seconds per image and per detection, and the ratio to predict against the target
(1 + N) x predict for N detections. `make bench-detectors`; a small setting that runs in a minute:
`python benchmarks/detectors.py --size 128 --repeats 1`. Run it on a quiet machine for figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_preset(size: int, folder: Path) -> Path:
    """RetinaNet on ResNet-18 (random weights), saved as a preset folder as a user's would be."""
    from camcli.models.loading import import_keras

    keras = import_keras()
    import keras_hub

    keras.utils.set_random_seed(0)
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[2, 2, 2, 2], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(None, None, 3))
    backbone = keras_hub.models.RetinaNetBackbone(image_encoder=encoder, min_level=3, max_level=7, use_p5=False,
                                                  image_shape=(None, None, 3))
    converter = keras_hub.layers.RetinaNetImageConverter(image_size=(size, size), scale=1 / 255.0)
    preprocessor = keras_hub.models.RetinaNetObjectDetectorPreprocessor(image_converter=converter)
    detector = keras_hub.models.RetinaNetObjectDetector(backbone=backbone, num_classes=91, preprocessor=preprocessor)
    kernel, bias = detector.box_head.prediction_layer.get_weights()  # boxes near their anchors, not off the picture
    detector.box_head.prediction_layer.set_weights([kernel * 0.01, bias * 0])
    path = folder / "retinanet_resnet18_random"
    detector.save_to_preset(str(path))
    return path


def median_seconds(call, repeats: int) -> float:
    call()  # warm-up: traces and compiles
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=640, help="input side in pixels (default 640)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row, after a warm-up (default 3)")
    options = parser.parse_args()

    import camcli
    from camcli.explain.detection import DetectionExplainer

    with tempfile.TemporaryDirectory(prefix="camcli-bench-detectors-") as folder:
        loaded = camcli.load_model(f"hub:{build_preset(options.size, Path(folder))}")
    image = np.random.default_rng(0).integers(0, 256, (options.size, options.size, 3), dtype=np.uint8)
    pixels = image[np.newaxis].astype(np.float32)
    gradcam = DetectionExplainer(loaded, methods="gradcam", target="box")
    eigencam = DetectionExplainer(loaded, methods="eigencam", target="box")
    batch = gradcam.preprocess([image])

    predict = median_seconds(lambda: loaded.model.predict(pixels, verbose=0), options.repeats)
    forward = median_seconds(lambda: eigencam.explain_batch(batch), options.repeats)
    explained = median_seconds(lambda: gradcam.explain_batch(batch), options.repeats)
    passes = gradcam.step.backward_passes
    [result] = gradcam.explain_batch(batch)
    count = len(result.detections)
    per_pass = (gradcam.step.backward_passes - passes) / max(count, 1)
    print(f"RetinaNet, ResNet-18 backbone, random weights, {options.size}x{options.size} input, one image; "
          f"{count} detections (the decoder keeps at most {loaded.detector.max_detections}); median of "
          f"{options.repeats} runs")
    print(f"{'what':<34}{'s/image':>10}{'s/detection':>13}{'x predict':>11}")
    rows = [("predict (KerasHub)", predict), ("eigencam: forward, no gradients", forward),
            ("gradcam: every detection", explained)]
    for name, seconds in rows:
        print(f"{name:<34}{seconds:>10.3f}{seconds / max(count, 1):>13.4f}{seconds / predict:>11.2f}")
    marginal = (explained - forward) / max(count, 1)
    print(f"gradcam's cost per detection beyond the forward pass: {marginal:.4f} s ({marginal / predict:.2f} x "
          f"predict); backward passes per detection: {per_pass:.2f}")
    target = (1 + count) * predict
    verdict = "met" if explained <= target else "NOT met"
    print(f"target (1 + N) x predict = {target:.3f} s: {verdict} ({explained:.3f} s)")


if __name__ == "__main__":
    main()
