"""Runs at their edges. A signal that arrives once every image is done interrupts nothing: the run is
complete, its JSON says so, and its gates count; one that arrives with images left marks the run
interrupted. A truth label that names two of the model's classes is refused, not guessed, and an image the
model scores NaN fails alone, with no file of it written."""

import shutil
import threading

import camcli


def _stop_after(count: int):
    """A stop event, and an on_progress that sets it once `count` images are done."""
    stop, done = threading.Event(), []

    def progress(n: int) -> None:
        done.append(n)
        if sum(done) >= count:
            stop.set()

    return stop, progress


def test_explain_is_interrupted_only_with_images_left(scenes, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for copy in range(5):  # 30 images: more than the run decodes ahead of what it has written
        for scene in scenes:
            shutil.copy(scene, folder / f"{copy}-{scene.name}")
    stop, progress = _stop_after(30)
    summary = camcli.explain_paths(folder, model="demo", out=tmp_path / "all", batch_size=2, stop=stop,
                                   on_progress=progress)
    assert stop.is_set() and (summary.explained, summary.interrupted) == (30, False)
    stop, progress = _stop_after(2)
    summary = camcli.explain_paths(folder, model="demo", out=tmp_path / "part", batch_size=2, stop=stop,
                                   on_progress=progress)
    assert summary.interrupted is True and summary.explained < 30


def test_evaluate_counts_its_gates_when_the_signal_comes_after_the_last_batch(scenes, tmp_path):
    truth = scenes[0].parent / "truth.csv"
    stop, progress = _stop_after(len(scenes))
    report = camcli.evaluate_paths(scenes, truth=truth, model="demo", out=None, steps=0, batch_size=2, stop=stop,
                                   on_progress=progress, fail_under=["pointing=0"])
    assert stop.is_set() and report.interrupted is False and report.failed_gates == []
    assert report.record()["passed"] is True
    stop, progress = _stop_after(2)
    report = camcli.evaluate_paths(scenes, truth=truth, model="demo", out=None, steps=0, batch_size=2, stop=stop,
                                   on_progress=progress)
    assert report.interrupted is True and report.evaluated == 2


def test_a_truth_label_that_names_two_classes_is_refused_in_one_line(scenes, tmp_path):
    """ImageNet names two classes 'crane': a box labelled so was scored against the first, silently."""
    import pytest

    from camcli.errors import UsageError

    loaded = camcli.load_model("demo")
    twice = camcli.wrap_model(loaded.model, preprocess=loaded.preprocess,
                              labels=["circle", "square", "triangle", "star", "circle", "ring"])
    with pytest.raises(UsageError) as error:
        camcli.evaluate_paths(scenes, truth=scenes[0].parent / "truth.csv", model=twice, out=None, steps=0)
    assert str(error.value).endswith("the truth label 'circle' names classes 0 and 4 of the model: write the class "
                                     "index of its boxes instead")


def test_an_image_the_model_scores_nan_fails_alone_and_leaves_no_file(tmp_path):
    """Its overlay was written, then its record refused: 'internal error ... not JSON compliant: nan'."""
    import numpy as np
    import tiny_models
    from PIL import Image

    model = tiny_models.gap_dense(activation="linear")
    weights = model.get_layer("head").get_weights()
    weights[1][:] = np.nan
    model.get_layer("head").set_weights(weights)
    (tmp_path / "in").mkdir()
    Image.fromarray((tiny_models.images(1)[0] * 255).astype("uint8")).save(tmp_path / "in" / "a.png")
    summary = camcli.explain_paths(tmp_path / "in", model=model, out=tmp_path / "out", head="softmax")
    assert (summary.ok, summary.failed) == (0, 1)
    assert summary.failures[0]["error"] == ("the model's scores for this image are not finite (NaN or infinity): "
                                            "check the model's weights and its preprocessing (`preprocess`)")
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["summary.json"]
