"""Reading images from disk into upright RGB pictures, decoding no more pixels than the outputs need.

`decode_image` is the single entry point for decoding (`load_rgb` is its numpy form). It trusts
the file's content, never its name, and turns every way a file can be unreadable into an
`ImageLoadError` with a short reason, so one bad file in a folder of thousands costs one line in
the report, not the run.

Reduced decoding. A JPEG stores its pixels as 8x8 DCT blocks, and libjpeg can decode them at 1/2,
1/4 or 1/8 of the size for a fraction of the cost (Pillow's `draft`): a 4000x3000 photo decodes
to 500x375 in about a third of the time of a full decode, and with an eighth of the memory. When
the outputs are smaller than the photo (`max_side`, or only the model input is needed), the
smallest such scale that still covers both the outputs and the model input is used. Other formats
are decoded at full size and then resized.

Photos from phones: HEIC/HEIF through the optional pillow-heif plugin (`pip install
keras-camcli[heif]`), AVIF through Pillow's own reader. Both are recognised by content.

Only numpy and Pillow are used here: decoding is testable without TensorFlow.
"""

import functools
import io
import os
import re
import stat
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from camcli.errors import ImageLoadError, UsageError, one_line

# The same two-step resize as the model input's, and the one transparency rule (camcli.models.preprocess
# imports no TensorFlow).
from camcli.models.preprocess import REDUCING_GAP, over_white

# Lowercase, with the dot, as `pathlib.PurePath.suffix.lower()` returns them.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jfif", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".ico", ".heic", ".heif", ".hif", ".avif",
})
# Pillow's own limit (it warns above this many pixels, and refuses above twice as many). camcli
# refuses above it (above Image.MAX_IMAGE_PIXELS as the process has it), unless `max_pixels` lifts
# it on purpose.
DEFAULT_MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)
# Formats whose photos get lossy overlays by default (camcli.runs.layout.default_overlay_format).
PHOTO_FORMATS = frozenset({"JPEG", "MPO", "HEIF", "AVIF"})
# ISO base media file format brands (the `ftyp` box) of HEIF and AVIF still images.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})

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
    return _iso_media_format(head)


def _iso_media_format(head):
    """HEIF or AVIF from an ISO base media file's `ftyp` box: its major brand, then (after the minor
    version) its compatible brands."""
    if head[4:8] != b"ftyp":
        return None
    brands = {head[i:i + 4] for i in range(8, min(len(head), 32), 4)} - {head[12:16]}
    if brands & _AVIF_BRANDS:
        return "AVIF"
    if brands & _HEIF_BRANDS:
        return "HEIF"
    return None


@functools.cache
def heif_reader() -> bool:
    """Register pillow-heif's HEIC/HEIF reader (the default format of iPhone photos), once; False
    where the optional extra (keras-camcli[heif]) is not installed. Imported on first use, so
    that `camcli --help` does not pay for it."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _allowed_formats():
    heif_reader()
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
        self._saved_limit = None

    def __enter__(self):
        with self._lock:
            if self._depth == 0:
                self._saved = warnings.catch_warnings()
                self._saved.__enter__()
                warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
                # camcli checks the pixel count itself (`max_pixels`), before decoding: Pillow's
                # own check, a process-wide setting, is lifted while camcli decodes.
                self._saved_limit = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = None
            self._depth += 1

    def pillow_limit(self) -> int | None:
        """Pillow's MAX_IMAGE_PIXELS as it was before camcli lifted it (None: no limit)."""
        with self._lock:
            return self._saved_limit if self._depth else Image.MAX_IMAGE_PIXELS

    def __exit__(self, *exc_info):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                Image.MAX_IMAGE_PIXELS = self._saved_limit
                self._saved.__exit__(None, None, None)
                self._saved = None


_decoding_warnings = _DecodingWarnings()


@dataclass(frozen=True)
class DecodedImage:
    """One decoded image: its picture for the outputs, and what the model input is made from."""

    picture: Image.Image  # RGB, upright, at the output size (the original size unless reduced)
    model_view: Image.Image  # RGB, upright, at least the model input's size where the image is; often `picture`
    original_size: tuple[int, int]  # (width, height) of the upright image at full resolution
    format: str | None  # Pillow's name of the file's format: "JPEG", "PNG", "HEIF"...

    @property
    def scale(self) -> float:
        """Output pixels per original pixel (1.0 unless the outputs were reduced)."""
        return self.picture.width / self.original_size[0]


def output_size(size_wh: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """The size of outputs for an image of `size_wh`: its own, or with the longest side `max_side`."""
    width, height = size_wh
    longest = max(width, height)
    if max_side is None or longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode_image(path, max_side: int | None = None, model_size: tuple[int, int] | None = None,
                 max_pixels: int | None = None, outputs: bool = True) -> DecodedImage:
    """Decode the image at `path` as an upright RGB picture.

    max_side: the longest side of the outputs (None: the original size). model_size: (height,
    width) of the model input, so that a reduced decode still covers it. outputs: False when only
    the model input is wanted (the picture is then the model view). max_pixels: refuse images with
    more pixels to decode than this (default DEFAULT_MAX_PIXELS, Pillow's own limit).

    The format comes from the content (a PNG named .jpg loads), EXIF orientation is applied, an
    animation gives its first frame, transparent pixels are composited over white, and 16-bit or
    float images are scaled to 0..255. Any failure raises `ImageLoadError(path, reason)`.
    """
    _check_regular_file(path)
    try:
        with open(path, "rb") as fp:
            return _decode_file(fp, path, max_side, model_size, max_pixels, outputs)
    except OSError as exc:  # cannot be opened
        raise ImageLoadError(path, _reason(exc, b"", None)) from exc


def decode_bytes(data: bytes, name: str, max_side: int | None = None, model_size: tuple[int, int] | None = None,
                 max_pixels: int | None = None) -> DecodedImage:
    """`decode_image` for a file's bytes (read by someone else, e.g. ray.data.read_binary_files);
    `name` is what errors call it."""
    if not data:
        raise ImageLoadError(name, "empty file (0 bytes)")
    return _decode_file(io.BytesIO(data), name, max_side, model_size, max_pixels, True)


def _decode_file(fp, path, max_side, model_size, max_pixels, outputs) -> DecodedImage:
    head, fmt = b"", None
    try:
        head = fp.read(_HEAD_BYTES)
        fmt = _signature_format(head)
        fp.seek(0)
        # The warning filters and Pillow's limit change only while some thread is decoding.
        with _decoding_warnings, Image.open(fp, formats=_allowed_formats()) as im:
            fmt = im.format or fmt
            if im.format not in _DRAFT_FORMATS:
                # Before anything that may decode: reading a PNG's EXIF loads the whole image.
                _check_pixels(im, max_pixels)
            original = _upright_size(im)
            wanted = output_size(original, max_side) if outputs else (0, 0)
            _reduce_on_decode(im, original, wanted, model_size)
            _check_pixels(im, max_pixels)
            im.load()  # decode all pixel data here, so a truncated file fails here
            view = _to_rgb_image(_upright(im))
            if not outputs:
                return DecodedImage(view, view, original, fmt)
            return _pictures(view, original, fmt, max_side, model_size)
    except ImageLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise anything; each becomes one reason
        raise ImageLoadError(path, _reason(exc, head, fmt)) from exc


def _pictures(view: Image.Image, original: tuple[int, int], fmt: str | None, max_side: int | None,
              model_size) -> DecodedImage:
    picture = _fit(view, output_size(original, max_side))
    # The model input is made from the smaller picture when it covers the input's size.
    covers = model_size is None or (picture.height >= model_size[0] and picture.width >= model_size[1])
    return DecodedImage(picture, picture if covers else view, original, fmt)


def decode_array(array, name: str, max_side: int | None = None, model_size: tuple[int, int] | None = None,
                 fmt: str | None = None) -> DecodedImage:
    """An image someone else decoded (e.g. ray.data.read_images), as `decode_image` would give it:
    uint8 or 16-bit (height, width), (height, width, 1|3|4) pixels, composited over white when they
    have alpha. It is taken as upright (the decoder that made it has already read or dropped the EXIF
    orientation). `fmt`: the file's format, for the overlay format (JPEG for photos)."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)) or 0 in array.shape[:2] \
            or array.dtype not in (np.uint8, np.uint16):
        raise ImageLoadError(name, f"pixels of shape {array.shape} and type {array.dtype} are not an image "
                                   "(uint8 or uint16, height x width with 1, 3 or 4 channels)")
    if array.dtype == np.uint16 and array.ndim == 3:  # Pillow holds 16-bit samples for one channel only
        array = np.rint(array.astype(np.float64) * (255.0 / 0xFFFF)).astype(np.uint8)
    view = _to_rgb_image(Image.fromarray(np.ascontiguousarray(array)))  # a 16-bit grey one is "I;16"
    return _pictures(view, view.size, fmt, max_side, model_size)


def format_of_name(name: str) -> str | None:
    """Pillow's format name for a file name's extension ("a.jpg" -> "JPEG"), None when unknown."""
    return Image.registered_extensions().get(os.path.splitext(name)[1].lower())


def picture_bytes(path, max_side: int | None = None) -> int:
    """About how many bytes the decoded picture of `path` takes (Pillow holds RGB as 4 bytes a
    pixel), from its header alone; 0 when the header cannot be read (its decode will fail)."""
    try:
        with _decoding_warnings, Image.open(path, formats=_allowed_formats()) as im:
            # The stored size: a turned picture has as many pixels, and reading the orientation
            # of a PNG would decode it.
            width, height = output_size(im.size, max_side)
    except Exception:  # noqa: BLE001 - any unreadable file: its decode reports it
        return 0
    return 4 * width * height


def load_rgb(path, max_pixels: int | None = None):
    """Decode the image at `path` into a uint8 array of shape (height, width, 3), at full size
    (see `decode_image`)."""
    if not isinstance(path, (str, os.PathLike)):
        raise UsageError(f"load_rgb takes an image file's path, not {type(path).__name__} {path!r:.40}")
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1):
        raise UsageError(f"`max_pixels={max_pixels!r}` must be a whole number, at least 1")
    return np.asarray(decode_image(path, max_pixels=max_pixels).picture, dtype=np.uint8)


_ORIENTATION_TAG = 0x0112
_SWAPS_SIDES = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the picture by 90 degrees


def _orientation(im) -> int:
    try:
        return int(im.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - corrupt metadata: the stored orientation
        return 1


def _upright_size(im) -> tuple[int, int]:
    width, height = im.size
    return (height, width) if _orientation(im) in _SWAPS_SIDES else (width, height)


def _reduce_on_decode(im, original: tuple[int, int], wanted: tuple[int, int], model_size) -> None:
    """Ask a JPEG decoder for the smallest DCT scale (1/2, 1/4 or 1/8) that still covers the model
    input, and the outputs to within DRAFT_SLACK: a scale that lands just short of them (1000 px
    for 1024) is taken, and the picture is then enlarged by at most 1/DRAFT_SLACK, which cannot be
    seen, while the decode at 1/4 costs about two thirds of the one at 1/2."""
    if im.format not in _DRAFT_FORMATS or wanted == original:
        return
    need_w, need_h = int(wanted[0] * DRAFT_SLACK), int(wanted[1] * DRAFT_SLACK)
    if model_size is not None:
        need_w, need_h = max(need_w, int(model_size[1])), max(need_h, int(model_size[0]))
    if need_w >= original[0] and need_h >= original[1]:
        return
    if _orientation(im) in _SWAPS_SIDES:  # the decoder works in the stored orientation
        need_w, need_h = need_h, need_w
    im.draft("RGB", (max(1, need_w), max(1, need_h)))


DRAFT_SLACK = 0.9
_DRAFT_FORMATS = frozenset({"JPEG", "MPO"})  # their EXIF is read without decoding, and they decode reduced


def _check_pixels(im, max_pixels: int | None) -> None:
    """Refuse to decode more pixels than the limit (after any reduced decode, which is what memory
    pays for). The default limit is Pillow's MAX_IMAGE_PIXELS as the process had set it."""
    limit = _decoding_warnings.pillow_limit() if max_pixels is None else int(max_pixels)
    pixels = im.size[0] * im.size[1]
    if limit is not None and pixels > limit:
        raise _TooManyPixels(pixels, limit)


class _TooManyPixels(Exception):
    def __init__(self, pixels: int, limit: int):
        super().__init__(f"{pixels} pixels exceeds the limit of {limit}")
        self.pixels, self.limit = pixels, limit


def _fit(view: Image.Image, wanted: tuple[int, int]) -> Image.Image:
    """`view` resized to `wanted` (a reduced decode lands at most a few percent below it, or above)."""
    if view.size == wanted:
        return view
    # reducing_gap: Pillow first shrinks by an integer factor with a box filter, then resamples.
    return view.resize(wanted, Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)


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
    """Apply the EXIF orientation tag, so that the picture is the image as a viewer shows it. The
    image is turned in place (no copy when it is upright already)."""
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except Exception:  # noqa: BLE001
        # The pixels decoded; only the metadata is corrupt. Keeping the stored orientation
        # beats losing the image.
        pass
    return im


def _to_rgb(im):
    """Any Pillow mode -> uint8 (H, W, 3)."""
    return np.asarray(_to_rgb_image(im), dtype=np.uint8)


def _to_rgb_image(im):
    """Any Pillow mode -> an RGB image (the image itself when it is RGB already)."""
    if im.mode.startswith("I;16") or im.mode == "I":
        return Image.fromarray(_grey_to_rgb(_scale_integers(np.asarray(im), im.mode)))
    if im.mode == "F":
        return Image.fromarray(_grey_to_rgb(_scale_min_max(np.asarray(im, dtype=np.float64))))
    if im.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in im.info:
        return Image.fromarray(over_white(np.asarray(im.convert("RGBA"))))
    if im.mode == "RGB":
        return im
    # 1, L, P, RGBX, CMYK (Pillow undoes Adobe's inverted CMYK), YCbCr, LAB, HSV.
    return im.convert("RGB")


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


def _reason(exc, head, fmt):
    """A short lowercase phrase saying what is wrong with the file, for `ImageLoadError`."""
    if isinstance(exc, _TooManyPixels):
        return (f"decompression bomb: {exc.pixels} pixels exceeds the limit of {exc.limit}; "
                f"allow it with `max_pixels={exc.pixels}`")
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
        if fmt == "HEIF" and not heif_reader():
            return "a HEIC/HEIF photo: install its reader with pip install 'keras-camcli[heif]'"
        return f"truncated or corrupt {fmt} header" if fmt else _not_an_image_reason(head)
    name = fmt or "image"
    message = str(exc).strip()
    if isinstance(exc, EOFError) or "truncated" in message.lower():
        return f"truncated {name}"
    detail = one_line(exc, limit=120)
    if isinstance(exc, (OSError, SyntaxError, ValueError)) or not message:
        return f"corrupt {name} data ({detail})"
    return f"cannot decode {name} ({type(exc).__name__}: {detail})"


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
