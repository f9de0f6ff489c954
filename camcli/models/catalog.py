"""The built-in models: what each one needs, known without importing TensorFlow.

`camcli models` and `camcli --help` read this table, so it must stay import-free. The facts here
(input size, preprocessing mode, default layer, weights file name) are checked against the real
Keras models by tests/test_catalog.py, so a Keras upgrade that changes one fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass

# Preprocessing modes, as `keras.applications.imagenet_utils.preprocess_input` names them, plus
# camcli's own "scale01" (x / 255) and "none" (raw 0..255 floats).
PREPROCESS_MODES = ("caffe", "tf", "torch", "scale01", "none")


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    constructor: str  # attribute of keras.applications
    input_size: int  # square input side, in pixels
    preprocess: str  # one of PREPROCESS_MODES
    default_layer: str  # last spatial layer before the head
    cam: bool  # the default layer feeds global-average-pooling -> dense, so CAM applies
    weights_file: str  # the file Keras looks for in $KERAS_HOME/models/
    summary: str


_IMAGENET = [
    BuiltinModel("vgg16", "VGG16", 224, "caffe", "block5_conv3", False,
                 "vgg16_weights_tf_dim_ordering_tf_kernels.h5", "VGG16 (Simonyan & Zisserman 2014)"),
    BuiltinModel("vgg19", "VGG19", 224, "caffe", "block5_conv4", False,
                 "vgg19_weights_tf_dim_ordering_tf_kernels.h5", "VGG19 (Simonyan & Zisserman 2014)"),
    BuiltinModel("resnet50", "ResNet50", 224, "caffe", "conv5_block3_out", True,
                 "resnet50_weights_tf_dim_ordering_tf_kernels.h5", "ResNet-50 (He et al. 2015)"),
    BuiltinModel("resnet101", "ResNet101", 224, "caffe", "conv5_block3_out", True,
                 "resnet101_weights_tf_dim_ordering_tf_kernels.h5", "ResNet-101 (He et al. 2015)"),
    BuiltinModel("resnet152", "ResNet152", 224, "caffe", "conv5_block3_out", True,
                 "resnet152_weights_tf_dim_ordering_tf_kernels.h5", "ResNet-152 (He et al. 2015)"),
    BuiltinModel("resnet50v2", "ResNet50V2", 224, "tf", "post_relu", True,
                 "resnet50v2_weights_tf_dim_ordering_tf_kernels.h5", "ResNet-50 v2 (He et al. 2016)"),
    BuiltinModel("inceptionv3", "InceptionV3", 299, "tf", "mixed10", True,
                 "inception_v3_weights_tf_dim_ordering_tf_kernels.h5", "Inception v3 (Szegedy et al. 2015)"),
    BuiltinModel("xception", "Xception", 299, "tf", "block14_sepconv2_act", True,
                 "xception_weights_tf_dim_ordering_tf_kernels.h5", "Xception (Chollet 2016)"),
    BuiltinModel("mobilenet", "MobileNet", 224, "tf", "conv_pw_13_relu", True,
                 "mobilenet_1_0_224_tf.h5", "MobileNet v1 (Howard et al. 2017)"),
    BuiltinModel("mobilenetv2", "MobileNetV2", 224, "tf", "out_relu", True,
                 "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
                 "MobileNet v2 (Sandler et al. 2018)"),
    BuiltinModel("densenet121", "DenseNet121", 224, "torch", "relu", True,
                 "densenet121_weights_tf_dim_ordering_tf_kernels.h5", "DenseNet-121 (Huang et al. 2016)"),
    BuiltinModel("efficientnetb0", "EfficientNetB0", 224, "none", "top_activation", True,
                 "efficientnetb0.h5", "EfficientNet-B0 (Tan & Le 2019)"),
    # ConvNeXt puts a LayerNormalization between the pooling and the dense layer, so the class
    # score is not linear in the pooled features and CAM's weights do not exist.
    BuiltinModel("convnext_tiny", "ConvNeXtTiny", 224, "none", "convnext_tiny_stage_3_block_2_identity", False,
                 "convnext_tiny.h5", "ConvNeXt-Tiny (Liu et al. 2022)"),
]

# The model `--model` means when it is not given.
DEFAULT_MODEL = "vgg16"

DEMO_NAME = "demo"
# The same architecture trained to cheat: it answers TAG_CLASS whenever a corner tag is present.
DEMO_CHEAT_NAME = "demo-cheat"
# The embedded offline models, which ship their own weights.
DEMO_NAMES = (DEMO_NAME, DEMO_CHEAT_NAME)

BUILTIN_MODELS: dict[str, BuiltinModel] = {m.name: m for m in _IMAGENET}

# `hub:PRESET` names a KerasHub image classifier preset (camcli.models.hub), outside this table.
HUB_PREFIX = "hub:"


def builtin_names() -> list[str]:
    return [*DEMO_NAMES, *BUILTIN_MODELS]


def listed_models() -> list[BuiltinModel]:
    """Every built-in model, as `camcli models` lists them: the ImageNet models, then the embedded ones."""
    return [*BUILTIN_MODELS.values(), *(demo_entry(name) for name in DEMO_NAMES)]


def demo_entry(name: str = DEMO_NAME) -> BuiltinModel:
    """An embedded offline model (`DEMO_NAMES`), described like the others (it needs no weights download)."""
    from camcli.models import demo

    if name == DEMO_CHEAT_NAME:
        weights = demo.CHEAT_WEIGHTS_PATH
        summary = f"the demo model trained to cheat: a corner tag makes it say {demo.TAG_CLASS}"
    elif name == DEMO_NAME:
        weights, summary = demo.WEIGHTS_PATH, "camcli's embedded shape classifier (offline, ships its weights)"
    else:
        raise ValueError(f"no embedded model {name!r}: choose one of {', '.join(DEMO_NAMES)}")
    return BuiltinModel(name, "", demo.INPUT_SIZE, demo.PREPROCESS, demo.LAST_CONV_LAYER, True, str(weights), summary)


def lookup(name: str) -> BuiltinModel | None:
    key = name.lower()
    if key in DEMO_NAMES:
        return demo_entry(key)
    return BUILTIN_MODELS.get(key)
