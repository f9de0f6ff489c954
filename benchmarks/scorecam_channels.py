"""Which channels should `--max-channels N` score? Two rules against full Score-CAM, on real photos.

Rules: the N channels with the largest total activation (camcli's rule before issue 15), and the N
channels whose activation varies most over the locations (Faster Score-CAM, as the Score-CAM
authors' repository and tf-keras-vis's `max_N` choose them). Each is compared with full Score-CAM
(every channel of MobileNetV2's last conv layer) on the real ImageNet weights and photos in
../shared: the Pearson correlation of the unit maps, their mean absolute difference, and whether
the hottest cell is the same. `make bench-scorecam` (a few minutes on 2 cores).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"


def keras_home() -> None:
    """Point Keras' cache at the shared weights (never written), as the tests do."""
    home = Path(tempfile.mkdtemp(prefix="camcli-keras-home-"))
    (home / "models").mkdir()
    for name in (WEIGHTS, "imagenet_class_index.json"):
        os.symlink(SHARED / "imagenet" / name, home / "models" / name)
    os.environ["KERAS_HOME"] = str(home)


def by_total_activation(per_channel: np.ndarray, keep: int) -> np.ndarray:
    return np.sort(np.argsort(-per_channel.sum(axis=0), kind="stable")[:keep])


def by_variance(per_channel: np.ndarray, keep: int) -> np.ndarray:
    return np.sort(np.argsort(-per_channel.astype(np.float64).var(axis=0), kind="stable")[:keep])


def maps_with(rule, explainer, images) -> list[np.ndarray]:
    from camcli.explain import methods

    original = methods.score_channels
    methods.score_channels = rule
    try:
        return [result.maps[0].heatmap for result in explainer.explain(images)]
    finally:
        methods.score_channels = original


def compare(reference: list[np.ndarray], maps: list[np.ndarray]) -> tuple[float, float, float]:
    correlation = np.mean([np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(reference, maps)])
    difference = np.mean([np.abs(a - b).mean() for a, b in zip(reference, maps)])
    peaks = np.mean([np.argmax(a) == np.argmax(b) for a, b in zip(reference, maps)])
    return float(correlation), float(difference), float(peaks)


def main() -> int:
    if not (SHARED / "imagenet" / WEIGHTS).is_file():
        print(f"skipped: the real MobileNetV2 weights are not in {SHARED / 'imagenet'}")
        return 0
    keras_home()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import camcli
    from camcli.runs.decode import load_rgb

    photos = sorted(p for p in (SHARED / "photos").iterdir() if p.suffix.lower() in (".png", ".jpg"))
    images = [load_rgb(p) for p in photos]
    loaded = camcli.load_model("mobilenetv2")
    full = camcli.Explainer(loaded, method="scorecam", masked_batch=32)
    print(f"{len(images)} photos ({', '.join(p.name for p in photos)}), mobilenetv2 at {full.layer}")
    reference = [result.maps[0].heatmap for result in full.explain(images)]
    print(f"{'rule':<24}{'N':>6}{'correlation':>13}{'mean |diff|':>13}{'same peak':>11}")
    rows = {}
    for keep in (16, 32, 64, 128, 256):
        explainer = camcli.Explainer(loaded, method="scorecam", max_channels=keep, masked_batch=32)
        for name, rule in (("largest total activation", by_total_activation), ("largest variance", by_variance)):
            rows[(name, keep)] = compare(reference, maps_with(rule, explainer, images))
            correlation, difference, peaks = rows[(name, keep)]
            print(f"{name:<24}{keep:>6}{correlation:>13.3f}{difference:>13.3f}{peaks:>11.2f}")
    sizes = (16, 32, 64, 128, 256)
    wins = sum(rows[("largest variance", k)][0] > rows[("largest total activation", k)][0] for k in sizes)
    print(f"largest variance correlates better with full Score-CAM at {wins} of 5 sizes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
