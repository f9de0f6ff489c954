"""The private Keras attributes camcli relies on exist in the installed Keras (so an upgrade that removes
one fails here), and a Keras without them gets KerasIncompatibleError with a message that names the
missing attribute, the installed Keras and the tested versions, never a wrong diagnosis."""

import re

import keras
import numpy as np
import pytest
import tiny_models
from keras.src.models.functional import Functional

from camcli.errors import CamcliError, UsageError
from camcli.models import keras_internals
from camcli.models.keras_internals import (
    TESTED_KERAS,
    KerasIncompatibleError,
    check_keras_internals,
    is_functional,
    producing_layer,
    run_graph,
)


def version_tuple(text):
    return tuple(int(part) for part in re.match(r"(\d+)\.(\d+)", text).groups())


def test_the_installed_keras_is_a_tested_one():
    assert TESTED_KERAS == ">=3.3,<4"
    assert (3, 3) <= version_tuple(keras.__version__) < (4, 0)


def test_the_private_attributes_exist_in_the_installed_keras():
    check_keras_internals()
    assert callable(Functional._run_through_graph)
    import inspect

    assert "operation_fn" in inspect.signature(Functional._run_through_graph).parameters
    model = tiny_models.gap_dense()
    assert producing_layer(model.outputs[0]) is model.get_layer("head")
    assert isinstance(producing_layer(keras.Input((2,))), keras.layers.InputLayer)
    assert is_functional(model) and not is_functional(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))


def test_run_graph_replays_the_model_through_operation_fn():
    model = tiny_models.gap_dense(seed=3)
    batch = tiny_models.images(2, seed=3)
    seen = []

    def operation_fn(layer):
        seen.append(layer.name)
        return layer

    replayed = keras.ops.convert_to_numpy(run_graph(model, keras.ops.convert_to_tensor(batch), operation_fn))
    np.testing.assert_allclose(replayed, model.predict(batch, verbose=0), rtol=1e-5)
    assert seen == ["conv1", "target", "gap", "head"]


def assert_clear_message(error, attribute):
    message = str(error)
    assert isinstance(error, CamcliError) and not isinstance(error, UsageError)
    assert f"Keras {keras.__version__} has no {attribute}" in message
    assert "camcli is tested with Keras >=3.3,<4" in message
    assert "subclassed" not in message and "\n" not in message


def test_without_run_through_graph_a_functional_model_is_not_called_subclassed(monkeypatch):
    model = tiny_models.gap_dense()
    loaded_before = tiny_models.explainer_for(model).loaded  # built while Keras is whole
    owner = next(cls for cls in Functional.__mro__ if "_run_through_graph" in vars(cls))  # keras' Function
    monkeypatch.delattr(owner, "_run_through_graph")
    with pytest.raises(KerasIncompatibleError) as error:
        check_keras_internals()
    assert_clear_message(error.value, "Functional._run_through_graph")
    with pytest.raises(KerasIncompatibleError) as error:
        tiny_models.explainer_for(model)
    assert_clear_message(error.value, "Functional._run_through_graph")
    with pytest.raises(KerasIncompatibleError) as error:
        run_graph(model, tiny_models.images(1), lambda layer: layer)
    assert_clear_message(error.value, "Functional._run_through_graph")
    from camcli.explain.explainer import Explainer

    with pytest.raises(KerasIncompatibleError):
        Explainer(loaded_before, method="cam")


def test_a_changed_run_through_graph_signature_is_caught(monkeypatch):
    monkeypatch.setattr(Functional, "_run_through_graph", lambda self, inputs, fn=None: None)
    with pytest.raises(KerasIncompatibleError) as error:
        check_keras_internals()
    assert_clear_message(error.value, "the operation_fn argument of Functional._run_through_graph")


def test_without_keras_history_the_output_layer_error_names_it(monkeypatch):
    from camcli.models.layers import analyse_head
    from camcli.models.loading import wrap_model

    model = tiny_models.gap_dense()
    monkeypatch.delattr(model.outputs[0], "_keras_history")
    with pytest.raises(KerasIncompatibleError) as error:
        analyse_head(model)
    assert_clear_message(error.value, "KerasTensor._keras_history.operation")
    with pytest.raises(KerasIncompatibleError):
        wrap_model(model, preprocess="none")
    with pytest.raises(KerasIncompatibleError):
        producing_layer(np.zeros(3))


def test_without_the_functional_class_every_check_says_so(monkeypatch):
    def missing():
        raise KerasIncompatibleError("keras.src.models.functional.Functional", "replay a Functional model's graph")

    monkeypatch.setattr(keras_internals, "_functional_class", missing)
    with pytest.raises(KerasIncompatibleError) as error:
        is_functional(tiny_models.gap_dense())
    assert_clear_message(error.value, "keras.src.models.functional.Functional")


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.conv = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.dense = keras.layers.Dense(3, activation="softmax")

    def call(self, x):
        return self.dense(self.pool(self.conv(x)))


def test_only_a_genuinely_subclassed_model_is_called_subclassed():
    from camcli.models.layers import analyse_head, final_layer

    model = Subclassed()
    model(np.zeros((1, 8, 8, 3), np.float32))
    message = "model 'subclassed' is a subclassed model; camcli explains Functional and Sequential models"
    with pytest.raises(UsageError, match=message):
        final_layer(model)
    # A Functional model whose output comes from a subclassed one: the subclassed one is named.
    x = keras.Input((8, 8, 3))
    outer = keras.Model(x, Subclassed()(x), name="outer")
    with pytest.raises(UsageError, match=message):
        analyse_head(outer)
    assert analyse_head(tiny_models.gap_dense()).final.name == "head"  # a Functional model is read as one
