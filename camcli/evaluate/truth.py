"""Ground-truth boxes for `camcli evaluate`: reading them, and finding the ones that belong to an image.

Three formats are read into one `dict[str, list[TruthBox]]`, keyed by the image's name as the file
writes it (a relative or absolute path, "/" separated):

CSV       `image,x0,y0,x1,y1[,label]`, one box per row, several rows per image allowed. A first
          row whose four coordinate cells are not numbers is a header; with a header, columns are
          found by name (image|filename|file|path, x0|xmin, y0|ymin, x1|xmax, y1|ymax,
          label|class|name) in any order. Blank rows and rows starting with `#` are skipped.
Pascal    a folder of VOC XML annotation files (or one file): `<filename>` and, per `<object>`,
VOC       `<name>` and `<bndbox>` with `<xmin>`, `<ymin>`, `<xmax>`, `<ymax>`. VOC numbers pixels from
          1 and includes xmax/ymax, so the box read is (xmin - 1, ymin - 1, xmax, ymax).
JSON      `{"cat.jpg": [{"box": [x0, y0, x1, y1], "label": "cat"}, ...], ...}` or a list of
          records `[{"image": "cat.jpg", "box": [x0, y0, x1, y1], "label": "cat"}, ...]`.

Boxes are (x0, y0, x1, y1) in the original image's pixels, x0/y0 inclusive and x1/y1 exclusive
(as everywhere in camcli, see camcli.evaluate.metrics). Labels are optional and kept as text: a class
name or a class index, matched to the model's classes by the evaluator.

Every problem in a file raises `UsageError` with one line that names the file, the line or
record, and what to fix.

An image finds its boxes (`match_images`) through the longest truth key that is a trailing part of
its path (`a/cat.jpg` matches `/data/a/cat.jpg`; a bare `cat.jpg` matches any `cat.jpg`), else
through a unique key with the same name without extension (`cat` or `cat.png` for `cat.jpg`).
When one key would serve several images, none of them gets it: the truth does not say which.
"""

from __future__ import annotations

import csv
import json
import math
import os
import posixpath
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from camcli.errors import UsageError
from camcli.runs.decode import sniff_image

CSV_HELP = "write image,x0,y0,x1,y1[,label] with x1 > x0 and y1 > y0 in pixels"
JSON_HELP = ('write {"image.jpg": [{"box": [x0, y0, x1, y1], "label": "cat"}]} or '
             '[{"image": "image.jpg", "box": [x0, y0, x1, y1], "label": "cat"}]')
VOC_HELP = "each <object> needs <bndbox> with numeric <xmin>, <ymin>, <xmax>, <ymax>"

_CSV_COLUMNS = {
    "image": ("image", "filename", "file", "path", "image_path", "img"),
    "x0": ("x0", "xmin", "x_min", "left"),
    "y0": ("y0", "ymin", "y_min", "top"),
    "x1": ("x1", "xmax", "x_max", "right"),
    "y1": ("y1", "ymax", "y_max", "bottom"),
    "label": ("label", "class", "name", "category"),
}
_COORDINATES = ("x0", "y0", "x1", "y1")


@dataclass(frozen=True)
class TruthBox:
    """One true object: its box in original pixels (x1, y1 exclusive) and, when known, its class."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str | None = None

    @property
    def box(self) -> tuple[float, float, float, float]:
        return self.x0, self.y0, self.x1, self.y1


Truth = dict[str, list[TruthBox]]


# --- reading ----------------------------------------------------------------------------------------


def load_truth(path: str | os.PathLike) -> Truth:
    """Read a CSV file, a JSON file, or a folder (or file) of Pascal VOC XML annotations."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.xml"))
        if not files:
            raise UsageError(f"truth folder {path} has no .xml files; give a folder of Pascal VOC annotations, "
                             "a .csv or a .json file")
        truth: Truth = {}
        for file in files:
            _merge(truth, read_voc(file))
        return _non_empty(truth, path)
    if not path.is_file():
        raise UsageError(f"truth file {path} does not exist; give a .csv, a .json or a folder of VOC .xml files")
    text = _read_text(path)
    kind = _format_of(path, text)
    reader = {"json": _parse_json, "voc": _parse_voc, "csv": _parse_csv}[kind]
    return _non_empty(reader(text, path), path)


def _format_of(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix == ".xml":
        return "voc"
    if suffix in (".csv", ".txt", ".tsv"):
        return "csv"
    start = text.lstrip()[:1]
    return "json" if start in ("{", "[") else "voc" if start == "<" else "csv"


def _read_text(path: Path) -> str:
    try:
        return path.read_text("utf-8-sig")  # a byte order mark (Excel's CSVs) is dropped
    except UnicodeDecodeError as error:
        if error.start == 0 and sniff_image(path):
            raise UsageError(f"{path} is an image, not a truth file; give a .csv, a .json or a folder of VOC .xml "
                             "files that hold the boxes") from None
        raise UsageError(f"{path}: byte {error.start} is not UTF-8; save the truth file as UTF-8") from None
    except OSError as error:
        raise UsageError(f"cannot read truth file {path}: {error.strerror or error}") from None


def _non_empty(truth: Truth, path: Path) -> Truth:
    if not any(truth.values()):
        raise UsageError(f"{path} holds no boxes; {CSV_HELP}, or see `camcli evaluate --help` for JSON and VOC")
    return truth


def _merge(truth: Truth, more: Truth) -> None:
    for key, boxes in more.items():
        truth.setdefault(key, []).extend(boxes)


def _image_key(name: str, base: Path) -> str:
    """A truth key: "/" separated, without "./"; a key with ".." is resolved from the truth file's folder."""
    key = posixpath.normpath(name.strip().replace("\\", "/"))
    if key.startswith("../") or key == "..":
        key = Path(os.path.normpath(base / key)).as_posix()
    return key


def _cell_number(text, what: str, where: str, fix: str) -> float:
    """A finite number (int when whole) from a cell or a JSON value, else a one-line UsageError."""
    if isinstance(text, bool):
        raise UsageError(f"{where}: {what} {text!r} is not a number; {fix}")
    try:
        value = float(text.strip() if isinstance(text, str) else text)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: {what} {str(text)!r} is not a number; {fix}") from None
    if not math.isfinite(value):
        raise UsageError(f"{where}: {what} {value} is not a finite number; {fix}")
    return int(value) if value.is_integer() else value


def _make_box(coordinates: Sequence[float], label, where: str, fix: str) -> TruthBox:
    x0, y0, x1, y1 = coordinates
    if x1 <= x0:
        raise UsageError(f"{where}: x1 ({x1}) must be greater than x0 ({x0}); {fix}")
    if y1 <= y0:
        raise UsageError(f"{where}: y1 ({y1}) must be greater than y0 ({y0}); {fix}")
    if isinstance(label, bool) or (label is not None and not isinstance(label, (str, int))):
        raise UsageError(f"{where}: label {label!r} must be a class name or index; {fix}")
    text = None if label is None else str(label).strip() or None
    return TruthBox(x0, y0, x1, y1, text)


# CSV


def _header_columns(row: list[str], path: Path) -> dict[str, int]:
    """Column positions by name from a header row; image and the four coordinates are required."""
    names = [cell.strip().lower() for cell in row]
    columns = {}
    for field, aliases in _CSV_COLUMNS.items():
        found = next((names.index(alias) for alias in aliases if alias in names), None)
        if found is not None:
            columns[field] = found
    missing = [field for field in ("image", *_COORDINATES) if field not in columns]
    if missing:
        raise UsageError(f"{path}: line 1: the header has no {', '.join(missing)} column "
                         f"(it has: {', '.join(cell.strip() for cell in row)}); {CSV_HELP}")
    return columns


def _is_header(row: list[str]) -> bool:
    """A first row is a header when none of its coordinate cells is a number."""
    def numeric(cell):
        try:
            float(cell)
            return True
        except ValueError:
            return False

    return len(row) >= 5 and not any(numeric(cell) for cell in row[1:5])


def _parse_csv(text: str, path: Path) -> Truth:
    rows = list(csv.reader(text.splitlines()))
    truth: Truth = {}
    columns = None
    base = path.parent
    for line_number, row in enumerate(rows, start=1):
        if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if columns is None and not truth and _is_header(row):
            columns = _header_columns(row, path)
            continue
        where = f"{path}: line {line_number}"
        if columns is None:  # no header: image,x0,y0,x1,y1[,label]
            if not 5 <= len(row) <= 6:
                raise UsageError(f"{where}: {len(row)} columns, expected 5 or 6; {CSV_HELP}")
            image, *coordinates = row[:5]
            label = row[5] if len(row) == 6 else None
        else:
            if len(row) <= max(columns.values()):
                raise UsageError(f"{where}: {len(row)} columns, expected {max(columns.values()) + 1} as in the header; "
                                 f"{CSV_HELP}")
            image = row[columns["image"]]
            coordinates = [row[columns[field]] for field in _COORDINATES]
            label = row[columns["label"]] if "label" in columns else None
        if not image.strip():
            raise UsageError(f"{where}: the image name is empty; {CSV_HELP}")
        values = [_cell_number(cell, field, where, CSV_HELP) for field, cell in zip(_COORDINATES, coordinates)]
        truth.setdefault(_image_key(image, base), []).append(_make_box(values, label or None, where, CSV_HELP))
    return truth


# JSON


def _json_box(record, where: str) -> TruthBox:
    if not isinstance(record, dict) or "box" not in record:
        raise UsageError(f"{where}: expected an object with a \"box\" list; {JSON_HELP}")
    box = record["box"]
    if not isinstance(box, list) or len(box) != 4:
        raise UsageError(f"{where}: \"box\" must be a list of 4 numbers [x0, y0, x1, y1]; {JSON_HELP}")
    values = [_cell_number(value, field, where, JSON_HELP) for field, value in zip(_COORDINATES, box)]
    return _make_box(values, record.get("label"), where, JSON_HELP)


def _parse_json(text: str, path: Path) -> Truth:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"{path}: line {error.lineno}: invalid JSON ({error.msg}); {JSON_HELP}") from None
    except RecursionError:
        raise UsageError(f"{path}: its lists and objects nest too deeply to be boxes; {JSON_HELP}") from None
    truth: Truth = {}
    base = path.parent
    if isinstance(data, dict):
        for image, records in data.items():
            if not isinstance(records, list):
                raise UsageError(f"{path}: record {image!r}: expected a list of boxes; {JSON_HELP}")
            boxes = [_json_box(record, f"{path}: record {image!r}[{i}]") for i, record in enumerate(records)]
            truth.setdefault(_image_key(image, base), []).extend(boxes)
    elif isinstance(data, list):
        for number, record in enumerate(data, start=1):
            where = f"{path}: record {number}"
            image = record.get("image") if isinstance(record, dict) else None
            if not isinstance(image, str) or not image.strip():
                raise UsageError(f"{where}: expected an object with an \"image\" name; {JSON_HELP}")
            truth.setdefault(_image_key(image, base), []).append(_json_box(record, where))
    else:
        raise UsageError(f"{path}: the top level is a {type(data).__name__}, not an object or a list; {JSON_HELP}")
    return truth


# Pascal VOC


def read_voc(path: str | os.PathLike) -> Truth:
    """One Pascal VOC annotation file: {filename: boxes}, converted to 0-based, x1/y1 exclusive."""
    path = Path(path)
    return _parse_voc(_read_text(path), path)


def _parse_voc(text: str, path: Path) -> Truth:
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        line = error.position[0] if getattr(error, "position", None) else "?"
        raise UsageError(f"{path}: line {line}: broken XML ({error}); fix or remove the file") from None
    if root.tag != "annotation":
        raise UsageError(f"{path}: the root element is <{root.tag}>, not <annotation>; give Pascal VOC files")
    filename = (root.findtext("filename") or "").strip()
    if not filename:
        raise UsageError(f"{path}: no <filename>; add the annotated image's file name")
    boxes = []
    for number, item in enumerate(root.iter("object"), start=1):
        where = f"{path}: object {number}"
        bndbox = item.find("bndbox")
        if bndbox is None:
            raise UsageError(f"{where}: no <bndbox>; {VOC_HELP}")
        corners = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            value = bndbox.findtext(tag)
            if value is None:
                raise UsageError(f"{where}: <bndbox> has no <{tag}>; {VOC_HELP}")
            corners.append(_cell_number(value, f"<{tag}>", where, VOC_HELP))
        xmin, ymin, xmax, ymax = corners
        # VOC pixels run from 1 and xmax/ymax are the last pixel inside: 0-based start, exclusive end.
        label = (item.findtext("name") or "").strip() or None
        boxes.append(_make_box((xmin - 1, ymin - 1, xmax, ymax), label, where, VOC_HELP))
    return {_image_key(filename, path.parent): boxes}


# --- matching images to truth -------------------------------------------------------------------


def _stem(name: str) -> str:
    return posixpath.splitext(name)[0]


def _candidate_key(truth_parts: dict[tuple[str, ...], str], by_stem: dict[tuple[str, ...], list[str]],
                   path: Path) -> str | None:
    """The truth key for one image path: longest trailing path match, else a unique stem match."""
    parts = Path(os.path.abspath(path)).parts
    for start in range(len(parts)):
        key = truth_parts.get(tuple(parts[start:]))
        if key is not None:
            return key
    stem_parts = (*parts[:-1], _stem(parts[-1]))
    for start in range(len(stem_parts)):
        keys = by_stem.get(tuple(stem_parts[start:]))
        if keys:
            return keys[0] if len(keys) == 1 else None
    return None


def match_images(truth: Truth, paths: Sequence[str | os.PathLike]) -> list[tuple[str | None, str | None]]:
    """For each image path: `(truth key, None)` when it has truth, `(None, reason)` when not.

    Keys that several images match (a bare `cat.jpg` for `a/cat.jpg` and `b/cat.jpg`) are given to
    none of them, with a reason that says to write the image's folder into the truth file.
    """
    truth_parts = {PurePosixPath(key).parts: key for key in truth}
    by_stem: dict[tuple[str, ...], list[str]] = {}
    for key in truth:
        parts = PurePosixPath(key).parts
        by_stem.setdefault((*parts[:-1], _stem(parts[-1])), []).append(key)
    keys = [_candidate_key(truth_parts, by_stem, Path(path)) for path in paths]
    users: dict[str, set[str]] = {}
    for path, key in zip(paths, keys):
        if key is not None:
            users.setdefault(key, set()).add(os.path.realpath(path))
    matches = []
    for key in keys:
        if key is None:
            matches.append((None, "no ground truth"))
        elif len(users[key]) > 1:
            matches.append((None, f"ambiguous ground truth: {key!r} matches {len(users[key])} images; "
                                  "write the image's folder in the truth file"))
        elif not truth[key]:
            matches.append((None, f"no boxes for {key!r} in the ground truth"))
        else:
            matches.append((key, None))
    return matches
