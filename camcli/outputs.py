"""Writing result files atomically.

Every file is written under a temporary name in its own directory, then renamed into place with
`os.replace`, which is atomic within one file system. A reader (or a resumed run checking
`is_complete`) sees either the previous file or the whole new one, never half of it, and a run
killed mid-write leaves at worst a hidden `.camcli.<name>.<random>.tmp` file, never a truncated result.

Files are not fsync'ed: that would cost a disk flush per file across thousands of images. After
a power cut a just-renamed file can come back empty, which `is_complete` reports as not done.
"""

import contextlib
import io
import json
import os
import stat
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin


def _current_umask():
    # Read once at import: os.umask can only be read by setting it, which is not thread-safe.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()


# Temporary names are ".camcli.<name>.<random>.tmp": recognisable, so that `--resume` can remove the
# ones a killed run left behind without touching anything else.
TEMP_PREFIX = ".camcli."
TEMP_SUFFIX = ".tmp"


def write_bytes_atomic(path, data):
    """Write `data` to `path` atomically, creating parent directories as needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The name is cut short so that the temporary name stays within the 255-byte name limit.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name[:40]}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fp:
            if hasattr(os, "fchmod"):
                # mkstemp creates files as 0600; give results the permissions a plain open() would.
                os.fchmod(fp.fileno(), _FILE_MODE)
            fp.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


PNG_MARKER_KEY = "Software"
PNG_MARKER_VALUE = "camcli"
_MARKER_CHUNK = b"tEXt" + PNG_MARKER_KEY.encode() + b"\x00" + PNG_MARKER_VALUE.encode()


def save_png(path, rgb_uint8, compress_level=1, strategy=zlib.Z_RLE):
    """Save an RGB (or greyscale) uint8 array as a PNG, atomically.

    zlib's run-length strategy (Z_RLE) at compress_level=1: after PNG's row filters, an overlay of
    a noisy photo has few long repeats for deflate's string matching to find, and Huffman coding
    of the filtered bytes does most of the work. Measured on 299 px overlays of generated scenes
    and a photo: 8 ms and 156 KiB a file, against 11 ms and 176 KiB with the default strategy at
    level 1, and 26 ms and 157 KiB at Pillow's default level 6. Flat graphics (the panels) do better
    with deflate's default strategy.
    """
    buffer = io.BytesIO()
    # A text chunk marks the file as camcli's output, so that a later run over the same folder
    # never takes it for an input photo (see is_camcli_png).
    marker = PngImagePlugin.PngInfo()
    marker.add_text(PNG_MARKER_KEY, PNG_MARKER_VALUE)
    image = Image.fromarray(np.asarray(rgb_uint8, dtype=np.uint8))
    image.save(buffer, format="PNG", compress_level=compress_level, compress_type=strategy, pnginfo=marker)
    write_bytes_atomic(path, buffer.getvalue())


def is_camcli_png(path) -> bool:
    """Whether `path` is a PNG that camcli wrote: Pillow puts the marker before the pixel data,
    within the first hundred bytes."""
    try:
        with open(path, "rb") as file:
            head = file.read(256)
    except OSError:
        return False
    return head.startswith(b"\x89PNG") and _MARKER_CHUNK in head


# JPEGs (the report's thumbnails) carry the same marker as a comment segment, which Pillow writes
# right after the JFIF header.
_JPEG_MARKER = b"\xff\xfe" + (2 + len(PNG_MARKER_VALUE)).to_bytes(2, "big") + PNG_MARKER_VALUE.encode()


def save_jpeg(path, rgb_uint8, quality=80):
    """Save an RGB uint8 array (or a Pillow image) as a marked JPEG, atomically."""
    image = rgb_uint8 if isinstance(rgb_uint8, Image.Image) else Image.fromarray(np.asarray(rgb_uint8, np.uint8))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, comment=PNG_MARKER_VALUE.encode())
    write_bytes_atomic(path, buffer.getvalue())


def is_camcli_output(path) -> bool:
    """Whether `path` is an image camcli wrote: a marked PNG (overlay, panel) or JPEG (thumbnail)."""
    if is_camcli_png(path):
        return True
    try:
        with open(path, "rb") as file:
            head = file.read(256)
    except OSError:
        return False
    return head.startswith(b"\xff\xd8") and _JPEG_MARKER in head


def save_json(path, obj):
    """Save `obj` as UTF-8 JSON (indented, NaN refused), converting numpy values, atomically."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False, default=_to_json) + "\n"
    # A lone surrogate (from an undecodable file name) is written as its \\udcXX escape, which
    # keeps the file valid UTF-8 and valid JSON.
    write_bytes_atomic(path, text.encode("utf-8", "backslashreplace"))


def _to_json(value):
    """`json.dumps` fallback for the numpy and path values results are made of."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def save_npy(path, array):
    """Save an array in NumPy's .npy format (no pickles), atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    write_bytes_atomic(path, buffer.getvalue())


def is_complete(path):
    """True when `path` is a regular file with at least one byte (a finished write)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size > 0
