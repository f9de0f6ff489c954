"""Full-size overlays drawn by OpenCV (camcli.maps.fast_overlay): the float pipeline's pixels within
overlay.py's bound, the picture read in place band by band, every format's file valid and marked, odd
sizes, and Pillow's overlay wherever OpenCV is missing."""

import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from cli_helpers import invoke, read_json
from PIL import Image

from camcli.maps import fast_overlay
from camcli.maps.fast_overlay import arrow_pixels, band_pixels, draw_overlay, opencv_overlay, rgb_array
from camcli.maps.overlay import blend, colormap_lut, overlay_picture, upsample
from camcli.runs.files import encode_picture, save_picture
from camcli.runs.layout import MARKER_VALUE, is_camcli_output

needs_opencv = pytest.mark.skipif(fast_overlay.opencv() is None,
                                  reason="OpenCV is not installed (pip install 'keras-camcli[fast]')")


def random_picture(width, height, seed=3):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def bound(alpha, lut):
    """overlay.py's bound: half a level of the map moves the colour by up to one step of the table
    (times alpha), and each side rounds once (one level)."""
    steps = np.abs(np.diff(lut.astype(int), axis=0)).max()
    return max(1, round(alpha * steps) + 1)


def differences(drawn, picture, unit, alpha, lut):
    height, width = picture.shape[:2]
    reference = blend(picture, upsample(unit, height=height, width=width), alpha, lut)
    return np.abs(rgb_array(drawn).astype(int) - reference)


@pytest.fixture
def without_opencv(monkeypatch):
    """`import cv2` fails, as where the `fast` extra is not installed."""
    monkeypatch.setitem(sys.modules, "cv2", None)
    fast_overlay.opencv.cache_clear()
    yield
    monkeypatch.undo()
    fast_overlay.opencv.cache_clear()


# --- the pixels ----------------------------------------------------------------------------------------------


@needs_opencv
@pytest.mark.parametrize("colormap", ["jet", "viridis", "turbo"])
def test_the_opencv_overlay_matches_the_float_blend_within_one_step_of_the_table(colormap):
    picture = random_picture(900, 700)
    unit = np.random.default_rng(4).random((7, 9)).astype(np.float32)
    lut = colormap_lut(colormap)
    for alpha in (0.0, 0.3, 0.5, 1.0):
        drawn = opencv_overlay(Image.fromarray(picture), unit, alpha, lut)
        assert drawn.mode == "RGBX" and drawn.size == (900, 700)
        difference = differences(drawn, picture, unit, alpha, lut)
        assert difference.max() <= bound(alpha, lut), (alpha, difference.max())
        assert difference.mean() < 0.5, (alpha, difference.mean())  # Pillow's overlay: up to 0.52 here
    assert np.array_equal(rgb_array(opencv_overlay(Image.fromarray(picture), unit, 0.0, lut)), picture)


@needs_opencv
def test_an_empty_map_returns_the_picture_itself():
    picture = Image.fromarray(random_picture(30, 20))
    assert draw_overlay(picture, np.zeros((4, 4), np.float32), 0.5, colormap_lut("jet")) is picture
    assert opencv_overlay(picture, np.zeros((4, 4), np.float32), 0.5, colormap_lut("jet")) is picture


@needs_opencv
def test_alpha_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="alpha must be between 0 and 1, got 1.5"):
        opencv_overlay(Image.fromarray(random_picture(8, 8)), np.ones((2, 2)), 1.5, colormap_lut("jet"))


@needs_opencv
@pytest.mark.parametrize("width,height,map_shape", [
    (1, 300, (7, 7)),  # one pixel wide
    (300, 1, (7, 7)),  # one pixel high
    (5, 3, (1, 1)),  # a one-cell map
    pytest.param(4001, 2999, (7, 7), marks=pytest.mark.slow),  # 12 MP, odd sides: 12 bands, the last one short
])
def test_odd_sizes_are_drawn_within_the_bound(width, height, map_shape):
    picture = random_picture(width, height)
    unit = np.random.default_rng(5).random(map_shape).astype(np.float32)
    lut = colormap_lut("jet")
    drawn = opencv_overlay(Image.fromarray(picture), unit, 0.5, lut)
    assert drawn.size == (width, height)
    difference = differences(drawn, picture, unit, 0.5, lut)
    assert difference.max() <= bound(0.5, lut)
    assert difference.mean() < 0.5


@needs_opencv
def test_no_band_is_larger_than_pillows_decompression_bomb_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # Pillow's crop warns above it, and fails above twice
    picture = Image.fromarray(random_picture(400, 300))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        drawn = opencv_overlay(picture, np.random.default_rng(5).random((7, 7)), 0.5, colormap_lut("jet"))
    assert drawn.size == (400, 300)


@needs_opencv
def test_opencv_draws_on_one_thread_and_its_own_setting_comes_back(monkeypatch):
    cv2 = fast_overlay.opencv()
    before = cv2.getNumThreads()
    cv2.setNumThreads(3)
    threads_seen = []
    real = fast_overlay._draw
    monkeypatch.setattr(fast_overlay, "_draw", lambda *args: threads_seen.append(cv2.getNumThreads()) or real(*args))
    picture = Image.fromarray(random_picture(300, 200))
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:  # drawers overlapping, as the writer's threads do
            list(pool.map(lambda seed: opencv_overlay(picture, np.random.default_rng(seed).random((7, 7)), 0.5,
                                                      colormap_lut("jet")), range(8)))
        assert threads_seen == [1] * 8 and cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(before)


# --- the picture, read in place --------------------------------------------------------------------------------


@needs_opencv
def test_a_band_is_read_in_place_and_outlives_its_crop():
    picture = Image.fromarray(random_picture(500, 300))
    band = picture.crop((0, 100, 500, 160))
    pixels = arrow_pixels(band)
    assert pixels is not None and pixels.shape == (60, 500, 4) and not pixels.flags.writeable
    del band  # the Arrow export holds Pillow's memory as long as the array lives
    assert np.array_equal(pixels[..., :3], np.asarray(picture)[100:160])
    assert np.array_equal(band_pixels(picture, 100, 160), pixels)


@needs_opencv
def test_a_picture_over_several_blocks_is_read_band_by_band():
    picture = Image.fromarray(random_picture(4100, 1100))  # 18 MB: more than Pillow's 16 MB block
    assert arrow_pixels(picture) is None  # Arrow exports one block only
    assert arrow_pixels(picture.convert("L")) is None  # and only RGB is read this way
    assert np.array_equal(band_pixels(picture, 1000, 1100)[..., :3], np.asarray(picture)[1000:1100])


@needs_opencv
def test_without_arrow_the_bands_are_copied_and_the_overlay_is_the_same(monkeypatch):
    picture = Image.fromarray(random_picture(640, 480))
    unit = np.random.default_rng(6).random((7, 7)).astype(np.float32)
    in_place = np.asarray(opencv_overlay(picture, unit, 0.4, colormap_lut("jet")))
    monkeypatch.setattr(fast_overlay, "arrow_pixels", lambda image: None)
    assert np.array_equal(np.asarray(opencv_overlay(picture, unit, 0.4, colormap_lut("jet"))), in_place)


# --- the files -------------------------------------------------------------------------------------------------


@needs_opencv
@pytest.mark.parametrize("fmt,pillow_name", [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")])
def test_every_format_of_an_opencv_overlay_is_a_valid_marked_file(tmp_path, fmt, pillow_name):
    picture = random_picture(321, 203)
    drawn = opencv_overlay(Image.fromarray(picture), np.random.default_rng(7).random((7, 7)), 0.5,
                           colormap_lut("jet"))
    path = tmp_path / f"overlay.{fmt}"
    save_picture(path, drawn, fmt)
    data = path.read_bytes()
    # Byte for byte the file Pillow writes from the same pixels as an RGB image, marker and all.
    assert data == encode_picture(Image.fromarray(rgb_array(drawn)), fmt)
    with Image.open(path) as written:
        written.load()  # a truncated or corrupt file fails here
        assert (written.format, written.mode, written.size) == (pillow_name, "RGB", (321, 203))
        if fmt == "png":
            assert np.array_equal(np.asarray(written), rgb_array(drawn))
    assert is_camcli_output(path)
    if fmt == "jpg":  # SOI, the JFIF APP0 segment (18 bytes), then camcli's comment segment; EOI last
        comment = b"\xff\xfe" + (2 + len(MARKER_VALUE)).to_bytes(2, "big") + MARKER_VALUE.encode()
        assert data[:4] == b"\xff\xd8\xff\xe0" and data[20:20 + len(comment)] == comment
        assert data.endswith(b"\xff\xd9")


# --- without OpenCV --------------------------------------------------------------------------------------------


def test_without_opencv_the_overlay_is_pillows(without_opencv):
    assert fast_overlay.opencv() is None
    picture = Image.fromarray(random_picture(90, 70))
    unit = np.random.default_rng(8).random((7, 7)).astype(np.float32)
    drawn = draw_overlay(picture, unit, 0.5, colormap_lut("jet"))
    assert drawn.mode == "RGB"
    assert np.array_equal(np.asarray(drawn), np.asarray(overlay_picture(picture, unit, 0.5, colormap_lut("jet"))))


def test_fast_false_draws_with_pillow():
    picture = Image.fromarray(random_picture(90, 70))
    unit = np.random.default_rng(9).random((7, 7)).astype(np.float32)
    drawn = draw_overlay(picture, unit, 0.5, colormap_lut("jet"), fast=False)
    assert drawn.mode == "RGB"
    assert np.array_equal(np.asarray(drawn), np.asarray(overlay_picture(picture, unit, 0.5, colormap_lut("jet"))))


@needs_opencv
@pytest.mark.slow
def test_the_writers_files_with_and_without_opencv_agree(scenes, tmp_path, monkeypatch):
    photo = tmp_path / "in" / "photo.jpg"
    photo.parent.mkdir()
    Image.open(scenes[0]).convert("RGB").resize((1203, 901), Image.Resampling.BICUBIC).save(photo, quality=92)
    options = ["--model", "demo", "--format", "png", "--draw-box", "--panel", "--save-mask", "-q"]
    drawn_by_opencv = []
    real = fast_overlay.opencv_overlay
    monkeypatch.setattr(fast_overlay, "opencv_overlay", lambda *args: drawn_by_opencv.append(1) or real(*args))
    overlays = {}
    for name in ("opencv", "pillow"):
        if name == "pillow":
            monkeypatch.setitem(sys.modules, "cv2", None)
            fast_overlay.opencv.cache_clear()
        out = tmp_path / name
        try:
            result = invoke("explain", photo, "--out", out, *options)
        finally:
            fast_overlay.opencv.cache_clear()
        assert result.exit_code == 0, result.stderr
        entry = read_json(out / "photo.json")["explanations"][0]
        for key in ("overlay", "mask", "panel"):
            assert is_camcli_output(out / entry[key])
        overlays[name] = np.asarray(Image.open(out / entry["overlay"])).astype(int)
        assert overlays[name].shape == (901, 1203, 3)
        assert len(drawn_by_opencv) == 1  # the first run's overlay only
    # Each is within the bound of the float blend, so the two are within twice of it (the box is the same).
    difference = np.abs(overlays["opencv"] - overlays["pillow"])
    assert difference.max() <= 2 * bound(0.5, colormap_lut("jet")) and difference.mean() < 1.0
