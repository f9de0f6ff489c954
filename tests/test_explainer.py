"""The maths of the one TensorFlow step, on tiny models whose answers are computed by hand in numpy."""

import keras
import numpy as np
import pytest
import tiny_models
from tiny_models import activations_of, explainer_for, unit

from camcli.errors import UsageError
from camcli.explain.explainer import parse_class_requests


def test_gradcam_on_gap_head_matches_hand_computed_reference():
    model = tiny_models.gap_dense()
    batch = tiny_models.images(3)
    activations = activations_of(model, "target", batch)  # (3, 8, 8, 5)
    kernel = model.get_layer("head").kernel.numpy()  # (5, 3)
    [result, *_] = explainer_for(model, layer="target", classes=["2"]).explain_batch(batch)
    # y^2 = sum_k W[k, 2] * mean_ij A^k_ij + b, so dy^2/dA^k_ij = W[k, 2] / 64 (before the softmax;
    # after it, the gradient would also depend on the other classes' probabilities).
    alpha = kernel[:, 2] / 64.0
    expected = unit(np.einsum("hwk,k->hw", activations[0], alpha))
    np.testing.assert_allclose(result.maps[0].heatmap, expected, atol=1e-5)
    assert result.maps[0].class_index == 2


def test_gradcam_on_flatten_head_matches_hand_computed_reference():
    model = tiny_models.flatten_dense()
    batch = tiny_models.images(2, seed=3)
    activations = activations_of(model, "target", batch)  # (2, 4, 4, 5)
    kernel = model.get_layer("head").kernel.numpy()  # (80, 3)
    results = explainer_for(model, layer="target", classes=["0"]).explain_batch(batch)
    # Flatten -> dense: dy^0/dA_ijk is the dense weight of that position, so alpha_k is its mean.
    alpha = kernel[:, 0].reshape(4, 4, 5).mean(axis=(0, 1))
    for image, result in zip(activations, results, strict=True):
        expected = unit(np.einsum("hwk,k->hw", image, alpha))
        np.testing.assert_allclose(result.maps[0].heatmap, expected, atol=1e-5)


def test_batch_equals_single_images():
    model = tiny_models.flatten_dense()
    batch = tiny_models.images(6, seed=5)
    explainer = explainer_for(model, layer="target", classes=["top1", "1"])
    together = explainer.explain_batch(batch)
    for image, joint in zip(batch, together, strict=True):
        [alone] = explainer.explain_batch(image[np.newaxis])
        for a, b in zip(alone.maps, joint.maps, strict=True):
            assert a.class_index == b.class_index
            np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-5)
        scores_alone = [p.score for p in alone.predictions]
        np.testing.assert_allclose(scores_alone, [p.score for p in joint.predictions], atol=1e-6)


def test_gradcam_equals_cam_up_to_scale_on_gap_dense_head():
    model = tiny_models.gap_dense(classes=4, seed=7)
    batch = tiny_models.images(4, seed=7)
    grad = explainer_for(model, method="gradcam", classes=["top1", "top2"]).explain_batch(batch)
    cam = explainer_for(model, method="cam", classes=["top1", "top2"]).explain_batch(batch)
    for g, c in zip(grad, cam, strict=True):
        for gm, cm in zip(g.maps, c.maps, strict=True):
            assert gm.class_index == cm.class_index
            if gm.empty:
                assert cm.empty
                continue
            corr = np.corrcoef(gm.heatmap.ravel(), cm.heatmap.ravel())[0, 1]
            assert corr >= 0.9999
            # Grad-CAM's weights are CAM's divided by the number of positions (h * w = 64).
            assert gm.raw_max == pytest.approx(cm.raw_max / 64, rel=1e-4)


def test_predictions_and_maps_come_from_one_pass_and_match_the_model():
    model = tiny_models.gap_dense(classes=6)
    batch = tiny_models.images(5, seed=2)
    probabilities = model.predict(batch, verbose=0)
    results = explainer_for(model, top_k=3).explain_batch(batch)
    for probs, result in zip(probabilities, results, strict=True):
        order = np.argsort(-probs)[:3]
        assert [p.index for p in result.predictions] == order.tolist()
        np.testing.assert_allclose([p.score for p in result.predictions], probs[order], rtol=1e-5)
        assert result.maps[0].class_index == order[0]  # default class: top-1


def snapshot(model):
    return (
        [layer.get_config() for layer in model.layers],
        [w.copy() for w in model.get_weights()],
        [getattr(layer, "activation", None) for layer in model.layers],
    )


def test_user_model_is_never_modified():
    model = tiny_models.gap_dense()
    batch = tiny_models.images(2)
    before_output = model.predict(batch, verbose=0)
    configs, weights, activations = snapshot(model)
    explainer_for(model, classes=["0", "1"]).explain_batch(batch)
    explainer_for(model, method="cam").explain_batch(batch)
    after_configs, after_weights, after_activations = snapshot(model)
    assert after_configs == configs
    assert after_activations == activations
    for a, b in zip(weights, after_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(model.predict(batch, verbose=0), before_output)
    np.testing.assert_allclose(before_output.sum(axis=1), 1.0, rtol=1e-5)  # still a softmax


def test_separate_softmax_layer_is_read_as_logits():
    flat = tiny_models.gap_dense(activation=None, seed=4)
    x = keras.Input((8, 8, 3))
    with_layer = keras.Model(x, keras.layers.Softmax(name="probs")(flat(x)), name="wrapped")
    batch = tiny_models.images(2, seed=4)
    # The nested model's final Dense is linear: a separate Softmax layer follows it.
    a = explainer_for(flat, layer="target").explain_batch(batch)
    b = explainer_for(with_layer, layer="gap_dense/target").explain_batch(batch)
    probabilities = with_layer.predict(batch, verbose=0)
    for ra, rb, probs in zip(a, b, probabilities, strict=True):
        np.testing.assert_allclose(ra.maps[0].heatmap, rb.maps[0].heatmap, atol=1e-5)
        assert rb.predictions[0].score == pytest.approx(float(probs.max()), rel=1e-5)


def test_nested_backbone_gives_the_same_maps_as_the_flat_model():
    flat = tiny_models.gap_dense(seed=9)
    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(x)
    y = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="target")(y)
    backbone = keras.Model(x, y, name="backbone")
    nested = keras.Sequential([keras.Input((8, 8, 3)), backbone, keras.layers.GlobalAveragePooling2D(),
                               keras.layers.Dense(3, activation="softmax", name="head")])
    nested.set_weights(flat.get_weights())
    batch = tiny_models.images(3, seed=9)
    nested_explainer = explainer_for(nested, method="cam")
    assert nested_explainer.layer == "backbone/target"  # the default looks inside the backbone
    for method in ("gradcam", "cam"):
        a = explainer_for(flat, layer="target", method=method).explain_batch(batch)
        b = explainer_for(nested, layer="backbone/target", method=method).explain_batch(batch)
        for ra, rb in zip(a, b, strict=True):
            np.testing.assert_allclose(ra.maps[0].heatmap, rb.maps[0].heatmap, atol=1e-5)


def test_inner_layer_of_nested_model_that_is_not_its_output():
    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="early")(x)
    y = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="late")(y)
    backbone = keras.Model(x, y, name="backbone")
    nested = keras.Sequential([keras.Input((8, 8, 3)), backbone, keras.layers.GlobalAveragePooling2D(),
                               keras.layers.Dense(3, activation="softmax")])
    [result] = explainer_for(nested, layer="backbone/early").explain_batch(tiny_models.images(1))
    assert result.maps[0].layer == "backbone/early"
    assert result.maps[0].heatmap.shape == (8, 8)
    with pytest.raises(UsageError, match="global-average-pooling"):
        explainer_for(nested, layer="backbone/early", method="cam")


def test_binary_sigmoid_head_class0_is_the_negated_logit():
    model = tiny_models.gap_dense(classes=1, activation="sigmoid", seed=11)
    batch = tiny_models.images(2, seed=11)
    activations = activations_of(model, "target", batch)
    kernel = model.get_layer("head").kernel.numpy()[:, 0] / 64.0
    results = explainer_for(model, classes=["0", "1"], top_k=2).explain_batch(batch)
    probability = model.predict(batch, verbose=0)[:, 0]
    for image, p, result in zip(activations, probability, results, strict=True):
        signed = np.einsum("hwk,k->hw", image, kernel)
        class0, class1 = result.maps
        if not class1.empty:
            np.testing.assert_allclose(class1.heatmap, unit(signed), atol=1e-5)
        if not class0.empty:
            np.testing.assert_allclose(class0.heatmap, unit(-signed), atol=1e-5)
        assert class1.score == pytest.approx(p, rel=1e-5)
        assert class0.score == pytest.approx(1 - p, rel=1e-4)


def test_multilabel_sigmoid_scores_are_independent():
    model = tiny_models.gap_dense(classes=4, activation="sigmoid", seed=12)
    batch = tiny_models.images(2, seed=12)
    results = explainer_for(model, top_k=4).explain_batch(batch)
    expected = model.predict(batch, verbose=0)
    for probs, result in zip(expected, results, strict=True):
        by_index = {p.index: p.score for p in result.predictions}
        np.testing.assert_allclose([by_index[i] for i in range(4)], probs, rtol=1e-5)
    assert sum(p.score for p in results[0].predictions) != pytest.approx(1.0, abs=1e-3)


def test_all_zero_map_is_reported_empty_without_nan():
    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="dead",
                            kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(-1.0))(x)
    y = keras.layers.GlobalAveragePooling2D()(y)
    y = keras.layers.Dense(3, activation="softmax")(y)
    model = keras.Model(x, y)
    for method in ("gradcam", "cam"):
        [result] = explainer_for(model, method=method).explain_batch(tiny_models.images(1))
        assert result.maps[0].empty is True
        assert result.maps[0].raw_max == 0.0
        assert not np.isnan(result.maps[0].heatmap).any()
        assert not result.maps[0].heatmap.any()


def test_frozen_model_still_gets_gradients():
    model = tiny_models.gap_dense(seed=13)
    reference = explainer_for(model).explain_batch(tiny_models.images(1, seed=13))
    model.trainable = False
    frozen = explainer_for(model).explain_batch(tiny_models.images(1, seed=13))
    np.testing.assert_allclose(frozen[0].maps[0].heatmap, reference[0].maps[0].heatmap, atol=1e-6)
    assert frozen[0].maps[0].raw_max > 0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"layer": "targte"}, "closest: target"),
        ({"layer": "head"}, "not (batch, height, width, channels)"),
        ({"layer": "gap"}, "class activation maps need a spatial or token layer"),
        ({"method": "gradcam+++"}, "choose one of gradcam, gradcam++"),
        ({"classes": ["7"]}, "out of range: class indices run from 0 to 2"),
        ({"classes": ["top4"]}, "use top1..top3"),
        ({"top_k": 0}, "`top_k=0` must be at least 1"),
        ({"top_k": 4}, "`top_k=4` is out of range"),
    ],
)
def test_usage_errors(options, message):
    with pytest.raises(UsageError) as error:
        explainer_for(tiny_models.gap_dense(), **options)
    assert message in str(error.value)


def test_cam_without_gap_head_suggests_gradcam():
    with pytest.raises(UsageError, match="use `methods=gradcam`"):
        explainer_for(tiny_models.flatten_dense(), method="cam")


def test_class_requests_parse_labels_case_insensitively():
    labels = ["tabby", "Egyptian_cat", "tiger cat"]
    parsed = parse_class_requests(["TABBY", "egyptian_cat", "Egyptian cat", "tiger_cat", "2", "top3"], labels)
    assert [(r.index, r.rank) for r in parsed] == [(0, None), (1, None), (1, None), (2, None), (2, None), (None, 3)]
    with pytest.raises(UsageError, match="closest: tabby"):
        parse_class_requests(["tabbby"], labels)


def test_class_ids_per_image_replace_the_requests():
    model = tiny_models.flatten_dense()
    batch = tiny_models.images(3, seed=2)
    explainer = explainer_for(model, layer="target", classes=["top1"])
    forced = explainer.explain_batch(batch, np.array([[2], [0], [-1]]))
    plain = explainer.explain_batch(batch)
    assert [r.maps[0].class_index for r in forced[:2]] == [2, 0]
    assert forced[2].maps[0].class_index == plain[2].maps[0].class_index  # -1 keeps the request (top1)
    by_hand = explainer_for(model, layer="target", classes=["2"]).explain_batch(batch[:1])
    np.testing.assert_allclose(forced[0].maps[0].heatmap, by_hand[0].maps[0].heatmap, atol=1e-6)
    with pytest.raises(UsageError, match="class index 3 is out of range"):
        explainer.explain_batch(batch, np.array([[3], [0], [0]]))


SHARED_MESSAGE = "must share the model, the layers, the head, the target, the classes and the precision"


def test_method_set_refuses_mismatched_or_repeated_methods():
    from camcli.explain.explainer import Explainer, MethodSet
    from camcli.models.loading import wrap_model

    loaded = wrap_model(tiny_models.gap_dense(), preprocess="none")
    gradcam = Explainer(loaded, method="gradcam")
    with pytest.raises(UsageError, match="`methods=gradcam` is given twice"):
        MethodSet([gradcam, Explainer(loaded, method="gradcam")])
    with pytest.raises(UsageError, match=SHARED_MESSAGE):
        MethodSet([gradcam, Explainer(loaded, method="cam", classes=["top2"])])
    with pytest.raises(UsageError, match=SHARED_MESSAGE):
        MethodSet([gradcam, Explainer(loaded, method="cam", head="sigmoid")])  # other scores: another step
    with pytest.raises(UsageError, match=SHARED_MESSAGE):
        MethodSet([gradcam, Explainer(loaded, method="layercam", layer="conv1")])
    with pytest.raises(UsageError, match=SHARED_MESSAGE):
        MethodSet([gradcam, Explainer(loaded, method="cam", precision="bfloat16")])  # another copy of the model
    with pytest.raises(UsageError, match=r"at least one method \(`methods`\)"):
        MethodSet([])
    both = MethodSet([gradcam, Explainer(loaded, method="cam")])
    assert both.method_names == ["gradcam", "cam"] and both.layer == gradcam.layer


@pytest.mark.parametrize("aug_smooth", [False, True])
def test_method_set_runs_one_step_per_batch_and_gives_each_method_its_own_maps(aug_smooth):
    from camcli.explain.augment import AUGMENTATIONS
    from camcli.explain.explainer import Explainer, MethodSet
    from camcli.models.loading import wrap_model

    loaded = wrap_model(tiny_models.gap_dense(classes=4, seed=3), preprocess="none")
    batch = tiny_models.images(3, seed=4)
    # A gradient-free method first; Score-CAM's masked passes stay per method, and the guided
    # methods share one guided pass. Guided backprop has no layer map to smooth.
    names = ["cam", "gradcam", "gradcam++", "layercam", "eigencam", "scorecam", "guidedgradcam"]
    names += [] if aug_smooth else ["guidedbackprop"]

    def build(name):
        return Explainer(loaded, method=name, classes=["top1", "top3"], aug_smooth=aug_smooth)

    steps = len(AUGMENTATIONS) if aug_smooth else 1
    alone = [build(name) for name in names]
    alone_results = [explainer.explain_batch(batch) for explainer in alone]
    assert [explainer.steps_run for explainer in alone] == [steps] * len(names)

    together = MethodSet([build(name) for name in names])
    assert together.step.gradients  # one gradient method among them is enough
    results = together.explain_batch(batch)
    # One step per explained batch (and per augmented copy), run by the set for all its methods.
    assert together.step.runs == steps and together.steps_run == steps
    assert [e.steps_run for e in together.explainers] == [0] * len(names)  # none ran a step of its own
    assert together.masked_images_scored == sum(e.masked_images_scored for e in alone) > 0
    for b, result in enumerate(results):
        joint = result.maps
        separate = [m for per_method in alone_results for m in per_method[b].maps]
        assert [(m.method, m.class_index) for m in joint] == [(m.method, m.class_index) for m in separate]
        for shared_map, own_map in zip(joint, separate, strict=True):
            np.testing.assert_allclose(shared_map.heatmap, own_map.heatmap, atol=1e-6)
            assert shared_map.raw_max == pytest.approx(own_map.raw_max, rel=1e-5)
            assert shared_map.empty == own_map.empty
            assert (shared_map.image is None) == (own_map.image is None)
            if own_map.image is not None:  # the guided methods' RGB images
                np.testing.assert_allclose(shared_map.image, own_map.image, atol=1e-6)
    assert [r.predictions for r in results] == [r.predictions for r in alone_results[0]]


def test_method_set_explains_each_method_for_the_given_classes_with_its_own_top_k():
    from camcli.explain.explainer import Explainer, MethodSet
    from camcli.models.loading import wrap_model

    loaded = wrap_model(tiny_models.gap_dense(classes=4, seed=5), preprocess="none")
    batch = tiny_models.images(3, seed=6)
    truth = np.array([[3, 1], [0, -1], [2, 2]])  # -1 keeps the request; a repeat gives one map

    def build(method, top_k):
        return Explainer(loaded, method=method, classes=["top1", "top2"], top_k=top_k)

    forward_only = MethodSet([build("cam", 2), build("eigencam", 4)])
    assert not forward_only.step.gradients  # neither method differentiates anything
    methods = [("cam", 2), ("layercam", 4), ("eigencam", 1)]
    together = MethodSet([build(name, k) for name, k in methods])
    per_method = together.explain_each(batch, truth)
    assert together.steps_run == 1
    for (name, k), results in zip(methods, per_method, strict=True):
        alone = build(name, k).explain_batch(batch, truth)
        for shared, own in zip(results, alone, strict=True):
            assert len(shared.predictions) == k and shared.predictions == own.predictions
            assert [(m.method, m.class_index) for m in shared.maps] == [(m.method, m.class_index) for m in own.maps]
            for shared_map, own_map in zip(shared.maps, own.maps, strict=True):
                np.testing.assert_allclose(shared_map.heatmap, own_map.heatmap, atol=1e-6)
                assert shared_map.score == pytest.approx(own_map.score, rel=1e-6)
    assert [m.class_index for m in per_method[0][0].maps] == [3, 1]
    assert [m.class_index for m in per_method[0][2].maps] == [2]


def test_batch_run_outputs_are_named_read_only_and_computed_once():
    from camcli.explain.step import BatchRun, Step, StepOutputs

    model = tiny_models.gap_dense(seed=2)
    explainer = explainer_for(model, classes=["top1", "0"])
    step = Step(explainer.loaded, explainer.layers, explainer.head, explainer.requests, explainer.top_k,
                gradients=True)
    batch = tiny_models.images(2, seed=1)
    run = BatchRun(step, batch, np.full((2, 2), -1, np.int32))
    outputs = run.outputs
    assert isinstance(outputs, StepOutputs)
    assert outputs._fields == ("activations", "gradients", "scores", "top_scores", "top_indices", "class_ids")
    assert [a.shape for a in outputs.activations] == [(2, 8, 8, 5)]
    assert [g.shape for g in outputs.gradients] == [(2, 2, 8, 8, 5)]  # (batch, requests, h, w, channels)
    probabilities = model.predict(batch, verbose=0)
    np.testing.assert_allclose(outputs.scores, probabilities, rtol=1e-5)
    np.testing.assert_array_equal(outputs.top_indices[:, 0], probabilities.argmax(axis=1))
    np.testing.assert_array_equal(outputs.class_ids, np.stack([probabilities.argmax(axis=1), [0, 0]], axis=1))
    # At a GAP -> dense layer, d y^c / dA_ij^k = W[k, c] / 64 everywhere, per image and request.
    kernel = model.get_layer("head").kernel.numpy()
    for b in range(2):
        for r in range(2):
            expected = np.broadcast_to(kernel[:, outputs.class_ids[b, r]] / 64.0, (8, 8, 5))
            np.testing.assert_allclose(outputs.gradients[0][b, r], expected, rtol=1e-4, atol=1e-7)
    for array in (*outputs.activations, *outputs.gradients, outputs.scores, outputs.top_scores,
                  outputs.top_indices, outputs.class_ids):
        assert not array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        outputs.activations[0][...] = 0.0  # a method that wrote into them would corrupt the next method's maps
    assert step.runs == 1
    flipped, flipped_outputs = run.augmented(True, 1.0)
    assert run.augmented(True, 1.0)[1] is flipped_outputs and step.runs == 2  # once per copy
    np.testing.assert_allclose(flipped, batch[:, :, ::-1])
    np.testing.assert_array_equal(flipped_outputs.class_ids, outputs.class_ids)  # the original's classes
    guided = run.guided_gradients()
    assert run.guided_gradients() is guided and guided.shape == (2, 2, 8, 8, 3) and not guided.flags.writeable
    assert step.runs == 2  # the guided pass is not the step
    BatchRun(step, batch, np.zeros((2, 2), np.int32))  # other classes: another run, another step
    assert step.runs == 3


def test_a_step_without_gradients_computes_none():
    from camcli.explain.step import BatchRun

    explainer = explainer_for(tiny_models.gap_dense(), method="cam")
    assert explainer.step.gradients is False  # CAM reads the dense weights instead
    outputs = BatchRun(explainer.step, tiny_models.images(2), np.full((2, 1), -1, np.int32)).outputs
    assert outputs.gradients == () and outputs.activations[0].shape == (2, 8, 8, 5)
    assert explainer.steps_run == 1


# -- class requests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("2", 2), (" 2 ", 2), ("TABBY", 0), ("egyptian cat", 1), ("Egyptian_Cat", 1), ("tiger_cat", 2),
    ("3", None), ("-1", None), ("²", None), ("٣", None), ("tabbby", None), ("", None), (None, None),
])
def test_resolve_label(text, expected):
    from camcli.explain.classes import resolve_label

    assert resolve_label(text, ["tabby", "Egyptian_cat", "tiger cat"]) == expected


def test_a_label_wins_over_an_index():
    from camcli.explain.classes import resolve_label

    labels = ["1", "2", "3"]
    assert [resolve_label(text, labels) for text in ("1", "3", "0")] == [0, 2, 0]
    assert [r.index for r in parse_class_requests(["3", "0"], labels)] == [2, 0]


@pytest.mark.parametrize("text, message", [
    ("²", "unknown class '²'"),  # "²".isdigit() is True, but it is no index
    ("top²", "unknown class 'top²'"),
    ("-1", "`classes=-1` is out of range: class indices run from 0 to 2"),
    ("top0", "use top1..top3"),
])
def test_class_requests_that_are_no_class_are_usage_errors(text, message):
    with pytest.raises(UsageError) as error:
        parse_class_requests([text], ["tabby", "Egyptian_cat", "tiger cat"])
    assert message in str(error.value)
