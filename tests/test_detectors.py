"""KerasHub object detectors, `--model hub:PRESET --target box` (camcli/explain/detection.py, issue 31).

The detector is a tiny RetinaNet built from its config with random weights (a one-stack ResNet, whose
finest output, P3, is the only level the feature pyramid reads), saved once per module with
`save_to_preset` to a temporary folder, so nothing downloads. Its box head is scaled down so that the
boxes stay near their anchors, and its class head up, so that an image has a few dozen detections.
"""

import importlib.util
import json

import numpy as np
import pytest
from cli_helpers import invoke, only_line, read_json
from PIL import Image

import camcli
from camcli.errors import UsageError

# KerasHub models (built from configs, random weights) take seconds each: `make test` and CI run these, not test-fast.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("keras_hub") is None,
                                 reason='keras_hub is not installed (pip install "keras-camcli[hub]")')]

SIZE = 64
CLASSES = 3
LAYER = "retina_net_backbone/backbone/stack1_block0_out"  # the ResNet's P3 output, stride 8


def tiny_detector(size=SIZE, classes=CLASSES, seed=0):
    """A RetinaNet on a two-stack ResNet (P2, P3): the pyramid reads P3 and makes P4 from it."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        image_shape=(None, None, 3), name="detector_resnet")  # named: test_hub's ResNet keeps its automatic name
    backbone = keras_hub.models.RetinaNetBackbone(image_encoder=encoder, min_level=3, max_level=4, use_p5=False,
                                                  image_shape=(None, None, 3))
    converter = keras_hub.layers.RetinaNetImageConverter(image_size=(size, size), scale=1 / 255.0)
    preprocessor = keras_hub.models.RetinaNetObjectDetectorPreprocessor(image_converter=converter)
    detector = keras_hub.models.RetinaNetObjectDetector(backbone=backbone, num_classes=classes,
                                                        preprocessor=preprocessor, pre_logits_num_conv_layers=1)
    kernel, bias = detector.box_head.prediction_layer.get_weights()
    detector.box_head.prediction_layer.set_weights([kernel * 0.01, bias * 0])  # boxes near their anchors
    kernel, bias = detector.classification_head.prediction_layer.get_weights()
    detector.classification_head.prediction_layer.set_weights([kernel * 3, bias - 1])
    return detector


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detector") / "tiny_retinanet"
    tiny_detector().save_to_preset(str(folder))
    return folder


@pytest.fixture(scope="module")
def loaded(preset):
    return camcli.load_model(f"hub:{preset}")


@pytest.fixture(scope="module")
def pictures():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8), rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)]


@pytest.fixture(scope="module")
def explainer(loaded):
    from camcli.explain.detection import DetectionExplainer

    return DetectionExplainer(loaded, methods=["gradcam", "eigencam"], target="box", min_score=0.84)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, pictures):
    folder = tmp_path_factory.mktemp("detector_images")
    for i, pixels in enumerate(pictures):
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    return folder


# --- loading and the detector's own detections ----------------------------------------------------------


def test_a_detector_preset_loads_with_its_decoder(loaded):
    assert loaded.detector is not None and loaded.detector.detector == "RetinaNetObjectDetector"
    assert loaded.input_size == (SIZE, SIZE) and loaded.labels == ["0", "1", "2"]
    assert (loaded.detector.iou_threshold, loaded.detector.confidence_threshold) == (0.5, 0.5)


def test_the_detections_are_the_detectors_own(loaded, pictures):
    """camcli's decoding and suppression, at the decoder's threshold, keep what `predict` keeps."""
    from camcli.explain.detection import DetectionExplainer

    explainer = DetectionExplainer(loaded, methods="eigencam", target="box")
    batch = explainer.preprocess(pictures)
    results = explainer.explain_batch(batch)
    predicted = loaded.model.predict(np.stack([np.asarray(Image.fromarray(p).resize((SIZE, SIZE), Image.BILINEAR),
                                                          np.float32) for p in pictures]), verbose=0)
    for b, result in enumerate(results):
        count = int(predicted["num_detections"][b])
        assert len(result.detections) == count > 3
        ours = sorted((d.class_index, round(d.score, 4)) for d in result.detections)
        theirs = sorted((int(c), round(float(s), 4)) for c, s in zip(predicted["labels"][b][:count],
                                                                      predicted["confidence"][b][:count], strict=True))
        assert ours == theirs
        assert [d.score for d in result.detections] == sorted((d.score for d in result.detections), reverse=True)


# --- the target's gradient against a hand computation ---------------------------------------------------


def _hand_gradients(model, batch, anchors, classes):
    """d cls_logits[b, anchor, class] / d P3[b] with a plain tape on the detector's own layers: the encoder's
    P3, the feature pyramid, the class head per level, reshaped and concatenated as the model does."""
    import keras
    import tensorflow as tf

    backbone = model.backbone
    extractor = backbone.get_layer("backbone")
    features = extractor(batch)
    with tf.GradientTape() as tape:
        tape.watch(features["P3"])
        pyramid = backbone.get_layer("fpn")(features)
        logits = keras.ops.concatenate([keras.ops.reshape(model.classification_head(pyramid[level]),
                                                          (len(batch), -1, CLASSES)) for level in pyramid], axis=1)
        where = [[b, a, c] for b, (a, c) in enumerate(zip(anchors, classes, strict=True))]
        score = tf.reduce_sum(tf.gather_nd(logits, where))
    return logits.numpy(), tape.gradient(score, features["P3"]).numpy()


def test_a_detections_gradient_is_its_anchors_class_logit_by_hand(loaded, explainer, pictures):
    batch = explainer.preprocess(pictures)
    outputs = explainer.step.run(batch)
    assert explainer.layers == [LAYER]
    assert min(outputs.counts) >= 2
    for r in (0, min(outputs.counts) - 1):
        anchors, classes = outputs.anchors[:, r], outputs.class_ids[:, r]
        logits, hand = _hand_gradients(loaded.model, batch, anchors, classes)
        by_hand = [logits[b, a, c] for b, (a, c) in enumerate(zip(anchors, classes, strict=True))]
        np.testing.assert_allclose(outputs.logits[:, r], by_hand, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(outputs.scores[:, r], 1 / (1 + np.exp(-outputs.logits[:, r])), rtol=1e-5)
        np.testing.assert_allclose(outputs.gradients[0][:, r], hand, rtol=1e-4, atol=1e-6)
        assert np.abs(hand).max() > 0


def test_the_box_overlap_target_sums_the_overlapping_predictions(loaded, pictures):
    from camcli.explain.detection import DetectionExplainer

    overlap = DetectionExplainer(loaded, methods="gradcam", target="box", min_score=0.84, box_overlap=0.5)
    batch = overlap.preprocess(pictures[:1])
    outputs = overlap.step.run(batch)
    anchor, cls = int(outputs.anchors[0, 0]), int(outputs.class_ids[0, 0])
    own = DetectionExplainer(loaded, methods="gradcam", target="box", min_score=0.84).step.run(batch)
    assert int(own.anchors[0, 0]) == anchor
    assert not np.allclose(outputs.gradients[0][0, 0], own.gradients[0][0, 0])  # several anchors overlap it
    assert overlap.target_record() == {"kind": "box", "score": "overlap", "box_overlap": 0.5}
    assert cls == int(own.class_ids[0, 0])


# --- the batch contract -----------------------------------------------------------------------------------


def test_a_detections_map_does_not_depend_on_the_other_images(explainer, pictures):
    """Image 0's maps are the same alone and beside an image with other detections (nothing is averaged
    across the batch, and padding slots cost it nothing)."""
    [alone] = explainer.explain(pictures[:1])
    together = explainer.explain(pictures)
    assert len(together[1].detections) != len(alone.detections)
    assert [d.anchor for d in together[0].detections] == [d.anchor for d in alone.detections]
    assert len(alone.maps) == 2 * len(alone.detections)
    for mine, theirs in zip(alone.maps, together[0].maps, strict=True):
        assert (mine.method, mine.detection.index) == (theirs.method, theirs.detection.index)
        np.testing.assert_allclose(mine.heatmap, theirs.heatmap, atol=1e-5)
    gradcam = [m for m in alone.maps if m.method == "gradcam"]
    assert not all(np.allclose(gradcam[0].heatmap, m.heatmap) for m in gradcam[1:])  # each detection its own map


def test_the_batched_step_gives_each_image_its_own_gradients(explainer, pictures):
    """The step itself, on a batch (the explainer runs gradient steps one image at a time, for memory): image
    0's detections and gradients are the same alone and beside an image with more detections, whose extra
    slots are padding for image 0."""
    batch = explainer.preprocess(pictures)
    alone, together = explainer.step.run(batch[:1]), explainer.step.run(batch)
    count = int(alone.counts[0])
    assert together.counts[1] > together.counts[0] == count and together.gradients[0].shape[1] > count
    np.testing.assert_array_equal(together.anchors[0, :count], alone.anchors[0])
    np.testing.assert_allclose(together.gradients[0][0, :count], alone.gradients[0][0], rtol=1e-4, atol=1e-7)
    assert not together.gradients[0][0, count:].any()  # padding: no score, no gradient


def test_classes_keep_a_class_or_the_best_detections(loaded, pictures):
    from camcli.explain.detection import DetectionExplainer

    every = DetectionExplainer(loaded, methods="eigencam", target="box").explain(pictures[:1])[0].detections
    best = DetectionExplainer(loaded, methods="eigencam", target="box", classes="top2").explain(pictures[:1])[0]
    assert [d.anchor for d in best.detections] == [d.anchor for d in every[:2]]
    ones = DetectionExplainer(loaded, methods="eigencam", target="box", classes="1").explain(pictures[:1])[0]
    assert [d.anchor for d in ones.detections] == [d.anchor for d in every if d.class_index == 1]


# --- the command line -------------------------------------------------------------------------------------


def test_explain_writes_a_map_per_detection_with_its_box(preset, image_folder, tmp_path):
    out = tmp_path / "out"
    result = invoke("explain", image_folder, "--model", f"hub:{preset}", "--target", "box", "--min-score", "0.88",
                    "--method", "gradcam", "--method", "eigencam", "--out", out, "--quiet")
    assert result.exit_code == 0, result.stderr
    record = read_json(out / "img0.json")
    assert record["target"] == {"kind": "box", "score": "anchor"}
    detections = record["detections"]
    assert detections and all(d["score"] > 0.88 for d in detections)
    assert len(record["explanations"]) == 2 * len(detections)
    entry = record["explanations"][0]
    assert entry["overlay"] == "img0.gradcam.det0.png" and entry["detection"] == 0
    assert entry["box"] == detections[0]["box"] and entry["class_index"] == detections[0]["class_index"]
    x0, y0, x1, y1 = (int(round(v)) for v in detections[0]["box"])
    assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 48  # in the image's own pixels (80x48), not the input's
    overlay = np.asarray(Image.open(out / entry["overlay"]).convert("RGB"))
    assert overlay.shape == (48, 80, 3)
    assert (overlay[y0, x0:x1] == [255, 0, 255]).all()  # the detection's box, drawn
    assert [p["score"] for p in record["predictions"]] == [d["score"] for d in detections[:5]]
    again = invoke("explain", image_folder, "--model", f"hub:{preset}", "--target", "box", "--min-score", "0.88",
                   "--method", "gradcam", "--method", "eigencam", "--out", out, "--resume", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] == 2


def test_an_image_without_detections_is_recorded_not_failed(preset, image_folder, tmp_path):
    result = invoke("explain", image_folder, "--model", f"hub:{preset}", "--target", "box", "--min-score", "0.99999",
                    "--out", tmp_path, "--quiet")
    assert result.exit_code == 0, result.stderr
    record = read_json(tmp_path / "img1.json")
    assert record["detections"] == [] and record["explanations"] == [] and record["predictions"] == []


def test_resume_counts_an_image_without_detections_as_done(preset, image_folder, tmp_path):
    arguments = ["explain", image_folder, "--model", f"hub:{preset}", "--target", "box", "--min-score", "0.99999",
                 "--out", tmp_path]
    assert invoke(*arguments, "--quiet").exit_code == 0
    assert read_json(tmp_path / "img1.json")["detections"] == []
    again = invoke(*arguments, "--resume", "--json")
    assert again.exit_code == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["skipped"], summary["recomputed"]) == (2, 0)


@pytest.mark.parametrize("command, message", [
    ("audit", "the audit clusters each class's maps, one per image, and its maps are one per detection; explain its "
              "detections with camcli explain --target box"),
    ("evaluate", "the sanity check (--sanity) does not apply to its detections yet (the randomised layers change "
                 "which detections there are); drop it"),
])
def test_audit_and_the_sanity_check_refuse_a_detector_in_their_own_terms(preset, image_folder, tmp_path, command,
                                                                         message):
    truth = tmp_path / "truth.csv"
    truth.write_text("image,x0,y0,x1,y1,label\nimg1.png,0,0,10,10,0\n")
    given = ["--truth", truth] if command == "evaluate" else []
    result = invoke(command, image_folder, *given, "--model", f"hub:{preset}", "--sanity", "--out", tmp_path / "out")
    assert (result.exit_code, only_line(result)) == (2, f"camcli: error: hub:{preset} is an object detector: {message}")
    assert not (tmp_path / "out").exists()  # refused before any work: evaluate --sanity evaluates nothing


def test_auditing_a_detectors_explain_folder_is_one_line(preset, image_folder, tmp_path):
    explained = invoke("explain", image_folder, "--model", f"hub:{preset}", "--target", "box", "--min-score", "0.88",
                       "--method", "eigencam", "--save-heatmap", "--out", tmp_path, "--quiet")
    assert explained.exit_code == 0, explained.stderr
    result = invoke("audit", tmp_path)
    assert (result.exit_code, only_line(result)) == (2, f"camcli: error: the records in {tmp_path} are an object "
                                                        "detector's, one map per detection: the audit clusters each "
                                                        "class's maps, one per image, and does not apply to "
                                                        "detections yet")
    assert not (tmp_path / "audit.json").exists()


def test_the_sanity_check_refuses_a_detector_in_the_library(preset, image_folder):
    with pytest.raises(UsageError, match=r"is an object detector: the sanity check \(`sanity`\) does not apply"):
        camcli.sanity_paths([image_folder], model=f"hub:{preset}", out=None)


@pytest.mark.parametrize("arguments, message", [
    (["--target", "class"], "camcli: error: hub:{preset} is an object detector: explain its detections with "
                            "--target box, not --target class"),
    (["--target", "box", "--method", "scorecam"], "camcli: error: --method scorecam does not explain detections yet"),
    (["--target", "box", "--aug-smooth"], "camcli: error: --aug-smooth does not apply to an object detector"),
    (["--min-score", "0.5"], "camcli: error: --min-score applies to an object detector's detections: add --target box"),
])
def test_what_a_detector_cannot_do_is_one_line(preset, image_folder, tmp_path, arguments, message):
    result = invoke("explain", image_folder, "--model", f"hub:{preset}", *arguments, "--out", tmp_path)
    assert result.exit_code == 2
    assert only_line(result).startswith(message.format(preset=preset))


def test_target_box_on_a_classifier_is_one_line(image_folder, tmp_path):
    result = invoke("explain", image_folder, "--model", "demo", "--target", "box", "--out", tmp_path)
    assert result.exit_code == 2
    assert only_line(result) == ("camcli: error: --target box explains the detections of an object detector (a "
                                 "KerasHub ObjectDetector, hub:PRESET), and model demo outputs (batch, 6): use "
                                 "--target class")


def test_a_named_detector_preset_offline_is_one_line(image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    result = invoke("explain", image_folder, "--model", "hub:retinanet_resnet50_fpn_coco", "--target", "box",
                    "--out", tmp_path / "out")
    assert result.exit_code == 2
    line = only_line(result)
    assert line.startswith("camcli: error: hub:retinanet_resnet50_fpn_coco: KerasHub preset not in its cache at ")
    assert "retinanet_resnet50_fpn_coco" in line and "CAMCLI_OFFLINE is set" in line


def test_the_detector_explainer_refuses_a_classifier():
    from camcli.explain.detection import DetectionExplainer

    with pytest.raises(UsageError, match="is no object detector; explain it with camcli.Explainer"):
        DetectionExplainer(camcli.load_model("demo"), target="box")


@pytest.mark.slow  # a shell that builds a detector and runs camcli twice
def test_the_readmes_detector_recipe_runs(tmp_path):
    """The README's "Object detectors" recipe, as written: its preset, two runs, each image's detections."""
    from cli_helpers import run_readme_recipe

    run_readme_recipe("## Object detectors", tmp_path)
    record = read_json(tmp_path / "detections" / "chelsea.json")
    assert len(record["detections"]) == 3 and len(record["explanations"]) == 3
    assert (tmp_path / "detections" / "chelsea.gradcam.det2.png").is_file()
    assert "detection 0:" in (tmp_path / "detections" / "index.html").read_text("utf-8")
    eigencam = read_json(tmp_path / "detections-eigencam" / "chelsea.json")
    assert all(d["score"] > 0.7 for d in eigencam["detections"])


# --- evaluate -------------------------------------------------------------------------------------------


def test_evaluate_scores_each_matched_detection(preset, image_folder, tmp_path):
    """Truth boxes where the detector found two objects (one a little shifted) and one where nothing was found:
    two matches, each scored by both methods."""
    from camcli.explain.detection import DetectionExplainer

    loaded = camcli.load_model(f"hub:{preset}")
    [result] = DetectionExplainer(loaded, methods="eigencam", target="box", min_score=0.84).explain(
        [np.asarray(Image.open(image_folder / "img1.png"))])
    first, second = result.detections[:2]
    shifted = [value + 1 for value in first.box_in_pixels(SIZE, SIZE)]
    rows = [["img1.png", *shifted, first.label], ["img1.png", *second.box_in_pixels(SIZE, SIZE), second.label],
            ["img1.png", 0, 0, 2, 2, "0"]]
    truth = tmp_path / "truth.csv"
    truth.write_text("image,x0,y0,x1,y1,label\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    report = camcli.evaluate_paths([image_folder / "img1.png"], model=f"hub:{preset}", truth=truth,
                                   methods=["gradcam", "eigencam"], min_score=0.84, target="box",
                                   out=tmp_path / "out", steps=0)
    assert report.failures == [] and report.evaluated == 1
    for method in ("gradcam", "eigencam"):
        summary = report.methods[method]
        assert (summary["rows"], summary["matched"], summary["truth_boxes"]) == (2, 2, 3)
        assert 0 <= summary["metrics"]["energy"] <= 1 and summary["metrics"]["pointing"] in (0, 0.5, 1)
        assert summary["metrics"]["iou"] is None
    detections = sorted({row["detection"] for row in report.rows})
    assert detections == [first.index, second.index]
    written = read_json(tmp_path / "out" / "evaluation.json")
    assert written["rows"][0]["match_iou"] >= 0.5 and "energy" in written["rows"][0]


def test_a_detection_matches_the_best_free_truth_box_of_its_class():
    from camcli.evaluate.detections import match_detections
    from camcli.explain.detection import Detection

    def detection(index, class_index):
        return Detection(index, class_index, str(class_index), 0.9 - index / 10, 1.0, (0, 0, 0, 0), index)

    detections = [detection(0, 1), detection(1, 1), detection(2, 2)]
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]]
    truth = [(1, [0, 0, 10, 10]), (2, [1, 0, 11, 10]), (None, [20, 21, 30, 31])]
    matched = match_detections(detections, boxes, truth)
    # detection 0 takes the class-1 box; detection 1 finds only a class-2 box there; detection 2 the unlabelled one
    assert {index: truth_index for index, (truth_index, _) in matched.items()} == {0: 0, 2: 2}
    assert matched[2][1] == pytest.approx(90 / 110)


# --- D-FINE, a detection transformer: one box per query ----------------------------------------------------


def tiny_dfine(size=SIZE):
    """A D-FINE on a four-stage HGNetV2 (KerasHub's docstring example, smaller), 20 queries, random weights."""
    import keras
    import keras_hub
    from keras_hub.src.models.d_fine.d_fine_backbone import DFineBackbone
    from keras_hub.src.models.hgnetv2.hgnetv2_backbone import HGNetV2Backbone

    keras.utils.set_random_seed(0)
    stages = ["stage3", "stage4"]
    hgnet = HGNetV2Backbone(
        stem_channels=[3, 16, 16], stackwise_stage_filters=[[16, 16, 32, 1, 3, 3], [32, 16, 64, 1, 3, 3],
                                                            [64, 16, 64, 1, 3, 5], [64, 16, 64, 1, 3, 5]],
        apply_downsample=[False, True, True, True], use_lightweight_conv_block=[False, False, True, True],
        depths=[1, 1, 1, 1], hidden_sizes=[32, 64, 64, 64], embedding_size=16, use_learnable_affine_block=True,
        hidden_act="relu", image_shape=(size, size, 3), out_features=stages)
    backbone = DFineBackbone(
        backbone=hgnet, decoder_in_channels=[32, 32], encoder_hidden_dim=32, num_denoising=0, num_labels=CLASSES,
        hidden_dim=32, learn_initial_query=False, num_queries=20, anchor_image_size=(size, size), feat_strides=[16, 32],
        num_feature_levels=2, encoder_in_channels=[64, 64], encode_proj_layers=[1], num_attention_heads=2,
        encoder_ffn_dim=32, num_encoder_layers=1, hidden_expansion=0.34, depth_multiplier=0.5, eval_idx=-1,
        num_decoder_layers=2, decoder_attention_heads=2, decoder_ffn_dim=32, decoder_n_points=[2, 2],
        lqe_hidden_dim=16, num_lqe_layers=1, out_features=stages, image_shape=(size, size, 3))
    converter = keras_hub.layers.DFineImageConverter(image_size=(size, size), scale=1 / 255.0)
    preprocessor = keras_hub.models.DFineObjectDetectorPreprocessor(image_converter=converter)
    return keras_hub.models.DFineObjectDetector(backbone=backbone, num_classes=CLASSES, bounding_box_format="yxyx",
                                                preprocessor=preprocessor)


@pytest.mark.slow  # about 40 s on 2 cores: a transformer's backward pass per query, compiled in a while loop
def test_a_dfine_detector_explains_its_best_queries(tmp_path, pictures):
    from camcli.explain.detection import DetectionExplainer

    tiny_dfine().save_to_preset(str(tmp_path / "dfine"))
    loaded = camcli.load_model(f"hub:{tmp_path / 'dfine'}")
    assert loaded.detector.detector == "DFineObjectDetector" and loaded.detector.max_detections == 20
    explainer = DetectionExplainer(loaded, methods=["hirescam", "eigencam"], target="box", classes="top3")
    assert explainer.layers == ["d_fine_backbone/encoder_input_proj_bn_0"]
    image = pictures[1]
    [result] = explainer.explain([image])
    predicted = loaded.model.predict(image[np.newaxis].astype(np.float32), verbose=0)
    count = int(predicted["num_detections"][0])
    best = sorted(predicted["confidence"][0][:count], reverse=True)[:3]
    assert [round(d.score, 5) for d in result.detections] == [round(float(s), 5) for s in best]
    logits = np.asarray(loaded.model(explainer.preprocess([image]))["logits"])[0]
    assert [d.logit for d in result.detections] == pytest.approx([logits[d.anchor, d.class_index]
                                                                   for d in result.detections], rel=1e-5)
    assert len(result.maps) == 6 and not any(m.empty for m in result.maps if m.method == "eigencam")
    outputs = explainer.step.run(explainer.preprocess([image]))
    assert all(np.abs(outputs.gradients[0][0, r]).max() > 0 for r in range(3))  # each query's own gradient


def test_a_detections_overlay_in_a_notebook_shows_its_box(explainer, pictures):
    [result] = explainer.explain(pictures[1:])
    detection_map = result.maps[0]
    picture = np.asarray(camcli.overlay(pictures[1], detection_map))
    x0, y0, x1, y1 = (int(round(v)) for v in detection_map.detection.box_in_pixels(SIZE, SIZE))
    assert (picture[y0 if y0 < SIZE else y1 - 1, x0:x1] == [255, 0, 255]).all()
    assert np.asarray(detection_map._repr_png_() and camcli.overlay(pictures[1], detection_map.heatmap)).shape == \
        picture.shape  # a bare heatmap has no box to draw
