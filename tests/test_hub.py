"""KerasHub image classifiers, `--model hub:PRESET` (camcli/models/hub.py).

The classifier is a tiny ResNet built from its config with random weights and saved with
`save_to_preset` to a temporary folder, so nothing downloads. Named presets are asked for with
CAMCLI_OFFLINE set (conftest) and an empty kagglehub cache, or with kagglehub's download replaced by a
failing one. The tests that need KerasHub skip only when `keras_hub` cannot be imported.
"""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest
from cli_helpers import invoke, only_line
from PIL import Image

import camcli
from camcli.errors import ModelLoadError, UsageError, WeightsUnavailableError
from camcli.explain.explainer import Explainer
from camcli.models import hub
from camcli.models.loading import imagenet_labels
from camcli.models.preprocess import affine_mode, preprocess
from camcli.runs.runner import explainer_settings

needs_keras_hub = pytest.mark.skipif(importlib.util.find_spec("keras_hub") is None,
                                     reason='keras_hub is not installed (pip install "keras-camcli[hub]")')

SIZE = 32
CLASSES = 5
# ImageNet's mean and standard deviation as a KerasHub converter holds them: x * scale + offset.
SCALE = [1 / (255 * 0.229), 1 / (255 * 0.224), 1 / (255 * 0.225)]
OFFSET = [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]
LAYER = "res_net_backbone/stack0_block0_out"  # the backbone's last layer


def _tiny_classifier(classes, seed=0):
    """A ResNet with one basic block (KerasHub wants 64 filters), a (None, None, 3) input like the real
    presets, a 32x32 converter and a softmax head, so that the logits are not the model's output."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64], stackwise_num_blocks=[1],
        stackwise_num_strides=[1], block_type="basic_block", image_shape=(None, None, 3))
    converter = keras_hub.layers.ResNetImageConverter(image_size=(SIZE, SIZE), scale=SCALE, offset=OFFSET)
    preprocessor = keras_hub.models.ResNetImageClassifierPreprocessor(image_converter=converter)
    return keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=classes, preprocessor=preprocessor,
                                                  activation="softmax")


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub") / "tiny_resnet"
    _tiny_classifier(CLASSES).save_to_preset(str(folder))
    return folder


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("hub_images") / "img.png"
    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    cache = tmp_path / "kagglehub"
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(cache))
    return cache


# --- loading ---------------------------------------------------------------------------------------


@needs_keras_hub
def test_a_preset_folder_loads_with_its_converter(preset):
    loaded = camcli.load_model(f"hub:{preset}")
    assert loaded.name == f"hub:{preset}"
    assert loaded.input_size == (SIZE, SIZE)  # from the converter: the model itself takes any size
    assert tuple(loaded.model.inputs[0].shape) == (None, None, None, 3)
    assert loaded.preprocess == affine_mode(SCALE, OFFSET)
    assert loaded.labels == [str(i) for i in range(CLASSES)]
    # camcli's arithmetic is the converter's own, on an image already at the input size.
    rgb = np.random.default_rng(1).integers(0, 256, (1, SIZE, SIZE, 3)).astype(np.float32)
    converted = np.asarray(loaded.model.preprocessor.image_converter(rgb))
    np.testing.assert_allclose(preprocess(rgb, loaded.preprocess), converted, rtol=1e-6, atol=1e-6)


@needs_keras_hub
def test_labels_imagenet_for_1000_classes_else_the_labels_file(preset, tmp_path):
    folder = tmp_path / "imagenet_head"
    _tiny_classifier(1000).save_to_preset(str(folder))
    assert camcli.load_model(f"hub:{folder}").labels == imagenet_labels()
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\nd\ne\n")
    assert camcli.load_model(f"hub:{preset}", labels_file=str(names)).labels == list("abcde")
    names.write_text("a\nb\n")
    with pytest.raises(UsageError, match="has 2 names but hub:.* has 5 classes"):
        camcli.load_model(f"hub:{preset}", labels_file=str(names))


@needs_keras_hub
def test_preprocess_overrides_the_converter_and_weights_are_refused(preset):
    assert camcli.load_model(f"hub:{preset}", preprocess="tf").preprocess == "tf"
    with pytest.raises(UsageError, match="unknown preprocessing mode 'bogus'"):
        camcli.load_model(f"hub:{preset}", preprocess="bogus")
    with pytest.raises(UsageError, match="`weights` applies to built-in models"):
        camcli.load_model(f"hub:{preset}", weights="none")


# --- the map against a hand computation ------------------------------------------------------------


@needs_keras_hub
def test_gradcam_matches_a_tape_on_the_logits_and_leaves_the_model_untouched(preset):
    import tensorflow as tf

    loaded = camcli.load_model(f"hub:{preset}")
    classifier = loaded.model
    assert classifier.activation == "softmax"
    before = [w.copy() for w in classifier.get_weights()]
    explainer = Explainer(loaded, method="gradcam")
    assert explainer.layer == LAYER and classifier.backbone.layers[-1].name == LAYER.split("/")[1]
    rgb = np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    [result] = explainer.explain([rgb])

    # By hand: the backbone's features A, the head's logits (pooling, then the dense layer without its
    # softmax), and Grad-CAM = ReLU(sum_k mean_ij(d logit_c / d A^k_ij) A^k), scaled to [0, 1].
    x = np.asarray(classifier.preprocessor.image_converter(rgb[np.newaxis].astype(np.float32)))
    dense = classifier.get_layer("predictions")
    features = tf.convert_to_tensor(classifier.backbone(x))
    with tf.GradientTape() as tape:
        tape.watch(features)
        logits = tf.reduce_mean(features, axis=(1, 2)) @ dense.kernel + dense.bias
        top = int(np.argmax(logits[0]))
        score = logits[0, top]
    gradients = tape.gradient(score, features)[0].numpy()
    # Calling the classifier runs no preprocessing (its predict() would convert x a second time).
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), classifier(x, training=False).numpy(), atol=1e-5)
    raw = np.maximum((features[0].numpy() * gradients.mean(axis=(0, 1))).sum(axis=-1), 0.0)
    expected = raw / raw.max()

    [class_map] = result.maps
    assert class_map.class_index == top == result.predictions[0].index
    np.testing.assert_allclose(class_map.heatmap, expected, atol=1e-5)
    # CAM reads the same head's dense weights; at the pooled layer it equals Grad-CAM.
    [cam] = Explainer(loaded, method="cam").explain([rgb])[0].maps
    np.testing.assert_allclose(cam.heatmap, expected, atol=1e-5)
    for weights, now in zip(before, classifier.get_weights(), strict=True):
        np.testing.assert_array_equal(weights, now)


# --- the command line ------------------------------------------------------------------------------


@needs_keras_hub
def test_cli_explain_writes_overlays_and_records(preset, image_path, tmp_path):
    out = tmp_path / "out"
    result = invoke("explain", image_path, "--model", f"hub:{preset}", "--out", out)
    assert result.exit_code == 0, result.stderr
    record = json.loads((out / "img.json").read_text("utf-8"))
    assert record["model"] == f"hub:{preset}"
    assert record["layer"] == LAYER
    scores = [p["score"] for p in record["predictions"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == CLASSES
    assert {p["label"] for p in record["predictions"]} == {str(i) for i in range(CLASSES)}
    [explanation] = record["explanations"]
    assert explanation["method"] == "gradcam"
    assert (out / explanation["overlay"]).is_file()
    assert record["fingerprint"].startswith("sha256:")


@needs_keras_hub
def test_the_converter_arithmetic_is_in_the_fingerprint_settings(preset):
    loaded = camcli.load_model(f"hub:{preset}")
    settings = explainer_settings(Explainer(loaded))
    assert settings["preprocess"] == affine_mode(SCALE, OFFSET)
    assert repr(float(SCALE[0])) in settings["preprocess"]


@needs_keras_hub
def test_cli_layers_lists_the_backbone_layers(preset):
    result = invoke("layers", "--model", f"hub:{preset}")
    assert result.exit_code == 0, result.stderr
    marked = [line for line in result.stdout.splitlines() if line.startswith("*")]
    assert len(marked) == 1 and LAYER in marked[0]
    assert "res_net_backbone/stack0_block0_1_conv" in result.stdout


# --- presets that are not here --------------------------------------------------------------------


@needs_keras_hub
def test_a_named_preset_offline_names_the_cache_folder(empty_caches, image_path, tmp_path):
    result = invoke("explain", image_path, "--model", "hub:resnet_50_imagenet", "--out", tmp_path / "out")
    assert result.exit_code == 2
    line = only_line(result)
    folder = os.path.join(empty_caches, "models", "keras", "resnetv1", "keras", "resnet_50_imagenet")
    assert line.startswith(f"camcli: error: hub:resnet_50_imagenet: KerasHub preset not in its cache at {folder}")
    assert "CAMCLI_OFFLINE is set" in line and "KAGGLEHUB_CACHE" in line
    assert "hub:FOLDER (what classifier.save_to_preset(FOLDER) writes)" in line
    assert not empty_caches.exists()  # nothing was downloaded, or even tried


@needs_keras_hub
def test_camcli_and_kagglehub_agree_on_the_cache(empty_caches, monkeypatch):
    from kagglehub import config

    assert hub.kagglehub_cache_dir() == config.get_cache_folder() == str(empty_caches)
    monkeypatch.delenv("KAGGLEHUB_CACHE")
    assert hub.kagglehub_cache_dir() == config.get_cache_folder()


@needs_keras_hub
def test_an_hf_handle_offline_names_huggingfaces_cache():
    with pytest.raises(WeightsUnavailableError) as caught:
        camcli.load_model("hub:hf://camcli-tests/no-such-preset")
    folder = os.path.join(hub.hf_cache_dir(), "models--camcli-tests--no-such-preset")
    assert f"not in its cache at {folder}" in str(caught.value) and "HF_HUB_CACHE" in str(caught.value)


@needs_keras_hub
def test_a_failed_download_is_one_line_naming_the_cache(empty_caches, monkeypatch):
    import kagglehub

    def no_network(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'api.kaggle.com'")

    monkeypatch.setenv("CAMCLI_OFFLINE", "0")
    monkeypatch.setattr(kagglehub, "model_download", no_network)
    with pytest.raises(WeightsUnavailableError) as caught:
        camcli.load_model("hub:kaggle://keras/resnetv1/keras/resnet_50_imagenet/3")
    message = str(caught.value)
    assert "\n" not in message
    assert f"not in its cache at {empty_caches / 'models/keras/resnetv1/keras/resnet_50_imagenet/3'}" in message
    assert "(Failed to resolve 'api.kaggle.com')" in message


@needs_keras_hub
def test_an_unknown_preset_name_suggests_close_ones():
    with pytest.raises(UsageError, match="did you mean resnet_50_imagenet"):
        camcli.load_model("hub:resnet_50_imagenett")


def test_without_keras_hub_one_line_says_what_to_install(monkeypatch, image_path, tmp_path):
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # `import keras_hub` now raises ImportError
    with pytest.raises(ModelLoadError, match='KerasHub is not installed .*; pip install "keras-camcli\\[hub\\]"'):
        camcli.load_model("hub:resnet_50_imagenet")
    result = invoke("explain", image_path, "--model", "hub:resnet_50_imagenet", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert only_line(result).endswith('pip install "keras-camcli[hub]"')
