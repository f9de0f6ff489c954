"""Real behaviour with real ImageNet weights (MobileNetV2 from ../shared/imagenet, loaded offline
through Keras' cache): the top-1 class of real photos, and where the heatmap points.

The boxes were drawn by hand around the object in each photo, in original-image pixels
(x0, y0, x1, y1). Scores differ slightly from Google's float release (see ../shared/imagenet), so
only classes and locations are asserted."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SHARED_PHOTOS, needs_shared_imagenet

from camcli.cli import cli
from camcli.explain.explainer import Explainer
from camcli.explain.methods import REGISTRY
from camcli.maps.boxes import peak_xy
from camcli.maps.overlay import upsample
from camcli.models.loading import load_model
from camcli.runs.decode import load_rgb

pytestmark = [needs_shared_imagenet, pytest.mark.slow]

PHOTOS = {
    # file: (expected top-1, hand-drawn box around the object)
    "chelsea.png": ("Egyptian_cat", (0, 0, 375, 300)),  # the cat fills the left 5/6 of the frame
    "coffee.png": ("espresso", (75, 15, 480, 390)),  # cup and saucer
    "rocket.jpg": ("missile", None),
    "camera.png": ("tripod", None),  # grayscale (mode L)
}

_model = {}


@pytest.fixture(scope="module")
def mobilenet():
    if "m" not in _model:
        _model["m"] = load_model("mobilenetv2")  # weights="imagenet", from the test's Keras cache
    return _model["m"]


def explainer(loaded, method="gradcam", classes=None):
    """One traced step per configuration for the whole module."""
    key = (method, tuple(classes or ()))
    if key not in _model:
        _model[key] = Explainer(loaded, method=method, classes=classes)
    return _model[key]


def inside(point, box):
    x, y = point
    x0, y0, x1, y1 = box
    return x0 <= x < x1 and y0 <= y < y1


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_top1_class_of_real_photos(mobilenet, name):
    expected, _ = PHOTOS[name]
    [result] = explainer(mobilenet).explain([load_rgb(SHARED_PHOTOS / name)])
    assert result.predictions[0].label == expected
    assert result.predictions[0].score > 0.3


@pytest.mark.parametrize("method", ["gradcam", "cam"])
@pytest.mark.parametrize("name", ["chelsea.png", "coffee.png"])
def test_heatmap_peak_lies_on_the_object(mobilenet, name, method):
    expected, box = PHOTOS[name]
    rgb = load_rgb(SHARED_PHOTOS / name)
    [result] = explainer(mobilenet, method=method).explain([rgb])
    class_map = result.maps[0]
    assert class_map.label == expected and not class_map.empty
    heatmap = upsample(class_map.heatmap, height=rgb.shape[0], width=rgb.shape[1])
    assert inside(peak_xy(heatmap), box)
    # Most of the map's mass is on the object, not just its single hottest pixel.
    x0, y0, x1, y1 = box
    assert heatmap[y0:y1, x0:x1].sum() / heatmap.sum() > 0.7


@pytest.mark.parametrize("method", list(REGISTRY))
def test_every_method_points_at_the_cat(mobilenet, method):
    """Every registered method, on real weights: the peak of the cat's map lies on the cat. Score-CAM
    scores the 256 most active of out_relu's 1280 channels, to keep the suite fast."""
    rgb = load_rgb(SHARED_PHOTOS / "chelsea.png")
    options = {"max_channels": 256} if REGISTRY[method].needs_masked_scores else {}
    [result] = Explainer(mobilenet, method=method, classes=["Egyptian_cat"], **options).explain([rgb])
    class_map = result.maps[0]
    assert not class_map.empty
    heatmap = upsample(class_map.heatmap, height=rgb.shape[0], width=rgb.shape[1])
    assert inside(peak_xy(heatmap), PHOTOS["chelsea.png"][1]), (method, peak_xy(heatmap))


def test_cat_map_and_espresso_map_differ_on_the_cat_photo(mobilenet):
    """Each requested class gets its own map, as in the CAM papers' dog-versus-cat figures."""
    rgb = load_rgb(SHARED_PHOTOS / "chelsea.png")
    [result] = explainer(mobilenet, classes=["Egyptian_cat", "espresso"]).explain([rgb])
    cat, espresso = result.maps
    assert (cat.label, espresso.label) == ("Egyptian_cat", "espresso")
    assert cat.score > 100 * espresso.score
    if not espresso.empty:
        assert np.corrcoef(cat.heatmap.ravel(), espresso.heatmap.ravel())[0, 1] < 0.9


def test_cli_on_real_photos(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea.png", "camera.png"):
        (photos / name).write_bytes((SHARED_PHOTOS / name).read_bytes())
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["explain", str(photos), "--model", "mobilenetv2", "--class", "top1",
                                      "--class", "tabby", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    chelsea = json.loads((out / "chelsea.json").read_text())
    assert chelsea["predictions"][0]["label"] == "Egyptian_cat"
    assert chelsea["layer"] == "out_relu"
    assert [e["label"] for e in chelsea["explanations"]] == ["Egyptian_cat", "tabby"]
    assert inside(chelsea["explanations"][0]["peak"], PHOTOS["chelsea.png"][1])
    camera = json.loads((out / "camera.json").read_text())
    assert camera["predictions"][0]["label"] == "tripod"
    assert (camera["width"], camera["height"]) == (512, 512)
    assert "warning" not in chelsea


def test_weights_file_for_a_builtin_model(tmp_path):
    """--weights FILE loads local weights, bypassing Keras' cache."""
    from conftest import MOBILENET_V2_WEIGHTS, SHARED_IMAGENET

    local = tmp_path / "my-weights.h5"
    local.write_bytes((SHARED_IMAGENET / MOBILENET_V2_WEIGHTS).read_bytes())
    result = CliRunner().invoke(cli, ["explain", str(SHARED_PHOTOS / "coffee.png"), "--model", "mobilenetv2",
                                      "--weights", str(local), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "coffee.json").read_text())
    assert record["predictions"][0]["label"] == "espresso"
