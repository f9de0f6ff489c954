"""Decoding images someone else read or decoded (camcli.ray's rows): `decode_bytes` is `decode_image` on a
file's bytes, `decode_array` takes pixels as `decode_image` would give them."""

import io

import numpy as np
import pytest
from PIL import Image

from camcli.errors import ImageLoadError
from camcli.runs.decode import decode_array, decode_bytes, decode_image, format_of_name


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg_turned(tmp_path):
    """A 40x20 JPEG whose EXIF says: turn it 90 degrees (orientation 6)."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 40, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "turned.jpg"
    image.save(path, "JPEG", exif=exif.tobytes())
    return path


def test_bytes_decode_as_the_file_does(tmp_path):
    path = _jpeg_turned(tmp_path)
    from_file = decode_image(path, max_side=30, model_size=(8, 8))
    from_bytes = decode_bytes(path.read_bytes(), str(path), max_side=30, model_size=(8, 8))
    assert from_bytes.original_size == from_file.original_size == (20, 40)  # upright: EXIF applied
    assert from_bytes.format == "JPEG"
    np.testing.assert_array_equal(np.asarray(from_bytes.picture), np.asarray(from_file.picture))


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"hello, world"])
def test_bad_bytes_fail_with_the_files_reason(tmp_path, data):
    path = tmp_path / "bad.png"
    path.write_bytes(data)
    with pytest.raises(ImageLoadError) as from_file:
        decode_image(path)
    with pytest.raises(ImageLoadError) as from_bytes:
        decode_bytes(data, str(path))
    assert str(from_bytes.value) == str(from_file.value)


@pytest.mark.parametrize("pixels, expected", [
    (np.full((4, 6), 200, np.uint8), (200, 200, 200)),
    (np.full((4, 6, 1), 10, np.uint8), (10, 10, 10)),
    (np.dstack([np.zeros((4, 6, 3), np.uint8), np.zeros((4, 6), np.uint8)]), (255, 255, 255)),  # transparent
    (np.full((4, 6), 65535, np.uint16), (255, 255, 255)),
    (np.full((4, 6, 3), 32896, np.uint16), (128, 128, 128)),
])
def test_pixels_of_any_usual_mode_become_rgb(pixels, expected):
    decoded = decode_array(pixels, "x.png", fmt="PNG")
    picture = np.asarray(decoded.picture)
    assert picture.shape == (4, 6, 3) and decoded.original_size == (6, 4)
    assert tuple(picture[0, 0]) == expected


def test_pixels_are_reduced_as_a_file_is():
    pixels = np.random.default_rng(1).integers(0, 256, (100, 200, 3), dtype=np.uint8)
    path_like = io.BytesIO(_png(Image.fromarray(pixels)))
    from_bytes = decode_bytes(path_like.getvalue(), "a.png", max_side=50, model_size=(10, 10))
    from_array = decode_array(pixels, "a.png", max_side=50, model_size=(10, 10), fmt="PNG")
    assert from_array.picture.size == (50, 25) and from_array.original_size == (200, 100)
    np.testing.assert_array_equal(np.asarray(from_array.picture), np.asarray(from_bytes.picture))


@pytest.mark.parametrize("pixels", [np.zeros((1, 20, 30)), np.zeros((3, 4, 2), np.uint8), np.zeros((0, 4, 3), np.uint8),
                                    np.zeros((4, 4, 3), np.float32)])
def test_arrays_that_are_no_image_are_one_line(pixels):
    with pytest.raises(ImageLoadError) as error:
        decode_array(pixels, "odd.png")
    message = str(error.value)
    assert message.startswith("odd.png: pixels of shape") and "\n" not in message


def test_format_of_a_name():
    assert (format_of_name("a/b.JPG"), format_of_name("c.png"), format_of_name("d.unknown")) == ("JPEG", "PNG", None)
