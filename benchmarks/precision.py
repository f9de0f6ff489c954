"""How far do maps move in bfloat16 and float16? Every layer method against float32, same class.

`make bench-precision`. For each model, every layer method runs in float32 and then in each reduced
precision on the same images, each explaining float32's top-1 class (forced, so a precision that ranks
the classes otherwise still explains the same one). Per method it prints the median and worst Pearson
correlation of the unit maps (on the layer's grid), the largest difference of the unit maps, how many
peaks (hottest cells) moved, empty maps that became non-empty or the other way, and NaNs; per model, the
top-1 agreement of the predictions. Models: the real MobileNetV2 (ImageNet weights from ../shared, the
photos in ../shared/photos; skipped with a line where they are missing) and the embedded demo models
(`demo`, `demo-cheat`, on sample_images/generated and sample_images/tagged).

Target (issue 29), bfloat16 against float32 on the real MobileNetV2 and photos, for gradcam, gradcam++,
layercam, xgradcam, hirescam and scorecam: median r >= 0.99, worst >= 0.97, no NaN.

    python benchmarks/precision.py                       # everything (Score-CAM on --scorecam-channels)
    python benchmarks/precision.py --scorecam-channels 0 # Score-CAM on every channel (slower)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from scorecam_channels import SHARED, WEIGHTS, keras_home  # noqa: E402

REDUCED = ("bfloat16", "float16")
TARGET_METHODS = ("gradcam", "gradcam++", "layercam", "xgradcam", "hirescam", "scorecam")
TARGET_MEDIAN_R, TARGET_WORST_R = 0.99, 0.97


def layer_methods(loaded) -> list[str]:
    """Every registered method that maps a layer (the guided ones are input gradients); CAM where it applies."""
    from camcli.errors import UsageError
    from camcli.explain.explainer import Explainer
    from camcli.explain.methods import REGISTRY

    names = [name for name in REGISTRY if not name.startswith("guided")]
    if "cam" in names:
        try:
            Explainer(loaded, method="cam", build_step=False)
        except UsageError:
            names.remove("cam")
    return names


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:  # an empty (or flat) map: equal maps agree, others do not
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def explain(loaded, methods, images, precision, class_ids, channels):
    """{method: [ClassMap per image]} and the top-1 indices, one MethodSet pass per batch."""
    from camcli.explain.explainer import MethodSet

    maps = {"methods": methods, "precision": precision}
    if channels and "scorecam" in methods:
        maps["max_channels"] = channels
    method_set = MethodSet.of(loaded, **maps)
    per_method = {name: [] for name in methods}
    top1 = []
    for start in range(0, len(images), 8):
        chunk = images[start: start + 8]
        ids = None if class_ids is None else np.asarray(class_ids[start: start + 8], np.int32)[:, None]
        for results in zip(*method_set.explain_each(method_set.preprocess(chunk), ids)):
            top1.append(results[0].predictions[0].index)
            for result in results:
                per_method[result.maps[0].method].append(result.maps[0])
    return per_method, top1


def compare_model(title, loaded, images, args, checks):
    methods = layer_methods(loaded)
    reference, top1 = explain(loaded, methods, images, "float32", None, args.scorecam_channels)
    classes = [maps.class_index for maps in reference[methods[0]]]
    print(f"\n{title}: {len(images)} images, layer {loaded.name}:{reference[methods[0]][0].layer}, "
          f"explaining float32's top-1 in every precision")
    for precision in REDUCED:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            maps, reduced_top1 = explain(loaded, methods, images, precision, classes, args.scorecam_channels)
        agree = sum(a == b for a, b in zip(top1, reduced_top1))
        print(f"  {precision}: top-1 agrees with float32 on {agree} of {len(images)} images")
        print(f"  {'method':<14}{'median r':>9}{'worst r':>9}{'max |diff|':>11}{'peak moved':>11}"
              f"{'empty flips':>12}{'NaN':>5}")
        for name in methods:
            pairs = list(zip(reference[name], maps[name]))
            rs = [correlation(a.heatmap, b.heatmap) for a, b in pairs]
            diff = max(float(np.abs(a.heatmap - b.heatmap).max()) for a, b in pairs)
            moved = sum(int(np.argmax(a.heatmap) != np.argmax(b.heatmap)) for a, b in pairs if not a.empty)
            flips = sum(a.empty != b.empty for a, b in pairs)
            nans = sum(int(not np.isfinite(b.heatmap).all() or not np.isfinite(b.raw_max)) for _, b in pairs)
            median, worst = statistics.median(rs), min(rs)
            print(f"  {name:<14}{median:9.4f}{worst:9.4f}{diff:11.3f}{moved:>7} of {len(pairs):<2}{flips:>12}{nans:>5}")
            if checks is not None and precision == "bfloat16" and name in TARGET_METHODS:
                checks.append((name, median, worst, nans))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scorecam-channels", type=int, default=256,
                        help="Score-CAM scores this many channels (--max-channels); 0: every channel")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    real = (SHARED / "imagenet" / WEIGHTS).is_file()
    if real:
        keras_home()
    import tensorflow as tf

    import camcli
    from camcli.runs.decode import load_rgb

    tf.get_logger().setLevel("ERROR")  # a MethodSet per precision: TensorFlow counts their traces together
    checks = []
    if real:
        photos = sorted(p for p in (SHARED / "photos").iterdir() if p.suffix.lower() in (".png", ".jpg"))
        compare_model("mobilenetv2, real ImageNet weights, ../shared/photos", camcli.load_model("mobilenetv2"),
                      [load_rgb(p) for p in photos], args, checks)
    else:
        print(f"skipped the real MobileNetV2: its weights are not in {SHARED / 'imagenet'}")
    for name, folder in (("demo", "generated"), ("demo-cheat", "tagged")):
        paths = sorted(p for p in (REPO / "sample_images" / folder).rglob("*") if p.suffix.lower() in (".png", ".jpg"))
        compare_model(f"{name}, sample_images/{folder}", camcli.load_model(name), [load_rgb(p) for p in paths],
                      args, None)
    if not checks:
        print("\nno target checked: the real MobileNetV2 is missing")
        return 0
    print(f"\ntargets, bfloat16 against float32 on the real MobileNetV2 (median r >= {TARGET_MEDIAN_R}, worst >= "
          f"{TARGET_WORST_R}, no NaN):")
    held = []
    for name, median, worst, nans in checks:
        ok = median >= TARGET_MEDIAN_R and worst >= TARGET_WORST_R and nans == 0
        held.append(ok)
        print(f"  {name:<12} median {median:.4f}, worst {worst:.4f}, NaN {nans}: {'held' if ok else 'MISSED'}")
    print(f"{sum(held)} of {len(held)} targets held")
    return 0 if all(held) else 1


if __name__ == "__main__":
    sys.exit(main())
