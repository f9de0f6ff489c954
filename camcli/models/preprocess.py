"""Input preprocessing in numpy, one function per `keras.applications` mode, and the affine mode
(x * scale + offset per channel) that KerasHub's image converters apply.

Doing this in numpy (rather than calling Keras) keeps decoding threads free of TensorFlow and lets
the batch step receive ready float32 arrays. tests/test_preprocess.py checks every mode against
`keras.applications.imagenet_utils.preprocess_input`.
"""

from __future__ import annotations

import functools
import re

import numpy as np
from PIL import Image

from camcli.errors import UsageError
from camcli.models.catalog import PREPROCESS_MODES

# ImageNet channel statistics, as Keras' imagenet_utils uses them.
_CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_TORCH_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


# A mode written out by `affine_mode`: x * scale + offset, three numbers each (one per channel).
AFFINE = "affine"


def affine_mode(scale, offset) -> str:
    """The mode computing x * scale + offset per channel, as a KerasHub ImageConverter does (`scale` and
    `offset`: a number, one per channel, or None). The numbers are written out in full, so that a
    record's fingerprint (which holds the mode) tells apart models whose preprocessing differs."""
    def numbers(value, default):
        values = np.broadcast_to(np.asarray(default if value is None else value, dtype=np.float64), (3,))
        return ",".join(repr(float(v)) for v in values)

    return f"{AFFINE}:scale={numbers(scale, 1.0)};offset={numbers(offset, 0.0)}"


_AFFINE_PATTERN = re.compile(AFFINE + r":scale=([^;]*);offset=(.*)")


@functools.lru_cache(maxsize=8)
def _affine_terms(mode: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(scale, offset) of an `affine_mode` string; UsageError for anything else."""
    match = _AFFINE_PATTERN.fullmatch(mode)
    try:
        terms = tuple(tuple(float(v) for v in match[i].split(",")) for i in (1, 2)) if match else ()
    except ValueError:
        terms = ()
    if [len(values) for values in terms] != [3, 3]:
        raise UsageError(f"malformed preprocessing {mode!r}: expected "
                         f"{affine_mode(1.0, 0.0)!r}, with three numbers each")
    return terms


def check_mode(mode: str) -> None:
    """UsageError unless `mode` is one of PREPROCESS_MODES or an `affine_mode` string."""
    if mode.startswith(AFFINE + ":"):
        _affine_terms(mode)
    elif mode not in PREPROCESS_MODES:
        raise UsageError(f"unknown preprocessing mode {mode!r}: choose one of {', '.join(PREPROCESS_MODES)}")


def preprocess(rgb: np.ndarray, mode: str) -> np.ndarray:
    """Map RGB values in 0..255 (any float or uint8 array, channels last) to the model's input."""
    x = np.asarray(rgb, dtype=np.float32)
    if mode.startswith(AFFINE + ":"):  # in float32, in the converter's order: scale, then offset
        scale, offset = _affine_terms(mode)
        return x * np.array(scale, dtype=np.float32) + np.array(offset, dtype=np.float32)
    if mode == "caffe":  # RGB -> BGR, then subtract the per-channel ImageNet mean (no scaling)
        return x[..., ::-1] - _CAFFE_BGR_MEAN
    if mode == "tf":  # scale to [-1, 1]
        return x / 127.5 - 1.0
    if mode == "torch":  # scale to [0, 1], then standardise per channel
        return (x / 255.0 - _TORCH_MEAN) / _TORCH_STD
    if mode == "scale01":
        return x / 255.0
    if mode == "none":
        return x
    raise UsageError(f"unknown preprocessing mode {mode!r}: choose one of {', '.join(PREPROCESS_MODES)}")


def as_rgb_picture(image) -> Image.Image:
    """Any image a caller may hand the library, as an RGB Pillow image (the image itself when it is one).

    Arrays: uint8 (0..255) or float in [0, 1], shaped (H, W) or (H, W, 1) for greyscale, (H, W, 3) for
    RGB or (H, W, 4) for RGBA; greyscale is repeated into the three channels, and float is rounded to
    the nearest of 256 levels. Pillow images: any 8-bit mode. Transparency is composited over white
    (`over_white`), as image files are decoded: a transparent pixel shows what a page behind it would,
    not whatever colour happens to be stored under it. Anything else is a one-line UsageError.
    """
    if isinstance(image, Image.Image):
        return _pillow_rgb(image)
    pixels = _pixels_uint8(np.asarray(image))
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if pixels.shape[2] == 4:
        return Image.fromarray(over_white(pixels))
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return Image.fromarray(pixels)


_IMAGE_SHAPES = "(H, W) or (H, W, 1) greyscale, (H, W, 3) RGB or (H, W, 4) RGBA"


def _pixels_uint8(pixels: np.ndarray) -> np.ndarray:
    """An image array checked for shape and range, as uint8 (the array itself when it is uint8)."""
    channels_ok = pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (1, 3, 4))
    if not channels_ok or 0 in pixels.shape[:2]:
        batch = "; pass one image at a time, not a batch" if pixels.ndim == 4 else ""
        raise UsageError(f"an image must be {_IMAGE_SHAPES}, not shape {pixels.shape}{batch}")
    if pixels.dtype == np.uint8:
        return pixels
    if not np.issubdtype(pixels.dtype, np.floating):
        raise UsageError(f"an image must be uint8 (0..255) or float in [0, 1], not {pixels.dtype}; "
                         "for integers in 0..255, pass image.astype(np.uint8)")
    low, high = float(np.min(pixels)), float(np.max(pixels))
    if not (0.0 <= low and high <= 1.0):  # also false for NaN
        raise UsageError(f"a float image must hold values in [0, 1], not {low:g}..{high:g}; "
                         "divide 0..255 values by 255, or pass uint8")
    return np.rint(pixels * 255.0).astype(np.uint8)


def _pillow_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("F", "I") or image.mode.startswith("I;"):
        raise UsageError(f"a Pillow image in mode {image.mode} has no 0..255 range; convert it to 8 bits, "
                         "or load its file with camcli.load_rgb(path), which scales 16-bit and float images")
    return Image.fromarray(over_white(np.asarray(image.convert("RGBA"))))


def over_white(rgba):
    """Composite RGBA (uint8) over a white background: rgb * a + 255 * (1 - a), rounded."""
    rgb = rgba[:, :, :3].astype(np.uint32)
    alpha = rgba[:, :, 3:].astype(np.uint32)
    # Integer arithmetic in 0..255*255; +127 rounds the division to nearest.
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def image_height_width(image) -> tuple[int, int]:
    """(height, width) of an image in any form `as_rgb_picture` takes, without converting it."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    height, width = np.shape(image)[:2]
    return int(height), int(width)


def resize_rgb(rgb_uint8, size_hw):
    """Resize an RGB uint8 image (array or Pillow RGB image) to `size_hw` = (height, width); returns
    float32 in 0..255.

    The image is squashed to the model's input size (no crop, no padding), so every pixel of the
    original is seen by the model, and the heatmap, computed on the squashed grid, stretches back
    onto the original aspect ratio exactly. Pillow's BILINEAR filter widens its support when
    shrinking (it antialiases), unlike `tf.image.resize`. A photo many times the input's size is
    first shrunk by an integer factor with a box filter (`reducing_gap`): a 12 MP photo goes to
    224x224 about 5x faster, and the result differs from the direct resample by at most a grey
    level or two in a few pixels.
    """
    height, width = (int(n) for n in size_hw)
    if height < 1 or width < 1:
        raise ValueError(f"the size to resize to must be positive, got {size_hw!r}")
    if isinstance(rgb_uint8, Image.Image):
        if rgb_uint8.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {rgb_uint8.mode}")
        image = rgb_uint8
    else:
        rgb = np.asarray(rgb_uint8)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
        image = Image.fromarray(rgb)
    resized = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
    return np.asarray(resized, dtype=np.float32)


# Pillow's reducing_gap: shrink by an integer factor first while the image stays at least this many
# times the size asked for. At 3.0 the two-step result cannot be told from a direct resample (Pillow's docs).
REDUCING_GAP = 3.0
