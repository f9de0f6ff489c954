"""The command line end to end, through Click: exit codes, messages, output files and JSON.

Every model is tiny, built in code once per module and saved to a temporary folder; images are a
few pixels wide. Nothing downloads (conftest sets CAMCLI_OFFLINE and an empty KERAS_HOME).
"""

import json
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tiny_models
from cli_helpers import invoke, only_line, read_json
from PIL import Image

from camcli import __version__
from camcli.errors import UsageError
from camcli.models import demo

LABELS = ["Cat", "Dog", "bird_of_prey"]


# --- helpers ---------------------------------------------------------------------------------------


def write_image(path, size=(20, 30), mode="RGB", seed=0):
    """A random image of `size` = (width, height) in Pillow `mode`, saved by extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode).save(path)
    return path


def model_input(path):
    """What camcli feeds an 8x8 model with --preprocess scale01: the image squashed to 8x8, /255."""
    rgb = Image.open(path).convert("RGB").resize((tiny_models.SIZE,) * 2, Image.Resampling.BILINEAR)
    return (np.asarray(rgb, dtype=np.float32) / 255.0)[np.newaxis]


def overlays(folder):
    """Overlays and other pictures camcli wrote: PNG for lossless inputs, JPEG for JPEG photos."""
    return sorted(p.relative_to(folder).as_posix() for pattern in ("*.png", "*.gradcam.*.jpg")
                  for p in folder.rglob(pattern))


# --- fixtures: models and images, built once per module -------------------------------------------


def _lambda_model():
    x = keras.Input((tiny_models.SIZE, tiny_models.SIZE, 3))
    y = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(y)
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    y = keras.layers.Dense(3, activation="softmax", name="head")(y)
    return keras.Model(x, y, name="with_lambda")


def _nested_model():
    inputs = keras.Input((tiny_models.SIZE, tiny_models.SIZE, 3))
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="bconv1")(inputs)
    y = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="bconv2")(y)
    backbone = keras.Model(inputs, y, name="backbone")
    model = keras.Sequential([
        keras.Input((tiny_models.SIZE, tiny_models.SIZE, 3)),
        backbone,
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(3, activation="softmax", name="head"),
    ], name="nested")
    return tiny_models._seeded(model, seed=4)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Paths (as str) of the saved models and the label files, plus the in-memory models by name."""
    folder = tmp_path_factory.mktemp("models")
    built = {
        "gap": tiny_models.gap_dense(),
        "flat": tiny_models.flatten_dense(),
        "binary": tiny_models.gap_dense(classes=1, activation="sigmoid", seed=2),
        "multilabel": tiny_models.gap_dense(classes=4, activation="sigmoid", seed=3),
        "lambda": _lambda_model(),
        "nested": _nested_model(),
    }
    paths = {name: str(folder / f"{name}.keras") for name in built}
    paths["gap_h5"] = str(folder / "gap.h5")
    with warnings.catch_warnings():  # Keras' own numpy-2 DeprecationWarning while saving: not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        for name, model in built.items():
            model.save(paths[name])
        built["gap"].save(paths["gap_h5"])
    paths["corrupt"] = str(folder / "model.keras")
    (folder / "model.keras").write_bytes(np.random.default_rng(0).bytes(2048))
    paths["missing"] = str(folder / "missing.keras")
    paths["labels"] = str(folder / "labels.txt")
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n", "utf-8")
    paths["labels2"] = str(folder / "two_labels.txt")
    (folder / "two_labels.txt").write_text("cat\ndog\n", "utf-8")
    paths["binary_labels"] = str(folder / "binary_labels.txt")
    (folder / "binary_labels.txt").write_text("negative\npositive\n", "utf-8")
    return {"path": paths, "model": built}


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """One 20x30 RGB image."""
    return write_image(tmp_path_factory.mktemp("one") / "img.png")


# --- 1. the output contract ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def contract(tmp_path_factory, models):
    """One run over a tree with RGB, greyscale and RGBA images and a README to ignore."""
    root = tmp_path_factory.mktemp("tree")
    write_image(root / "a" / "b" / "x.png", (20, 30), "RGB", seed=1)
    write_image(root / "grey.png", (30, 20), "L", seed=2)
    write_image(root / "c" / "alpha.png", (17, 11), "RGBA", seed=3)
    (root / "README.txt").write_text("not an image\n", "utf-8")
    out = tmp_path_factory.mktemp("contract_out")
    result = invoke("explain", root, "--model", models["path"]["gap"], "--labels", models["path"]["labels"],
                    "--save-heatmap", "--top-k", 2, "--out", out)
    return root, out, result


def test_run_over_a_tree_succeeds_and_ignores_non_images_silently(contract):
    root, out, result = contract
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "README" not in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("camcli: explained 3 of 3 images (0 failed) with gradcam at target in ")
    assert result.stderr.rstrip().endswith(f"-> {out}")


def test_output_files_mirror_the_input_tree(contract):
    root, out, _ = contract
    jsons = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    assert jsons == ["a/b/x.json", "c/alpha.json", "grey.json", "summary.json"]
    for stem in ("a/b/x", "c/alpha", "grey"):
        [explanation] = read_json(out / f"{stem}.json")["explanations"]
        index = explanation["class_index"]
        assert (out / f"{stem}.gradcam.{index}.png").is_file()
        assert (out / f"{stem}.gradcam.{index}.npy").is_file()
    assert len(overlays(out)) == 3
    assert len(list(out.rglob("*.npy"))) == 3


@pytest.mark.parametrize("stem, size", [("a/b/x", (20, 30)), ("grey", (30, 20)), ("c/alpha", (17, 11))])
def test_overlay_and_heatmap_have_the_original_size(contract, stem, size):
    _, out, _ = contract
    record = read_json(out / f"{stem}.json")
    assert (record["width"], record["height"]) == size
    [explanation] = record["explanations"]
    with Image.open(out / explanation["overlay"]) as overlay:
        assert overlay.size == size
        assert overlay.mode == "RGB"
    heatmap = np.load(out / explanation["heatmap"])
    assert heatmap.dtype == np.float32
    assert heatmap.shape == (size[1], size[0])
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    assert heatmap.max() > 0.0
    # The peak is the heatmap's hottest pixel (the first one, in row-major order), as [x, y].
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    assert explanation["peak"] == [int(x), int(y)]
    assert 0 <= explanation["peak"][0] < size[0] and 0 <= explanation["peak"][1] < size[1]


def test_image_json_record(contract, models):
    root, out, _ = contract
    record = read_json(out / "a" / "b" / "x.json")
    assert list(record) == ["image", "width", "height", "output_width", "output_height", "model", "layer", "layers",
                            "target", "precision", "predictions", "explanations", "camcli_version", "fingerprint"]
    assert record["target"] == {"kind": "class"}
    assert (record["output_width"], record["output_height"]) == (record["width"], record["height"])
    assert record["camcli_version"] == __version__
    assert record["fingerprint"] == read_json(out / "summary.json")["fingerprint"]
    assert record["fingerprint"].startswith("sha256:") and len(record["fingerprint"]) == len("sha256:") + 64
    assert record["image"] == str(root / "a" / "b" / "x.png")
    assert record["model"] == models["path"]["gap"]
    assert record["layer"] == "target"
    predictions = record["predictions"]
    assert len(predictions) == 2  # --top-k 2
    assert [p["rank"] for p in predictions] == [1, 2]
    assert all(set(p) == {"rank", "index", "label", "score"} for p in predictions)
    assert all(p["label"] == LABELS[p["index"]] for p in predictions)
    assert predictions[0]["score"] >= predictions[1]["score"]
    assert len({p["index"] for p in predictions}) == 2
    [explanation] = record["explanations"]
    top = predictions[0]
    assert explanation == {
        "method": "gradcam",
        "layer": "target",
        "layers": ["target"],
        "class_index": top["index"],
        "label": LABELS[top["index"]],
        "score": top["score"],
        "overlay": f"a/b/x.gradcam.{top['index']}.png",
        "heatmap": f"a/b/x.gradcam.{top['index']}.npy",
        "peak": explanation["peak"],
        "bbox": explanation["bbox"],
        "mask": None,
        "panel": None,
        "raw_max": explanation["raw_max"],
        "empty": False,
        "guided": False,
    }
    assert explanation["raw_max"] > 0.0
    heatmap = np.load(out / explanation["heatmap"])
    from camcli.maps.boxes import box_from_map

    assert explanation["bbox"] == list(box_from_map(heatmap, 0.2))  # the default --box-threshold
    x0, y0, x1, y1 = explanation["bbox"]
    assert 0 <= x0 < x1 <= record["width"] and 0 <= y0 < y1 <= record["height"]
    assert x0 <= explanation["peak"][0] < x1 and y0 <= explanation["peak"][1] < y1


def test_summary_json(contract, models):
    _, out, _ = contract
    summary = read_json(out / "summary.json")
    assert summary["images"] == 3
    assert summary["ok"] == 3
    assert summary["failed"] == 0
    assert summary["failures"] == []
    assert summary["model"] == models["path"]["gap"]
    assert summary["layer"] == "target"
    assert summary["method"] == "gradcam"
    assert summary["classes"] == ["top1"]
    assert summary["pretrained"] is True
    assert summary["camcli_version"] == __version__
    assert summary["images_per_second"] > 0
    assert "warning" not in summary


def test_heatmap_is_null_without_save_heatmap(models, image, tmp_path):
    result = invoke("explain", image, "--model", models["path"]["gap"], "--out", tmp_path, "--quiet")
    assert result.exit_code == 0
    [explanation] = read_json(tmp_path / "img.json")["explanations"]
    assert explanation["heatmap"] is None
    assert not list(tmp_path.rglob("*.npy"))


def test_alpha_zero_leaves_the_image_unchanged(models, image, tmp_path):
    result = invoke("explain", image, "--model", models["path"]["gap"], "--out", tmp_path, "--alpha", 0, "-q")
    assert result.exit_code == 0
    [explanation] = read_json(tmp_path / "img.json")["explanations"]
    original = np.asarray(Image.open(image).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / explanation["overlay"])), original)


def test_batch_size_does_not_change_the_results(models, contract, tmp_path):
    root = contract[0]
    records = []
    for batch_size in (1, 2):
        result = invoke("explain", root, "--model", models["path"]["gap"], "--labels", models["path"]["labels"],
                        "--top-k", 2, "--batch-size", batch_size, "--out", tmp_path / str(batch_size), "-q")
        assert result.exit_code == 0, result.stderr
        records.append({stem: read_json(tmp_path / str(batch_size) / f"{stem}.json")
                        for stem in ("a/b/x", "c/alpha", "grey")})
    for stem, record in records[0].items():
        # The same classes in the same order; scores within 1e-5 (a different batch shape may pick a
        # different kernel, whose float sums round differently in the last bits).
        assert_same_predictions(record["predictions"], records[1][stem]["predictions"])
        assert record["explanations"][0]["peak"] == records[1][stem]["explanations"][0]["peak"]
        # The contract run used the default batch size (8): all three images in one batch.
        assert_same_predictions(record["predictions"], read_json(contract[1] / f"{stem}.json")["predictions"])


def assert_same_predictions(first, second):
    assert [(p["rank"], p["index"], p["label"]) for p in first] == [(p["rank"], p["index"], p["label"]) for p in second]
    np.testing.assert_allclose([p["score"] for p in first], [p["score"] for p in second], rtol=0, atol=1e-5)


def test_legacy_h5_model_gives_the_same_results_as_keras_file(models, image, tmp_path):
    for name in ("gap", "gap_h5"):
        result = invoke("explain", image, "--model", models["path"][name], "--out", tmp_path / name, "-q",
                        "--save-heatmap", "--class", "0")
        assert result.exit_code == 0, result.stderr
    keras_record, h5_record = (read_json(tmp_path / name / "img.json") for name in ("gap", "gap_h5"))
    assert h5_record["model"].endswith("gap.h5")
    assert h5_record["predictions"] == keras_record["predictions"]
    np.testing.assert_allclose(np.load(tmp_path / "gap_h5" / "img.gradcam.0.npy"),
                               np.load(tmp_path / "gap" / "img.gradcam.0.npy"), atol=1e-6)


# --- 2. exit codes ----------------------------------------------------------------------------------


def test_one_bad_image_exits_1_and_the_others_are_written(models, tmp_path):
    root = tmp_path / "in"
    write_image(root / "good.png", seed=1)
    write_image(root / "sub" / "good2.jpg", (12, 9), seed=2)
    bad = root / "bad.jpg"
    bad.write_text("this is not a JPEG\n", "utf-8")
    out = tmp_path / "out"
    result = invoke("explain", root, "--model", models["path"]["gap"], "--out", out)
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    naming_bad = [line for line in result.stderr.splitlines() if "bad.jpg" in line]
    assert naming_bad == [f"camcli: failed: {bad}: not an image (content is text)"]
    assert "camcli: explained 2 of 3 images (1 failed)" in result.stderr
    assert (out / "good.json").is_file() and (out / "sub" / "good2.json").is_file()
    assert len(overlays(out)) == 2
    assert not (out / "bad.json").exists()
    summary = read_json(out / "summary.json")
    assert (summary["images"], summary["ok"], summary["failed"]) == (3, 2, 1)
    assert summary["failures"] == [{"image": str(bad), "error": "not an image (content is text)"}]


def test_a_missing_input_path_is_a_usage_error_before_the_model_loads(models, image, tmp_path):
    """A typo is told apart from a bad image (exit 2, not 1), at once, with nothing written."""
    missing = tmp_path / "nope.png"
    result = invoke("explain", image, missing, "--model", models["path"]["gap"], "--out", tmp_path / "out", "-q")
    assert result.exit_code == 2
    assert result.stderr == f"camcli: error: {missing} does not exist: check the path\n"
    assert not (tmp_path / "out").exists()


# Each case: explain one image with these arguments ({name} is a path from the `models` fixture);
# the command must exit 2 with exactly this one-line message (or one containing every fragment).
USAGE_ERRORS = [
    pytest.param(["--model", "{gap}", "--layer", "targt"],
                 "camcli: error: no layer named 'targt' in model 'gap_dense' (closest: target)", id="unknown-layer"),
    pytest.param(["--model", "{gap}", "--layer", "head"],
                 ("camcli: error: layer 'head' (Dense) has output shape (None, 3), not (batch, height, width, "
                  "channels) or (batch, tokens, dim): class activation maps need a spatial or token layer; try "
                  "'target'"), id="dense-layer"),
    pytest.param(["--model", "{gap}", "--labels", "{labels}", "--class", "cta"],
                 "camcli: error: unknown class 'cta' (closest: cat)", id="unknown-class-label"),
    pytest.param(["--model", "{gap}", "--class", "cat"],
                 ("camcli: error: unknown class 'cat': the model's classes have no names; give them with --labels "
                  "FILE (one name per line), or give a class index, 0 to 2"), id="unknown-class-no-labels"),
    pytest.param(["--model", "{gap}", "--class", "3"],
                 "camcli: error: --class 3 is out of range: class indices run from 0 to 2", id="class-index-range"),
    pytest.param(["--model", "{gap}", "--class", "-1"],
                 "camcli: error: --class -1 is out of range: class indices run from 0 to 2", id="class-negative"),
    pytest.param(["--model", "{gap}", "--class", "top4"],
                 "camcli: error: --class top4: the model has 3 classes, so use top1..top3", id="class-rank-range"),
    pytest.param(["--model", "{gap}", "--top-k", "0"],
                 "Error: Invalid value for '--top-k': 0 is not in the range x>=1.", id="top-k-0"),
    pytest.param(["--model", "{gap}", "--top-k", "4"],
                 "camcli: error: --top-k 4 is out of range: the model has 3 classes", id="top-k-too-large"),
    pytest.param(["--model", "{binary}", "--top-k", "3"],
                 "camcli: error: --top-k 3 is out of range: the model has 2 classes", id="top-k-binary"),
    pytest.param(["--model", "{gap}", "--alpha", "1.5"],
                 "Error: Invalid value for '--alpha': 1.5 is not in the range 0<=x<=1.", id="alpha"),
    pytest.param(["--model", "{gap}", "--batch-size", "0"],
                 "Error: Invalid value for '--batch-size': 0 is not in the range x>=1.", id="batch-size-0"),
    pytest.param(["--model", "{gap}", "--colormap", "viridiss"],
                 ("camcli: error: unknown colormap 'viridiss'; did you mean viridis", "(see `camcli explain --help`)"),
                 id="unknown-colormap"),
    pytest.param(["--model", "{gap}", "--method", "gradcm"],
                 ("Error: Invalid value for '--method': 'gradcm' is not one of 'gradcam', 'gradcam++', ",
                  "'guidedbackprop'"), id="unknown-method"),
    pytest.param(["--model", "{flat}", "--method", "cam"],
                 ("camcli: error: --method cam needs the layer to feed global-average-pooling -> dense, and 'target' "
                  "in {flat} does not; use --method gradcam, which works at any conv layer"), id="cam-without-gap"),
    pytest.param(["--model", "{nested}", "--method", "cam", "--layer", "backbone/bconv1"],
                 ("camcli: error: --method cam needs", "'backbone/bconv1'", "use --method gradcam"),
                 id="cam-at-inner-layer"),
    pytest.param(["--model", "vgg61"],
                 ("camcli: error: unknown model 'vgg61': did you mean ", "vgg16",
                  "use a name from `camcli models`, a .keras/.h5 file or hub:PRESET (KerasHub)"), id="unknown-model"),
    pytest.param(["--model", "{missing}"], "camcli: error: model file {missing} does not exist", id="missing-file"),
    pytest.param(["--model", "{corrupt}"], ("camcli: error: cannot load model {corrupt}: ",), id="corrupt-file"),
    pytest.param(["--model", "{gap}", "--weights", "{gap_h5}"],
                 "camcli: error: --weights applies to built-in models; a model file carries its own weights",
                 id="weights-with-model-file"),
    pytest.param(["--model", "vgg16"],
                 ("camcli: error: vgg16: ImageNet weights not found at ",
                  "/models/vgg16_weights_tf_dim_ordering_tf_kernels.h5", "CAMCLI_OFFLINE is set",
                  "pass --weights /path/to/vgg16_weights_tf_dim_ordering_tf_kernels.h5", "--weights none"),
                 id="vgg16-offline-no-cache"),
    pytest.param(["--model", "vgg16", "--weights", "/nonexistent.h5"],
                 ("camcli: error: weights file /nonexistent.h5 does not exist; give the path of a Keras .h5 "
                  "weights file for vgg16"), id="vgg16-missing-weights-file"),
    pytest.param(["--model", "vgg16", "--labels", "{labels}"],
                 "camcli: error: --preprocess and --labels apply to model files; 'vgg16' is built in",
                 id="labels-with-builtin"),
    pytest.param(["--model", "demo", "--weights", "none"],
                 "camcli: error: the demo model ships its own weights; drop --weights", id="weights-with-demo"),
    pytest.param(["--model", "{gap}", "--labels", "{labels2}"],
                 "camcli: error: {labels2} has 2 names but the model has 3 classes", id="labels-wrong-count"),
    pytest.param(["--model", "{lambda}"],
                 ("camcli: error: {lambda} contains code (e.g. a Lambda layer) that Keras will not run in safe mode; "
                  "if you trust this file, rerun with --unsafe-load"), id="lambda-safe-mode"),
]


@pytest.mark.parametrize("args, expected", USAGE_ERRORS)
def test_usage_errors_exit_2_with_one_line_and_write_nothing(models, image, tmp_path, args, expected):
    paths = models["path"]
    out = tmp_path / "out"
    result = invoke("explain", image, *(arg.format(**paths) for arg in args), "--out", out)
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    line = only_line(result, click_usage=True)
    if isinstance(expected, str):
        assert line == expected.format(**paths)
    else:
        for fragment in expected:
            assert fragment.format(**paths) in line
    assert not out.exists()  # usage errors are found before anything is written


def test_folder_without_images_is_a_usage_error(models, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "README.txt").write_text("hello\n", "utf-8")
    result = invoke("explain", tmp_path / "docs", "--model", models["path"]["gap"], "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert only_line(result, click_usage=True) == f"camcli: error: no images found in {tmp_path / 'docs'}"


def test_out_that_is_a_file_is_a_usage_error(models, image, tmp_path):
    (tmp_path / "taken").write_text("", "utf-8")
    result = invoke("explain", image, "--model", models["path"]["gap"], "--out", tmp_path / "taken")
    assert result.exit_code == 2
    assert only_line(result, click_usage=True) == (
        f"Error: Invalid value for '--out': Directory '{tmp_path / 'taken'}' is a file.")


def test_corrupt_model_message_does_not_claim_the_file_is_missing(models, image, tmp_path):
    result = invoke("explain", image, "--model", models["path"]["corrupt"], "--out", tmp_path)
    assert result.exit_code == 2
    assert "not found" not in only_line(result, click_usage=True).lower()


def test_output_folder_that_cannot_be_created_is_a_usage_error(models, image, tmp_path):
    (tmp_path / "file").write_text("", "utf-8")
    result = invoke("explain", image, "--model", models["path"]["gap"], "--out", tmp_path / "file" / "out")
    assert "internal error" not in result.stderr
    assert result.exit_code == 2
    assert only_line(result, click_usage=True).startswith("camcli: error: ")


def test_labels_file_with_a_byte_order_mark(models, image, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n", "utf-8-sig")  # as Windows Notepad saves it
    result = invoke("explain", image, "--model", models["path"]["gap"], "--labels", labels, "--class", "cat",
                    "--out", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.stderr
    assert read_json(tmp_path / "out" / "img.json")["explanations"][0]["label"] == "Cat"


def test_unexpected_error_is_one_line_exit_1(models, image, tmp_path, monkeypatch):
    def broken(self, batch, *_, **__):
        raise RuntimeError("boom")

    monkeypatch.setattr("camcli.explain.explainer.Explainer.explain_batch", broken)
    result = invoke("explain", image, "--model", models["path"]["gap"], "--out", tmp_path)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (f"camcli: failed: {image}: internal error while explaining: "
                                             "RuntimeError: boom (rerun with --debug for the traceback)")
    assert "Traceback" not in result.stderr and read_json(tmp_path / "summary.json")["failed"] == 1


def test_interrupt_exits_130(models, image, tmp_path, monkeypatch):
    def interrupted(self, batch, *_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr("camcli.explain.explainer.Explainer.explain_batch", interrupted)
    result = invoke("explain", image, "--model", models["path"]["gap"], "--out", tmp_path)
    assert result.exit_code == 130
    assert result.stderr == "camcli: interrupted\n"


def test_lambda_model_loads_with_unsafe_load(models, image, tmp_path):
    result = invoke("explain", image, "--model", models["path"]["lambda"], "--unsafe-load", "--out", tmp_path, "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert read_json(tmp_path / "img.json")["layer"] == "conv"


def test_layers_command_refuses_lambda_model_without_unsafe_load(models):
    result = invoke("layers", "--model", models["path"]["lambda"])
    assert result.exit_code == 2
    assert only_line(result, click_usage=True).endswith("if you trust this file, rerun with --unsafe-load")


# --- 3. repeated --class ----------------------------------------------------------------------------


def test_repeated_classes_each_get_their_own_overlay(models, image, tmp_path):
    # top1 is one of 0, 1, 2, so it repeats one of the fixed indices: that class is explained once.
    result = invoke("explain", image, "--model", models["path"]["gap"], "--out", tmp_path, "--save-heatmap",
                    "--class", "top1", "--class", "0", "--class", "1", "--class", "2", "-q")
    assert result.exit_code == 0, result.stderr
    record = read_json(tmp_path / "img.json")
    explanations = record["explanations"]
    top1 = record["predictions"][0]["index"]
    assert [e["class_index"] for e in explanations] == [top1, *(i for i in (0, 1, 2) if i != top1)]
    for e in explanations:
        assert e["overlay"] == f"img.gradcam.{e['class_index']}.png"
        assert e["heatmap"] == f"img.gradcam.{e['class_index']}.npy"
        heatmap = np.load(tmp_path / e["heatmap"])
        assert e["peak"] is None or heatmap[e["peak"][1], e["peak"][0]] == heatmap.max()
    assert overlays(tmp_path) == ["img.gradcam.0.png", "img.gradcam.1.png", "img.gradcam.2.png"]
    assert read_json(tmp_path / "summary.json")["classes"] == ["top1", "0", "1", "2"]


def test_top1_and_a_different_class_write_two_overlays(models, image, tmp_path):
    probe = invoke("explain", image, "--model", models["path"]["gap"], "--out", tmp_path / "probe", "-q")
    top1 = read_json(tmp_path / "probe" / "img.json")["predictions"][0]["index"]
    other = (top1 + 1) % 3
    out = tmp_path / "out"
    result = invoke("explain", image, "--model", models["path"]["gap"], "--out", out,
                    "--class", "top1", "--class", other, "-q")
    assert probe.exit_code == result.exit_code == 0
    assert [e["class_index"] for e in read_json(out / "img.json")["explanations"]] == [top1, other]
    assert overlays(out) == sorted([f"img.gradcam.{top1}.png", f"img.gradcam.{other}.png"])


def test_class_labels_are_case_insensitive(models, image, tmp_path):
    result = invoke("explain", image, "--model", models["path"]["gap"], "--labels", models["path"]["labels"],
                    "--out", tmp_path, "-q", "--class", "DOG", "--class", "Bird Of Prey", "--class", "cat")
    assert result.exit_code == 0, result.stderr
    explanations = read_json(tmp_path / "img.json")["explanations"]
    assert [(e["class_index"], e["label"]) for e in explanations] == [(1, "Dog"), (2, "bird_of_prey"), (0, "Cat")]
    assert overlays(tmp_path) == ["img.gradcam.0.png", "img.gradcam.1.png", "img.gradcam.2.png"]


# --- 4. sigmoid heads ---------------------------------------------------------------------------------


def test_binary_sigmoid_model_explains_both_classes(models, image, tmp_path):
    result = invoke("explain", image, "--model", models["path"]["binary"], "--preprocess", "scale01",
                    "--labels", models["path"]["binary_labels"], "--class", "0", "--class", "Positive",
                    "--out", tmp_path, "-q")
    assert result.exit_code == 0, result.stderr
    record = read_json(tmp_path / "img.json")
    p1 = float(models["model"]["binary"].predict(model_input(image), verbose=0)[0, 0])  # P(class 1)
    scores = {p["index"]: p["score"] for p in record["predictions"]}
    assert len(record["predictions"]) == 2
    assert scores[1] == pytest.approx(p1, abs=1e-5)
    assert scores[0] + scores[1] == pytest.approx(1.0, abs=1e-6)
    explanations = record["explanations"]
    assert [(e["class_index"], e["label"]) for e in explanations] == [(0, "negative"), (1, "positive")]
    assert explanations[0]["score"] + explanations[1]["score"] == pytest.approx(1.0, abs=1e-6)
    assert overlays(tmp_path) == ["img.gradcam.0.png", "img.gradcam.1.png"]


def test_multilabel_sigmoid_scores_are_the_model_outputs(models, image, tmp_path):
    result = invoke("explain", image, "--model", models["path"]["multilabel"], "--preprocess", "scale01",
                    "--top-k", 4, "--out", tmp_path, "-q")
    assert result.exit_code == 0, result.stderr
    predictions = read_json(tmp_path / "img.json")["predictions"]
    expected = models["model"]["multilabel"].predict(model_input(image), verbose=0)[0]
    assert [p["index"] for p in predictions] == list(np.argsort(-expected))
    np.testing.assert_allclose([p["score"] for p in predictions], np.sort(expected)[::-1], atol=1e-5)


# --- 5. nested models ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layer_args, expected", [
    ([], "backbone/bconv2"),
    (["--layer", "backbone/bconv1"], "backbone/bconv1"),
    (["--layer", "bconv1"], "backbone/bconv1"),  # a unique inner name is enough
    (["--layer", "backbone"], "backbone/bconv2"),  # a nested model stands for its own default layer
    (["--method", "cam"], "backbone/bconv2"),
])
def test_nested_model_layers(models, image, tmp_path, layer_args, expected):
    result = invoke("explain", image, "--model", models["path"]["nested"], *layer_args, "--out", tmp_path, "-q")
    assert result.exit_code == 0, result.stderr
    record = read_json(tmp_path / "img.json")
    assert record["layer"] == expected
    assert [e["layer"] for e in record["explanations"]] == [expected]


def test_layers_command_lists_nested_paths_and_marks_the_default(models):
    result = invoke("layers", "--model", models["path"]["nested"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "  backbone/bconv1  Conv2D  8x8x4",
        "* backbone/bconv2  Conv2D  8x8x5",
    ]


def test_layers_command_on_a_plain_model(models):
    result = invoke("layers", "--model", models["path"]["flat"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["  conv1   Conv2D  8x8x4", "* target  Conv2D  4x4x5"]


# --- 6 and 8. listing commands, and no TensorFlow for them ---------------------------------------------


def test_models_lists_the_builtin_models_with_sizes_and_layers():
    result = invoke("models")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["name", "input", "default", "layer"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows)[0] == "vgg16" and list(rows)[-2:] == ["demo", "demo-cheat"]
    assert [name for name, line in zip(rows, lines[1:], strict=True) if "default" in line.split("  ")[-1]] == ["vgg16"]
    assert lines[1].endswith("; the default --model")
    expected = {
        "demo": (f"{demo.INPUT_SIZE}x{demo.INPUT_SIZE}", demo.LAST_CONV_LAYER, "yes"),
        "demo-cheat": (f"{demo.INPUT_SIZE}x{demo.INPUT_SIZE}", demo.LAST_CONV_LAYER, "yes"),
        "vgg16": ("224x224", "block5_conv3", "no"),
        "resnet50": ("224x224", "conv5_block3_out", "yes"),
        "xception": ("299x299", "block14_sepconv2_act", "yes"),
        "mobilenet": ("224x224", "conv_pw_13_relu", "yes"),
        "mobilenetv2": ("224x224", "out_relu", "yes"),
        "inceptionv3": ("299x299", "mixed10", "yes"),
    }
    for name, (size, layer, cam) in expected.items():
        assert tuple(rows[name][1:4]) == (size, layer, cam), name


def test_methods_lists_every_registered_method_with_paper_and_cost():
    from camcli.explain.methods import REGISTRY

    result = invoke("methods")
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert list(lines) == list(REGISTRY)
    assert "arXiv:1610.02391; gradients)" in lines["gradcam"]
    assert "arXiv:1512.04150; forward pass only; needs a GAP -> dense head)" in lines["cam"]
    assert "arXiv:1910.01279; one forward pass per scored channel" in lines["scorecam"]
    assert "arXiv:2008.00299; forward pass only)" in lines["eigencam"]
    assert "arXiv:1412.6806; a guided backward pass to the input)" in lines["guidedbackprop"]


@pytest.mark.parametrize("command", [[], ["explain"], ["layers"], ["models"], ["methods"]])
def test_every_command_has_help_with_an_example(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Example:" in result.stdout
    assert result.stdout.startswith("Usage: camcli ")


@pytest.mark.slow
@pytest.mark.parametrize("args, expected", [
    (["--help"], "Class activation maps (CAM, Grad-CAM) for Keras image classifiers."),
    (["models"], "mobilenetv2"),
    (["methods"], "gradcam"),
    (["--version"], f"camcli, version {__version__}"),
])
def test_python_m_camcli_without_importing_tensorflow(args, expected):
    """`python -m camcli` works, and the commands that need no model never import TensorFlow or Keras."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "camcli", *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout
    # -X importtime writes one "import time: self | cumulative | module" line per imported module.
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time")}
    assert "click" in imported and "camcli.cli" in imported  # the lines were read
    assert "tensorflow" not in imported
    assert "keras" not in imported
    if args != ["methods"]:  # numpy alone is 0.1 s of a 0.3 s budget; only `methods` reads the registry
        assert "numpy" not in imported


def test_version_option():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"camcli, version {__version__}\n"


# --- 7. --json and --quiet ----------------------------------------------------------------------------


def test_json_prints_the_summary_on_stdout(models, image, tmp_path):
    bad = tmp_path / "in" / "bad.jpg"
    bad.parent.mkdir()
    bad.write_text("text\n", "utf-8")
    result = invoke("explain", image, bad, "--model", models["path"]["gap"], "--out", tmp_path / "out", "--json")
    assert result.exit_code == 1
    printed = json.loads(result.stdout)
    saved = read_json(tmp_path / "out" / "summary.json")
    assert (printed["images"], printed["ok"], printed["failed"]) == (2, 1, 1)
    for key in ("images", "ok", "failed", "failures", "model", "layer", "method", "classes", "pretrained"):
        assert printed[key] == saved[key]
    # The closing line stays on stderr, so stdout is nothing but the JSON.
    assert "camcli: explained 1 of 2 images (1 failed)" in result.stderr


def test_quiet_prints_nothing_on_success(models, image, tmp_path):
    result = invoke("explain", image, "--model", models["path"]["gap"], "--out", tmp_path, "--quiet")
    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout == ""
    assert (tmp_path / "img.json").is_file()


def test_quiet_still_reports_failures(models, image, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("text\n", "utf-8")
    result = invoke("explain", image, bad, "--model", models["path"]["gap"], "--out", tmp_path / "out", "-q")
    assert result.exit_code == 1
    assert result.stderr == f"camcli: failed: {bad}: not an image (content is text)\n"


# --- 9. tracebacks only with --debug ------------------------------------------------------------------


def test_debug_raises_the_error_with_its_traceback(models, image, tmp_path):
    with pytest.raises(UsageError, match="no layer named 'nope'"):
        invoke("--debug", "explain", image, "--model", models["path"]["gap"], "--layer", "nope", "--out", tmp_path)


def test_without_debug_the_same_error_is_one_line(models, image, tmp_path):
    result = invoke("explain", image, "--model", models["path"]["gap"], "--layer", "nope", "--out", tmp_path)
    assert result.exit_code == 2
    assert only_line(result, click_usage=True) == (
        "camcli: error: no layer named 'nope' in model 'gap_dense' (see `camcli layers --model ...`)"
    )


# --- 10 and 11. output names ----------------------------------------------------------------------------


def test_same_stem_different_extensions_keep_their_extension(models, tmp_path):
    root = tmp_path / "in"
    write_image(root / "x.png", seed=1)
    write_image(root / "x.jpg", seed=2)
    out = tmp_path / "out"
    result = invoke("explain", root, "--model", models["path"]["gap"], "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.json")) == ["summary.json", "x.jpg.json", "x.png.json"]
    for name in ("x.jpg", "x.png"):
        record = read_json(out / f"{name}.json")
        assert record["image"] == str(root / name)
        [explanation] = record["explanations"]
        suffix = "jpg" if name.endswith(".jpg") else "png"  # photos get JPEG overlays, lossless inputs PNG
        assert explanation["overlay"] == f"{name}.gradcam.{explanation['class_index']}.{suffix}"
        assert (out / explanation["overlay"]).is_file()
    assert len(overlays(out)) == 2


def test_an_image_named_summary_keeps_its_record(models, tmp_path):
    root = tmp_path / "in"
    write_image(root / "summary.png")
    out = tmp_path / "out"
    result = invoke("explain", root, "--model", models["path"]["gap"], "--out", out, "-q")
    assert result.exit_code == 0
    records = [read_json(p) for p in out.rglob("*.json")]
    assert any(record.get("image") == str(root / "summary.png") for record in records)
    assert read_json(out / "summary.json")["images"] == 1


def test_output_folder_inside_the_input_is_not_read_back(models, tmp_path):
    root = tmp_path / "photos"
    write_image(root / "a.png", seed=1)
    write_image(root / "sub" / "b.png", seed=2)
    counts = []
    for _ in range(2):
        result = invoke("explain", root, "--model", models["path"]["gap"], "--out", root / "results", "-q")
        assert result.exit_code == 0, result.stderr
        counts.append(read_json(root / "results" / "summary.json")["images"])
    assert counts == [2, 2]
    records = [read_json(root / "results" / f"{stem}.json") for stem in ("a", "sub/b")]
    assert overlays(root / "results") == [record["explanations"][0]["overlay"] for record in records]


def test_default_output_folder_in_the_working_directory_is_not_read_back(models, tmp_path, monkeypatch):
    write_image(tmp_path / "a.png")
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        result = invoke("explain", ".", "--model", models["path"]["gap"], "-q")
        assert result.exit_code == 0, result.stderr
        summary = read_json(tmp_path / "camcli_out" / "summary.json")
        assert (summary["images"], summary["ok"]) == (1, 1)


# --- 12. a built-in model with random weights -----------------------------------------------------------


@pytest.mark.slow
def test_builtin_model_with_random_weights_warns(image, tmp_path):
    result = invoke("explain", image, "--model", "mobilenet", "--weights", "none", "--out", tmp_path)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "camcli: warning: random weights (--weights none): the predictions and maps are meaningless"
    )
    record = read_json(tmp_path / "img.json")
    assert record["warning"] == "random weights (`weights=none`): the predictions and maps are meaningless"
    assert record["model"] == "mobilenet"
    assert record["layer"] == "conv_pw_13_relu"
    assert len(record["predictions"]) == 5
    summary = read_json(tmp_path / "summary.json")
    assert summary["pretrained"] is False
    assert "meaningless" in summary["warning"]


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["file", "demo"])
def test_a_real_process_prints_only_camcli_lines_on_stderr(models, image, tmp_path, model_name):
    """TensorFlow's C++ start-up lines (absl, oneDNN) must not reach the user's terminal or CI log."""
    model = models["path"]["gap"] if model_name == "file" else "demo"
    done = subprocess.run([sys.executable, "-m", "camcli", "explain", str(image), "--model", model,
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines and all(line.startswith("camcli: ") for line in lines), lines
    assert done.stdout == ""


# --- the CAM family through the CLI ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "eigengradcam",
                                    "scorecam", "guidedbackprop", "guidedgradcam"])
def test_every_method_writes_its_outputs(models, image, tmp_path, method):
    out = tmp_path / "out"
    result = invoke("explain", image, "--model", models["path"]["gap"], "--preprocess", "scale01", "--layer",
                    "target", "--method", method, "--out", out, "--quiet")
    assert result.exit_code == 0, result.stderr
    record = read_json(out / "img.json")
    [explanation] = record["explanations"]
    assert explanation["method"] == method
    assert explanation["overlay"] == f"img.{method}.{explanation['class_index']}.png"
    with Image.open(out / explanation["overlay"]) as picture:
        assert picture.size == (20, 30) and picture.mode == "RGB"
        pixels = np.asarray(picture)
    original = np.asarray(Image.open(image).convert("RGB"))
    if method.startswith("guided"):  # an RGB gradient image centred on grey, not a blend of the photo
        assert abs(float(pixels.mean()) - 127.5) < 20
        assert not np.array_equal(pixels, original)


def test_repeated_layer_fuses_and_lists_every_layer(models, image, tmp_path):
    out = tmp_path / "out"
    result = invoke("explain", image, "--model", models["path"]["gap"], "--preprocess", "scale01", "--layer",
                    "conv1", "--layer", "target", "--out", out, "--quiet", "--json")
    assert result.exit_code == 0, result.stderr
    record = read_json(out / "img.json")
    assert record["layer"] == "conv1+target" and record["layers"] == ["conv1", "target"]
    assert record["explanations"][0]["layers"] == ["conv1", "target"]
    assert json.loads(result.stdout)["layer"] == "conv1+target"


@pytest.mark.parametrize("flag", ["--aug-smooth", "--eigen-smooth"])
def test_smoothing_flags_change_the_map(models, image, tmp_path, flag):
    common = [image, "--model", models["path"]["gap"], "--preprocess", "scale01", "--layer", "target",
              "--save-heatmap", "--quiet"]
    assert invoke("explain", *common, "--out", tmp_path / "plain").exit_code == 0
    result = invoke("explain", *common, flag, "--out", tmp_path / "smooth")
    assert result.exit_code == 0, result.stderr
    [plain] = (tmp_path / "plain").glob("*.npy")
    smooth = tmp_path / "smooth" / plain.name
    a, b = np.load(plain), np.load(smooth)
    assert a.shape == b.shape == (30, 20) and 0 <= b.min() and b.max() <= 1
    assert not np.allclose(a, b)


def test_several_methods_in_one_run_match_single_method_runs(models, image, tmp_path):
    common = [image, "--model", models["path"]["gap"], "--preprocess", "scale01", "--class", "top1",
              "--class", "top2", "--save-heatmap", "--quiet"]
    methods = ["gradcam", "cam", "scorecam"]
    result = invoke("explain", *common, *(arg for m in methods for arg in ("--method", m)), "--max-channels", "2",
                    "--out", tmp_path / "all", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["method"] == "gradcam+cam+scorecam" and summary["methods"] == methods
    record = read_json(tmp_path / "all" / "img.json")
    pairs = [(e["method"], e["class_index"]) for e in record["explanations"]]
    ranked = [p["index"] for p in record["predictions"]]
    assert pairs == [(m, c) for m in methods for c in ranked[:2]]
    for method in methods:
        extra = ["--max-channels", "2"] if method == "scorecam" else []
        single = invoke("explain", *common, "--method", method, *extra, "--out", tmp_path / method)
        assert single.exit_code == 0, single.stderr
        alone = read_json(tmp_path / method / "img.json")
        assert alone["predictions"] == record["predictions"]
        for explanation in alone["explanations"]:
            np.testing.assert_allclose(np.load(tmp_path / "all" / explanation["heatmap"]),
                                       np.load(tmp_path / method / explanation["heatmap"]), atol=1e-5)
    # --resume knows the run is complete only with every method's maps.
    again = invoke("explain", *common, "--method", "gradcam", "--method", "cam", "--method", "scorecam",
                   "--max-channels", "2", "--out", tmp_path / "all", "--resume", "--json")
    assert json.loads(again.stdout)["skipped"] == 1
    more = invoke("explain", *common, "--method", "gradcam", "--method", "layercam", "--out", tmp_path / "gradcam",
                  "--resume", "--json")
    assert json.loads(more.stdout)["skipped"] == 0


@pytest.mark.parametrize("args, message", [
    (["--method", "gradcam", "--max-channels", "3"],
     "camcli: error: --max-channels applies to the methods that score channels one by one "
     "(scorecam, sscam, iscam, ablationcam), "
     "not gradcam"),
    (["--method", "gradcam", "--method", "cam", "--max-channels", "3"],
     "camcli: error: --max-channels applies to the methods that score channels one by one "
     "(scorecam, sscam, iscam, ablationcam), "
     "not gradcam, cam"),
    (["--method", "scorecam", "--max-channels", "0"],
     "Error: Invalid value for '--max-channels': 0 is not in the range x>=1."),
    (["--method", "guidedbackprop", "--aug-smooth"], "camcli: error: --aug-smooth smooths class activation maps"),
])
def test_method_option_errors_exit_2(models, image, tmp_path, args, message):
    result = invoke("explain", image, "--model", models["path"]["gap"], "--preprocess", "scale01", *args,
                    "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert only_line(result, click_usage=True).startswith(message)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_readme_methods_table_is_the_registrys():
    from conftest import REPO

    from camcli.explain.methods import markdown_table

    result = invoke("methods", "--markdown")
    assert result.exit_code == 0 and result.stdout.strip() == markdown_table()
    assert markdown_table() in (REPO / "README.md").read_text("utf-8")


# --- boxes, masks and panels -----------------------------------------------------------------------------


def test_save_mask_draw_box_and_panel(models, tmp_path):
    from camcli.maps.boxes import box_from_map, threshold_mask

    image = write_image(tmp_path / "in" / "img.png", size=(40, 30), seed=3)
    out = tmp_path / "out"
    result = invoke("explain", image, "--model", models["path"]["gap"], "--preprocess", "scale01", "--out", out,
                    "--save-heatmap", "--save-mask", "--draw-box", "--panel", "--box-threshold", "0.5", "--quiet")
    assert result.exit_code == 0, result.stderr
    [explanation] = read_json(out / "img.json")["explanations"]
    heatmap = np.load(out / explanation["heatmap"])
    # The mask is every pixel at or above 0.5 x the maximum; the box bounds the largest connected part.
    mask = np.asarray(Image.open(out / explanation["mask"]))
    assert explanation["mask"].endswith(".mask.png") and set(np.unique(mask)) <= {0, 255}
    np.testing.assert_array_equal(mask == 255, threshold_mask(heatmap, 0.5))
    assert explanation["bbox"] == list(box_from_map(heatmap, 0.5))
    # The box is drawn in green on the overlay's edges.
    x0, y0, x1, y1 = explanation["bbox"]
    overlay = np.asarray(Image.open(out / explanation["overlay"]))
    assert (overlay[y0, x0:x1] == [0, 255, 0]).all() and (overlay[y0:y1, x1 - 1] == [0, 255, 0]).all()
    # The panel: original, heatmap with colour bar, overlay, side by side, wider than tall.
    with Image.open(out / explanation["panel"]) as panel:
        assert explanation["panel"].endswith(".panel.png") and panel.width > 2 * panel.height > 300
    # --resume checks that the mask and the panel exist too.
    (out / explanation["panel"]).unlink()
    again = invoke("explain", image, "--model", models["path"]["gap"], "--preprocess", "scale01", "--out", out,
                   "--save-heatmap", "--save-mask", "--draw-box", "--panel", "--box-threshold", "0.5", "--quiet",
                   "--resume", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] == 0
    assert (out / explanation["panel"]).is_file()


def test_draw_box_leaves_gradient_pictures_alone(models, tmp_path):
    """Issue 30: --draw-box drew the box on the guided methods' gradient pictures, where it marks nothing
    (guidedbackprop's is a patch of the gradient's edges). Their overlays and panels are now the same with
    and without --draw-box; the heatmap's overlay gets its box. The JSON keeps a bbox for every map:
    guidedgradcam's is its Grad-CAM map's, as the README says."""
    image = write_image(tmp_path / "in" / "img.png", size=(40, 30), seed=3)
    methods = ["--method", "gradcam", "--method", "guidedbackprop", "--method", "guidedgradcam"]
    common = ["--model", models["path"]["gap"], "--preprocess", "scale01", "--layer", "target", *methods,
              "--panel", "--quiet"]
    for name, extra in (("plain", []), ("boxed", ["--draw-box"])):
        result = invoke("explain", image, *common, *extra, "--out", tmp_path / name)
        assert result.exit_code == 0, result.stderr
    entries = {e["method"]: e for e in read_json(tmp_path / "boxed" / "img.json")["explanations"]}
    assert [entries[m]["guided"] for m in ("gradcam", "guidedbackprop", "guidedgradcam")] == [False, True, True]
    assert all(entries[m]["bbox"] is not None for m in entries)
    assert entries["guidedgradcam"]["bbox"] == entries["gradcam"]["bbox"]

    def pixels(run, method, kind):
        with Image.open(tmp_path / run / entries[method][kind]) as picture:
            return np.asarray(picture.convert("RGB"))

    for method in ("guidedbackprop", "guidedgradcam"):
        for kind in ("overlay", "panel"):
            assert np.array_equal(pixels("plain", method, kind), pixels("boxed", method, kind)), (method, kind)
    x0, y0, x1, y1 = entries["gradcam"]["bbox"]
    boxed = pixels("boxed", "gradcam", "overlay")
    assert (boxed[y0, x0:x1] == [0, 255, 0]).all() and not np.array_equal(boxed, pixels("plain", "gradcam", "overlay"))


def test_box_threshold_out_of_range_is_a_usage_error(models, image, tmp_path):
    result = invoke("explain", image, "--model", models["path"]["gap"], "--box-threshold", "1.5", "--out", tmp_path)
    assert result.exit_code == 2
    assert "--box-threshold" in only_line(result, click_usage=True)


def test_every_option_and_command_the_readme_shows_exists():
    """The README's `--options` and `camcli <command>` lines name only real options and commands."""
    import re

    import click
    from conftest import REPO

    from camcli.cli import cli

    readme = (REPO / "README.md").read_text("utf-8")
    commands = cli.commands
    options = {"--help", "--version", "--debug"}
    for command in commands.values():
        options |= {name for param in command.params if isinstance(param, click.Option)
                    for name in param.opts + param.secondary_opts}
    # Commands in code only: code blocks and inline `camcli ...` spans (prose says "camcli explains").
    code = re.findall(r"```.*?```", readme, flags=re.DOTALL) + re.findall(r"`[^`\n]+`", readme)
    used_commands = set(re.findall(r"^[`$ ]*camcli ([a-z]+)\b", "\n".join(code), flags=re.MULTILINE))
    assert {"explain", "evaluate", "report", "summary"} <= used_commands
    assert used_commands <= set(commands), used_commands - set(commands)
    used_options = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", readme))
    # sbatch, `camcli methods --markdown`, `pip install --no-deps`, the samples script, the segmentation benchmark
    make_and_pip = {"--array", "--markdown", "--no-deps", "--tagged", "--segmentation", "--count", "--val", "--test",
                    "--skip"}
    assert used_options - make_and_pip <= options, sorted(used_options - make_and_pip - options)
    assert "--markdown" in options
