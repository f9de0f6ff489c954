"""The output folder: every name camcli writes in it, camcli's marker, and which files a rerun may replace.

This module is the one owner of those facts. For an image whose output stem is `a/cat`
(camcli.runs.discovery) the files are:

    a/cat.json                          the image's record (camcli.runs.records), written last
    a/cat.<method>.<class>.png          the overlay (.jpg or .webp with `overlay_format`; by
                                        default .jpg for JPEG, HEIC and AVIF photos, .png otherwise)
    a/cat.<method>.det<k>.png           an object detector's map of its k-th detection (k from 0, best
                                        first), and its other files named the same way
    a/cat.<method>.<class>.npy          the heatmap (--save-heatmap)
    a/cat.<method>.<class>.mask.png     the box mask (--save-mask)
    a/cat.<method>.<class>.panel.png    the panel (--panel)
    a/cat.<method>.segmentation.png     the label map of all the method's classes (--save-segmentation),
                                        a palette PNG at the original size
    a/cat.thumb.jpg, a/cat.<method>.<class>.thumb.jpg   the report's thumbnails

and at the top of the folder: summary.json (summary.K-of-N.json for shard K of N), index.html (the
report), evaluation.json and evaluation.csv, and from `camcli audit` audit.json, audit.csv,
audit.<class>.<cluster>.png (each cluster's mean map) and sanity.json. Temporary files are
`.camcli.<name>.<random>.tmp`; the writer's lock is `.camcli.lock.tmp` (`.camcli.lock.K-of-N.tmp` for a shard).

camcli replaces only what camcli wrote. Its pictures carry a marker (a PNG tEXt chunk
`Software=camcli`, a JPEG comment `camcli`, an XMP packet naming camcli as CreatorTool at the end
of a WebP file), its JSON files are recognised by their fields, its
page by a generator tag, and a heatmap (.npy) is camcli's when the camcli record next to it lists
it. Anything else at an output path is the user's, and is never overwritten.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from camcli.errors import UsageError
from camcli.options import OVERLAY_FORMATS

SUMMARY_NAME = "summary.json"
REPORT_NAME = "index.html"
EVALUATION_JSON = "evaluation.json"
EVALUATION_CSV = "evaluation.csv"
AUDIT_JSON = "audit.json"
AUDIT_CSV = "audit.csv"
SANITY_JSON = "sanity.json"
RECORD_SUFFIX = ".json"
DETECTION_PREFIX = "det"  # a detection's map: <stem>.<method>.det<k> (never a number, as a class's map is)
THUMB_SUFFIX = ".thumb.jpg"
TEMP_PREFIX = ".camcli."
TEMP_SUFFIX = ".tmp"
# The writer's lock (camcli.runs.lock): one run writes a folder at a time. Temporary-style names, so that
# the report and discovery ignore them; shard K of N locks only its own summary's share of the folder.
LOCK_NAME = f"{TEMP_PREFIX}lock{TEMP_SUFFIX}"
SHARD_LOCK = re.compile(re.escape(TEMP_PREFIX) + r"lock\.(\d+)-of-(\d+)" + re.escape(TEMP_SUFFIX))

SHARD_SUMMARY = re.compile(r"summary\.(\d+)-of-(\d+)\.json")
# Top-level names of the run's own files: an image stem equal to one of them is renamed by discovery,
# and the report does not read them as image records.
RUN_FILE = re.compile(r"(summary|evaluation|audit|sanity)(\.\d+-of-\d+)?\.json")
# a cluster's mean map (Layout.audit_map), or a flagged pile-up's crops (Layout.audit_crops)
AUDIT_MAP = re.compile(r"audit\.\d+\.(\d+|pile\d+)\.png")
RESERVED_STEM = re.compile(r"(summary|evaluation|audit|sanity)(\.\d+-of-\d+)?")

# The marker. PNG: a tEXt chunk (keyword, NUL, text) before the pixels; JPEG: a comment segment
# right after the JFIF header. Both lie within the first bytes of the file.
MARKER_KEY = "Software"
MARKER_VALUE = "camcli"
PNG_MARKER_TEXT = MARKER_KEY.encode() + b"\x00" + MARKER_VALUE.encode()
_PNG_MARKER_CHUNK = b"tEXt" + PNG_MARKER_TEXT
_JPEG_MARKER = b"\xff\xfe" + (2 + len(MARKER_VALUE)).to_bytes(2, "big") + MARKER_VALUE.encode()
JPEG_MARKER_COMMENT = MARKER_VALUE.encode()
# WebP keeps metadata chunks after the image data (Google's WebP container specification, "Extended
# file format"), so this marker is looked for in the file's last bytes.
WEBP_MARKER_XMP = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    f'<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="{MARKER_VALUE}"/>'
    "</rdf:RDF></x:xmpmeta>").encode()
_WEBP_MARKER = f'xmp:CreatorTool="{MARKER_VALUE}"'.encode()
# Overlay formats and their file suffixes. Masks and panels are always PNG (lossless).
OVERLAY_SUFFIXES = {name: f".{name}" for name in OVERLAY_FORMATS if name != "auto"}
HTML_GENERATOR = '<meta name="generator" content="camcli'  # followed by the version
_MARKER_HEAD_BYTES = 256
MAX_JSON_BYTES = 10 * 2**20  # a larger .json file is not one of camcli's (records, summaries, evaluations)


def shard_summary_name(shard: tuple[int, int] | None) -> str:
    return SUMMARY_NAME if shard is None else f"summary.{shard[0]}-of-{shard[1]}.json"


@dataclass(frozen=True)
class MapFileKind:
    """One kind of file written for a map: where its name comes from, who asks for it, and how the
    record and the report name it."""

    key: str  # the key of an explanation entry in the record (and of MapPaths)
    suffix: str | None  # after <stem>.<method>.<class>; None: the overlay's, by its format (OVERLAY_SUFFIXES)
    option: str | None  # the camcli.options.FileOptions flag that asks for it; None: always written
    link: str  # the report's link to it, under the map's picture ("" for the picture itself)
    per_method: bool = False  # one file per image and method (all its classes), named <stem>.<method><suffix>


# Every per-map file kind, in the order a record lists them: the layout's names, the records' keys, the
# writer's required files and the report's links all come from this table.
MAP_FILES = (
    MapFileKind("overlay", None, None, ""),
    MapFileKind("heatmap", ".npy", "save_heatmap", "heatmap"),
    MapFileKind("mask", ".mask.png", "save_mask", "mask"),
    MapFileKind("panel", ".panel.png", "panel", "panel"),
    MapFileKind("segmentation", ".segmentation.png", "save_segmentation", "label map", per_method=True),
)
MAP_FILE_KINDS = {kind.key: kind for kind in MAP_FILES}
MapPaths = dict  # {MapFileKind.key: Path} for the per-map kinds of one map (one method and class) of one image


class Layout:
    """Paths inside one output folder."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)

    def record(self, stem: str) -> Path:
        return self._with_suffix(stem, RECORD_SUFFIX)

    def map_paths(self, stem: str, method: str, class_index: int, overlay_format: str = "png",
                  detection: int | None = None) -> MapPaths:
        """{kind: path} of every per-map kind (MAP_FILES) of one map, the overlay in `overlay_format`. An object
        detector's map is named by its detection's index (`det<k>`: two detections may share a class)."""
        key = class_index if detection is None else f"{DETECTION_PREFIX}{detection}"
        base = f"{stem}.{method}.{key}"
        return {kind.key: self._with_suffix(base, kind.suffix or OVERLAY_SUFFIXES[overlay_format])
                for kind in MAP_FILES if not kind.per_method}

    def segmentation(self, stem: str, method: str) -> Path:
        """The label map of one image and method. No map file can take this name: a map's name has
        its class index, a number, where this one has `segmentation`."""
        return self._with_suffix(f"{stem}.{method}", MAP_FILE_KINDS["segmentation"].suffix)

    def summary(self, shard: tuple[int, int] | None = None) -> Path:
        return self.out_dir / shard_summary_name(shard)

    @property
    def report(self) -> Path:
        return self.out_dir / REPORT_NAME

    @property
    def evaluation_json(self) -> Path:
        return self.out_dir / EVALUATION_JSON

    @property
    def evaluation_csv(self) -> Path:
        return self.out_dir / EVALUATION_CSV

    @property
    def audit_json(self) -> Path:
        return self.out_dir / AUDIT_JSON

    @property
    def audit_csv(self) -> Path:
        return self.out_dir / AUDIT_CSV

    @property
    def sanity_json(self) -> Path:
        return self.out_dir / SANITY_JSON

    def audit_map(self, class_index: int, cluster: int) -> Path:
        """The mean map of one cluster of `camcli audit`: audit.<class>.<cluster>.png. No image's
        outputs can take that name: the stem `audit` is reserved, and an image `audit.<k>` writes
        `audit.<k>.json` and `audit.<k>.<method>.<class>.png`."""
        return self.out_dir / f"audit.{class_index}.{cluster}.png"

    def audit_crops(self, class_index: int, pile: int) -> Path:
        """The crops of one flagged pile-up of `camcli audit`, side by side: audit.<class>.pile<k>.png."""
        return self.out_dir / f"audit.{class_index}.pile{pile}.png"

    def shard_summaries(self) -> dict[tuple[int, int], Path]:
        """{(k, n): path} of the shard summaries present."""
        found = {}
        for path in sorted(self.out_dir.glob("summary.*-of-*.json")):
            match = SHARD_SUMMARY.fullmatch(path.name)
            if match:
                found[(int(match[1]), int(match[2]))] = path
        return found

    def relative(self, path: Path) -> str:
        return Path(path).relative_to(self.out_dir).as_posix()

    def _with_suffix(self, stem: str, suffix: str) -> Path:
        path = self.out_dir / stem
        return path.with_name(path.name + suffix)


def thumbnail_path(picture: Path) -> Path:
    """`a/cat.gradcam.285.png` -> `a/cat.gradcam.285.thumb.jpg`."""
    picture = Path(picture)
    return picture.with_name(picture.stem + THUMB_SUFFIX)


def lock_name(shard: tuple[int, int] | None = None) -> str:
    """The lock of a whole-folder run (explain, evaluate, audit), or of shard K of N's run."""
    return LOCK_NAME if shard is None else f"{TEMP_PREFIX}lock.{shard[0]}-of-{shard[1]}{TEMP_SUFFIX}"


def is_lock(name: str) -> bool:
    return name == LOCK_NAME or SHARD_LOCK.fullmatch(name) is not None


def is_temporary(name: str) -> bool:
    """A half-written file a killed run may leave (a lock is not one: camcli.runs.lock owns those)."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX) and not is_lock(name)


# --- what camcli wrote ---------------------------------------------------------------------------------


def _head(path) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(_MARKER_HEAD_BYTES)
    except OSError:
        return b""


def is_camcli_png(path) -> bool:
    """A PNG that camcli wrote: its marker chunk comes before the pixel data."""
    head = _head(path)
    return head.startswith(b"\x89PNG") and _PNG_MARKER_CHUNK in head


def is_camcli_output(path) -> bool:
    """An image camcli wrote: a marked PNG (overlay, mask, panel), JPEG (overlay, thumbnail) or WebP."""
    head = _head(path)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _WEBP_MARKER in _tail(path)
    return (head.startswith(b"\x89PNG") and _PNG_MARKER_CHUNK in head) or \
        (head.startswith(b"\xff\xd8") and _JPEG_MARKER in head)


def _tail(path, size: int = 1024) -> bytes:
    try:
        with open(path, "rb") as file:
            file.seek(max(0, os.fstat(file.fileno()).st_size - size))
            return file.read(size)
    except OSError:
        return b""


def read_json_object(path) -> dict | None:
    """The JSON object in `path`, or None when it is missing, too large, not JSON or not an object."""
    try:
        if os.stat(path).st_size > MAX_JSON_BYTES:
            return None
        with open(path, "rb") as file:
            data = json.loads(file.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_camcli_json(path) -> bool:
    """A record, summary or evaluation that camcli wrote (recognised by its fields)."""
    data = read_json_object(path)
    if data is None:
        return False
    if isinstance(data.get("explanations"), list) and isinstance(data.get("image"), str):
        return True  # an image record
    return "camcli_version" in data  # summaries and evaluations


def check_replaceable(path, ours=is_camcli_json, error: type[Exception] = UsageError,
                      fix: str = "write to another output folder (`out`)") -> None:
    """The one refusal of camcli's rule that it replaces only what it wrote: `error` (a UsageError,
    raised before any work; a ForeignFileError fails one image) when something is at `path` and
    `ours(path)` says camcli did not write it; `fix` says what to do."""
    if os.path.lexists(path) and not ours(path):
        raise error(f"{path} exists and was not written by camcli; {fix} (camcli never replaces files it did "
                    "not write)")


def is_camcli_page(path) -> bool:
    return HTML_GENERATOR.encode() in _head_large(path)


def _head_large(path, size: int = 4096) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(size)
    except OSError:
        return b""


def is_camcli_csv(path, header: str) -> bool:
    first = _head_large(path).split(b"\n", 1)[0].rstrip(b"\r")
    return first == header.encode()


def may_replace(path, listed: frozenset[str] = frozenset()) -> bool:
    """Whether camcli may write `path`: nothing is there, or camcli wrote what is there.

    listed: real paths that a camcli record lists (its heatmaps, which carry no marker of their own).
    """
    path = Path(path)
    if not os.path.lexists(path):
        return True
    if not path.is_file():
        return False  # a folder, a FIFO, a dangling link: never camcli's
    name = path.name
    if name.endswith((".png", ".jpg", ".webp")):
        return is_camcli_output(path)
    if name.endswith(".json"):
        return is_camcli_json(path)
    if name.endswith(".html"):
        return is_camcli_page(path)
    return os.path.realpath(path) in listed
