"""The embedded demo model: its scene generator, its architecture and its shipped weights."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from camcli.errors import ModelLoadError
from camcli.models.demo import CLASSES, INPUT_SIZE, LAST_CONV_LAYER, PREPROCESS, WEIGHTS_PATH
from camcli.models.demo.scenes import _draw_shape, _mask_box, make_dataset, make_scene

# Not used by `python -m camcli.models.demo.train` (seeds 0, 1 and 1000 by default).
FRESH_SEED = 987654


@pytest.fixture(scope="module")
def demo_model():
    from camcli.models.demo.model import load_demo_model

    return load_demo_model()


@pytest.mark.slow
def test_constants_are_importable_without_tensorflow():
    code = ("import sys, camcli.models.demo, camcli.models.demo.scenes; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
    assert PREPROCESS == "scale01"
    assert WEIGHTS_PATH.name == "demo.weights.h5"
    assert len(set(CLASSES)) == len(CLASSES) and 5 <= len(CLASSES) <= 6


def test_same_seed_gives_identical_scenes():
    first = make_dataset(12, seed=5)
    second = make_dataset(12, seed=5)
    other = make_dataset(12, seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(first[0], second[0], strict=True))
    assert np.array_equal(first[1], second[1]) and np.array_equal(first[2], second[2])
    assert not all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(first[0], other[0], strict=True))


@pytest.mark.parametrize(
    ("size", "expected_shape"),
    [(64, (64, 64, 3)), ((200, 120), (120, 200, 3)), ((400, 350), (350, 400, 3))],
)
def test_make_scene_size(size, expected_shape):
    scene = make_scene(np.random.default_rng(0), size=size)
    assert scene.image.shape == expected_shape and scene.image.dtype == np.uint8


def test_too_small_scene_is_refused():
    with pytest.raises(ValueError, match="at least 32 pixels"):
        make_scene(np.random.default_rng(0), size=(100, 20))


def test_default_scene_sizes_vary_and_are_not_all_square():
    shapes = {make_scene(np.random.default_rng(seed)).image.shape for seed in range(20)}
    assert len(shapes) > 10
    assert any(h != w for h, w, _ in shapes)
    assert all(96 <= h <= 320 and 96 <= w <= 320 for h, w, _ in shapes)


def test_boxes_lie_inside_the_image_and_label_matches_class():
    rng = np.random.default_rng(1)
    for _ in range(60):
        scene = make_scene(rng)
        height, width = scene.image.shape[:2]
        x0, y0, x1, y1 = scene.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        short = min(width, height)
        assert 0.15 * short <= max(x1 - x0, y1 - y0) <= 0.65 * short + 2
        assert scene.label == CLASSES[scene.class_index]


@pytest.mark.parametrize("label", CLASSES)
def test_box_is_the_tight_box_of_the_drawn_object(label):
    rng = np.random.default_rng(2)
    for _ in range(10):
        mask = Image.new("L", (160, 120), 0)
        cx, cy, radius, angle = rng.uniform(50, 110), rng.uniform(40, 80), rng.uniform(12, 38), rng.uniform(0, 6.3)
        _draw_shape(ImageDraw.Draw(mask), label, cx, cy, radius, angle, rng)
        pixels = np.asarray(mask) > 0
        x0, y0, x1, y1 = _mask_box(pixels)
        inside = np.zeros_like(pixels)
        inside[y0:y1, x0:x1] = True
        assert pixels.any() and not (pixels & ~inside).any()  # every object pixel is in the box
        # ... and the box is tight: each edge row/column holds an object pixel.
        assert pixels[y0].any() and pixels[y1 - 1].any() and pixels[:, x0].any() and pixels[:, x1 - 1].any()


def test_object_stands_out_from_the_background_around_its_box():
    # The object's colour is chosen far from the local background and distractors stay off the
    # box, so a filled square's centre differs from the pixels just outside the box.
    rng = np.random.default_rng(3)
    for _ in range(20):
        scene = make_scene(rng, class_index=CLASSES.index("square"))
        image = scene.image.astype(float)
        x0, y0, x1, y1 = scene.box
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        centre = image[cy - 1:cy + 2, cx - 1:cx + 2].reshape(-1, 3).mean(axis=0)
        height, width = image.shape[:2]
        around = [image[y, x0:x1] for y in (y0 - 1, y1) if 0 <= y < height]
        around += [image[y0:y1, x] for x in (x0 - 1, x1) if 0 <= x < width]
        background = np.median(np.concatenate(around), axis=0)
        assert np.linalg.norm(centre - background) > 60


@pytest.mark.parametrize("n", [60, 61, 65])
def test_make_dataset_balances_classes(n):
    _, labels, boxes = make_dataset(n, seed=4, size=64)
    counts = np.bincount(labels, minlength=len(CLASSES))
    assert counts.sum() == n and counts.max() - counts.min() <= 1
    assert boxes.shape == (n, 4)


def test_make_dataset_resizes_images_and_boxes():
    images, labels, boxes = make_dataset(8, seed=5, out_size=INPUT_SIZE)
    assert images.shape == (8, INPUT_SIZE, INPUT_SIZE, 3) and images.dtype == np.uint8
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= INPUT_SIZE).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()


def test_samples_write_one_scene_per_class_and_their_boxes(tmp_path):
    import csv

    from camcli.models.demo.samples import write_generated, write_photos

    write_generated(tmp_path / "generated")
    with open(tmp_path / "generated" / "truth.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["image", "x0", "y0", "x1", "y1", "label"]
    assert sorted(row[5] for row in rows[1:]) == sorted(CLASSES)
    for name, x0, y0, x1, y1, label in rows[1:]:
        assert name.startswith(f"{label}_") and name.endswith(".png")
        width, height = Image.open(tmp_path / "generated" / name).size
        assert 0 <= int(x0) < int(x1) <= width and 0 <= int(y0) < int(y1) <= height
    assert write_photos(tmp_path / "no-such-folder", tmp_path / "photos") == []
    assert not (tmp_path / "photos").exists()


def test_build_demo_model_has_a_cam_head():
    import keras

    from camcli.models.demo.model import build_demo_model

    model = build_demo_model()
    assert model.input_shape == (None, INPUT_SIZE, INPUT_SIZE, 3)
    assert model.output_shape == (None, len(CLASSES))
    head, gap = model.layers[-1], model.layers[-2]
    assert head.name == "predictions" and isinstance(head, keras.layers.Dense)
    assert isinstance(gap, keras.layers.GlobalAveragePooling2D)
    last_conv = model.get_layer(LAST_CONV_LAYER)
    assert isinstance(last_conv, keras.layers.Conv2D)
    assert gap.input is last_conv.output  # the last conv feeds the GAP directly: CAM applies
    assert last_conv.output.shape[1:3] == (INPUT_SIZE // 8, INPUT_SIZE // 8)


def test_weights_file_is_shipped_and_small():
    assert WEIGHTS_PATH.is_file()
    assert WEIGHTS_PATH.stat().st_size < 2 * 1024 * 1024


def test_missing_weights_raise_model_load_error(tmp_path):
    from camcli.models.demo.model import load_demo_model

    missing = tmp_path / "demo.weights.h5"
    with pytest.raises(ModelLoadError, match=r"demo weights missing at .*: run `make demo-model`"):
        load_demo_model(missing)


def test_demo_model_classifies_fresh_scenes(demo_model):
    images, labels, _ = make_dataset(10, seed=FRESH_SEED, out_size=INPUT_SIZE)
    predicted = demo_model.predict(images.astype(np.float32) / 255.0, verbose=0).argmax(axis=1)
    assert (predicted == labels).sum() >= 9
