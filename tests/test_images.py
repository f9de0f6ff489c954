"""Decoding: every file either becomes an RGB uint8 array or an ImageLoadError with a reason."""

import os
import struct
import sys
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from image_fixtures import damaged_images, encode, noise
from PIL import Image, features

from camcli.errors import ImageLoadError
from camcli.models.preprocess import resize_rgb
from camcli.runs.decode import IMAGE_EXTENSIONS, _to_rgb, load_rgb, sniff_image


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def load_error(path):
    with pytest.raises(ImageLoadError) as info:
        load_rgb(path)
    assert info.value.path == path
    return info.value.reason


# --- files that are not images ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file (0 bytes)"),
        (b"hello, I am not a picture\n", "not an image (content is text)"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "not an image (content is HTML)"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n",
         "not an image (a Git LFS pointer: run `git lfs pull`)"),
        (bytes(range(256)) * 4, "not an image (unrecognised format)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "truncated or corrupt PNG header"),
    ],
)
def test_not_an_image_gives_its_reason(tmp_path, content, reason):
    assert load_error(write(tmp_path, "photo.jpg", content)) == reason


def test_truncated_jpeg(tmp_path):
    data = encode(Image.fromarray(noise(64, 64)), "JPEG")
    assert load_error(write(tmp_path, "cut.jpg", data[: len(data) // 2])) == "truncated JPEG"


def test_truncated_png(tmp_path):
    data = encode(Image.fromarray(noise(64, 64)), "PNG")
    assert load_error(write(tmp_path, "cut.png", data[: len(data) // 2])) == "truncated PNG"


def test_directory_and_missing_file(tmp_path):
    assert load_error(tmp_path) == "is a directory"
    assert load_error(tmp_path / "nope.png") == "no such file"


def test_broken_symlink(tmp_path):
    link = tmp_path / "gone.png"
    link.symlink_to(tmp_path / "missing.png")
    assert load_error(link) == "broken symlink"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_unreadable_file(tmp_path):
    path = write(tmp_path, "locked.png", encode(Image.new("RGB", (2, 2)), "PNG"))
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: chmod 000 does not stop reading")
        assert load_error(path) == "permission denied"
    finally:
        path.chmod(0o644)


def test_permission_error_while_opening(tmp_path, monkeypatch):
    # The same path as test_unreadable_file, reachable when the tests run as root.
    path = write(tmp_path, "locked.png", encode(Image.new("RGB", (2, 2)), "PNG"))

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", refuse)
    assert load_error(path) == "permission denied"


def test_decompression_bomb_header_is_refused_without_decoding(tmp_path):
    # A tiny PNG whose header claims 20000 x 20000 pixels, more than twice Pillow's limit.
    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
    path = write(tmp_path, "bomb.png", b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", b"") + chunk(b"IEND", b""))
    reason = load_error(path)
    assert reason.startswith("decompression bomb: 400000000 pixels exceeds the limit of ")


def test_decompression_bomb_warning_becomes_an_error(tmp_path, monkeypatch):
    path = write(tmp_path, "big.png", encode(Image.new("RGB", (15, 10)), "PNG"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 150 pixels: only Pillow's warning
    assert load_error(path) == "decompression bomb: 150 pixels exceeds the limit of 100; allow it with `max_pixels=150`"


def test_failures_change_no_global_warning_state(tmp_path, monkeypatch):
    path = write(tmp_path, "big.png", encode(Image.new("RGB", (15, 10)), "PNG"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    before = list(warnings.filters)
    load_error(path)
    assert warnings.filters == before


# --- images in every shape and mode -------------------------------------------------------------


def test_png_named_jpg_loads(tmp_path):
    pixels = noise(5, 7)
    path = write(tmp_path, "really_a_png.jpg", encode(Image.fromarray(pixels), "PNG"))
    np.testing.assert_array_equal(load_rgb(path), pixels)


def test_one_by_one(tmp_path):
    path = write(tmp_path, "dot.png", encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"))
    out = load_rgb(path)
    assert out.shape == (1, 1, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [10, 20, 30]


def test_grayscale(tmp_path):
    path = write(tmp_path, "grey.png", encode(Image.new("L", (3, 2), 77), "PNG"))
    assert load_rgb(path).tolist() == [[[77, 77, 77]] * 3] * 2


def test_rgba_transparent_pixels_become_white(tmp_path):
    pixels = np.zeros((2, 2, 4), dtype=np.uint8)
    pixels[0, 0] = (255, 0, 0, 255)  # opaque red stays red
    pixels[0, 1] = (0, 0, 0, 0)  # fully transparent black -> white
    pixels[1, :] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    path = write(tmp_path, "alpha.png", encode(Image.fromarray(pixels), "PNG"))
    out = load_rgb(path)
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 1].tolist() == [255, 255, 255]
    assert out[1, 0].tolist() == [127, 127, 127]


def test_palette_with_and_without_transparency(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    plain = write(tmp_path, "palette.png", encode(image, "PNG"))
    assert load_rgb(plain).tolist() == [[[0, 0, 255], [255, 0, 0]]]
    clear = write(tmp_path, "palette_t.png", encode(image, "PNG", transparency=0))
    assert load_rgb(clear).tolist() == [[[255, 255, 255], [255, 0, 0]]]


def test_cmyk_jpeg(tmp_path):
    path = write(tmp_path, "print.jpg", encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95))
    out = load_rgb(path)
    assert out.shape == (8, 8, 3)
    red, green, blue = out[4, 4].tolist()
    assert red > 200 and green < 60 and blue < 60


def test_16_bit_png_is_scaled_by_bit_depth(tmp_path):
    values = np.array([[0, 32896, 65535]], dtype=np.uint16)  # 32896 = 128 * 257
    path = write(tmp_path, "deep.png", encode(Image.fromarray(values), "PNG"))
    with Image.open(path) as stored:
        assert stored.mode == "I;16"
    out = load_rgb(path)
    assert out[0, :, 0].tolist() == [0, 128, 255]
    assert (out[..., 0] == out[..., 2]).all()


def test_32_bit_integer_image_is_stretched_when_out_of_16_bit_range(tmp_path):
    values = np.array([[-70000, 0, 70000]], dtype=np.int32)
    path = write(tmp_path, "wide.tif", encode(Image.fromarray(values), "TIFF"))
    assert load_rgb(path)[0, :, 0].tolist() == [0, 128, 255]


def test_float_image_is_stretched_without_dividing_by_zero(tmp_path):
    ramp = np.array([[-1.0, 0.0, 1.0]], dtype=np.float32)
    path = write(tmp_path, "ramp.tif", encode(Image.fromarray(ramp), "TIFF"))
    assert load_rgb(path)[0, :, 0].tolist() == [0, 128, 255]
    flat = write(tmp_path, "flat.tif", encode(Image.fromarray(np.full((2, 2), 3.5, np.float32)), "TIFF"))
    assert load_rgb(flat).tolist() == [[[0, 0, 0]] * 2] * 2


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = write(tmp_path, "portrait.jpg", encode(Image.new("RGB", (40, 20)), "JPEG", exif=exif))
    assert load_rgb(path).shape == (40, 20, 3)


def test_animated_gif_gives_first_frame(tmp_path):
    red, blue = Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))
    path = write(tmp_path, "anim.gif", encode(red, "GIF", save_all=True, append_images=[blue], duration=50))
    with Image.open(path) as stored:
        assert stored.n_frames == 2
    assert load_rgb(path)[0, 0].tolist() == [255, 0, 0]


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_animated_webp_gives_first_frame(tmp_path):
    red, blue = Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))
    path = write(tmp_path, "anim.webp", encode(red, "WEBP", save_all=True, append_images=[blue], lossless=True))
    assert load_rgb(path)[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize("mode", ["YCbCr", "LAB", "LA", "PA", "I;16B", "1"])
def test_unusual_modes_become_rgb(tmp_path, mode):
    path = write(tmp_path, "odd.tif", encode(Image.new(mode, (3, 2)), "TIFF"))
    out = load_rgb(path)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8


def test_hsv_becomes_rgb():
    # No file format stores HSV, so the conversion is checked on an image in memory.
    assert _to_rgb(Image.new("HSV", (1, 1), (0, 255, 255))).tolist() == [[[255, 0, 0]]]


# --- sniffing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "PPM"])
def test_sniff_recognises_real_files(tmp_path, fmt):
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    path = write(tmp_path, "no_extension", encode(Image.new("RGB", (16, 16)), fmt))
    assert sniff_image(path)


def test_sniff_recognises_big_endian_tiff_and_every_netpbm(tmp_path):
    assert sniff_image(write(tmp_path, "mm", b"MM\x00*\x00\x00\x00\x08"))
    for kind in b"123456":
        assert sniff_image(write(tmp_path, "pnm", b"P" + bytes([kind]) + b"\n1 1\n"))


@pytest.mark.parametrize("content", [b"", b"BMW is a car brand, not a bitmap", b"P5x", b"hello"])
def test_sniff_rejects_non_images(tmp_path, content):
    assert not sniff_image(write(tmp_path, "thing", content))


def test_sniff_is_false_for_missing_paths_and_directories(tmp_path):
    assert not sniff_image(tmp_path / "missing")
    assert not sniff_image(tmp_path)


def test_image_extensions_are_lowercase_with_a_dot():
    assert {".jpg", ".jpeg", ".png", ".webp", ".tiff", ".jfif"} <= IMAGE_EXTENSIONS
    assert all(ext.startswith(".") and ext == ext.lower() for ext in IMAGE_EXTENSIONS)


# --- resizing -------------------------------------------------------------------------------------


def test_resize_squashes_to_the_requested_size():
    out = resize_rgb(noise(30, 50), (224, 224))
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 255.0


def test_resize_keeps_a_flat_colour():
    out = resize_rgb(np.full((3, 9, 3), 200, np.uint8), (5, 4))
    assert out.shape == (5, 4, 3)
    np.testing.assert_allclose(out, 200.0)


def test_resize_rejects_bad_input():
    with pytest.raises(ValueError):
        resize_rgb(np.zeros((4, 4), np.uint8), (2, 2))
    with pytest.raises(ValueError):
        resize_rgb(np.zeros((4, 4, 3), np.uint8), (0, 2))


# --- properties -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    # Module-scoped: hypothesis runs many examples per test call, each overwriting one file.
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=300), damaged_images()))
def test_any_bytes_load_or_raise_image_load_error(scratch, data):
    path = scratch / "fuzz.jpg"
    path.write_bytes(data)
    try:
        out = load_rgb(path)
    except ImageLoadError as exc:
        assert exc.reason and exc.reason == exc.reason.strip()
    else:
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


def _as_mode(values, mode):
    """An image in `mode` from random uint8 `values` (h, w, 4)."""
    grey = values[:, :, 0]
    size = (values.shape[1], values.shape[0])
    if mode in ("L", "1"):
        return Image.fromarray(grey).convert(mode)
    if mode in ("RGB", "RGBA", "CMYK", "LA"):
        return Image.frombytes(mode, size, np.ascontiguousarray(values[:, :, : len(mode)]).tobytes())
    if mode == "P":
        return Image.fromarray(values[:, :, :3]).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    if mode == "I;16":
        return Image.fromarray(grey.astype(np.uint16) * 257)
    if mode == "I":
        return Image.fromarray(grey.astype(np.int32) * 1000 - 50000)
    if mode == "F":
        floats = grey.astype(np.float32) / 7.0
        floats[0, 0] = [np.nan, np.inf, -np.inf, 1e30][grey[0, 0] % 4]
        return Image.fromarray(floats)
    raise AssertionError(mode)


_MODES = ["L", "RGB", "RGBA", "P", "I;16", "I", "F", "1", "CMYK", "LA"]


@settings(max_examples=60, deadline=None)
@given(
    mode=st.sampled_from(_MODES),
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_every_pillow_mode_loads_as_rgb(scratch, mode, height, width, seed):
    image = _as_mode(noise(height, width, 4, seed), mode)
    assert image.mode == mode
    fmt = "TIFF" if mode in ("I", "F", "CMYK") else "PNG"
    path = scratch / f"mode.{fmt.lower()}"
    path.write_bytes(encode(image, fmt))
    out = load_rgb(path)
    assert out.shape == (height, width, 3) and out.dtype == np.uint8


def test_concurrent_loads_refuse_bombs_and_restore_warning_filters(tmp_path, monkeypatch):
    # The runner decodes in a thread pool: the bomb check must hold in every thread, and the
    # process-wide warning filters must come back exactly as they were.
    from concurrent.futures import ThreadPoolExecutor

    big = write(tmp_path, "big.png", encode(Image.new("RGB", (15, 10)), "PNG"))
    small = write(tmp_path, "small.png", encode(Image.new("RGB", (9, 9)), "PNG"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    before = list(warnings.filters)

    def outcome(i):
        try:
            return load_rgb(big if i % 2 else small).shape
        except ImageLoadError as exc:
            return exc.reason

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(outcome, range(400)))
    assert results[0::2] == [(9, 9, 3)] * 200
    refused = "decompression bomb: 150 pixels exceeds the limit of 100; allow it with `max_pixels=150`"
    assert set(results[1::2]) == {refused}
    assert warnings.filters == before
