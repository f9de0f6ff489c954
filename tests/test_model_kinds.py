"""The models beyond one-input classifiers (issue 16): a ViT with a class token, a two-input model, a
two-output model, a per-pixel softmax segmenter and a regressor. Each is checked against numpy maps
computed by hand from activations and gradients (read with plain Keras and tf.GradientTape, not
through camcli's replay), against the contract every model holds (a batch equals its images one
by one, the model is untouched, no NaN), and through the CLI with its exit codes and messages."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny_models
from cli_helpers import invoke, only_line
from PIL import Image
from tiny_models import unit

from camcli.errors import UsageError
from camcli.explain.explainer import Explainer
from camcli.models.loading import wrap_model


def gradcam_reference(activations, gradients):
    """Grad-CAM by hand: alpha_k = mean_ij dy/dA^k_ij, map = ReLU(sum_k alpha_k A^k), scaled to [0, 1]."""
    alpha = gradients.mean(axis=(0, 1))
    return unit(np.einsum("hwk,k->hw", activations, alpha))


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


def assert_untouched(model, before, config):
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert model.get_config() == config


# --- a vision transformer ------------------------------------------------------------------------------


def vit_tokens_and_gradients(model, batch, class_index):
    """norm1's tokens and d(logit of class_index)/d tokens, running the ViT's layers one by one."""
    layer = model.get_layer
    images = tf.constant(batch)
    with tf.GradientTape() as tape:
        tokens = layer("cls_token")(layer("tokens")(layer("patches")(images)))
        normed = layer("norm1")(tokens)
        tape.watch(normed)
        residual = layer("residual1")([tokens, layer("attention")(normed, normed)])
        residual = layer("residual2")([residual, layer("mlp")(layer("norm2")(residual))])
        vector = layer("class_vector")(layer("cls")(layer("final_norm")(residual)))
        head = layer("head")
        logits = tf.matmul(vector, head.kernel) + head.bias  # before the softmax
        total = tf.reduce_sum(logits[:, class_index])
    return normed.numpy(), tape.gradient(total, normed).numpy(), tf.nn.softmax(logits).numpy()


def test_vit_default_layer_is_the_norm_before_the_last_attention_and_its_grid_is_inferred():
    explainer = Explainer(wrap_model(tiny_models.vit()))
    assert explainer.layers == ["norm1"]
    grid = explainer.grids[0]
    assert (grid.prefix, grid.height, grid.width) == (1, 4, 4)  # 17 tokens: the class token, then 4x4 patches


def test_vit_gradcam_matches_hand_computed_map_from_the_tokens():
    model = tiny_models.vit()
    batch = tiny_models.images(3, seed=21)
    results = Explainer(wrap_model(model), classes=["1"]).explain_batch(batch)
    tokens, gradients, probabilities = vit_tokens_and_gradients(model, batch, 1)
    assert np.abs(gradients[:, 1:]).max() > 1e-4  # the patch tokens reach the class token: a real check
    for b, result in enumerate(results):
        # Drop the class token, put the 16 patch tokens back on the 4x4 grid row by row.
        expected = gradcam_reference(tokens[b, 1:].reshape(4, 4, 6), gradients[b, 1:].reshape(4, 4, 6))
        np.testing.assert_allclose(result.maps[0].heatmap, expected, atol=1e-5)
        assert result.maps[0].score == pytest.approx(probabilities[b, 1], abs=1e-6)


def test_vit_token_grid_given_by_hand_drops_the_leading_tokens():
    model = tiny_models.vit()
    batch = tiny_models.images(2, seed=22)
    inferred = Explainer(wrap_model(model), classes=["0"]).explain_batch(batch)
    given = Explainer(wrap_model(model), classes=["0"], token_grid="4x4").explain_batch(batch)
    for a, b in zip(inferred, given, strict=True):
        np.testing.assert_allclose(a.maps[0].heatmap, b.maps[0].heatmap, atol=1e-6)
    with pytest.raises(UsageError, match=r"outputs 17 tokens, fewer than the 5x5 grid given"):
        Explainer(wrap_model(model), token_grid="5x5")
    with pytest.raises(UsageError, match=r"`token_grid=4by4` is not HEIGHTxWIDTH"):
        Explainer(wrap_model(model), token_grid="4by4")


@pytest.mark.slow  # 19 methods on a ViT: 8 s; make test and CI run it (gradcam's token maps are checked by hand above)
@pytest.mark.parametrize("method", ["gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "eigengradcam",
                                    "scorecam", "guidedbackprop", "guidedgradcam", "gradcamelementwise", "fem",
                                    "kpcacam", "dff", "sscam", "iscam", "ablationcam", "smoothgradcam++", "finercam",
                                    "shapleycam"])
def test_every_layer_method_runs_at_a_token_layer(method):
    batch = tiny_models.images(2, seed=23)
    [result, _] = Explainer(wrap_model(tiny_models.vit()), method=method).explain_batch(batch)
    heatmap = result.maps[0].heatmap
    assert heatmap.shape == ((8, 8) if method == "guidedbackprop" else (4, 4)) and np.isfinite(heatmap).all()
    assert result.maps[0].empty or heatmap.max() == pytest.approx(1.0)


def test_cam_at_a_token_layer_says_why_not():
    with pytest.raises(UsageError, match="needs the layer to feed global-average-pooling -> dense"):
        Explainer(wrap_model(tiny_models.vit()), method="cam")


# --- several inputs ------------------------------------------------------------------------------------


def test_two_input_model_uses_each_images_own_extra_input():
    model = tiny_models.two_inputs()
    batch = tiny_models.images(2, seed=24)
    meta = np.array([[3.0, -2.0], [-3.0, 2.0]], dtype="float32")
    loaded = wrap_model(model, image_input="image", extra_inputs=lambda key: {"meta": [0, 0]})
    results = Explainer(loaded, classes=["top1"]).explain_batch(batch, extras={"meta": meta})
    probabilities = model.predict([batch, meta], verbose=0)
    activations = keras.Model(model.inputs, model.get_layer("target").output).predict([batch, meta], verbose=0)
    kernel = model.get_layer("head").kernel.numpy()  # (5 + 2, 3): the pooled features, then meta
    for b, result in enumerate(results):
        top = int(probabilities[b].argmax())
        assert result.predictions[0].index == top
        assert result.predictions[0].score == pytest.approx(probabilities[b, top], abs=1e-6)
        # y^c = W[:5, c] . mean_ij A_ij + W[5:, c] . meta + b: dy/dA^k_ij = W[k, c] / 64, whatever meta is.
        expected = unit(np.einsum("hwk,k->hw", activations[b], kernel[:5, top] / 64))
        np.testing.assert_allclose(result.maps[0].heatmap, expected, atol=1e-5)
    # The metadata changes the predictions: it is really fed.
    swapped = Explainer(loaded).explain_batch(batch, extras={"meta": meta[::-1].copy()})
    assert [p.score for p in swapped[0].predictions] != [p.score for p in results[0].predictions]


def test_two_input_model_needs_the_image_input_and_the_others():
    model = tiny_models.two_inputs()
    with pytest.raises(UsageError) as error:
        wrap_model(model)
    assert str(error.value) == ("model two_inputs has 2 inputs (image: (batch, 8, 8, 3), meta: (batch, 2)); name "
                                "the image input with `image_input=NAME` and give the others with `extra_inputs`")
    with pytest.raises(UsageError, match=r"model two_inputs also takes meta; give them per image"):
        wrap_model(model, image_input="image")
    with pytest.raises(UsageError, match=r"no input named 'picture'; its inputs are image: \(batch, 8, 8, 3\)"):
        wrap_model(model, image_input="picture", extra_inputs=lambda key: {})
    loaded = wrap_model(model, image_input="image", extra_inputs=lambda key: {})
    with pytest.raises(UsageError, match=r"also takes meta; pass `extras`"):
        Explainer(loaded).explain_batch(tiny_models.images(1))


# --- several outputs -----------------------------------------------------------------------------------


def test_two_output_model_explains_the_chosen_head_and_leaves_the_model_alone():
    model = tiny_models.two_outputs()
    before, config = weights_of(model), model.get_config()
    batch = tiny_models.images(2, seed=25)
    activations = tiny_models.activations_of(model, "target", batch)
    species = Explainer(wrap_model(model, output="species"), classes=["2"]).explain_batch(batch)
    age = Explainer(wrap_model(model, output="age"), target="increase").explain_batch(batch)
    predicted = model.predict(batch, verbose=0)
    for b in range(2):
        kernel = model.get_layer("species").kernel.numpy()[:, 2] / 64
        np.testing.assert_allclose(species[b].maps[0].heatmap, unit(np.einsum("hwk,k->hw", activations[b], kernel)),
                                   atol=1e-5)
        assert species[b].maps[0].score == pytest.approx(predicted["species"][b, 2], abs=1e-6)
        kernel = model.get_layer("age").kernel.numpy()[:, 0] / 64
        np.testing.assert_allclose(age[b].maps[0].heatmap, unit(np.einsum("hwk,k->hw", activations[b], kernel)),
                                   atol=1e-5)
        assert age[b].predictions[0].score == pytest.approx(predicted["age"][b, 0], abs=1e-5)
    assert_untouched(model, before, config)
    with pytest.raises(UsageError) as error:
        wrap_model(model)
    assert str(error.value) == ("model two_outputs has 2 outputs (age: (batch, 1), species: (batch, 3)); choose "
                                "the one to explain with `output=NAME`")


# --- segmentation --------------------------------------------------------------------------------------


def segmenter_reference(model, image, class_index, region):
    """The region target by hand: y = sum over the region of class c's logit z_c = W[:, c] . A + b_c
    (a 1x1 convolution), so dy/dA^k_ij = W[k, c] inside the region and 0 outside."""
    activations = tiny_models.activations_of(model, "target", image[None])[0]
    kernel = model.get_layer("mask").kernel.numpy()[0, 0]  # (5, classes)
    gradients = region[:, :, None] * kernel[None, None, :, class_index]
    return gradcam_reference(activations, gradients)


def test_segmentation_region_target_matches_hand_computed_map():
    model = tiny_models.segmenter()
    batch = tiny_models.images(3, seed=26)
    results = Explainer(wrap_model(model), target="region", classes=["top1", "top2"]).explain_batch(batch)
    probabilities = model.predict(batch, verbose=0)  # (3, 8, 8, classes)
    for b, result in enumerate(results):
        predicted = probabilities[b].argmax(axis=-1)
        shares = np.bincount(predicted.ravel(), minlength=3) / 64
        assert [p.index for p in result.predictions[:2]] == list(np.argsort(-shares, kind="stable")[:2])
        assert result.predictions[0].score == pytest.approx(shares.max())
        for class_map in result.maps:
            region = (predicted == class_map.class_index).astype("float32")
            np.testing.assert_allclose(class_map.heatmap, segmenter_reference(model, batch[b],
                                                                              class_map.class_index, region), atol=1e-5)


def test_segmentation_region_target_over_a_given_mask():
    model = tiny_models.segmenter()
    batch = tiny_models.images(2, seed=27)
    mask = np.zeros((16, 16), dtype="uint8")
    mask[:8, 4:12] = 255  # given at twice the output's size: resized by nearest neighbour
    results = Explainer(wrap_model(model), target="region", target_mask=mask, classes=["0"]).explain_batch(batch)
    region = np.zeros((8, 8), dtype="float32")
    region[:4, 2:6] = 1
    for b, result in enumerate(results):
        np.testing.assert_allclose(result.maps[0].heatmap, segmenter_reference(model, batch[b], 0, region), atol=1e-5)
    with pytest.raises(UsageError, match="selects no pixel"):
        Explainer(wrap_model(model), target="region", target_mask=np.zeros((8, 8)))


def test_segmentation_with_the_class_target_says_to_use_region():
    with pytest.raises(UsageError) as error:
        Explainer(wrap_model(tiny_models.segmenter()))
    assert str(error.value) == ("model segmenter outputs (batch, 8, 8, 3), a score per pixel: explain a region of it "
                                "with `target=region`")


# --- regression ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["value", "increase", "decrease"])
def test_regression_targets_match_hand_computed_maps(kind):
    model = tiny_models.regressor()
    batch = tiny_models.images(4, seed=28)
    bias = model.get_layer("value").bias
    bias.assign(bias - np.median(model.predict(batch, verbose=0)[:, 0]))  # centre the values on zero
    values = model.predict(batch, verbose=0)[:, 0]
    assert (values > 0).any() and (values < 0).any()  # both signs: `value` differs from increase and decrease
    activations = tiny_models.activations_of(model, "target", batch)
    kernel = model.get_layer("value").kernel.numpy()[:, 0] / 64
    results = Explainer(wrap_model(model), target=kind).explain_batch(batch)
    for b, result in enumerate(results):
        sign = {"increase": 1.0, "decrease": -1.0, "value": np.sign(values[b])}[kind]
        expected = unit(np.einsum("hwk,k->hw", activations[b], sign * kernel))
        np.testing.assert_allclose(result.maps[0].heatmap, expected, atol=1e-5)
        assert result.predictions[0].score == pytest.approx(values[b], abs=1e-5)
        assert result.maps[0].empty == (not expected.any())


def test_a_callable_target_is_differentiated():
    model = tiny_models.gap_dense()
    batch = tiny_models.images(2, seed=29)
    results = Explainer(wrap_model(model), target=lambda outputs: outputs[:, 1] - outputs[:, 0]).explain_batch(batch)
    probabilities = model.predict(batch, verbose=0)
    for b, result in enumerate(results):
        assert result.predictions[0].label == "target"
        assert result.predictions[0].score == pytest.approx(probabilities[b, 1] - probabilities[b, 0], abs=1e-6)
        assert result.maps[0].heatmap.shape == (8, 8) and np.isfinite(result.maps[0].heatmap).all()
    with pytest.raises(UsageError, match=r"returned shape \(None, 3\); return one score per image"):
        Explainer(wrap_model(model), target=lambda outputs: outputs).explain_batch(batch)


# --- the contract, on every kind -----------------------------------------------------------------------


def _kinds():
    meta = np.array([[1.0, -1.0], [0.5, 2.0], [-1.0, 0.0], [2.0, 1.0]], dtype="float32")
    return {
        "vit": (tiny_models.vit, {}, {}, None),
        "two_inputs": (tiny_models.two_inputs, {"image_input": "image", "extra_inputs": lambda key: {}}, {},
                       {"meta": meta}),
        "two_outputs": (tiny_models.two_outputs, {"output": "age"}, {"target": "value"}, None),
        "segmenter": (tiny_models.segmenter, {}, {"target": "region"}, None),
        "regressor": (tiny_models.regressor, {}, {"target": "decrease"}, None),
    }


@pytest.mark.parametrize("kind", list(_kinds()))
@pytest.mark.parametrize("method", ["gradcam", "scorecam", "ablationcam"])
def test_contract_batch_equals_single_untouched_no_nan(kind, method):
    build, interface, options, extras = _kinds()[kind]
    model = build()
    before, config = weights_of(model), model.get_config()
    batch = tiny_models.images(4, seed=30)
    explainer = Explainer(wrap_model(model, **interface), method=method, **options)
    together = explainer.explain_batch(batch, extras=extras)
    for b, joint in enumerate(together):
        single = None if extras is None else {name: array[b: b + 1] for name, array in extras.items()}
        [alone] = explainer.explain_batch(batch[b: b + 1], extras=single)
        for a, j in zip(alone.maps, joint.maps, strict=True):
            assert np.isfinite(j.heatmap).all()
            np.testing.assert_allclose(a.heatmap, j.heatmap, atol=1e-5)
        np.testing.assert_allclose([p.score for p in alone.predictions], [p.score for p in joint.predictions],
                                   atol=1e-5)
    assert_untouched(model, before, config)


# --- the CLI -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kinds")
    paths = {}
    for name, build in [("vit", tiny_models.vit), ("two_inputs", tiny_models.two_inputs),
                        ("two_outputs", tiny_models.two_outputs), ("segmenter", tiny_models.segmenter),
                        ("regressor", tiny_models.regressor)]:
        paths[name] = folder / f"{name}.keras"
        build().save(paths[name])
    images = folder / "images"
    images.mkdir()
    for i, image in enumerate(tiny_models.images(2, seed=31)):
        Image.fromarray((image * 255).astype("uint8")).save(images / f"img{i}.png")
    paths["images"] = images
    (folder / "meta.csv").write_text("image,meta\nimages/img0.png,1 -1\nimg1.png,0.5;2\n")
    paths["meta"] = folder / "meta.csv"
    mask = np.zeros((8, 8), dtype="uint8")
    mask[2:6, 2:6] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    paths["mask"] = folder / "mask.png"
    return paths


def test_cli_vit_lists_token_layers_and_explains(files, tmp_path):
    listing = invoke("layers", "--model", files["vit"])
    assert listing.exit_code == 0, listing.stderr
    rows = {line.lstrip("* ").split()[0]: line for line in listing.stdout.splitlines() if line.strip()}
    assert rows["norm1"].startswith("*") and "17 tokens -> 4x4x6 grid, 1 leading token dropped" in rows["norm1"]
    assert "patches" in rows and "tokens" not in rows["patches"]
    result = invoke("explain", files["images"], "--model", files["vit"], "--out", tmp_path, "-q")
    assert result.exit_code == 0, result.stderr
    record = json.loads((tmp_path / "img0.json").read_text())
    assert record["layer"] == "norm1" and record["target"] == {"kind": "class"}
    overlay = tmp_path / f"img0.gradcam.{record['explanations'][0]['class_index']}.png"
    assert Image.open(overlay).size == (8, 8)


def test_cli_two_inputs_from_a_table(files, tmp_path):
    result = invoke("explain", files["images"], "--model", files["two_inputs"], "--input", "image",
                    "--extra-inputs", files["meta"], "--out", tmp_path, "-q")
    assert result.exit_code == 0, result.stderr
    model = keras.models.load_model(files["two_inputs"])
    for name, meta in [("img0", [1, -1]), ("img1", [0.5, 2])]:
        image = np.asarray(Image.open(files["images"] / f"{name}.png"), dtype="float32")[None]
        expected = model.predict([image, np.array([meta], "float32")], verbose=0)[0]
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert record["predictions"][0]["score"] == pytest.approx(float(expected.max()), abs=1e-5)


def test_cli_two_inputs_errors_are_one_line(files, tmp_path):
    result = invoke("explain", files["images"], "--model", files["two_inputs"], "--out", tmp_path)
    assert result.exit_code == 2
    assert only_line(result) == (f"camcli: error: model {files['two_inputs']} has 2 inputs (image: (batch, 8, 8, 3), "
                                 "meta: (batch, 2)); name the image input with --input NAME and give the others "
                                 "with --extra-inputs")
    table = tmp_path / "partial.csv"
    table.write_text("image,meta\nimg0.png,1 2\n")
    out = tmp_path / "out"
    result = invoke("explain", files["images"], "--model", files["two_inputs"], "--input", "image",
                    "--extra-inputs", table, "--out", out)
    assert result.exit_code == 1
    assert f"camcli: failed: {files['images'] / 'img1.png'}: no row for {files['images'] / 'img1.png'} in {table}" \
        in result.stderr
    assert (out / "img0.json").is_file() and not (out / "img1.json").exists()  # the good image is written


def test_cli_two_outputs(files, tmp_path):
    result = invoke("explain", files["images"], "--model", files["two_outputs"], "--out", tmp_path)
    assert result.exit_code == 2
    assert only_line(result) == (f"camcli: error: model {files['two_outputs']} has 2 outputs (age: (batch, 1), "
                                 "species: (batch, 3)); choose the one to explain with --output NAME")
    result = invoke("explain", files["images"], "--model", files["two_outputs"], "--output", "age",
                    "--target", "increase", "--out", tmp_path, "-q")
    assert result.exit_code == 0, result.stderr
    record = json.loads((tmp_path / "img0.json").read_text())
    assert record["target"] == {"kind": "increase", "output": "age"}
    assert json.loads((tmp_path / "summary.json").read_text())["target"] == {"kind": "increase", "output": "age"}
    assert (tmp_path / "img0.gradcam.0.png").is_file()


def test_cli_segmentation_region_and_mask(files, tmp_path):
    result = invoke("explain", files["images"], "--model", files["segmenter"], "--out", tmp_path)
    assert result.exit_code == 2
    assert only_line(result) == (f"camcli: error: model {files['segmenter']} outputs (batch, 8, 8, 3), a score per "
                                 "pixel: explain a region of it with --target region")
    result = invoke("explain", files["images"], "--model", files["segmenter"], "--target", "region",
                    "--target-mask", files["mask"], "--out", tmp_path, "-q")
    assert result.exit_code == 0, result.stderr
    record = json.loads((tmp_path / "img0.json").read_text())
    assert record["target"]["kind"] == "region" and record["target"]["mask"] == str(files["mask"])
    assert sum(p["score"] for p in record["predictions"]) == pytest.approx(1.0)  # shares of the pixels
    # A class name needs the classes' names: the one line says where they come from.
    result = invoke("explain", files["images"], "--model", files["segmenter"], "--target", "region", "--class", "car",
                    "--out", tmp_path / "car")
    assert result.exit_code == 2 and not (tmp_path / "car").exists()
    assert only_line(result) == ("camcli: error: unknown class 'car': the model's classes have no names; give them "
                                 "with --labels FILE (one name per line), or give a class index, 0 to 2")
    (tmp_path / "labels.txt").write_text("road\ncar\nsky\n", "utf-8")
    result = invoke("explain", files["images"], "--model", files["segmenter"], "--target", "region", "--class", "car",
                    "--labels", tmp_path / "labels.txt", "--out", tmp_path / "car", "-q")
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "car" / "img0.json").read_text())["explanations"][0]["class_index"] == 1
    result = invoke("explain", files["images"], "--model", files["regressor"], "--target", "region",
                    "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert only_line(result) == (f"camcli: error: model {files['regressor']} outputs (batch, 1); --target region "
                                 "needs per-pixel scores (batch, height, width, classes)")


def test_cli_regression(files, tmp_path):
    result = invoke("explain", files["images"], "--model", files["regressor"], "--target", "value", "--out", tmp_path,
                    "-q")
    assert result.exit_code == 0, result.stderr
    model = keras.models.load_model(files["regressor"])
    image = np.asarray(Image.open(files["images"] / "img0.png"), dtype="float32")[None]
    record = json.loads((tmp_path / "img0.json").read_text())
    # a float32 score near 300: the batch path and predict() differ in the last bits, so compare relatively
    assert record["predictions"][0]["score"] == pytest.approx(float(model.predict(image, verbose=0)[0, 0]), rel=1e-6)
    assert record["target"] == {"kind": "value"}
    result = invoke("explain", files["images"], "--model", files["regressor"], "--target", "value", "--method", "cam",
                    "--out", tmp_path / "cam")
    assert result.exit_code == 2
    assert only_line(result) == ("camcli: error: --method cam explains class scores; for --target value use "
                                 "--method gradcam")


def test_cli_resume_sees_a_changed_extra_inputs_table(files, tmp_path):
    table = tmp_path / "meta.json"
    table.write_text(json.dumps({str(files["images"] / "img0.png"): {"meta": [1, 2]},
                                 str(files["images"] / "img1.png"): {"meta": [3, 4]}}))
    args = ["explain", files["images"], "--model", files["two_inputs"], "--input", "image", "--extra-inputs", table,
            "--out", tmp_path / "out", "--resume", "--json", "-q"]
    assert json.loads(invoke(*args).stdout)["skipped"] == 0
    assert json.loads(invoke(*args).stdout)["skipped"] == 2
    table.write_text(json.dumps([{"image": str(files["images"] / "img0.png"), "meta": [1, 2]},
                                 {"image": str(files["images"] / "img1.png"), "meta": [0, 0]}]))
    rerun = json.loads(invoke(*args).stdout)
    assert (rerun["skipped"], rerun["recomputed"]) == (0, 2)  # the table is part of the fingerprint
