"""The keras.applications models: the catalog's facts, the default layers, and explaining at real
sizes. ImageNet weights for VGG16/ResNet50/Xception cannot be had here, so they run with random
weights (same layers, same cost); real behaviour is checked with MobileNetV2 in test_real_imagenet."""

import keras
import numpy as np
import pytest

from camcli.errors import UsageError, WeightsUnavailableError
from camcli.explain.explainer import Explainer
from camcli.models import catalog
from camcli.models.loading import keras_cache_dir, load_model
from camcli.models.preprocess import preprocess

KERAS_MODULES = {
    "vgg16": "vgg16", "vgg19": "vgg19", "resnet50": "resnet", "resnet101": "resnet", "resnet152": "resnet",
    "resnet50v2": "resnet_v2", "inceptionv3": "inception_v3", "xception": "xception", "mobilenet": "mobilenet",
    "mobilenetv2": "mobilenet_v2", "densenet121": "densenet", "efficientnetb0": "efficientnet",
    "convnext_tiny": "convnext",
}
_loaded = {}


def random_weights(name):
    """Each big model is built once per session."""
    if name not in _loaded:
        _loaded[name] = load_model(name, weights="none")
    return _loaded[name]


def test_every_builtin_has_a_keras_module():
    assert set(KERAS_MODULES) == set(catalog.BUILTIN_MODELS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(catalog.BUILTIN_MODELS))
def test_catalog_facts_match_the_keras_model(name, monkeypatch):
    """Input size, default layer, CAM applicability, preprocessing and the weights file name."""
    from keras.src.utils import file_utils

    entry = catalog.BUILTIN_MODELS[name]
    requested = []
    real_get_file = file_utils.get_file

    def offline_get_file(fname=None, origin=None, **kwargs):
        requested.append(fname)
        if (keras_cache_dir() / fname).is_file():  # MobileNetV2's real weights are in the test cache
            return real_get_file(fname, origin, **kwargs)
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.delenv("CAMCLI_OFFLINE")
    monkeypatch.setattr(file_utils, "get_file", offline_get_file)
    if (keras_cache_dir() / entry.weights_file).is_file():
        assert load_model(name).pretrained
    else:
        with pytest.raises(WeightsUnavailableError) as error:
            load_model(name)  # builds the model, then Keras asks for the weights file
        message = str(error.value)
        assert str(keras_cache_dir() / entry.weights_file) in message
        assert f"`weights=/path/to/{entry.weights_file}`" in message and "\n" not in message
    assert requested == [entry.weights_file]

    loaded = load_model(name, weights="none")
    assert loaded.input_size == (entry.input_size, entry.input_size)
    explainer = Explainer(loaded, method="gradcam")
    assert explainer.layer == entry.default_layer
    if entry.cam:
        cam = Explainer(loaded, method="cam")
        assert len(cam.class_weights) == 1  # one (channels, classes) matrix per explained layer
        assert cam.class_weights[0].shape[1] == 1000
    else:
        with pytest.raises(UsageError, match="use `methods=gradcam`"):
            Explainer(loaded, method="cam")
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    module = getattr(keras.applications, KERAS_MODULES[name])
    expected = np.asarray(module.preprocess_input(pixels.copy()))
    np.testing.assert_allclose(preprocess(pixels, entry.preprocess), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, layer, map_shape",
    [
        ("vgg16", None, (14, 14)),
        ("resnet50", None, (7, 7)),
        ("xception", None, (10, 10)),
        ("xception", "block9_sepconv3_act", (19, 19)),
    ],
)
def test_explain_big_models_with_random_weights(name, layer, map_shape):
    loaded = random_weights(name)
    images = [np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)] * 2
    explainer = Explainer(loaded, layer=layer, classes=["top1", "281"])
    results = explainer.explain(images)
    assert len(results) == 2
    for result in results:
        assert len(result.predictions) == 5
        assert [m.class_index for m in result.maps][1] == 281
        assert result.maps[1].label == "tabby"
        for class_map in result.maps:
            assert class_map.heatmap.shape == map_shape
            assert np.isfinite(class_map.heatmap).all()
            assert 0.0 <= class_map.heatmap.min() and class_map.heatmap.max() <= 1.0
    np.testing.assert_allclose(results[0].maps[0].heatmap, results[1].maps[0].heatmap, atol=1e-5)


@pytest.mark.slow
def test_cam_on_resnet50_matches_gradcam_up_to_scale():
    loaded = random_weights("resnet50")
    image = [np.random.default_rng(2).integers(0, 256, (224, 224, 3), dtype=np.uint8)]
    [grad] = Explainer(loaded, method="gradcam").explain(image)
    [cam] = Explainer(loaded, method="cam").explain(image)
    assert grad.maps[0].class_index == cam.maps[0].class_index
    assert np.corrcoef(grad.maps[0].heatmap.ravel(), cam.maps[0].heatmap.ravel())[0, 1] >= 0.9999


@pytest.mark.slow
def test_resnet50_nested_in_a_user_model():
    backbone = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(96, 96, 3))
    model = keras.Sequential([keras.Input((96, 96, 3)), backbone, keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    from camcli.models.loading import wrap_model

    loaded = wrap_model(model, preprocess="caffe", labels=["a", "b", "c"])
    for method in ("gradcam", "cam"):
        explainer = Explainer(loaded, method=method)
        assert explainer.layer == "resnet50/conv5_block3_out"
        [result] = explainer.explain([np.full((96, 96, 3), 128, np.uint8)])
        assert result.maps[0].heatmap.shape == (3, 3)
    inner = Explainer(loaded, layer="resnet50/conv4_block6_out")
    assert inner.explain([np.zeros((50, 50, 3), np.uint8)])[0].maps[0].heatmap.shape == (6, 6)
