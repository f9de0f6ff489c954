"""Score-CAM's baseline (Wang et al. 2020, Eq. 7): a channel weighs its masked copy's score minus the score
of the input times the all-zero mask. So a constant offset on the model's outputs, which changes no
prediction and no gradient, leaves every target kind's map where it was; and a regression value below zero
still gets maps under `value`."""

import keras
import numpy as np
import pytest
import tiny_models
from tiny_models import activations_of, unit

from camcli.explain.explainer import Explainer
from camcli.models.loading import wrap_model

OFFSET = 2.0


def shifted(model, layer, offset=OFFSET):
    """A twin of `model` whose `layer` adds `offset` to every output unit (its bias), before the activation."""
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    bias = twin.get_layer(layer).bias
    bias.assign(bias + offset)
    return twin


def class_one(outputs):
    return outputs[:, 1]


def class_one_shifted(outputs):
    return outputs[:, 1] + OFFSET


def centred_regressor(shift):
    """The tiny regressor, its values centred on `shift` (so `value` meets both signs when shift is 0). Its
    kernel is scaled so that masking moves the values by about one, not a few hundredths: the offset cancels
    up to the model's own float32 rounding, about 1e-7 |y| on each score, and the tiny regressor's
    increases are so small that an offset of 2 left 2e-5 on its maps (32: 1e-4)."""
    model = tiny_models.regressor(units=2, seed=16)
    kernel, bias = model.get_layer("value").kernel, model.get_layer("value").bias
    kernel.assign(kernel * 10.0)
    bias.assign(bias - np.median(model.predict(tiny_models.images(6, seed=40), verbose=0), axis=0) + shift)
    return model


def _cases():
    """kind -> (model, its twin with the offset, explainer options). The offset goes on what the target reads:
    the class logits (before the softmax), every class's logit at every pixel, the regression output, the
    callable's value. `value` holds an output away from zero, so its twin keeps every output's sign."""
    classifier = tiny_models.gap_dense(seed=2)
    segmenter = tiny_models.segmenter()
    regressor = centred_regressor(0.0)
    negative = centred_regressor(-3.0)
    mask = np.zeros((8, 8), dtype="uint8")
    mask[2:7, 1:5] = 1
    return {
        "class": (classifier, shifted(classifier, "head"), {"classes": ["top1", "2"]}),
        "region": (segmenter, shifted(segmenter, "mask"), {"target": "region", "classes": ["top1", "top2"]}),
        "region-mask": (segmenter, shifted(segmenter, "mask"), {"target": "region", "target_mask": mask,
                                                                "classes": ["0", "1"]}),
        "increase": (regressor, shifted(regressor, "value"), {"target": "increase", "classes": ["0", "1"]}),
        "decrease": (regressor, shifted(regressor, "value"), {"target": "decrease", "classes": ["0", "1"]}),
        "value": (negative, shifted(negative, "value", -OFFSET), {"target": "value", "classes": ["0", "1"]}),
        "callable": (classifier, classifier, {"target": class_one}),
    }


def scorecam_maps(model, method="scorecam", **options):
    explainer = Explainer(wrap_model(model, preprocess="none"), layer="target", method=method, **options)
    return [m for result in explainer.explain_batch(tiny_models.images(6, seed=41)) for m in result.maps]


@pytest.mark.slow  # every target kind x three methods of masked passes: 10 s; make test and CI run it
@pytest.mark.parametrize("method", ["scorecam", "sscam", "iscam"])  # SS-CAM and IS-CAM weigh as Score-CAM does
@pytest.mark.parametrize("kind", list(_cases()))
def test_scorecam_is_unchanged_by_a_constant_offset_on_the_outputs(kind, method):
    model, twin, options = _cases()[kind]
    twin_options = {**options, "target": class_one_shifted} if kind == "callable" else options
    if kind == "value":  # the sign of every output, which `value` explains, is the same in both
        batch = tiny_models.images(6, seed=41)
        assert (model.predict(batch, verbose=0) < 0).all() and (twin.predict(batch, verbose=0) < 0).all()
    ours, theirs = scorecam_maps(model, method, **options), scorecam_maps(twin, method, **twin_options)
    if method == "sscam" and all(m.empty for m in ours + theirs):
        pytest.skip("SS-CAM's noise leaves no channel above the blank input under the same noise here: "
                    "nothing to compare")
    assert not all(m.empty for m in ours)  # the comparison is not between empty maps
    for a, b in zip(ours, theirs, strict=True):
        assert a.class_index == b.class_index
        assert a.empty == b.empty  # an all-zero map is empty in both
        # SS-CAM and IS-CAM average 35 and 10 float32 scores per channel: their rounding adds up (2e-5 seen).
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-5 if method == "scorecam" else 5e-5, rtol=0)
        assert a.raw_max == pytest.approx(b.raw_max, rel=1e-4 if method == "scorecam" else 1e-3, abs=1e-7)


def negative_regressor():
    """A regressor whose value is negative on every image while each channel's masked copy, dimmer, comes out
    positive: non-negative convolution (no bias) under a negative dense kernel, with the bias between the two.
    The raw signed value of every masked copy (the weight before the baseline) is then negative.
    -> (model, batch, activations, values of the masked copies (images, channels))."""
    model = tiny_models.regressor(seed=15)
    conv, dense = model.get_layer("target"), model.get_layer("value")
    conv.set_weights([np.abs(conv.kernel.numpy()), np.zeros(5, "float32")])  # a black image activates nothing
    dense.set_weights([-np.abs(dense.kernel.numpy()), np.zeros(1, "float32")])
    batch = tiny_models.images(4, seed=31)
    activations = activations_of(model, "target", batch)
    copies = []
    for image, a in zip(batch, activations, strict=True):
        for k in range(a.shape[-1]):  # 8x8 channels at an 8x8 input: each mask is its channel, min-max scaled
            channel = a[:, :, k]
            spread = channel.max() - channel.min()
            copies.append(image * ((channel - channel.min()) / spread if spread else 0 * channel)[:, :, None])
    masked = model.predict(np.stack(copies), verbose=0).reshape(len(batch), -1)
    whole = model.predict(batch, verbose=0)[:, 0]
    bias = (masked.min() + whole.max()) / 2  # every image below it, every masked copy above it
    dense.bias.assign([-bias])
    return model, batch, activations, masked - bias


def test_scorecam_value_on_negative_outputs_has_maps_and_matches_numpy():
    model, batch, activations, masked = negative_regressor()
    values = model.predict(batch, verbose=0)[:, 0]
    baseline = model.predict(np.zeros_like(batch[:1]), verbose=0)[0, 0]
    assert (values < 0).all() and (masked > 0).all()  # without the baseline every weight, -masked, was negative
    results = Explainer(wrap_model(model, preprocess="none"), layer="target", method="scorecam",
                        target="value").explain_batch(batch)
    for b, result in enumerate(results):
        # `value` holds the output away from zero: weight_k = sign(y) (y(X * H^k) - y(X * 0)), Eq. 7.
        weights = np.sign(values[b]) * (masked[b] - baseline)
        expected = unit(np.einsum("hwk,k->hw", activations[b], weights))
        assert not result.maps[0].empty
        np.testing.assert_allclose(result.maps[0].heatmap, expected, atol=1e-5)

