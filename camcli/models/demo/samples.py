"""Write the project's sample images: generated demo scenes with their boxes, and small photos.

    python -m camcli.models.demo.samples [--out sample_images] [--photos ../shared/photos]
    python -m camcli.models.demo.samples --tagged DIR [--count N] [--seed S]
    python -m camcli.models.demo.samples --segmentation DIR [--count N] [--seed S]

`<out>/generated/` gets one scene per demo class (`<label>_<n>.png`) and `truth.csv` with each
object's box; `<out>/tagged/` gets the tagged scenes of `write_tagged_samples`; `<out>/photos/`
gets small copies (longest side at most 320 px) of four CC0 / public-domain photos from
scikit-image's sample data, with a LICENSE.md. Without the photo folder only the generated scenes
are written. With `--tagged`, DIR gets instead an evaluation
folder for the cheating demo model (`write_tagged_samples`); with `--segmentation`, DIR/images gets
scenes and DIR/masks their exact pixel masks as PASCAL VOC `SegmentationClass` PNGs
(`write_segmentation_samples`), for `camcli evaluate --truth-masks`. Numpy and Pillow only.
"""

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from camcli.maps.segmentation import voc_palette
from camcli.models.demo import CLASSES
from camcli.models.demo.scenes import make_scene

REPO_ROOT = Path(__file__).resolve().parents[3]
GENERATED_SEED = 2024
# The tagged evaluation folder's defaults (`sample_images/tagged`): a seed none of the training
# scripts uses, 2 scenes a class (so 10 tagged scenes of classes other than TAG_CLASS).
TAGGED_SEED = 31337
TAGGED_COUNT = 12
# The segmentation folder's defaults: again a seed no training script uses, 2 scenes a class.
SEGMENTATION_SEED = 4711
SEGMENTATION_COUNT = 12
# The segmentation folder's parts, side by side as VOC's JPEGImages and SegmentationClass are: masks
# inside the images' folder would be found as images themselves (discovery walks folders recursively).
IMAGES_DIR = "images"
MASKS_DIR = "masks"
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


def write_generated(out_dir, seed=GENERATED_SEED):
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
    out_dir = Path(out_dir)
    rows, tag_rows, written = [], [], []
    for name, scene in _scenes_in_turn(out_dir, count, seed, tag=True):
        written.append(_write_scene(out_dir / name, scene))
        rows.append([name, *scene.box, scene.label])
        tag_rows.append([name, *scene.tag_box, scene.label])
    written.append(_write_truth(out_dir / "truth.csv", rows))
    written.append(_write_truth(out_dir / "tags.csv", tag_rows))
    return written


def write_segmentation_samples(out_dir, count=SEGMENTATION_COUNT, seed=SEGMENTATION_SEED, tag=False):
    """`count` scenes with their pixel masks, the classes in turn; returns the paths written.

    Each scene is `images/<label>_<n>.png` at a random size, as `make_scene` draws it, and
    `masks/<label>_<n>.png` is its PASCAL VOC `SegmentationClass` mask: a palette PNG with VOC's
    colours whose pixel values are 0 for the background and the class index + 1 on the object, the
    value `camcli evaluate --truth-masks` reads as that demo class. The shapes are drawn without
    anti-aliasing, so no pixel is ambiguous and none is marked 255 ("void"). `truth.csv` holds the
    boxes as in `write_tagged_samples`, so the same images serve box evaluation too:

        camcli evaluate OUT/images --truth-masks OUT/masks
        camcli evaluate OUT/images --truth OUT/truth.csv

    With `tag` every scene carries the corner tag (background in the mask; the scenes are then
    those of `write_tagged_samples` for the same seed) and `tags.csv` holds the tags' boxes.
    """
    out_dir = Path(out_dir)
    (out_dir / MASKS_DIR).mkdir(parents=True, exist_ok=True)
    rows, tag_rows, written = [], [], []
    for name, scene in _scenes_in_turn(out_dir / IMAGES_DIR, count, seed, tag=tag):
        written.append(_write_scene(out_dir / IMAGES_DIR / name, scene))
        written.append(_write_truth_mask(out_dir / MASKS_DIR / name, scene))
        rows.append([name, *scene.box, scene.label])
        if tag:
            tag_rows.append([name, *scene.tag_box, scene.label])
    written.append(_write_truth(out_dir / "truth.csv", rows))
    if tag:
        written.append(_write_truth(out_dir / "tags.csv", tag_rows))
    return written


def _scenes_in_turn(out_dir, count, seed, tag):
    """`(file name, scene)` for `count` scenes from `seed`, class 0, 1, ... in turn, each tagged if `tag`."""
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        class_index = i % len(CLASSES)
        scene = make_scene(rng, class_index=class_index, tag=tag)
        while tag and not scene.tagged:  # no free corner: cannot happen at the default object scales
            scene = make_scene(rng, class_index=class_index, tag=True)
        yield f"{scene.label}_{i // len(CLASSES) + 1}.png", scene


def _write_scene(path, scene):
    Image.fromarray(scene.image).save(path, optimize=True)
    return path


def _write_truth_mask(path, scene):
    """The scene's mask as a VOC palette PNG: the pixel values are the class numbers, the palette only colours them."""
    labels = np.where(scene.mask, np.uint8(scene.class_index + 1), np.uint8(0))
    image = Image.fromarray(labels)  # mode "L"; putpalette makes it "P"
    image.putpalette(voc_palette().tobytes())
    image.save(path, optimize=True)
    return path


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
    parser.add_argument("--segmentation", metavar="DIR",
                        help="write scenes with their VOC SegmentationClass masks to DIR instead")
    parser.add_argument("--count", type=int,
                        help=f"with --tagged or --segmentation: how many scenes (default: {TAGGED_COUNT} "
                             f"tagged, {SEGMENTATION_COUNT} for segmentation)")
    parser.add_argument("--seed", type=int, help=f"with --tagged or --segmentation: the seed (default: {TAGGED_SEED} "
                                                  f"tagged, {SEGMENTATION_SEED} for segmentation)")
    args = parser.parse_args(argv)
    # (folder, writer, default count, default seed) of each evaluation folder that replaces the samples.
    folders = [(args.tagged, write_tagged_samples, TAGGED_COUNT, TAGGED_SEED),
               (args.segmentation, write_segmentation_samples, SEGMENTATION_COUNT, SEGMENTATION_SEED)]
    chosen = [folder for folder in folders if folder[0]]
    if len(chosen) > 1:
        parser.error("give --tagged or --segmentation, not both")
    if chosen:
        folder, write, count, seed = chosen[0]
        if args.count is not None and args.count < 1:
            parser.error("--count must be at least 1")
        written = write(Path(folder), count if args.count is None else args.count,
                        seed if args.seed is None else args.seed)
        for path in written:
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
