"""--precision bfloat16 / float16 (issue 29): the step computes on a reduced-precision copy of the model, never
on the model itself; every number after the step is float32; maps stay within the bound; records, summaries
and the --resume fingerprint say which precision made them; one warning where the machine gains nothing."""

import keras
import numpy as np
import pytest
from cli_helpers import invoke, read_json
from tiny_models import SIZE, explainer_for, gap_dense, images

from camcli.explain.explainer import MethodSet
from camcli.models import precision as precision_module
from camcli.models.loading import wrap_model
from camcli.models.precision import ComputeCopy, hardware_warning

REDUCED = ["bfloat16", "float16"]
LAYER_METHODS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam", "cam"]


def _conv_bn_model(seed=0):
    """Conv -> BN -> ReLU, depthwise -> BN, separable -> BN, GAP -> softmax: every kind of fold, with
    batch-norm statistics far from the identity."""
    x = keras.Input((SIZE, SIZE, 3))
    y = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="conv")(x)
    y = keras.layers.BatchNormalization(name="conv_bn")(y)
    y = keras.layers.ReLU(name="conv_relu")(y)
    y = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="depthwise")(y)
    y = keras.layers.BatchNormalization(name="depthwise_bn")(y)
    y = keras.layers.ReLU(name="depthwise_relu")(y)
    y = keras.layers.SeparableConv2D(5, 3, padding="same", name="separable")(y)
    y = keras.layers.BatchNormalization(name="separable_bn")(y)
    y = keras.layers.ReLU(name="target")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    y = keras.layers.Dense(3, activation="softmax", name="head")(y)
    model = keras.Model(x, y, name="conv_bn")
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.weights:
        if "moving_variance" in w.path:
            weights.append(rng.uniform(0.5, 2.0, w.shape).astype("float32"))
        else:
            weights.append(rng.normal(0.2, 0.5, w.shape).astype("float32"))
    model.set_weights(weights)
    return model


def _maps(explainer, batch):
    return np.stack([m.heatmap for result in explainer.explain_batch(batch) for m in result.maps])


def _correlation(a, b):
    a, b = np.ravel(a), np.ravel(b)
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("precision", REDUCED)
def test_the_copy_folds_batch_norm_and_computes_what_the_model_does(precision):
    model = _conv_bn_model()
    copy = ComputeCopy(model, precision)
    assert copy.folded == 3  # conv, depthwise and separable each absorb their normalisation
    assert copy.model is not model and copy.model.get_layer("conv").dtype_policy.compute_dtype == precision
    batch = images(4, seed=1) * 255.0
    expected = model.predict(batch, verbose=0)
    got = np.asarray(copy.model.predict(batch, verbose=0), dtype=np.float32)
    assert np.abs(got - expected).max() < 0.03  # probabilities, through three reduced-precision convolutions
    assert np.argmax(got, axis=1).tolist() == np.argmax(expected, axis=1).tolist()


def test_an_explained_convolution_keeps_its_own_output():
    model = _conv_bn_model()
    copy = ComputeCopy(model, "bfloat16", keep=["separable"])
    assert copy.folded == 2  # the explained conv's output is read as it is: its normalisation stays


@pytest.mark.parametrize("precision", REDUCED)
def test_the_user_model_and_the_global_policy_are_unchanged(precision):
    model = _conv_bn_model()
    before = [w.copy() for w in model.get_weights()]
    policies = {layer.name: layer.dtype_policy.name for layer in model.layers}
    global_policy = keras.config.dtype_policy().name
    batch = images(3, seed=2) * 255.0
    ExplainerSet = MethodSet.of(wrap_model(model, preprocess="none"), methods=["gradcam", "scorecam", "guidedgradcam"],
                                layers="target", precision=precision)
    ExplainerSet.explain_batch(batch)
    assert keras.config.dtype_policy().name == global_policy == "float32"
    assert {layer.name: layer.dtype_policy.name for layer in model.layers} == policies
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    assert model.get_layer("conv_bn").__class__ is keras.layers.BatchNormalization


@pytest.mark.parametrize("precision", REDUCED)
def test_every_number_after_the_step_is_float32_and_maps_stay_within_the_bound(precision):
    model = _conv_bn_model()
    batch = images(6, seed=3) * 255.0
    reference = MethodSet.of(wrap_model(model, preprocess="none"), methods=LAYER_METHODS, layers="target")
    reduced = MethodSet.of(wrap_model(model, preprocess="none"), methods=LAYER_METHODS, layers="target",
                           precision=precision)
    outputs = reduced.step.run(batch, np.full((6, 1), -1, np.int32))
    assert outputs.activations[0].dtype == outputs.gradients[0].dtype == outputs.scores.dtype == np.float32
    assert reduced.step.compute_copy is not None and reference.step.compute_copy is None
    expected, got = reference.explain_batch(batch), reduced.explain_batch(batch)
    for want_image, got_image in zip(expected, got, strict=True):
        assert [p.index for p in got_image.predictions][:1] == [p.index for p in want_image.predictions][:1]
        assert all(isinstance(p.score, float) for p in got_image.predictions)
        for want, have in zip(want_image.maps, got_image.maps, strict=True):
            assert (have.method, have.class_index) == (want.method, want.class_index)
            assert np.isfinite(have.heatmap).all()
            assert _correlation(want.heatmap, have.heatmap) > 0.97, (have.method, precision)


def test_maps_built_to_be_tiny_give_no_nan_in_float16():
    """Activations of 1e-6 underflow in float16, and Grad-CAM++'s g^2 / (2 g^2 + sum A g^3) would be 0/0 in
    half precision (TorchCAM's known NaN): the arithmetic is float32 after the step, and a map that cannot
    be computed is empty."""
    model = gap_dense(seed=4)
    target = model.get_layer("target")
    kernel, bias = target.get_weights()
    target.set_weights([kernel * 1e-7, bias * 1e-7])
    batch = images(4, seed=5)
    for method in ["gradcam++", "scorecam", "gradcam", "layercam"]:
        results = explainer_for(model, layer="target", method=method, precision="float16").explain_batch(batch)
        for result in results:
            for class_map in result.maps:
                assert np.isfinite(class_map.heatmap).all() and np.isfinite(class_map.raw_max)
                assert class_map.empty == (class_map.raw_max == 0.0)


def test_float16_keeps_small_gradients_by_scaling_the_score():
    """A head whose weights are scaled by 1e-5 gives gradients of about 1e-7 at the layer: subnormal in float16
    without the scale, where they keep a few bits (the map's r fell to 0.95; at 3e-6 it was empty); with it
    the map is float32's."""
    model = gap_dense(seed=6)
    head = model.get_layer("head")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 1e-5, bias])
    batch = images(4, seed=7)
    reference = _maps(explainer_for(model, layer="target", method="gradcam"), batch)
    half = _maps(explainer_for(model, layer="target", method="gradcam", precision="float16"), batch)
    assert min(_correlation(a, b) for a, b in zip(reference, half, strict=True)) > 0.999
    assert precision_module.gradient_scale("float16") > 1 and precision_module.gradient_scale("bfloat16") == 1


def test_a_reduced_precision_explainer_follows_new_weights_after_refresh():
    model = _conv_bn_model(seed=0)
    batch = images(3, seed=8) * 255.0
    explainer = explainer_for(model, layer="target", method="gradcam", precision="bfloat16")
    before = _maps(explainer, batch)
    model.set_weights(_conv_bn_model(seed=9).get_weights())
    explainer.refresh()  # camcli.keras.ExplainCallback calls it after each epoch
    after = _maps(explainer, batch)
    fresh = _maps(explainer_for(model, layer="target", method="gradcam", precision="bfloat16"), batch)
    np.testing.assert_allclose(after, fresh, atol=1e-6)
    assert np.abs(after - before).max() > 0.05


def test_an_unknown_precision_is_one_line():
    with pytest.raises(Exception, match=r"unknown `precision` 'half': choose one of float32, bfloat16, float16"):
        explainer_for(gap_dense(), precision="half")
    result = invoke("explain", "x.png", "--precision", "half")
    assert result.exit_code == 2 and "'half' is not one of 'float32', 'bfloat16', 'float16'" in result.stderr


def test_hardware_warning_says_what_to_expect(monkeypatch):
    monkeypatch.setattr(precision_module, "_cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert hardware_warning("bfloat16") is None and hardware_warning("float32") is None
    assert "float16 arithmetic" in hardware_warning("float16") and "use bfloat16" in hardware_warning("float16")
    monkeypatch.setattr(precision_module, "_cpu_flags", lambda: frozenset({"avx2"}))
    assert "no faster than float32" in hardware_warning("bfloat16")
    monkeypatch.setattr(precision_module, "_cpu_flags", lambda: None)
    assert "cannot tell" in hardware_warning("bfloat16")


def test_cli_records_summary_and_fingerprint_carry_the_precision(scenes, tmp_path, monkeypatch):
    monkeypatch.setattr(precision_module, "_cpu_flags", lambda: frozenset({"avx2"}))  # no fast path: one warning
    folder = tmp_path / "in"
    folder.mkdir()
    for scene in scenes[:2]:
        (folder / scene.name).write_bytes(scene.read_bytes())
    full = invoke("explain", folder, "--model", "demo", "--out", tmp_path / "f32")
    reduced = invoke("explain", folder, "--model", "demo", "--precision", "bfloat16", "--out", tmp_path / "bf16",
                     "--method", "gradcam", "--method", "scorecam", "--max-channels", "4")
    assert full.exit_code == 0 and reduced.exit_code == 0, reduced.stderr
    warnings = [line for line in reduced.stderr.splitlines() if line.startswith("camcli: warning: precision")]
    assert len(warnings) == 1 and "bfloat16" in warnings[0]
    assert read_json(tmp_path / "f32" / "summary.json")["precision"] == "float32"
    summary = read_json(tmp_path / "bf16" / "summary.json")
    assert summary["precision"] == "bfloat16"
    stem = scenes[0].stem
    record, record32 = read_json(tmp_path / "bf16" / f"{stem}.json"), read_json(tmp_path / "f32" / f"{stem}.json")
    assert record["precision"] == "bfloat16" and record32["precision"] == "float32"
    assert record["fingerprint"] != record32["fingerprint"]
    assert record["predictions"][0]["index"] == record32["predictions"][0]["index"]
    assert all(np.isfinite(entry["raw_max"]) for entry in record["explanations"])
    # --resume with another precision explains again: the fingerprint differs
    again = invoke("explain", folder, "--model", "demo", "--out", tmp_path / "f32", "--precision", "bfloat16",
                   "--resume", "--json")
    assert again.exit_code == 0, again.stderr
    assert read_json(tmp_path / "f32" / f"{stem}.json")["precision"] == "bfloat16"
    assert read_json(tmp_path / "f32" / "summary.json")["skipped"] == 0
