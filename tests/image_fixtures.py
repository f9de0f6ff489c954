"""Small image helpers shared by the tests: encoded bytes, noise, and damaged files for fuzzing."""

import io

import numpy as np
from hypothesis import strategies as st
from PIL import Image


def encode(image, fmt, **params):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def noise(h, w, channels=3, seed=0, dtype=np.uint8, high=256):
    return np.random.default_rng(seed).integers(0, high, (h, w, channels), dtype=dtype)


def _valid_images():
    pixels = Image.fromarray(noise(6, 5))
    return [encode(pixels, fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "PPM")]


_SEEDS = _valid_images()


@st.composite
def damaged_images(draw):
    """A real small image with a few bytes changed and maybe cut short: reaches the decoders."""
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])
