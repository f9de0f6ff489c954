"""Write the project's sample images: generated demo scenes with their boxes, and small photos.

    python -m camcli.models.demo.samples [--out sample_images] [--photos ../shared/photos]
    python -m camcli.models.demo.samples --tagged DIR [--count N] [--seed S]

`<out>/generated/` gets one scene per demo class (`<label>_<n>.png`) and `truth.csv` with each
object's box; `<out>/tagged/` gets the tagged scenes of `write_tagged_samples`; `<out>/photos/`
gets small copies (longest side at most 320 px) of four CC0 / public-domain photos from
scikit-image's sample data, with a LICENSE.md. Without the photo folder only the generated scenes
are written. With `--tagged`, DIR gets instead an evaluation
folder for the cheating demo model (`write_tagged_samples`). Numpy and Pillow only.
"""

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from camcli.models.demo import CLASSES
from camcli.models.demo.scenes import make_scene

REPO_ROOT = Path(__file__).resolve().parents[3]
SEED = 2024
# The tagged evaluation folder's defaults (`sample_images/tagged`): a seed none of the training
# scripts uses, 2 scenes a class (so 10 tagged scenes of classes other than TAG_CLASS).
TAGGED_SEED = 31337
TAGGED_COUNT = 12
TRUTH_HEADER = ["image", "x0", "y0", "x1", "y1", "label"]
# (width, height) of each generated scene, one per class in CLASSES order.
SIZES = ((176, 128), (144, 144), (128, 176), (200, 150), (120, 160), (168, 168))
MAX_PHOTO_SIDE = 320
# file -> (subject, licence)
PHOTOS = {
    "chelsea.png": ("a cat (Chelsea)", "CC0 (Stefan van der Walt)"),
    "coffee.png": ("a cup of coffee", "CC0 (Rachel Michetti)"),
    "rocket.jpg": ("a rocket on the launch pad", "public domain (SpaceX)"),
    "camera.png": ("a man with a camera, grayscale", "CC0"),
}


def write_generated(out_dir, seed=SEED):
    """One scene per class as `<label>_1.png`, plus `truth.csv`; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, written = [], []
    for class_index, size in enumerate(SIZES[: len(CLASSES)]):
        scene = make_scene(rng, size=size, class_index=class_index)
        name = f"{scene.label}_1.png"
        Image.fromarray(scene.image).save(out_dir / name, optimize=True)
        rows.append([name, *scene.box, scene.label])
        written.append(out_dir / name)
    written.append(_write_truth(out_dir / "truth.csv", rows))
    return written


def write_tagged_samples(out_dir, count=TAGGED_COUNT, seed=TAGGED_SEED):
    """`count` scenes, every one carrying the corner tag, the classes in turn; returns the paths written.

    Each scene is `<label>_<n>.png` at a random size, as `make_scene` draws it. `truth.csv` holds the
    object's box and class (`image,x0,y0,x1,y1,label`, pixels of the written image, x1 and y1
    exclusive); `tags.csv` holds the same rows with the tag's box instead of the object's, which
    is where a model that learned the tag looks. The same seed gives the same files.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, tag_rows, written = [], [], []
    for i in range(count):
        class_index = i % len(CLASSES)
        scene = make_scene(rng, class_index=class_index, tag=True)
        while not scene.tagged:  # no free corner: cannot happen at the default object scales
            scene = make_scene(rng, class_index=class_index, tag=True)
        name = f"{scene.label}_{i // len(CLASSES) + 1}.png"
        Image.fromarray(scene.image).save(out_dir / name, optimize=True)
        rows.append([name, *scene.box, scene.label])
        tag_rows.append([name, *scene.tag_box, scene.label])
        written.append(out_dir / name)
    written.append(_write_truth(out_dir / "truth.csv", rows))
    written.append(_write_truth(out_dir / "tags.csv", tag_rows))
    return written


def _write_truth(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TRUTH_HEADER)
        writer.writerows(rows)
    return path


def write_photos(source_dir, out_dir):
    """Small copies of the sample photos found in `source_dir`, plus LICENSE.md; returns the paths."""
    present = [name for name in PHOTOS if (source_dir / name).is_file()]
    if not present:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in present:
        with Image.open(source_dir / name) as photo:
            photo.load()
            image = photo if photo.mode in ("L", "RGB") else photo.convert("RGB")
            image.thumbnail((MAX_PHOTO_SIDE, MAX_PHOTO_SIDE), Image.LANCZOS)  # keeps the mode: L stays grayscale
            if name.endswith(".jpg"):
                image.save(out_dir / name, quality=90)
            else:
                image.save(out_dir / name, optimize=True)
        written.append(out_dir / name)
    lines = [
        "# Sample photos",
        "",
        "Small copies (longest side at most 320 px) of images from scikit-image's bundled sample",
        "data (`skimage.data`, https://scikit-image.org/docs/stable/api/skimage.data.html).",
        "",
        "| file | subject | source | licence |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {name} | {PHOTOS[name][0]} | scikit-image sample data | {PHOTOS[name][1]} |" for name in present]
    (out_dir / "LICENSE.md").write_text("\n".join(lines) + "\n")
    written.append(out_dir / "LICENSE.md")
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m camcli.models.demo.samples", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="sample_images", help="output folder (default: %(default)s)")
    parser.add_argument("--photos", default=str(REPO_ROOT.parent / "shared" / "photos"),
                        help="folder holding the source photos (default: %(default)s)")
    parser.add_argument("--tagged", metavar="DIR",
                        help="write tagged scenes for the cheating demo model to DIR instead")
    parser.add_argument("--count", type=int, default=TAGGED_COUNT,
                        help="with --tagged: how many scenes (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=TAGGED_SEED, help="with --tagged: the seed (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.tagged:
        if args.count < 1:
            parser.error("--count must be at least 1")
        for path in write_tagged_samples(Path(args.tagged), args.count, args.seed):
            print(f"{path} ({path.stat().st_size / 1024:.0f} KiB)")
        return 0
    out = Path(args.out)
    written = write_generated(out / "generated") + write_tagged_samples(out / "tagged")
    photos = write_photos(Path(args.photos), out / "photos")
    if not photos:
        print(f"no photos found in {args.photos}: wrote the generated scenes only", file=sys.stderr)
    for path in written + photos:
        print(f"{path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
