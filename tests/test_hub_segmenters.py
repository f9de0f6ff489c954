"""KerasHub segmenters, `--model hub:PRESET --target region` (camcli/models/hub.py, issue 31).

A DeepLabV3 on a three-stack ResNet and a SegFormer on a two-stage MiT, built from their configs with random
weights and saved once per module with `save_to_preset`: nothing downloads. The DeepLabV3 folder's name says
PASCAL VOC, so its 21 classes take VOC's names; the SegFormer's classes are their indices.
"""

import importlib.util

import numpy as np
import pytest
from cli_helpers import invoke, only_line, read_json
from PIL import Image

import camcli

# KerasHub models (built from configs, random weights) take seconds each: `make test` and CI run these, not test-fast.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("keras_hub") is None,
                                 reason='keras_hub is not installed (pip install "keras-camcli[hub]")')]

SIZE = 64


def tiny_deeplab():
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16, 16],
        stackwise_num_blocks=[1, 1, 1], stackwise_num_strides=[1, 2, 2], block_type="basic_block",
        image_shape=(None, None, 3), name="deeplab_resnet")  # named: test_hub's ResNet keeps its automatic name
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder, spatial_pyramid_pooling_key="P4", upsampling_size=4, dilation_rates=[2],
        low_level_feature_key="P2", projection_filters=8, image_shape=(None, None, 3))
    converter = keras_hub.layers.DeepLabV3ImageConverter(image_size=(SIZE, SIZE), scale=1 / 255.0)
    preprocessor = keras_hub.models.DeepLabV3ImageSegmenterPreprocessor(image_converter=converter)
    return keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=21, preprocessor=preprocessor,
                                                    activation="softmax")


def tiny_segformer():
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    encoder = keras_hub.models.MiTBackbone(
        layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 1], layerwise_sr_ratios=[2, 1],
        max_drop_path_rate=0.0, layerwise_patch_sizes=[7, 3], layerwise_strides=[4, 2], hidden_dims=[8, 16],
        image_shape=(SIZE, SIZE, 3))
    backbone = keras_hub.models.SegFormerBackbone(image_encoder=encoder, projection_filters=16)
    converter = keras_hub.layers.SegFormerImageConverter(image_size=(SIZE, SIZE), scale=1 / 255.0)
    preprocessor = keras_hub.models.SegFormerImageSegmenterPreprocessor(image_converter=converter)
    return keras_hub.models.SegFormerImageSegmenter(backbone=backbone, num_classes=4, preprocessor=preprocessor)


def tiny_basnet():
    """BASNet on a four-stack bottleneck ResNet with 8 filters at its stem (ResNet insists on 64 at its first
    stack; a bottleneck block's shortcut lets the stem differ): 1.2M weights, a 64 px input."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[8], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 8, 8, 8],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block",
        image_shape=(None, None, 3), name="basnet_resnet")
    backbone = keras_hub.models.BASNetBackbone(image_encoder=encoder, num_classes=1, image_shape=(SIZE, SIZE, 3),
                                               projection_filters=8)
    converter = keras_hub.layers.BASNetImageConverter(image_size=(SIZE, SIZE), scale=1 / 255.0)
    preprocessor = keras_hub.models.BASNetPreprocessor(image_converter=converter)
    return keras_hub.models.BASNetImageSegmenter(backbone=backbone, preprocessor=preprocessor)


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("segmenters")
    tiny_deeplab().save_to_preset(str(folder / "deeplab_pascalvoc"))
    tiny_segformer().save_to_preset(str(folder / "segformer"))
    return {"deeplab": folder / "deeplab_pascalvoc", "segformer": folder / "segformer"}


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("segmenter_images") / "street.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(path)
    return path


def test_a_pascal_voc_segmenter_takes_vocs_names_and_explains_a_region(presets, image, tmp_path):
    loaded = camcli.load_model(f"hub:{presets['deeplab']}")
    assert loaded.detector is None and loaded.input_size == (SIZE, SIZE)
    assert loaded.labels[:3] == ["background", "aeroplane", "bicycle"] and len(loaded.labels) == 21
    result = invoke("explain", image, "--model", f"hub:{presets['deeplab']}", "--target", "region",
                    "--class", "top1", "--out", tmp_path, "--quiet")
    assert result.exit_code == 0, result.stderr
    record = read_json(tmp_path / "street.json")
    [entry] = record["explanations"]
    assert record["target"] == {"kind": "region", "mask": None}
    assert entry["label"] in loaded.labels and not entry["empty"]
    assert record["layer"] == "deep_lab_v3_backbone/backbone_output_upsampling"


def test_a_segformer_explains_a_region_at_its_backbone(presets, image, tmp_path):
    result = invoke("explain", image, "--model", f"hub:{presets['segformer']}", "--target", "region",
                    "--layer", "seg_former_backbone", "--class", "2", "--out", tmp_path, "--quiet")
    assert result.exit_code == 0, result.stderr
    record = read_json(tmp_path / "street.json")
    [entry] = record["explanations"]
    assert entry["class_index"] == 2 and entry["label"] == "2"
    assert record["layer"].startswith("seg_former_backbone/")


def test_a_class_name_on_a_segmenter_without_names_says_to_give_labels(presets, image, tmp_path):
    result = invoke("explain", image, "--model", f"hub:{presets['segformer']}", "--target", "region",
                    "--class", "car", "--out", tmp_path)
    assert result.exit_code == 2
    assert "--labels FILE" in only_line(result)


def test_target_box_on_a_segmenter_is_one_line(presets, image, tmp_path):
    result = invoke("explain", image, "--model", f"hub:{presets['deeplab']}", "--target", "box", "--out", tmp_path)
    assert result.exit_code == 2
    line = only_line(result)
    assert line.startswith("camcli: error: --target box explains the detections of an object detector")
    assert line.endswith("outputs (batch, None, None, 21): use --target region")


@pytest.fixture(scope="module")
def basnet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("basnet") / "basnet"
    tiny_basnet().save_to_preset(str(folder))
    return folder


def test_basnet_explains_its_foreground_from_its_prediction_modules_decoder(basnet, tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)  # the input size: no resizing
    Image.fromarray(pixels).save(tmp_path / "object.png")
    loaded = camcli.load_model(f"hub:{basnet}")
    task = loaded.source_model  # the BASNetImageSegmenter; loaded.model is a view of its backbone's refine_out
    decoder = task.backbone.prediction_heads[0].input  # what its first side output reads
    assert loaded.model.get_layer(loaded.default_layer).output is decoder and loaded.model.output_shape == (
        None, SIZE, SIZE, 1)
    assert loaded.labels == ["background", "foreground"] and tuple(decoder.shape[1:3]) == (SIZE, SIZE)
    [marked] = [row for row in camcli.list_layers(loaded) if row.default]  # what camcli layers marks
    assert (marked.path, marked.shape) == (loaded.default_layer, f"{SIZE}x{SIZE}x64")
    result = invoke("explain", tmp_path / "object.png", "--model", f"hub:{basnet}", "--target", "region",
                    "--class", "foreground", "--class", "background", "--out", tmp_path / "out", "--quiet")
    assert result.exit_code == 0, result.stderr
    record = read_json(tmp_path / "out" / "object.json")
    # Its layers' names are numbered as KerasHub builds them, afresh in each process (the CLI's load is another).
    assert record["target"] == {"kind": "region", "mask": None} and record["layer"].startswith("activation_")
    assert [(e["class_index"], e["label"]) for e in record["explanations"]] == [(1, "foreground"), (0, "background")]
    # The foreground is where the refinement module's sigmoid passes 0.5: its share is the reported score.
    probability = np.asarray(task(pixels[np.newaxis].astype("float32") / 255.0))[0, ..., 0]
    scores = {p["label"]: p["score"] for p in record["predictions"]}
    assert scores["foreground"] == pytest.approx(np.mean(probability > 0.5), abs=1 / SIZE**2)
    assert all((tmp_path / "out" / f"object.gradcam.{k}.png").is_file() for k in (0, 1))


def test_an_unknown_class_on_basnet_lists_its_two_classes(basnet, image, tmp_path):
    result = invoke("explain", image, "--model", f"hub:{basnet}", "--target", "region", "--class", "car",
                    "--out", tmp_path)
    assert result.exit_code == 2
    assert only_line(result) == "camcli: error: unknown class 'car' (the model's classes: background, foreground)"


@pytest.mark.slow  # a shell that builds a segmenter and runs camcli
def test_the_readmes_segmenter_recipe_runs(tmp_path):
    from cli_helpers import run_readme_recipe

    run_readme_recipe("## KerasHub segmenters", tmp_path)
    record = read_json(tmp_path / "regions" / "chelsea.json")
    assert record["target"]["kind"] == "region" and len(record["explanations"]) == 2
    assert record["explanations"][1]["label"] == "cat"
