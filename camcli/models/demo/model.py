"""The demo model: a small CNN with a GlobalAveragePooling2D -> Dense head, so CAM applies.

Five Conv2D + BatchNorm + ReLU blocks (two strided, one pooled, one dilated) take a 96x96 input
down to 12x12 with a receptive field of about 80 pixels, so a cell at an object's centre sees all
of it. The last convolution (`LAST_CONV_LAYER`, ReLU built in, no normalisation after it) feeds
the global average pooling directly, which makes the Dense kernel valid CAM channel weights.
"""

from pathlib import Path

import keras

from camcli.errors import ModelLoadError
from camcli.models.demo import CHEAT_WEIGHTS_PATH, CLASSES, INPUT_SIZE, LAST_CONV_LAYER, WEIGHTS_PATH

# (filters, stride, dilation, 2x2 max-pool after) of each Conv2D + BatchNorm + ReLU block.
_CONV_BLOCKS = ((16, 2, 1, False), (32, 2, 1, False), (64, 1, 1, True), (64, 1, 1, False), (64, 1, 2, False))
_LAST_CONV_FILTERS = 128
NUM_CLASSES = len(CLASSES)


def build_demo_model(num_classes=NUM_CLASSES, input_size=INPUT_SIZE):
    """The untrained demo architecture. Inputs are RGB scaled to 0..1 (`PREPROCESS = "scale01"`)."""
    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    x = inputs
    for i, (filters, stride, dilation, pooled) in enumerate(_CONV_BLOCKS, start=1):
        x = keras.layers.Conv2D(filters, 3, strides=stride, dilation_rate=dilation, padding="same",
                                use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        if pooled:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = keras.layers.Conv2D(_LAST_CONV_FILTERS, 3, padding="same", activation="relu",
                            kernel_initializer="he_normal", name=LAST_CONV_LAYER)(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="camcli_demo")


def load_demo_model(weights_path=WEIGHTS_PATH, remake="make demo-model"):
    """The demo model with its trained weights (`WEIGHTS_PATH` unless told otherwise).

    `remake` is the command that the error for missing or broken weights suggests.
    """
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise ModelLoadError(f"demo weights missing at {weights_path}: run `{remake}`")
    model = build_demo_model()
    try:
        model.load_weights(weights_path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"demo weights at {weights_path} cannot be loaded ({exc}): run `{remake}`") from exc
    return model


def load_cheat_model(weights_path=CHEAT_WEIGHTS_PATH):
    """The cheating demo model: the demo architecture with the weights `python -m camcli.models.demo.cheat` saves."""
    return load_demo_model(weights_path, remake="make cheat-model")
