"""Full-size overlays at OpenCV's speed, on the picture's own memory: the writer's path when OpenCV
imports (the `fast` extra), with `overlay_picture` (Pillow) as the fallback.

The steps are overlay.py's: the map rounded to 256 levels and upsampled bilinearly in 8 bits
(cv2.resize), each level coloured by the lookup table, and `(1 - alpha) * picture + alpha * colour`
rounded (cv2.addWeighted), so a pixel is within the same bound of the float pipeline (`upsample`,
then `blend`) as Pillow's overlay: one step of the table times alpha, plus one level.

What makes it fast is what it does not do. Pillow holds an RGB pixel in 4 bytes (R, G, B and a pad
byte), and a 12 MP picture's `np.asarray` or `Image.fromarray` costs as much CPU as the whole
overlay, most of it page faults on a fresh 36-48 MB buffer. So the picture is read a band of rows at
a time (a crop under Pillow's 16 MB block, which Pillow exports through the Arrow C data interface
without a copy), each level is coloured by one 32-bit lookup into Pillow's own layout (R, G, B, pad),
and the result is an "RGBX" Pillow image over the numpy array, which Pillow's JPEG and WebP encoders
take as they are (the same bytes as from the RGB image, camcli's marker included). A 12 MP overlay
costs about 16 ms of CPU here instead of 43, and 40 with its JPEG encode instead of 65
(benchmarks/overlay_speed.py, `make bench-overlay`). Its memory is the output, the upsampled levels
(a byte per pixel) and one band.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading

import numpy as np
from PIL import Image

from camcli.maps.overlay import overlay_picture

# Pixels drawn per band: about 4 MB of RGBX, under Pillow's 16 MB block (so that a band's crop is one
# block, which Arrow can export), and small enough to stay in cache between the colour and the blend.
BAND_PIXELS = 1 << 20


@functools.cache
def opencv():
    """The cv2 module, or None where OpenCV is not installed (`pip install "keras-camcli[fast]"`)."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def draw_overlay(picture: Image.Image, unit_map, alpha: float, lut, *, fast: bool = True) -> Image.Image:
    """The full-size overlay the writer saves: `opencv_overlay` where OpenCV imports (and `fast`), else
    `overlay_picture`. The image is RGB or, from OpenCV, "RGBX" (RGB with a pad byte, Pillow's own
    layout; `rgb_array` reads either). An all-zero map returns `picture` itself."""
    if fast and opencv() is not None and picture.mode == "RGB":
        return opencv_overlay(picture, unit_map, alpha, lut)
    return overlay_picture(picture, unit_map, alpha, lut)


def opencv_overlay(picture: Image.Image, unit_map, alpha: float, lut) -> Image.Image:
    """`(1 - alpha) * picture + alpha * colour(upsample(unit_map))` as an "RGBX" Pillow image over a
    numpy array, drawn by OpenCV band by band (see the module's docstring). `picture` is RGB."""
    cv2 = opencv()
    unit_map = np.asarray(unit_map, dtype=np.float32)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if not unit_map.any():
        return picture
    with _one_opencv_thread.held(cv2):
        out = _draw(cv2, picture, unit_map, alpha, lut)
    return Image.frombuffer("RGBX", picture.size, out, "raw", "RGBX", 0, 1)


def _draw(cv2, picture: Image.Image, unit_map: np.ndarray, alpha: float, lut) -> np.ndarray:
    width, height = picture.size
    levels = np.rint(np.clip(unit_map, 0.0, 1.0) * 255.0).astype(np.uint8)
    if width >= levels.shape[1] and height >= levels.shape[0]:
        # Enlarging, cv2.resize maps pixel centres as Pillow does ((x + 0.5) * scale - 0.5, edges clamped).
        levels = cv2.resize(levels, (width, height), interpolation=cv2.INTER_LINEAR)
    else:  # a picture smaller than the map: Pillow's resize averages as `upsample` does, where OpenCV's samples
        levels = np.asarray(Image.fromarray(levels, "L").resize((width, height), Image.Resampling.BILINEAR))
    colours = _rgbx_table(np.ascontiguousarray(lut, dtype=np.uint8).tobytes())
    out = np.empty((height, width, 4), dtype=np.uint8)
    # Pillow's crop checks its decompression-bomb limit, which a caller may have set below a band.
    rows = max(1, min(BAND_PIXELS, Image.MAX_IMAGE_PIXELS or BAND_PIXELS) // width)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        # One 32-bit lookup per pixel gives its colour as R, G, B, pad bytes.
        colour = cv2.LUT(levels[top:bottom], colours).view(np.uint8).reshape(bottom - top, width, 4)
        cv2.addWeighted(band_pixels(picture, top, bottom), 1.0 - alpha, colour, alpha, 0.0, dst=out[top:bottom])
    return out


class _OneOpenCVThread:
    """OpenCV's own thread pool off while any thread draws an overlay, and as it was once none does.

    The writer already draws on two threads, beside decoding and the model; OpenCV splitting each call
    over its pool as well only adds CPU (its threads wait actively): a 12 MP overlay costs 16 ms of CPU
    on one thread and 21-38 ms with the pool of this 2-core machine (benchmarks/overlay_speed.py). As
    with camcli's decoding warnings, the setting is the process's: the first drawer in sets it, and the
    last one out restores it.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = None

    @contextlib.contextmanager
    def held(self, cv2):
        with self._lock:
            if self._depth == 0:
                self._saved = cv2.getNumThreads()
                cv2.setNumThreads(1)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    cv2.setNumThreads(self._saved)


_one_opencv_thread = _OneOpenCVThread()


def rgb_array(image: Image.Image) -> np.ndarray:
    """An RGB or "RGBX" Pillow image (as `draw_overlay` returns) as a uint8 (H, W, 3) array."""
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


@functools.cache
def _rgbx_table(lut_bytes) -> np.ndarray:
    table = np.empty((256, 4), dtype=np.uint8)
    table[:, :3] = np.frombuffer(lut_bytes, dtype=np.uint8).reshape(256, 3)
    table[:, 3] = 255  # Pillow's pad byte of an RGB pixel
    table = table.view(np.int32)  # (256, 1): cv2.LUT gives an int32 per pixel, its bytes in this order
    table.flags.writeable = False  # shared by every caller through the cache
    return table


def band_pixels(picture: Image.Image, top: int, bottom: int) -> np.ndarray:
    """Rows top..bottom of an RGB picture as a uint8 (rows, width, 4) array (R, G, B, pad): a view of
    their crop where Pillow exports it through Arrow, else a copy."""
    band = picture.crop((0, top, picture.width, bottom))
    pixels = arrow_pixels(band)
    if pixels is None:
        pixels = np.frombuffer(band.tobytes("raw", "RGBX"), dtype=np.uint8).reshape(bottom - top, picture.width, 4)
    return pixels


# --- reading a Pillow image's memory through the Arrow C data interface -----------------------------------------
# https://arrow.apache.org/docs/format/CDataInterface.html: the two structs are a stable ABI. Pillow
# exports an RGB image held in one block as a fixed-size list ("+w:4") of uint8 ("C"), one list per
# pixel (https://pillow.readthedocs.io/en/stable/reference/arrow_support.html).


class _ArrowSchema(ctypes.Structure):
    pass


_ArrowSchema._fields_ = [
    ("format", ctypes.c_char_p), ("name", ctypes.c_char_p), ("metadata", ctypes.c_char_p),
    ("flags", ctypes.c_int64), ("n_children", ctypes.c_int64),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowSchema))), ("dictionary", ctypes.POINTER(_ArrowSchema)),
    ("release", ctypes.c_void_p), ("private_data", ctypes.c_void_p),
]


class _ArrowArray(ctypes.Structure):
    pass


_ArrowArray._fields_ = [
    ("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)), ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))),
    ("dictionary", ctypes.POINTER(_ArrowArray)), ("release", ctypes.c_void_p), ("private_data", ctypes.c_void_p),
]

# Its own prototype, so that no other user of ctypes.pythonapi sees its argtypes changed.
_capsule_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi))


class _ArrowPixels:
    """Holds an image's Arrow capsules (and with them its memory: the export counts as a reference
    to Pillow's image) for as long as the numpy array made from `__array_interface__` lives."""

    def __init__(self, capsules, address: int, shape: tuple[int, int, int]):
        self.capsules = capsules
        self.__array_interface__ = {"shape": shape, "typestr": "|u1", "data": (address, True), "version": 3}


def arrow_pixels(image: Image.Image) -> np.ndarray | None:
    """An RGB Pillow image's memory as a uint8 (H, W, 4) array, without a copy; None where Pillow does
    not export it (an image over several blocks, a Pillow without Arrow) or exports another layout."""
    try:
        capsules = image.__arrow_c_array__()
    except (AttributeError, ValueError):  # no Arrow (Pillow < 11.2), or rows not contiguous in memory
        return None
    schema = _ArrowSchema.from_address(_capsule_pointer(capsules[0], b"arrow_schema"))
    array = _ArrowArray.from_address(_capsule_pointer(capsules[1], b"arrow_array"))
    pixels = image.width * image.height
    if image.mode != "RGB" or schema.format != b"+w:4" or schema.n_children != 1 \
            or schema.children[0].contents.format != b"C" or array.length != pixels or array.n_children != 1:
        return None
    values = array.children[0].contents
    if values.n_buffers != 2 or values.length != 4 * pixels or array.offset or values.offset or not values.buffers[1]:
        return None
    return np.asarray(_ArrowPixels(capsules, values.buffers[1], (image.height, image.width, 4)))
