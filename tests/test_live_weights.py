"""An Explainer keeps explaining the model as it is now: weights set (or trained) after the Explainer was
built change its maps exactly as they change a new Explainer's. The head's softmax and a conv layer's
built-in ReLU (guided backprop) run on the layer's own variables, and a custom layer's stand-in copy is
re-read by `refresh()`."""

import keras
import numpy as np
import pytest
from tiny_models import explainer_for, gap_dense, images

from camcli.explain import forward


def _reseed(model, seed):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])


def _maps(explainer, batch):
    return np.stack([m.heatmap for result in explainer.explain_batch(batch) for m in result.maps])


@pytest.mark.parametrize("method", ["gradcam", "guidedbackprop", "cam"])
def test_maps_follow_weights_set_after_the_explainer_was_built(method):
    model = gap_dense(seed=0)
    batch = images(4, seed=3)
    built_early = explainer_for(model, layer="target", method=method)
    before = _maps(built_early, batch)
    _reseed(model, 7)
    after = _maps(built_early, batch)
    fresh = _maps(explainer_for(model, layer="target", method=method), batch)
    np.testing.assert_allclose(after, fresh, atol=1e-6)
    assert np.abs(after - before).max() > 0.05  # the new weights do change the maps


def test_predictions_follow_the_new_head_weights():
    model = gap_dense(seed=0)
    batch = images(4, seed=3)
    explainer = explainer_for(model, layer="target")
    explainer.explain_batch(batch)
    _reseed(model, 11)
    scores = [p.score for r in explainer.explain_batch(batch) for p in r.predictions]
    expected = np.sort(model.predict(batch, verbose=0), axis=1)[:, ::-1].ravel()
    np.testing.assert_allclose(scores, expected, atol=1e-5)


@keras.saving.register_keras_serializable("camcli_tests")
class ScaledDense(keras.layers.Dense):
    """A custom Dense whose `call` is its own: camcli runs it without its softmax on a copy."""

    def call(self, inputs, training=None):
        return super().call(inputs * 1.0)


def test_a_custom_head_layer_is_copied_and_refresh_reads_it_again():
    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="target")(x)
    y = keras.layers.GlobalAveragePooling2D()(y)
    y = ScaledDense(3, activation="softmax", name="head")(y)
    model = keras.Model(x, y)
    _reseed(model, 0)
    batch = images(3, seed=1)
    explainer = explainer_for(model, layer="target")
    assert isinstance(explainer.step._forward._overrides[id(model.get_layer("head"))], forward._LinearCopy)
    explainer.explain_batch(batch)
    _reseed(model, 5)
    explainer.refresh()
    fresh = explainer_for(model, layer="target")
    np.testing.assert_allclose(_maps(explainer, batch), _maps(fresh, batch), atol=1e-6)


def test_keras_layers_are_run_on_their_own_variables_not_copies():
    model = gap_dense(seed=0)
    explainer = explainer_for(model, layer="target", method="guidedbackprop")
    explainer.explain_batch(images(2))
    step = explainer.step
    assert isinstance(step._forward._overrides[id(model.get_layer("head"))], forward._LinearView)
    assert step._forward._copies == [] and step._guided_forward._copies == []
    assert len(model.weights) == 6  # nothing was added to the user's model
