"""Tiny classifiers built in code, with fixed weights, for exact checks against numpy."""

import keras
import numpy as np

SIZE = 8


def _seeded(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


def gap_dense(classes=3, activation="softmax", seed=0, name="gap_dense"):
    """input 8x8x3 -> conv(4) -> conv 'target'(5, relu) -> GAP -> dense(classes, activation)."""
    x = keras.Input((SIZE, SIZE, 3))
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(x)
    y = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="target")(y)
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    y = keras.layers.Dense(classes, activation=activation, name="head")(y)
    return _seeded(keras.Model(x, y, name=name), seed)


def flatten_dense(classes=3, seed=1):
    """... conv 'target' -> Flatten -> dense(softmax): no GAP head, so CAM does not apply."""
    x = keras.Input((SIZE, SIZE, 3))
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(x)
    y = keras.layers.Conv2D(5, 3, strides=2, padding="same", activation="relu", name="target")(y)
    y = keras.layers.Flatten(name="flatten")(y)
    y = keras.layers.Dense(classes, activation="softmax", name="head")(y)
    return _seeded(keras.Model(x, y, name="flatten_dense"), seed)


def images(count, seed=0):
    """Float images in 0..1 at the tiny models' input size (the scores stay well spread)."""
    return np.random.default_rng(seed).uniform(0, 1, (count, SIZE, SIZE, 3)).astype("float32")


def explainer_for(model, **options):
    """An Explainer on an in-memory model that takes its input as it is (no preprocessing)."""
    from camcli.explain.explainer import Explainer
    from camcli.models.loading import wrap_model

    return Explainer(wrap_model(model, preprocess="none"), **options)


def activations_of(model, layer_name, batch):
    """The layer's activations, from a plain Keras sub-model (independent of camcli's forward pass)."""
    return keras.Model(model.inputs, model.get_layer(layer_name).output).predict(batch, verbose=0)


def unit(raw):
    """ReLU, then scale to [0, 1] (camcli's normalisation, restated); all zero when nothing is positive."""
    positive = np.maximum(raw, 0.0)
    return positive / positive.max() if positive.max() > 0 else positive
