"""The model-parameter randomisation test (Adebayo et al. 2018) of five methods on two models.

(a) The embedded demo model on --demo-images held-out generated scenes (seed --seed, never used for
training); (b) MobileNetV2 with the real ImageNet weights of ../shared/imagenet on the photos of
../shared/photos (at most --photos), at its default layer out_relu. Score-CAM scores only the 64
channels whose activation varies most there (`max_channels`, Faster Score-CAM): full Score-CAM would
score all 1280 at every depth. Prints each table (the one `camcli evaluate --sanity` prints) and the
seconds each took. The paper's ordering: Grad-CAM's maps lose their rank correlation with the trained
model's as the layers are randomised, guided backpropagation's keep much of it.

    python benchmarks/sanity.py                     # both models, a few minutes on 2 cores
    python benchmarks/sanity.py --only demo
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from scorecam_channels import REPO, SHARED, WEIGHTS, keras_home

METHODS = ["gradcam", "gradcam++", "scorecam", "guidedbackprop", "guidedgradcam"]
MOBILENET_CHANNELS = 64


def write_scenes(folder: Path, count: int, seed: int) -> Path:
    from camcli.models.demo.scenes import make_dataset

    folder.mkdir(parents=True, exist_ok=True)
    images, _, _ = make_dataset(count, seed)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"scene{i:02d}.png")
    return folder


def run(title: str, paths, **options) -> None:
    import camcli
    from camcli.audit.sanity import format_sanity_table

    started = time.perf_counter()
    report = camcli.sanity_paths(paths, out=None, methods=METHODS, **options)
    print(f"== {title}")
    print(format_sanity_table(report))
    print(f"elapsed: {time.perf_counter() - started:.1f} s\n", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-images", type=int, default=16, help="generated scenes (default: %(default)s)")
    parser.add_argument("--photos", type=int, default=8, help="photos at most (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=7000, help="the scenes' seed (default: %(default)s)")
    parser.add_argument("--only", choices=("demo", "mobilenetv2"), help="one model only")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    real_weights = (SHARED / "imagenet" / WEIGHTS).is_file()
    if real_weights:
        keras_home()  # before Keras is imported: it reads KERAS_HOME once
        os.environ.setdefault("CAMCLI_OFFLINE", "1")
    if args.only != "mobilenetv2":
        with tempfile.TemporaryDirectory(prefix="camcli-sanity-") as tmp:
            scenes = write_scenes(Path(tmp) / "scenes", args.demo_images, args.seed)
            run(f"demo, {args.demo_images} generated scenes (seed {args.seed})", [scenes], model="demo",
                images=args.demo_images)
    if args.only != "demo":
        if not real_weights:
            print(f"MobileNetV2 skipped: no ImageNet weights at {SHARED / 'imagenet'}")
            return 0
        photos = sorted(p for p in (SHARED / "photos").iterdir() if p.suffix.lower() in (".png", ".jpg"))
        run(f"mobilenetv2 (ImageNet weights), {min(len(photos), args.photos)} photos of {SHARED / 'photos'}; "
            f"scorecam with max_channels={MOBILENET_CHANNELS}", photos[:args.photos], model="mobilenetv2",
            images=args.photos, max_channels=MOBILENET_CHANNELS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
