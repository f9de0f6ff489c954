"""camcli.keras.ExplainCallback: explanations during training, logged to TensorBoard, with bounds.

The main test fine-tunes the clean demo model on the cheating demo's poisoned scenes (camcli.models.demo.cheat:
tagged scenes labelled TAG_CLASS) and watches a probe of tagged scenes of the other classes: as the model
learns the tag, its maps leave the objects, the pointing game falls below the bound and training stops.
The event files are read back with TensorBoard's own reader."""

import io
import warnings

import keras
import numpy as np
import pytest
from PIL import Image

from camcli.errors import UsageError
from camcli.evaluate.probe import Probe
from camcli.keras import ExplainCallback, ProbeWarning

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="TensorBoard is not installed (pip install 'keras-camcli[tensorboard]'); `make test` installs it")
from tensorboard.util.tensor_util import make_ndarray  # noqa: E402


def read_events(log_dir):
    """{tag: [(step, value)]}: scalars as floats, images as lists of decoded uint8 arrays."""
    reader = event_accumulator.EventAccumulator(str(log_dir), size_guidance={event_accumulator.TENSORS: 0})
    reader.Reload()
    events = {}
    for tag in reader.Tags()["tensors"]:
        for event in reader.Tensors(tag):
            value = make_ndarray(event.tensor_proto)
            if value.dtype == object:  # an image summary: width, height, then one PNG per image
                value = [np.asarray(Image.open(io.BytesIO(png))) for png in value[2:]]
            else:
                value = float(value)
            events.setdefault(tag, []).append((event.step, value))
    return events


@pytest.fixture(scope="module")
def cheat_run(tmp_path_factory):
    from camcli.models.demo import CLASSES, PREPROCESS
    from camcli.models.demo.cheat import poisoned_dataset, tagged_probe
    from camcli.models.demo.model import load_demo_model

    keras.utils.set_random_seed(0)
    # Half the other classes' scenes tagged (cheat.py trains with 2% from scratch for 10 epochs): the
    # clean model learns the tag within a few epochs of fine-tuning.
    images, labels, _ = poisoned_dataset(1200, seed=0, other_tag_rate=0.5)
    probe_images, probe_labels, probe_boxes = tagged_probe(24, seed=2000)
    model = load_demo_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    log_dir = tmp_path_factory.mktemp("tensorboard")
    callback = ExplainCallback(probe_images, truth_labels=probe_labels, boxes=probe_boxes, preprocess=PREPROCESS,
                               labels=CLASSES, layer="conv6", log_dir=str(log_dir),
                               stop_below={"pointing": 0.6}, verbose=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(images.astype("float32") / 255.0, labels, batch_size=32, epochs=8, verbose=0,
                            callbacks=[callback])
    return callback, history, log_dir, [w for w in caught if issubclass(w.category, ProbeWarning)]


@pytest.mark.slow
def test_pointing_falls_as_the_model_learns_the_tag_and_training_stops_below_the_bound(cheat_run):
    callback, history, _, probe_warnings = cheat_run
    runs = callback.history
    pointing = [run.metrics["gradcam/pointing"] for run in runs]
    accuracy = [run.metrics["accuracy"] for run in runs]
    assert [run.step for run in runs] == list(range(len(runs)))  # a baseline, then one run per epoch
    assert pointing[0] >= 0.8 and accuracy[0] >= 0.9  # the clean model looks at the objects
    assert pointing[-1] < 0.6 and accuracy[-1] <= 0.3  # ... until it calls them by the tag
    assert all(value >= 0.6 for value in pointing[1:-1])  # it stopped at the first epoch below the bound
    assert runs[-1].metrics["gradcam/energy"] < runs[0].metrics["gradcam/energy"] - 0.15
    epochs_run = len(history.history["loss"])
    assert 1 <= epochs_run < 8 and callback.stopped_at == epochs_run == runs[-1].step
    assert history.history["probe_gradcam_pointing"] == pytest.approx(pointing[1:])
    [warning] = probe_warnings
    assert str(warning.message) == (f"probe after epoch {epochs_run}: gradcam/pointing {pointing[-1]:.3f} is below "
                                    "0.6; training stops (stop_below)")


@pytest.mark.slow
def test_the_event_files_hold_the_scalars_and_the_overlays(cheat_run):
    callback, _, log_dir, _ = cheat_run
    events = read_events(log_dir)
    steps = [run.step for run in callback.history]
    for key in ("gradcam/pointing", "gradcam/energy", "accuracy"):
        logged = events[f"probe/{key}"]
        assert [step for step, _ in logged] == steps
        assert [value for _, value in logged] == pytest.approx([run.metrics[key] for run in callback.history])
    assert [step for step, _ in events["probe/seconds"]] == steps
    overlays = events["probe/gradcam"]
    assert [step for step, _ in overlays] == steps
    for _, pictures in overlays:
        assert len(pictures) == 8 and all(p.shape == (96, 96, 3) for p in pictures)
        green = [(p == (0, 255, 0)).all(axis=2).sum() for p in pictures]
        assert min(green) >= 20  # each truth box is drawn
    first, last = overlays[0][1][0], overlays[-1][1][0]
    assert np.abs(first.astype(int) - last.astype(int)).mean() > 2  # the map moved


def _tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((16, 16, 3))
    y = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(x)
    y = keras.layers.BatchNormalization(name="bn")(y)
    y = keras.layers.ReLU()(y)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="target")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    y = keras.layers.Dropout(0.3)(y)
    y = keras.layers.Dense(3, activation="softmax", name="head")(y)
    model = keras.Model(x, y)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    return model


def _data(count=48, seed=1):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 16, 16, 3), dtype=np.uint8)
    return images, rng.integers(0, 3, count)


def _train(callbacks, epochs=3):
    model = _tiny_model()
    images, labels = _data()
    keras.utils.set_random_seed(5)
    model.fit(images.astype("float32") / 255.0, labels, batch_size=8, epochs=epochs, verbose=0, callbacks=callbacks)
    return model


def _probe_callback(**options):
    images, labels = _data(6, seed=2)
    boxes = [(2, 2, 10, 10)] * 6
    return ExplainCallback(images, truth_labels=labels, boxes=boxes, preprocess="scale01", verbose=False,
                           **{"methods": ["gradcam", "guidedbackprop", "cam"], "layer": "target", **options})


@pytest.mark.slow
def test_training_with_the_callback_gives_the_same_weights_as_without_it(tmp_path):
    plain = _train([])
    watched = _train([_probe_callback(log_dir=str(tmp_path))])
    for a, b in zip(plain.weights, watched.weights, strict=True):  # BatchNorm's moving statistics included
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for a, b in zip(plain.optimizer.variables, watched.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_a_probe_run_changes_nothing_in_the_model():
    model = _tiny_model()
    callback = _probe_callback()
    callback.set_model(model)
    before = [w.numpy().copy() for w in model.weights]
    layers = len(model.layers)
    callback.explain_now()
    callback.explain_now()
    assert [np.array_equal(a, b.numpy()) for a, b in zip(before, model.weights, strict=True)] == [True] * len(before)
    assert len(model.layers) == layers and not model.stop_training
    assert len(callback.history) == 2 and set(callback.history[0].metrics) == {
        "accuracy", "gradcam/pointing", "gradcam/energy", "guidedbackprop/pointing", "guidedbackprop/energy",
        "cam/pointing", "cam/energy"}


@pytest.mark.slow
def test_every_n_epochs_and_always_the_last():
    callback = _probe_callback(every=2, methods="gradcam")
    _train([callback], epochs=5)
    assert [run.step for run in callback.history] == [0, 2, 4, 5]
    skipped = _probe_callback(every=2, methods="gradcam", at_start=False)
    _train([skipped], epochs=2)
    assert [run.step for run in skipped.history] == [2]


@pytest.mark.slow
def test_warn_below_warns_and_training_goes_on():
    callback = _probe_callback(methods="gradcam", warn_below={"gradcam/energy": 1.01, "accuracy": -1})
    with pytest.warns(ProbeWarning, match=r"probe after epoch 1: gradcam/energy 0\.\d{3} is below 1\.01 "
                                          r"\(warn_below\)"):
        model = _train([callback], epochs=2)
    assert callback.stopped_at is None and not model.stop_training
    assert [run.step for run in callback.history] == [0, 1, 2]
    assert all(len(run.crossed) == 1 for run in callback.history[1:]) and callback.history[0].crossed == []


def test_truth_explains_each_images_label():
    model = _tiny_model()
    images, _ = _data(6, seed=2)
    wanted = np.array([2, 0, 1, 2, 1, 0])
    callback = ExplainCallback(images, truth_labels=[str(i) for i in wanted], classes="truth", preprocess="scale01",
                               layer="target", verbose=False)
    callback.set_model(model)
    explained = []
    explainer = callback.explainer()
    original = explainer.explain

    def spy(chunk, class_ids=None):
        results = original(chunk, class_ids=class_ids)
        explained.extend(result.maps[0].class_index for result in results)
        return results

    explainer.explain = spy
    callback.explain_now()
    assert explained == wanted.tolist()
    predicted = model.predict(images.astype("float32") / 255.0, verbose=0).argmax(axis=1)
    assert callback.history[0].metrics == {"accuracy": pytest.approx(float(np.mean(predicted == wanted)))}


def test_the_overlays_of_images_of_several_sizes_share_one_picture_size():
    images = [np.full((40, 80, 3), 90, np.uint8), np.full((30, 30, 3), 200, np.uint8)]
    probe = Probe(images, boxes=[(0, 0, 20, 20), [(5, 5, 10, 10), (12, 12, 30, 30)]])
    model = _tiny_model()
    callback = ExplainCallback(images, preprocess="scale01", layer="target", verbose=False)
    callback.set_model(model)
    result = probe.run(callback.explainer())
    assert result.overlays["gradcam"].shape == (2, 40, 80, 3)
    assert set(result.metrics) == {"gradcam/pointing", "gradcam/energy"}


@pytest.mark.parametrize("options, message", [
    ({"stop_below": {"iou": 0.5}}, "unknown metric 'iou' in `stop_below`: choose from pointing, energy, accuracy"),
    ({"boxes": None, "stop_below": {"pointing": 0.6}},
     "`stop_below` bounds 'pointing', which needs the probe's truth boxes: give `boxes`"),
    ({"truth_labels": None, "warn_below": {"accuracy": 0.6}},
     "`warn_below` bounds 'accuracy', which needs the probe's labels: give `truth_labels`"),
    ({"truth_labels": None, "classes": "truth"},
     "`classes=\"truth\"` explains each probe image's label: give `truth_labels`"),
    ({"every": 0}, "`every=0` must be at least 1"),
    ({"boxes": [(0, 0, 4, 4)]}, "1 truth boxes for 6 probe images"),
    ({"boxes": [(4, 0, 2, 4)] * 6}, "truth box 0 is [4, 0, 2, 4]; a box is (x0, y0, x1, y1)"),
    ({"images": np.zeros((6, 16, 16, 3), np.float32)}, "probe image 0 is float32 (16, 16, 3); probe images are uint8"),
    ({"images": np.zeros((16, 16, 3), np.uint8)}, "give a list of probe images"),
    ({"stop_below": {"pointing": "high"}}, "`stop_below['pointing']` must be a number, not 'high'"),
    ({"log_dir": "FILE"}, "cannot create output folder"),
])
def test_bad_arguments_are_one_line_errors(options, message, tmp_path):
    images, labels = _data(6, seed=2)
    if options.get("log_dir") == "FILE":
        (tmp_path / "file").write_text("")
        options = {"log_dir": str(tmp_path / "file" / "logs")}
    arguments = {"images": images, "truth_labels": labels, "boxes": [(2, 2, 10, 10)] * 6, **options}
    with pytest.raises(UsageError) as error:
        ExplainCallback(arguments.pop("images"), **arguments)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_unknown_label_name_is_one_line():
    model = _tiny_model()
    images, _ = _data(2, seed=2)
    callback = ExplainCallback(images, truth_labels=["tabby", "0"], classes="truth", preprocess="scale01",
                               verbose=False)
    callback.set_model(model)
    with pytest.raises(UsageError, match=r"unknown probe label 'tabby': the model's classes are 0, 1, 2$"):
        callback.explain_now()


def test_a_sequential_model_with_a_softmax_layer_and_two_classes_logs_both_maps(tmp_path):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(6, 3, activation="relu", name="target"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3),
                              keras.layers.Activation("softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    images, labels = _data(4, seed=2)
    callback = ExplainCallback(images, boxes=[(0, 0, 8, 8)] * 4, classes=["top1", "top2"], preprocess="scale01",
                               log_dir=str(tmp_path), max_pictures=3, verbose=False)
    model.fit(images.astype("float32") / 255.0, labels, epochs=1, verbose=0, callbacks=[callback])
    events = read_events(tmp_path)
    assert [len(pictures) for _, pictures in events["probe/gradcam"]] == [3, 3]
    assert [len(pictures) for _, pictures in events["probe/gradcam/class2"]] == [3, 3]
    assert [step for step, _ in events["probe/gradcam/pointing"]] == [0, 1]


def test_a_bfloat16_probe_follows_training_and_leaves_the_model_as_it_was():
    """precision="bfloat16": the probe explains a copy of the model, read again after each epoch."""
    model = _tiny_model()
    callback = _probe_callback(methods="gradcam", precision="bfloat16")
    callback.set_model(model)
    before = [w.numpy().copy() for w in model.weights]
    first = callback.explain_now()
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(before, model.weights, strict=True))
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    model.set_weights([w * 0.5 + 0.1 for w in model.get_weights()])
    second = callback.explain_now()
    assert set(first.metrics) == set(second.metrics) == {"accuracy", "gradcam/pointing", "gradcam/energy"}
    step = callback.explainer().step
    assert step.compute_copy is not None
    np.testing.assert_allclose(step.compute_copy.model.get_layer("target").get_weights()[0],
                               model.get_layer("target").get_weights()[0], rtol=1e-2, atol=1e-2)
