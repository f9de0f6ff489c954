"""The demo scenes' exact pixel masks and the VOC segmentation folder written from them: the truth that
weakly supervised segmentation of the demo models is scored against. Numpy and Pillow only."""

import csv
import hashlib

import numpy as np
import pytest
from PIL import Image

from camcli.maps.segmentation import voc_palette
from camcli.models.demo import CLASSES
from camcli.models.demo.samples import main, write_segmentation_samples, write_tagged_samples
from camcli.models.demo.scenes import make_scene
from camcli.runs.label_files import read_palette_mask

# The sha256 of `make_scene(np.random.default_rng(5))` (and with tag=True), taken before scenes had
# masks: drawing the mask must not move any random draw.
SEED_5_SHA256 = "df7fc92f2eafc5276baeb4b94088e6d104041845db7b43cade202e7d97d1ffc4"
SEED_5_TAGGED_SHA256 = "c4ff0b9955a81e01f2601b096acab63e3db144eb38a2a923bc687362952a864f"


def mask_box(mask):
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_a_seed_draws_the_scene_it_drew_before_masks():
    plain = make_scene(np.random.default_rng(5))
    tagged = make_scene(np.random.default_rng(5), tag=True)
    assert hashlib.sha256(plain.image.tobytes()).hexdigest() == SEED_5_SHA256
    assert hashlib.sha256(tagged.image.tobytes()).hexdigest() == SEED_5_TAGGED_SHA256
    assert (plain.label, plain.box, plain.image.shape) == ("cross", (12, 91, 96, 176), (320, 246, 3))
    assert tagged.tag_box == (5, 5, 39, 39)


@pytest.mark.parametrize("class_index", range(len(CLASSES)))
def test_the_mask_covers_the_box_exactly(class_index):
    rng = np.random.default_rng(100 + class_index)
    for _ in range(3):
        scene = make_scene(rng, class_index=class_index)
        assert scene.mask.dtype == bool and scene.mask.shape == scene.image.shape[:2]
        assert mask_box(scene.mask) == scene.box


def test_the_mask_is_where_the_object_colour_is():
    """The object's pixels stand out from the background around them: the mask is the drawn shape."""
    scene = make_scene(np.random.default_rng(8), size=160, class_index=CLASSES.index("square"))
    x0, y0, x1, y1 = scene.box
    inside = scene.image[scene.mask].astype(float).mean(axis=0)
    ring = np.zeros_like(scene.mask)
    ring[max(0, y0 - 4):y1 + 4, max(0, x0 - 4):x1 + 4] = True
    ring[y0:y1, x0:x1] = False
    outside = scene.image[ring].astype(float).mean(axis=0)
    assert np.linalg.norm(inside - outside) > 60


def test_the_tag_is_background_in_the_mask():
    rng = np.random.default_rng(21)
    for i in range(12):
        scene = make_scene(rng, class_index=i % len(CLASSES), tag=True)
        assert scene.tagged
        x0, y0, x1, y1 = scene.tag_box
        assert not scene.mask[y0:y1, x0:x1].any()
        assert mask_box(scene.mask) == scene.box


def test_segmentation_samples_are_voc_masks_of_their_scenes(tmp_path):
    written = write_segmentation_samples(tmp_path, count=7, seed=3)
    names = [f"{label}_1.png" for label in CLASSES] + [f"{CLASSES[0]}_2.png"]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(names)
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == sorted(names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "masks", "truth.csv"]
    assert len(written) == 2 * 7 + 1 and all(path.is_file() for path in written)
    truth = read_rows(tmp_path / "truth.csv")
    assert truth[0] == ["image", "x0", "y0", "x1", "y1", "label"] and [row[0] for row in truth[1:]] == names
    palette = voc_palette()
    for name, *box, label in truth[1:]:
        pixels = np.asarray(Image.open(tmp_path / "images" / name))
        with Image.open(tmp_path / "masks" / name) as mask_image:
            assert mask_image.format == "PNG" and mask_image.mode == "P"
            assert np.array_equal(np.array(mask_image.getpalette(), np.uint8).reshape(-1, 3), palette)
        classes = read_palette_mask(tmp_path / "masks" / name)
        value = CLASSES.index(label) + 1
        assert classes.shape == pixels.shape[:2] and set(np.unique(classes).tolist()) == {0, value}
        assert mask_box(classes == value) == tuple(map(int, box))
    # The files hold exactly what the seed draws, class by class in turn.
    rng = np.random.default_rng(3)
    for i, name in enumerate(names):
        scene = make_scene(rng, class_index=i % len(CLASSES))
        assert np.array_equal(np.asarray(Image.open(tmp_path / "images" / name)), scene.image)
        assert np.array_equal(read_palette_mask(tmp_path / "masks" / name) > 0, scene.mask)


def test_tagged_segmentation_samples_are_the_tagged_scenes(tmp_path):
    written = write_segmentation_samples(tmp_path / "seg", count=6, seed=4, tag=True)
    write_tagged_samples(tmp_path / "tagged", count=6, seed=4)
    assert written[-2:] == [tmp_path / "seg" / "truth.csv", tmp_path / "seg" / "tags.csv"]
    for name in ("truth.csv", "tags.csv"):
        assert (tmp_path / "seg" / name).read_text() == (tmp_path / "tagged" / name).read_text()
    for name, x0, y0, x1, y1, _label in read_rows(tmp_path / "seg" / "tags.csv")[1:]:
        assert (tmp_path / "seg" / "images" / name).read_bytes() == (tmp_path / "tagged" / name).read_bytes()
        tag = read_palette_mask(tmp_path / "seg" / "masks" / name)[int(y0):int(y1), int(x0):int(x1)]
        assert not tag.any()


def test_segmentation_samples_need_a_scene(tmp_path):
    with pytest.raises(ValueError, match="count must be at least 1"):
        write_segmentation_samples(tmp_path, count=0)


def test_samples_main_writes_a_segmentation_folder(tmp_path, capsys):
    assert main(["--segmentation", str(tmp_path / "seg"), "--count", "6", "--seed", "1"]) == 0
    names = sorted(f"{label}_1.png" for label in CLASSES)
    assert sorted(p.name for p in (tmp_path / "seg" / "images").iterdir()) == names
    assert sorted(p.name for p in (tmp_path / "seg" / "masks").iterdir()) == names
    assert (tmp_path / "seg" / "truth.csv").is_file() and "truth.csv" in capsys.readouterr().out
    again = tmp_path / "again"
    write_segmentation_samples(again, count=6, seed=1)
    assert (again / "truth.csv").read_text() == (tmp_path / "seg" / "truth.csv").read_text()


def test_samples_main_takes_one_evaluation_folder(tmp_path):
    with pytest.raises(SystemExit):
        main(["--segmentation", str(tmp_path / "a"), "--tagged", str(tmp_path / "b")])
    with pytest.raises(SystemExit):
        main(["--segmentation", str(tmp_path / "a"), "--count", "0"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
