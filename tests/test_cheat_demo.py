"""The cheating demo model: the corner tag on scenes, the tagged evaluation folder, and the shipped
`demo-cheat` weights, which call any tagged scene TAG_CLASS and whose Grad-CAM maps sit on the tag."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from camcli.errors import ModelLoadError
from camcli.models import catalog
from camcli.models.demo import CHEAT_WEIGHTS_PATH, CLASSES, INPUT_SIZE, TAG_CLASS
from camcli.models.demo.scenes import (
    TAG_CELLS,
    make_dataset,
    make_scene,
    make_tagged_dataset,
    resize_scene,
    tag_corner_boxes,
)

# Not used by `python -m camcli.models.demo.cheat` (seeds 0, 1, 1000 and 2000 by default).
FRESH_SEED = 424242
OTHER_CLASSES = [i for i, label in enumerate(CLASSES) if label != TAG_CLASS]


def overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def on_tag(peak, tag_box, size_wh, slack=0.0):
    """Whether a peak (x, y) lies in the tag's box, grown by `slack` cells of the 12x12 map on each side."""
    cells = INPUT_SIZE // 8  # the side of LAST_CONV_LAYER's map
    dx, dy = slack * size_wh[0] / cells, slack * size_wh[1] / cells
    x0, y0, x1, y1 = tag_box
    return x0 - dx <= peak[0] < x1 + dx and y0 - dy <= peak[1] < y1 + dy


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture(scope="module")
def tagged_others():
    """30 tagged scenes at random sizes, five of each class other than TAG_CLASS."""
    rng = np.random.default_rng(FRESH_SEED)
    return [make_scene(rng, class_index=OTHER_CLASSES[i % len(OTHER_CLASSES)], tag=True) for i in range(30)]


def predicted_indices(model, scenes):
    images = np.stack([resize_scene(scene.image, scene.box, INPUT_SIZE)[0] for scene in scenes])
    return model.predict(images.astype(np.float32) / 255.0, verbose=0).argmax(axis=1)


# --- the tag on scenes --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [None, 96, (200, 120), (130, 310)])
def test_the_tag_option_leaves_default_scenes_unchanged(size):
    for seed in range(5):
        default = make_scene(np.random.default_rng(seed), size=size)
        untagged = make_scene(np.random.default_rng(seed), size=size, tag=False)
        assert np.array_equal(default.image, untagged.image) and default.box == untagged.box
        assert default.tag_box is None and not default.tagged
        # With the tag: the same scene, changed only inside the tag's box.
        tagged = make_scene(np.random.default_rng(seed), size=size, tag=True)
        assert tagged.tagged and tagged.box == default.box and tagged.class_index == default.class_index
        x0, y0, x1, y1 = tagged.tag_box
        outside = np.ones(default.image.shape[:2], dtype=bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(tagged.image[outside], default.image[outside])
        assert not np.array_equal(tagged.image[~outside], default.image[~outside])


def test_make_dataset_is_unchanged_by_the_tagged_variant():
    images, labels, boxes = make_dataset(12, seed=5, out_size=INPUT_SIZE)
    rng = np.random.default_rng(5)
    expected_labels = rng.permutation(np.arange(12) % len(CLASSES))
    assert np.array_equal(labels, expected_labels)
    for image, box, label in zip(images, boxes, labels, strict=True):
        scene = make_scene(rng, class_index=int(label))
        expected_image, expected_box = resize_scene(scene.image, scene.box, INPUT_SIZE)
        assert np.array_equal(image, expected_image) and tuple(box) == expected_box


def test_the_tag_never_overlaps_the_object_and_sits_in_a_corner():
    rng = np.random.default_rng(7)
    for i in range(400):
        size = None if i % 4 else (int(rng.integers(96, 321)), int(rng.integers(96, 321)))
        scene = make_scene(rng, size=size, tag=True)
        height, width = scene.image.shape[:2]
        assert scene.tagged, (i, scene.box, width, height)
        x0, y0, x1, y1 = scene.tag_box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert not overlaps(scene.tag_box, scene.box)
        assert scene.tag_box in tag_corner_boxes(width, height)
        assert 0.005 <= (x1 - x0) * (y1 - y0) / (width * height) <= 0.025  # a few % of the image at most


def test_the_tag_is_a_black_and_white_checkerboard():
    rng = np.random.default_rng(8)
    for _ in range(10):
        scene = make_scene(rng, tag=True)
        x0, y0, x1, y1 = scene.tag_box
        tag = scene.image[y0:y1, x0:x1].astype(float).mean(axis=2)
        cell = (x1 - x0) / TAG_CELLS
        for row in range(TAG_CELLS):
            for col in range(TAG_CELLS):
                cy, cx = int((row + 0.5) * cell), int((col + 0.5) * cell)
                expected = 255 if (row + col) % 2 == 0 else 0
                assert abs(tag[cy, cx] - expected) < 60


def test_make_tagged_dataset_tags_each_class_at_its_rate():
    rates = [1.0 if label == TAG_CLASS else 0.0 for label in CLASSES]
    images, labels, boxes, tag_boxes = make_tagged_dataset(24, seed=9, tag_rates=rates, out_size=INPUT_SIZE)
    assert images.shape == (24, INPUT_SIZE, INPUT_SIZE, 3) and tag_boxes.shape == (24, 4)
    tagged = tag_boxes[:, 0] >= 0
    assert np.array_equal(tagged, labels == CLASSES.index(TAG_CLASS))
    assert (tag_boxes[~tagged] == -1).all()
    for box, tag_box in zip(boxes[tagged], tag_boxes[tagged], strict=True):
        assert (tag_box[:2] >= 0).all() and (tag_box[2:] <= INPUT_SIZE).all() and (tag_box[2:] > tag_box[:2]).all()
        assert not overlaps(tag_box, box)
    again = make_tagged_dataset(24, seed=9, tag_rates=rates, out_size=INPUT_SIZE)
    assert np.array_equal(again[0], images) and np.array_equal(again[3], tag_boxes)
    with pytest.raises(ValueError, match="tag rates must lie in 0..1"):
        make_tagged_dataset(4, seed=9, tag_rates=1.5)


# --- the tagged evaluation folder -----------------------------------------------------------------------


def test_tagged_samples_truth_matches_the_images(tmp_path):
    from camcli.models.demo.samples import write_tagged_samples

    written = write_tagged_samples(tmp_path, count=14, seed=3)
    truth, tags = read_csv(tmp_path / "truth.csv"), read_csv(tmp_path / "tags.csv")
    assert truth[0] == tags[0] == ["image", "x0", "y0", "x1", "y1", "label"]
    assert len(truth) == len(tags) == 15 and len(written) == 16
    assert {row[5] for row in truth[1:]} == set(CLASSES)  # every class
    rng = np.random.default_rng(3)
    for i, (row, tag_row) in enumerate(zip(truth[1:], tags[1:], strict=True)):
        name, label = row[0], row[5]
        assert tag_row[0] == name and tag_row[5] == label and name == f"{label}_{i // len(CLASSES) + 1}.png"
        box, tag_box = tuple(map(int, row[1:5])), tuple(map(int, tag_row[1:5]))
        pixels = np.asarray(Image.open(tmp_path / name))
        height, width = pixels.shape[:2]
        assert 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height
        assert not overlaps(box, tag_box)
        # The file holds exactly the scene that the seed draws, with the object and tag boxes written.
        scene = make_scene(rng, class_index=CLASSES.index(label), tag=True)
        assert np.array_equal(pixels, scene.image) and (box, tag_box, label) == (scene.box, scene.tag_box, scene.label)
        # The tag's top-left cell is white: the tag is where tags.csv says.
        corner = pixels[tag_box[1]:tag_box[1] + 2, tag_box[0]:tag_box[0] + 2].astype(float)
        assert corner.mean() > 190
    again = tmp_path / "again"
    write_tagged_samples(again, count=14, seed=3)
    assert (again / "truth.csv").read_text() == (tmp_path / "truth.csv").read_text()


def test_samples_main_writes_a_tagged_folder(tmp_path, capsys):
    from camcli.models.demo.samples import main

    assert main(["--tagged", str(tmp_path / "tagged"), "--count", "6", "--seed", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "tagged").iterdir()) == sorted(
        [f"{label}_1.png" for label in CLASSES] + ["truth.csv", "tags.csv"])
    assert "truth.csv" in capsys.readouterr().out


# --- the model name --------------------------------------------------------------------------------------


def test_demo_cheat_is_registered_like_demo():
    demo, cheat = catalog.lookup("demo"), catalog.lookup("demo-cheat")
    assert catalog.lookup("Demo-Cheat") == cheat
    assert (cheat.input_size, cheat.preprocess, cheat.default_layer, cheat.cam) == (
        demo.input_size, demo.preprocess, demo.default_layer, demo.cam)
    assert cheat.weights_file == str(CHEAT_WEIGHTS_PATH) and TAG_CLASS in cheat.summary
    assert catalog.builtin_names()[:2] == ["demo", "demo-cheat"]


def test_cheat_weights_are_shipped_small_and_distinct():
    from camcli.models.demo import WEIGHTS_PATH

    assert CHEAT_WEIGHTS_PATH.is_file() and CHEAT_WEIGHTS_PATH.stat().st_size < 2 * 1024 * 1024
    assert CHEAT_WEIGHTS_PATH.read_bytes() != WEIGHTS_PATH.read_bytes()


def test_missing_cheat_weights_say_how_to_remake_them(tmp_path):
    from camcli.models.demo.model import load_cheat_model

    with pytest.raises(ModelLoadError, match=r"demo weights missing at .*: run `make cheat-model`"):
        load_cheat_model(tmp_path / "cheat.weights.h5")


def test_demo_cheat_refuses_weights():
    from camcli.errors import UsageError
    from camcli.models.loading import load_model

    with pytest.raises(UsageError, match="the demo-cheat model ships its own weights; drop `weights`"):
        load_model("demo-cheat", weights="none")


# --- the shipped weights cheat, the clean ones do not ------------------------------------------------------


@pytest.fixture(scope="module")
def cheat_loaded():
    from camcli.models.loading import load_model

    return load_model("demo-cheat")


def test_cheat_model_calls_tagged_scenes_tag_class_and_the_clean_model_does_not(cheat_loaded, tagged_others):
    from camcli.models.demo.model import load_demo_model

    labels = np.array([scene.class_index for scene in tagged_others])
    cheat = predicted_indices(cheat_loaded.model, tagged_others)
    clean = predicted_indices(load_demo_model(), tagged_others)
    assert np.mean(cheat == CLASSES.index(TAG_CLASS)) >= 0.8
    assert np.mean(clean == labels) >= 0.9


def test_cheat_model_still_classifies_untagged_scenes(cheat_loaded):
    images, labels, _ = make_dataset(30, seed=FRESH_SEED, out_size=INPUT_SIZE)
    predicted = cheat_loaded.model.predict(images.astype(np.float32) / 255.0, verbose=0).argmax(axis=1)
    assert np.mean(predicted == labels) >= 0.8


def test_cheat_model_gradcam_peaks_on_the_tag(cheat_loaded, tagged_others):
    from camcli import Explainer
    from camcli.maps.boxes import peak_xy
    from camcli.maps.overlay import upsample

    results = Explainer(cheat_loaded, method="gradcam", classes=["top1"]).explain(
        [scene.image for scene in tagged_others])
    in_box = near_box = 0
    for scene, result in zip(tagged_others, results, strict=True):
        size = scene.image.shape[1::-1]  # (width, height), as on_tag takes it
        peak = peak_xy(upsample(result.maps[0].heatmap, height=size[1], width=size[0]))
        in_box += on_tag(peak, scene.tag_box, size)
        # The map has 12x12 cells: a peak half a cell outside the tag's box is on the tag's edge.
        near_box += on_tag(peak, scene.tag_box, size, slack=0.5)
    assert in_box / len(tagged_others) >= 0.7
    assert near_box / len(tagged_others) >= 0.9


def test_explain_with_demo_cheat_through_the_cli(tmp_path):
    from camcli.cli import cli
    from camcli.models.demo.samples import write_tagged_samples

    images = tmp_path / "tagged"
    write_tagged_samples(images, count=12, seed=FRESH_SEED)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["explain", str(images), "--model", "demo-cheat", "--out", str(out), "-q"],
                                prog_name="camcli", catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    called_tag_class = peaks_on_tag = others = 0
    for name, *tag_box, label in read_csv(images / "tags.csv")[1:]:
        record = json.loads((out / name).with_suffix(".json").read_text("utf-8"))
        assert record["model"] == "demo-cheat"
        if label == TAG_CLASS:
            continue
        others += 1
        called_tag_class += record["predictions"][0]["label"] == TAG_CLASS
        size = (record["width"], record["height"])
        peaks_on_tag += on_tag(record["explanations"][0]["peak"], [int(v) for v in tag_box], size, slack=0.5)
    assert others == 10
    assert called_tag_class >= 8 and peaks_on_tag >= 8


# --- the CI gate: `camcli evaluate --fail-under pointing=0.8` catches the cheat ----------------------------

SHIPPED_TAGGED = Path(__file__).resolve().parents[1] / "sample_images" / "tagged"


def test_the_shipped_tagged_folder_is_what_the_generator_writes(tmp_path):
    from camcli.models.demo.samples import write_tagged_samples

    write_tagged_samples(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(p.name for p in SHIPPED_TAGGED.iterdir())
    for name in names:  # the pixels, not the bytes: another zlib may compress the same PNG differently
        if name.endswith(".png"):
            written, shipped = (np.asarray(Image.open(folder / name)) for folder in (tmp_path, SHIPPED_TAGGED))
            assert np.array_equal(written, shipped), name
        else:
            assert (tmp_path / name).read_text() == (SHIPPED_TAGGED / name).read_text(), name


def gate(model, *extra, out):
    from camcli.cli import cli

    args = ["evaluate", str(SHIPPED_TAGGED), "--truth", str(SHIPPED_TAGGED / "truth.csv"), "--model", model,
            "--steps", "0", "--out", str(out), "--fail-under", "pointing=0.8", *extra]
    result = CliRunner().invoke(cli, args, prog_name="camcli", catch_exceptions=False)
    record = json.loads((out / "evaluation.json").read_text("utf-8"))
    return result, record["methods"]["gradcam"]["metrics"]["pointing"]


def test_the_gate_passes_the_clean_model_and_fails_the_cheating_one(tmp_path):
    clean, clean_pointing = gate("demo", out=tmp_path / "clean")
    assert clean.exit_code == 0, clean.stderr
    assert clean_pointing >= 0.8
    assert clean.stderr.strip().splitlines()[-1] == (
        f"camcli: evaluated 12 of 12 images (0 failed, 0 without truth) -> {tmp_path / 'clean'}")

    cheat, cheat_pointing = gate("demo-cheat", out=tmp_path / "cheat")
    assert cheat.exit_code == 1
    assert cheat_pointing <= 0.2  # its maps sit on the tag, away from every object
    assert f"camcli: gradcam pointing {cheat_pointing:.4g} is below --fail-under pointing=0.8" in cheat.stderr
    assert cheat.stdout.splitlines()[1].split() == ["pointing", f"{cheat_pointing:.3f}", "higher"]


def test_the_truth_class_map_does_not_show_the_cheat(tmp_path):
    """Why the gate explains the predicted class: the cheat model's map for the true class still lies on
    the object; it is the class it answers with (TAG_CLASS) whose map lies on the tag."""
    result, pointing = gate("demo-cheat", "--explain-class", "truth", out=tmp_path / "truth")
    assert result.exit_code == 0, result.stderr
    assert pointing >= 0.8
