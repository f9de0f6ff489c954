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


# --- the other model kinds (issue 16): a ViT, several inputs, several outputs, segmentation, regression


@keras.saving.register_keras_serializable(package="camcli_tests")
class ClassToken(keras.layers.Layer):
    """Prepends one learned token to a (batch, tokens, dim) sequence (a ViT's class token)."""

    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="zeros", name="token")

    def call(self, tokens):
        batch = keras.ops.shape(tokens)[0]
        return keras.ops.concatenate([keras.ops.tile(self.token, (batch, 1, 1)), tokens], axis=1)


def vit(classes=3, seed=11, patch=2, dim=6):
    """A one-block vision transformer on 8x8 images: patches (2x2, stride 2) -> 16 tokens -> class token
    -> norm1 -> attention -> residual -> norm2 -> mlp -> residual -> final_norm -> class token -> head."""
    x = keras.Input((SIZE, SIZE, 3), name="image")
    y = keras.layers.Conv2D(dim, patch, strides=patch, name="patches")(x)
    tokens = keras.layers.Reshape(((SIZE // patch) ** 2, dim), name="tokens")(y)
    t = ClassToken(name="cls_token")(tokens)
    n = keras.layers.LayerNormalization(name="norm1")(t)
    a = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3, name="attention")(n, n)
    r = keras.layers.Add(name="residual1")([t, a])
    m = keras.layers.Dense(dim, activation="gelu", name="mlp")(keras.layers.LayerNormalization(name="norm2")(r))
    r = keras.layers.Add(name="residual2")([r, m])
    f = keras.layers.LayerNormalization(name="final_norm")(r)
    c = keras.layers.Flatten(name="class_vector")(keras.layers.Cropping1D((0, (SIZE // patch) ** 2), name="cls")(f))
    return _seeded(keras.Model(x, keras.layers.Dense(classes, activation="softmax", name="head")(c), name="vit"), seed)


def two_inputs(classes=3, seed=12):
    """image 8x8x3 -> conv 'target'(5, relu) -> GAP, concatenated with meta (2 values) -> dense(softmax)."""
    image, meta = keras.Input((SIZE, SIZE, 3), name="image"), keras.Input((2,), name="meta")
    y = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="target")(image)
    y = keras.layers.Concatenate(name="features")([keras.layers.GlobalAveragePooling2D(name="gap")(y), meta])
    return _seeded(keras.Model([image, meta], keras.layers.Dense(classes, activation="softmax", name="head")(y),
                               name="two_inputs"), seed)


def two_outputs(seed=13):
    """conv 'target'(5, relu) -> GAP -> 'species' dense(3, softmax) and 'age' dense(1, linear)."""
    x = keras.Input((SIZE, SIZE, 3), name="image")
    y = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="target")(x)
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    species = keras.layers.Dense(3, activation="softmax", name="species")(y)
    age = keras.layers.Dense(1, name="age")(y)
    return _seeded(keras.Model(x, {"species": species, "age": age}, name="two_outputs"), seed)


def segmenter(classes=3, seed=14):
    """conv1(4, relu) -> conv 'target'(5, relu) -> 1x1 conv 'mask'(classes, softmax per pixel)."""
    x = keras.Input((SIZE, SIZE, 3), name="image")
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(x)
    y = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="target")(y)
    return _seeded(keras.Model(x, keras.layers.Conv2D(classes, 1, activation="softmax", name="mask")(y),
                               name="segmenter"), seed)


def regressor(units=1, seed=15):
    """conv 'target'(5, relu) -> GAP -> dense 'value'(units, linear)."""
    x = keras.Input((SIZE, SIZE, 3), name="image")
    y = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="target")(x)
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    return _seeded(keras.Model(x, keras.layers.Dense(units, name="value")(y), name="regressor"), seed)
