"""The library in a notebook: the README's cell as written, images in every form a notebook holds,
`Explainer(keras_model)`, `classes` as one string, maps at the image's size, `camcli.overlay`, and
the pictures Jupyter shows (`_repr_png_`, `_repr_html_`)."""

import io
import re
from pathlib import Path

import numpy as np
import pytest
import tiny_models
from PIL import Image

import camcli
from camcli.errors import UsageError
from camcli.explain.classes import ClassRequest, parse_class_requests
from camcli.explain.display import DISPLAY_SIDE
from camcli.explain.explainer import Explainer, MethodSet
from camcli.maps.overlay import colormap_lut, overlay_picture, upsample
from camcli.models import demo
from camcli.models.loading import wrap_model
from camcli.models.preprocess import as_rgb_picture

REPO = Path(__file__).resolve().parents[1]
STAR = REPO / "sample_images" / "generated" / "star_1.png"


@pytest.fixture(scope="module")
def demo_model():
    return camcli.load_model("demo")


@pytest.fixture(scope="module")
def explainer(demo_model):
    return Explainer(demo_model, method="gradcam", classes="top1")


@pytest.fixture(scope="module")
def star():
    return camcli.load_rgb(STAR)


def png_picture(data: bytes) -> Image.Image:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    picture = Image.open(io.BytesIO(data))
    picture.load()
    return picture


# --- the README's notebook cell ---------------------------------------------------------------------


def readme_notebook_cell() -> str:
    text = (REPO / "README.md").read_text("utf-8")
    found = re.search(r"^### In a notebook\n.*?^```python\n(.*?)^```", text, re.S | re.M)
    assert found, "README.md has no ```python cell under '### In a notebook'"
    return found.group(1)


def test_the_readme_notebook_cell_runs_as_written(monkeypatch):
    monkeypatch.chdir(REPO)
    cell = {}
    exec(compile(readme_notebook_cell(), "README.md", "exec"), cell)  # noqa: S102 - our own README
    image, result, picture, heatmap = cell["image"], cell["result"], cell["picture"], cell["heatmap"]
    height, width = image.shape[:2]
    assert (height, width) == (150, 200)
    assert isinstance(picture, Image.Image) and picture.mode == "RGB" and picture.size == (width, height)
    assert heatmap.shape == (height, width) and heatmap.dtype == np.float32
    assert 0.0 <= heatmap.min() and heatmap.max() == pytest.approx(1.0, abs=0.01)
    assert [m.label for m in result.maps] == ["star", "circle"]
    assert result.maps[0].heatmap.shape == (12, 12)
    assert all(m.source_image is image for m in result.maps)
    assert result._repr_html_().count("<img ") == 2
    assert png_picture(result.maps[0]._repr_png_()).size == (width, height)


# --- images: uint8 or float [0, 1], RGB, greyscale or RGBA, arrays or Pillow --------------------------


def rgb_noise(height=6, width=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_float_images_in_0_1_round_to_the_same_pixels():
    rgb = rgb_noise()
    np.testing.assert_array_equal(np.asarray(as_rgb_picture(rgb / 255.0)), rgb)
    np.testing.assert_array_equal(np.asarray(as_rgb_picture((rgb / 255.0).astype(np.float32))), rgb)


def test_greyscale_is_repeated_into_three_channels():
    grey = rgb_noise()[:, :, 0]
    stacked = np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    for form in (grey, grey[:, :, np.newaxis], Image.fromarray(grey, "L"), grey / 255.0):
        np.testing.assert_array_equal(np.asarray(as_rgb_picture(form)), stacked)


def test_rgba_is_composited_over_white():
    rgba = np.array([[[200, 100, 0, 255], [200, 100, 0, 0], [200, 100, 0, 128]]], dtype=np.uint8)
    # rgb * a + 255 * (1 - a), rounded: 200 * 128/255 + 255 * 127/255 = 227.4, and so on
    expected = [[[200, 100, 0], [255, 255, 255], [227, 177, 127]]]
    assert np.asarray(as_rgb_picture(rgba)).tolist() == expected
    assert np.asarray(as_rgb_picture(Image.fromarray(rgba, "RGBA"))).tolist() == expected


def test_an_rgb_pillow_image_is_used_as_it_is():
    picture = Image.fromarray(rgb_noise())
    assert as_rgb_picture(picture) is picture


@pytest.mark.parametrize("image, message", [
    (np.full((4, 4, 3), 2.0), "a float image must hold values in [0, 1], not 2..2; divide 0..255 values by 255"),
    (np.full((4, 4, 3), -0.5), "a float image must hold values in [0, 1], not -0.5..-0.5"),
    (np.full((4, 4, 3), np.nan), "a float image must hold values in [0, 1], not nan..nan"),
    (np.zeros((4, 4, 3), np.int64), "an image must be uint8 (0..255) or float in [0, 1], not int64; for integers"),
    (np.zeros((4, 4, 3), bool), "an image must be uint8 (0..255) or float in [0, 1], not bool"),
    (np.zeros((4, 4, 2), np.uint8), "an image must be (H, W) or (H, W, 1) greyscale, (H, W, 3) RGB or (H, W, 4) "
                                    "RGBA, not shape (4, 4, 2)"),
    (np.zeros((2, 4, 4, 3), np.uint8), "not shape (2, 4, 4, 3); pass one image at a time, not a batch"),
    (np.zeros((0, 4, 3), np.uint8), "not shape (0, 4, 3)"),
    (np.zeros(4, np.uint8), "not shape (4,)"),
    (Image.new("I;16", (4, 4)), "a Pillow image in mode I;16 has no 0..255 range; convert it to 8 bits"),
    (Image.new("F", (4, 4)), "a Pillow image in mode F has no 0..255 range"),
])
def test_images_camcli_cannot_read_are_one_line_usage_errors(image, message):
    with pytest.raises(UsageError) as caught:
        as_rgb_picture(image)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def heatmap_of(explainer, image):
    [result] = explainer.explain([image])
    return result.maps[0].heatmap


def test_a_float_image_gives_the_map_of_its_uint8_version(explainer, star):
    reference = heatmap_of(explainer, star)
    np.testing.assert_array_equal(heatmap_of(explainer, star / 255.0), reference)
    jitter = np.random.default_rng(1).uniform(-0.4, 0.4, star.shape) / 255.0  # under half a level
    np.testing.assert_allclose(heatmap_of(explainer, np.clip(star / 255.0 + jitter, 0, 1)), reference, atol=1e-5)


def test_greyscale_and_rgba_images_give_the_maps_of_their_rgb_versions(explainer, star):
    grey = np.rint(star.mean(axis=2)).astype(np.uint8)
    stacked = heatmap_of(explainer, np.repeat(grey[:, :, np.newaxis], 3, axis=2))
    np.testing.assert_array_equal(heatmap_of(explainer, grey), stacked)
    np.testing.assert_array_equal(heatmap_of(explainer, grey[:, :, np.newaxis]), stacked)
    opaque = np.dstack([star, np.full(star.shape[:2], 255, np.uint8)])
    np.testing.assert_array_equal(heatmap_of(explainer, opaque), heatmap_of(explainer, star))
    clear = np.dstack([star, np.zeros(star.shape[:2], np.uint8)])
    np.testing.assert_array_equal(heatmap_of(explainer, clear), heatmap_of(explainer, np.full_like(star, 255)))


def test_explain_takes_a_list_and_says_so_for_one_image_alone(explainer, star):
    for alone in (star, Image.fromarray(star)):
        with pytest.raises(UsageError, match=r"give a list of images \(for one image, \[image\]\)"):
            explainer.explain(alone)
    with pytest.raises(UsageError, match="a float image must hold values in"):
        explainer.explain([star.astype(np.float32)])  # 0..255 as float: say what to pass


def test_a_batch_array_is_a_list_of_images(explainer, star):
    batch = np.stack([star, star[::-1]])
    results = explainer.explain(batch)
    assert len(results) == 2 and results[0].maps[0].source_image.base is batch  # views, no copies


# --- Explainer(keras_model) ----------------------------------------------------------------------------


def test_explainer_takes_a_keras_model_and_leaves_it_as_it_was():
    model = tiny_models.gap_dense()
    weights = [w.copy() for w in model.get_weights()]
    config = model.get_config()
    images = tiny_models.images(2)
    direct = Explainer(model, method="gradcam").explain(images)
    wrapped = Explainer(wrap_model(model, preprocess="none"), method="gradcam").explain(images)
    for a, b in zip(direct, wrapped, strict=True):
        np.testing.assert_array_equal(a.maps[0].heatmap, b.maps[0].heatmap)
        assert a.predictions == b.predictions
    assert all(np.array_equal(w, v) for w, v in zip(weights, model.get_weights(), strict=True))
    assert model.get_config() == config and model.get_layer("head").activation.__name__ == "softmax"


def test_a_keras_model_takes_its_preprocessing_and_labels_as_keywords():
    model = tiny_models.gap_dense()
    explainer = Explainer(model, preprocess="scale01", labels=["cat", "dog", "owl"], classes="owl")
    assert explainer.loaded.preprocess == "scale01" and explainer.loaded.labels == ["cat", "dog", "owl"]
    images = (tiny_models.images(1) * 255).round().astype(np.uint8)
    [result] = explainer.explain(images)
    [plain] = Explainer(model, classes="2").explain_batch(images / 255.0)
    assert result.maps[0].label == "owl" and plain.maps[0].label == "2"
    np.testing.assert_allclose(result.maps[0].heatmap, plain.maps[0].heatmap, atol=1e-5)


@pytest.mark.parametrize("model, options, message", [
    ("loaded", {"preprocess": "none"}, "`preprocess` and `labels` apply to a Keras model, and this LoadedModel has "
                                       "its own; give them to camcli.wrap_model(keras_model, preprocess=..., "
                                       "labels=...) instead"),
    ("loaded", {"labels": ["a", "b", "c"]}, "`preprocess` and `labels` apply to a Keras model"),
    ("demo", {}, 'the model must be a Keras model or a LoadedModel (camcli.load_model("demo"), '
                 "camcli.wrap_model(keras_model)), not str"),
    ("keras", {"labels": ["a"]}, "labels has 1 names but the model has 3 classes"),
    ("keras", {"preprocess": "imagenet"}, "unknown preprocessing 'imagenet': choose one of caffe, tf, torch"),
])
def test_explainer_model_errors_say_what_to_pass(model, options, message):
    keras_model = tiny_models.gap_dense()
    given = {"loaded": wrap_model(keras_model), "keras": keras_model}.get(model, model)
    with pytest.raises(UsageError) as caught:
        Explainer(given, **options)
    assert message in str(caught.value)


def test_a_method_set_of_explainers_on_one_keras_model():
    model = tiny_models.gap_dense()
    methods = MethodSet([Explainer(model, method="gradcam"), Explainer(model, method="cam")])
    [result] = methods.explain(tiny_models.images(1))
    assert [m.method for m in result.maps] == ["gradcam", "cam"]
    with pytest.raises(UsageError, match="must share the model"):
        MethodSet([Explainer(model, method="gradcam"), Explainer(tiny_models.gap_dense(), method="cam")])


# --- classes: one string or a list ---------------------------------------------------------------------


def test_one_class_string_is_one_request():
    assert parse_class_requests("star", demo.CLASSES) == [ClassRequest("star", index=3)]
    assert parse_class_requests("top2", demo.CLASSES) == [ClassRequest("top2", rank=2)]
    assert parse_class_requests(["star", "ring"], demo.CLASSES) == [ClassRequest("star", index=3),
                                                                    ClassRequest("ring", index=5)]


def test_explainer_and_api_read_one_string_as_one_value(demo_model):
    assert Explainer(demo_model, classes="star").requests == [ClassRequest("star", index=3)]
    from camcli.api import build_explainer
    from camcli.options import MapRequest

    built = build_explainer(demo_model, MapRequest(methods="cam", classes="ring"))
    assert built.method_names == ["cam"] and built.requests == [ClassRequest("ring", index=5)]
    one_layer = build_explainer(demo_model, MapRequest(layers="conv5"))
    assert one_layer.layers == ["conv5"]  # not five one-letter layers
    assert MethodSet.of(demo_model, methods=["gradcam", "gradcam++"], layer="conv5").layers == ["conv5"]


def test_explain_paths_reads_one_class_string_as_one_class(tmp_path):
    summary = camcli.explain_paths([STAR], model="demo", out=tmp_path, classes="ring", methods="gradcam")
    assert summary.ok == 1
    assert sorted(path.name for path in tmp_path.rglob("*.png")) == ["star_1.gradcam.5.png"]  # ring is class 5


# --- a map at the image's size -------------------------------------------------------------------------


def test_a_map_at_the_image_size_in_one_call(explainer, star):
    [result] = explainer.explain([star])
    class_map = result.maps[0]
    full = class_map.at_image_size()
    assert full.shape == star.shape[:2] == (150, 200) and full.dtype == np.float32
    np.testing.assert_array_equal(full, upsample(class_map.heatmap, height=150, width=200))
    np.testing.assert_array_equal(class_map.resized(height=150, width=200), full)
    assert class_map.resized(height=30, width=40).shape == (30, 40)
    with pytest.raises(TypeError):
        class_map.resized(150, 200)  # keyword-only, as upsample: no (w, h) / (h, w) mix-up


def test_maps_from_explain_batch_do_not_know_their_image(explainer, star):
    [result] = explainer.explain_batch(explainer.preprocess([star]))
    assert result.maps[0].source_image is None
    with pytest.raises(UsageError, match=r"this map does not know its image .* use resized\(height=..., width=...\)"):
        result.maps[0].at_image_size()


def test_results_keep_the_callers_image_itself(demo_model, star):
    methods = MethodSet([Explainer(demo_model, method=name, classes=["top1", "ring"]) for name in ("gradcam", "cam")])
    picture = Image.fromarray(star)
    [result] = methods.explain([picture])
    assert len(result.maps) == 4 and all(m.source_image is picture for m in result.maps)
    assert picture.size == (200, 150) and "source_image" not in repr(result.maps[0])


# --- camcli.overlay ------------------------------------------------------------------------------------


def test_overlay_is_at_the_image_size_for_every_image_form(explainer, star):
    [result] = explainer.explain([star])
    grey = star[:, :, 0]
    for image in (star, star / 255.0, grey, grey[:, :, np.newaxis], np.dstack([star, grey]), Image.fromarray(star)):
        drawn = camcli.overlay(image, result.maps[0])
        assert isinstance(drawn, Image.Image) and drawn.mode == "RGB" and drawn.size == (200, 150)


def test_overlay_is_the_cli_blend(explainer, star):
    [result] = explainer.explain([star])
    heatmap = result.maps[0].heatmap
    expected = overlay_picture(Image.fromarray(star), heatmap, 0.3, colormap_lut("viridis"))
    for class_map in (result.maps[0], heatmap):
        drawn = camcli.overlay(star, class_map, alpha=0.3, colormap="viridis")
        np.testing.assert_array_equal(np.asarray(drawn), np.asarray(expected))


def test_overlay_of_an_empty_map_is_a_copy_of_the_image():
    picture = Image.fromarray(rgb_noise())
    drawn = camcli.overlay(picture, np.zeros((3, 3)))
    assert drawn is not picture and np.array_equal(np.asarray(drawn), np.asarray(picture))


@pytest.mark.parametrize("class_map, error, message", [
    (np.zeros((2, 2, 2)), UsageError, "`class_map` must be a ClassMap or a 2-D map in [0, 1], not shape (2, 2, 2)"),
    (np.zeros(4), UsageError, "not shape (4,)"),
])
def test_overlay_refuses_what_is_not_a_map(class_map, error, message):
    with pytest.raises(error) as caught:
        camcli.overlay(rgb_noise(), class_map)
    assert message in str(caught.value)


def test_overlay_names_a_wrong_colormap_and_alpha():
    with pytest.raises(UsageError, match="unknown colormap 'jett'; did you mean jet"):
        camcli.overlay(rgb_noise(), np.ones((2, 2)), colormap="jett")
    with pytest.raises(UsageError, match=r"^`alpha=2` must be at most 1$"):  # a ValueError from deep inside, once
        camcli.overlay(rgb_noise(), np.ones((2, 2)), alpha=2)


# --- what Jupyter shows --------------------------------------------------------------------------------


def test_repr_png_is_the_overlay_at_the_image_size(explainer, star):
    [result] = explainer.explain([star])
    shown = png_picture(result.maps[0]._repr_png_())
    assert shown.size == (200, 150) and shown.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(shown), np.asarray(camcli.overlay(star, result.maps[0])))


def test_repr_png_shrinks_a_big_image_to_the_display_side(explainer):
    big = np.full((600, 900, 3), 128, np.uint8)
    [result] = explainer.explain([big])
    assert png_picture(result.maps[0]._repr_png_()).size == (DISPLAY_SIDE, round(DISPLAY_SIDE * 600 / 900))


def test_repr_png_without_the_image_is_the_coloured_heatmap(explainer, star):
    [result] = explainer.explain_batch(explainer.preprocess([star]))
    class_map = result.maps[0]
    shown = np.asarray(png_picture(class_map._repr_png_()))
    assert shown.shape == (DISPLAY_SIDE, DISPLAY_SIDE, 3)  # the 12x12 map, enlarged
    lut = colormap_lut("jet")
    peak_row, peak_col = np.unravel_index(np.argmax(class_map.heatmap), class_map.heatmap.shape)
    cell = DISPLAY_SIDE // 12
    centre = shown[peak_row * cell + cell // 2, peak_col * cell + cell // 2].astype(int)
    assert np.abs(centre - lut[255]).max() <= 40  # the hottest colour at the hottest cell


def test_repr_html_shows_every_map_with_its_method_class_and_score(demo_model, star):
    methods = MethodSet([Explainer(demo_model, method=name, classes=["top1", "ring"]) for name in ("gradcam", "cam")])
    [result] = methods.explain([star])
    page = result._repr_html_()
    assert page.count("<img src=\"data:image/png;base64,") == 4
    for class_map in result.maps:
        caption = f"{class_map.method} · {class_map.label} ({class_map.class_index}) · {class_map.score:.3f}"
        assert f"<figcaption>{caption}" in page
    assert [m.label for m in result.maps] == ["star", "ring", "star", "ring"]
    assert f"top {len(result.predictions)}: star {result.predictions[0].score:.3f}" in page
