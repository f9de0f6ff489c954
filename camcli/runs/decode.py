"""Reading images from disk into RGB arrays, and resizing them for a model.

`load_rgb` is the single entry point for decoding. It trusts the file's content, never its name,
and turns every way a file can be unreadable into an `ImageLoadError` with a short reason, so one
bad file in a folder of thousands costs one line in the report, not the run.

Only numpy and Pillow are used here: decoding is testable without TensorFlow.
"""

import os
import re
import stat
import threading
import warnings

import numpy as np
from PIL import Image, ImageOps

from camcli.errors import ImageLoadError

# Lowercase, with the dot, as `pathlib.PurePath.suffix.lower()` returns them.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jfif", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".ico",
})

_SNIFF_BYTES = 32
# How much of a file is read to explain why it is not an image (text? HTML? a Git LFS pointer?).
_HEAD_BYTES = 512
# BMP headers are "BM" then, at offset 14, the size of the DIB header: one of these values.
# Checking it keeps a text file that starts with "BM" from passing as a bitmap.
_BMP_DIB_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


def sniff_image(path):
    """True when the file's first bytes carry a known image signature (reads at most 32 bytes)."""
    try:
        # A FIFO or a device would block or never end: only regular files are read.
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as fp:
            head = fp.read(_SNIFF_BYTES)
    except OSError:
        return False
    return _signature_format(head) is not None


def _signature_format(head):
    """The image format whose magic bytes start `head` (Pillow's format name), else None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # TIFF and BigTIFF
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] == b"\x00\x00\x01\x00":
        return "ICO"
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES:
        return "BMP"
    # Netpbm: "P1".."P6" then whitespace (or a comment), so that a word like "P5x" does not match.
    if len(head) >= 3 and head[:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n#":
        return "PPM"
    return None


def _allowed_formats():
    # Every format Pillow can read, except EPS: Pillow "decodes" EPS by running Ghostscript on the
    # file, which is not a program to hand untrusted input from a folder of photos. Not cached,
    # so plugins registered later (pillow-heif, say) are seen.
    Image.init()
    return tuple(fmt for fmt in Image.ID if fmt != "EPS")


class _DecodingWarnings:
    """While any thread decodes: Pillow's decompression-bomb warning is an error, and its
    warnings about damaged metadata ("Corrupt EXIF data", in files whose pixels decode fine) are
    silenced, as noise in a batch run.

    `warnings.catch_warnings` alone is not thread-safe: it saves and restores the process-wide
    filter list, so decoder threads entering and leaving it out of step restore each other's
    filters, and can leave them changed for good. Here the first thread in installs the filters
    and the last one out restores them, under a lock.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = None

    def __enter__(self):
        with self._lock:
            if self._depth == 0:
                self._saved = warnings.catch_warnings()
                self._saved.__enter__()
                warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
                warnings.simplefilter("error", Image.DecompressionBombWarning)
            self._depth += 1

    def __exit__(self, *exc_info):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                self._saved.__exit__(None, None, None)
                self._saved = None


_decoding_warnings = _DecodingWarnings()


def load_rgb(path):
    """Decode the image at `path` into a uint8 array of shape (height, width, 3).

    The format comes from the content (a PNG named .jpg loads), EXIF orientation is applied, an
    animation gives its first frame, transparent pixels are composited over white, and 16-bit or
    float images are scaled to 0..255. Any failure raises `ImageLoadError(path, reason)`.
    """
    _check_regular_file(path)
    head, fmt = b"", None
    try:
        with open(path, "rb") as fp:
            head = fp.read(_HEAD_BYTES)
            fmt = _signature_format(head)
            fp.seek(0)
            # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that: both are refused.
            # The warning filters change only while some thread is decoding (_DecodingWarnings).
            with _decoding_warnings, Image.open(fp, formats=_allowed_formats()) as im:
                fmt = im.format or fmt
                im.load()  # decode all pixel data here, so a truncated file fails here
                return _to_rgb(_upright(im))
    except Exception as exc:  # noqa: BLE001 - decoders raise anything; each becomes one reason
        raise ImageLoadError(path, _reason(exc, head, fmt)) from exc


def _check_regular_file(path):
    """Fail early, with a precise reason, for paths that are not a readable non-empty file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageLoadError(path, "broken symlink" if os.path.islink(path) else "no such file") from None
    except PermissionError:
        raise ImageLoadError(path, "permission denied") from None
    except OSError as exc:  # ELOOP, ENAMETOOLONG...
        raise ImageLoadError(path, f"cannot access file ({(exc.strerror or str(exc)).lower()})") from None
    except ValueError:  # a NUL byte in the path
        raise ImageLoadError(path, "invalid path (contains a NUL byte)") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageLoadError(path, "is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise ImageLoadError(path, "not a regular file")
    if st.st_size == 0:
        raise ImageLoadError(path, "empty file (0 bytes)")


def _upright(im):
    """Apply the EXIF orientation tag, so that the array is the image as a viewer shows it."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001
        # The pixels decoded; only the metadata is corrupt. Keeping the stored orientation
        # beats losing the image.
        return im


def _to_rgb(im):
    """Any Pillow mode -> uint8 (H, W, 3)."""
    if im.mode.startswith("I;16") or im.mode == "I":
        return _grey_to_rgb(_scale_integers(np.asarray(im), im.mode))
    if im.mode == "F":
        return _grey_to_rgb(_scale_min_max(np.asarray(im, dtype=np.float64)))
    if im.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in im.info:
        return _over_white(np.asarray(im.convert("RGBA")))
    # 1, L, P, RGB, RGBX, CMYK (Pillow undoes Adobe's inverted CMYK), YCbCr, LAB, HSV.
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _scale_integers(values, mode):
    """16-bit samples -> 0..255 by scaling (65535 -> 255, 32896 -> 128), not by clipping.

    PNG and TIFF store 16-bit samples over the full 0..65535 range. A 32-bit "I" image (PPM with
    a large maxval, TIFF) whose values fit in 0..65535 is 16-bit data too; any other "I" image has
    no known range, so it is stretched from its min to its max.
    """
    if not mode.startswith("I;16") and not (values.min() >= 0 and values.max() <= 0xFFFF):
        return _scale_min_max(values.astype(np.float64))
    return np.rint(values.astype(np.float64) * (255.0 / 0xFFFF)).astype(np.uint8)


def _scale_min_max(values):
    """Float samples -> 0..255, stretching the finite min..max; NaN and -inf -> 0, +inf -> 255."""
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    lo, hi = values[finite].min(), values[finite].max()
    values = np.nan_to_num(values, nan=lo, posinf=hi, neginf=lo)
    if hi <= lo:  # a flat image: nothing to stretch, and no division by zero
        return np.zeros(values.shape, dtype=np.uint8)
    # Subtracting before dividing keeps huge float32 ranges (1e38) from overflowing.
    return np.rint((values - lo) / (hi - lo) * 255.0).astype(np.uint8)


def _grey_to_rgb(grey_uint8):
    return np.repeat(grey_uint8[:, :, np.newaxis], 3, axis=2)


def _over_white(rgba):
    """Composite RGBA (uint8) over a white background: rgb * a + 255 * (1 - a), rounded."""
    rgb = rgba[:, :, :3].astype(np.uint32)
    alpha = rgba[:, :, 3:].astype(np.uint32)
    # Integer arithmetic in 0..255*255; +127 rounds the division to nearest.
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def _reason(exc, head, fmt):
    """A short lowercase phrase saying what is wrong with the file, for `ImageLoadError`."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return _bomb_reason(str(exc))
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, MemoryError):
        return "out of memory while decoding"
    if isinstance(exc, Image.UnidentifiedImageError):
        # Pillow could not identify it. With a known signature, the header is damaged.
        return f"truncated or corrupt {fmt} header" if fmt else _not_an_image_reason(head)
    name = fmt or "image"
    message = str(exc).strip()
    if isinstance(exc, EOFError) or "truncated" in message.lower():
        return f"truncated {name}"
    detail = message or type(exc).__name__
    if isinstance(exc, (OSError, SyntaxError, ValueError)) or not message:
        return f"corrupt {name} data ({_first_line(detail)})"
    return f"cannot decode {name} ({type(exc).__name__}: {_first_line(detail)})"


def _bomb_reason(message):
    # Pillow: "Image size (200000000 pixels) exceeds limit of 178956970 pixels, could be ..."
    numbers = re.findall(r"\d+", message)
    if len(numbers) >= 2:
        return f"decompression bomb: {numbers[0]} pixels exceeds the limit of {numbers[1]}"
    return "decompression bomb: too many pixels to decode safely"


def _not_an_image_reason(head):
    text = _as_text(head)
    if text is None:
        return "not an image (unrecognised format)"
    start = text.lstrip().lower()
    if start.startswith("version https://git-lfs"):
        return "not an image (a Git LFS pointer: run `git lfs pull`)"
    if start.startswith(("<!doctype html", "<html")):
        return "not an image (content is HTML)"
    if start.startswith(("<svg", "<?xml")) and "<svg" in start:
        return "not an image (SVG vector graphics are not supported)"
    return "not an image (content is text)"


def _as_text(head):
    """`head` decoded as UTF-8 text (ignoring a character cut at the end), or None if binary."""
    if b"\x00" in head:
        return None
    for cut in range(4):  # a multi-byte character may straddle the end of the sample
        try:
            return head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def _first_line(message, limit=120):
    line = message.splitlines()[0] if message else message
    return line if len(line) <= limit else line[: limit - 3] + "..."
