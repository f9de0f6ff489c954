"""The other inputs of a model with several (`--extra-inputs FILE`): one row per image, keyed by its path.

CSV: a header with an `image` column and one column per extra input, named as the input; a cell holds
that input's values for the image: one number, or several separated by spaces or semicolons, or a
JSON list (`"[0.5, 1, 2]"`). JSON: `{"photos/cat.jpg": {"meta": [0.5, 1, 2]}, ...}` or
`[{"image": "photos/cat.jpg", "meta": [0.5, 1, 2]}, ...]`.

An image's key is matched, in this order, to the row with the same file (its path relative to the
table's folder, or to the working folder), then to the one row with the same file name. Numpy only.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from camcli.errors import UsageError

IMAGE_COLUMN = "image"


def _finite(values: np.ndarray, where: str, given: str) -> np.ndarray:
    """`values`, or a UsageError naming `where` when one of them is NaN or infinite (the model would
    give NaN scores and maps, far from the cause)."""
    if not np.isfinite(values).all():
        raise UsageError(f"{where}: {given} is not finite (NaN or infinity); give finite numbers")
    return values


def _values(text: str, where: str) -> np.ndarray:
    text = text.strip()
    try:
        if text.startswith("["):
            values = np.asarray(json.loads(text), dtype=np.float64)
        else:
            values = np.asarray([float(part) for part in text.replace(";", " ").split()], dtype=np.float64)
    except (ValueError, TypeError, RecursionError):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise UsageError(f"{where}: {shown!r} is not a number, numbers separated by spaces, or a JSON list") from None
    return _finite(values, where, repr(text))


def _is_numeric(value) -> bool:
    if isinstance(value, list):
        return all(_is_numeric(item) for item in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_values(value, where: str) -> np.ndarray:
    """One JSON cell: a number or a (rectangular, possibly nested) list of numbers."""
    shown = json.dumps(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    if not _is_numeric(value):
        raise UsageError(f"{where}: {shown} is not a number or a list of numbers")
    try:
        values = np.asarray(value, dtype=np.float64)
    except ValueError:
        raise UsageError(f"{where}: {shown} is ragged (lists of different lengths); give one number or a list "
                         "of numbers") from None
    return _finite(values, where, shown)


def _csv_rows(path: Path, text: str) -> dict[str, dict[str, object]]:
    reader = csv.DictReader(text.splitlines())
    columns = reader.fieldnames or []
    if IMAGE_COLUMN not in columns:
        raise UsageError(f"{path}: no `{IMAGE_COLUMN}` column in its header ({', '.join(columns) or 'empty'}); "
                         "the first row must name the image column and one column per extra input")
    twice = next((name for i, name in enumerate(columns) if name in columns[:i]), None)
    if twice is not None:
        raise UsageError(f"{path}: its header names column {twice!r} twice; keep one column per input")
    rows, lines = {}, {}
    for row in reader:
        line = reader.line_num
        if None in row:  # DictReader's key for the cells beyond the header's columns
            extra = len(row[None])
            raise UsageError(f"{path}, line {line}: {extra} cell{'s' if extra > 1 else ''} more than the header's "
                             f"{len(columns)} columns ({', '.join(columns)}); quote a cell that holds a comma")
        image = (row.pop(IMAGE_COLUMN) or "").strip()
        if image in rows:
            raise UsageError(f"{path}, line {line}: a second row for {image!r} (the first is line {lines[image]}); "
                             "keep one row per image")
        lines[image] = line
        rows[image] = {name: _values(value or "", f"{path}, line {line}, column {name}")
                       for name, value in row.items()}
    return rows


def _json_rows(path: Path, text: str) -> dict[str, dict[str, object]]:
    def unique(pairs):
        seen = [key for key, _ in pairs]
        twice = next((key for i, key in enumerate(seen) if key in seen[:i]), None)
        if twice is not None:
            raise UsageError(f"{path}: {twice!r} is given twice; keep one row per image (and one value per input)")
        return dict(pairs)

    try:
        data = json.loads(text, object_pairs_hook=unique)
    except json.JSONDecodeError as error:
        raise UsageError(f"{path} is not valid JSON ({error.msg}, line {error.lineno})") from None
    except RecursionError:
        raise UsageError(f"{path}: its lists and objects nest too deeply; give {{image path: {{input name: values}}}}"
                         ) from None
    if isinstance(data, list) and all(isinstance(row, dict) and IMAGE_COLUMN in row for row in data):
        images = [str(row[IMAGE_COLUMN]) for row in data]
        twice = next((image for i, image in enumerate(images) if image in images[:i]), None)
        if twice is not None:
            raise UsageError(f"{path}: two rows for {twice!r}; keep one row per image")
        data = {str(row[IMAGE_COLUMN]): {k: v for k, v in row.items() if k != IMAGE_COLUMN} for row in data}
    if not isinstance(data, dict) or not all(isinstance(row, dict) for row in data.values()):
        raise UsageError(f"{path}: expected {{image path: {{input name: values}}}} or a list of "
                         f"{{\"{IMAGE_COLUMN}\": path, input name: values}}")
    return {image: {name: _json_values(value, f"{path}, image {image!r}, input {name!r}")
                    for name, value in row.items()}
            for image, row in data.items()}


class RowsByImage:
    """Rows of a table keyed by image path. An image's key is matched to the row with the same file
    (its path relative to the table's folder, or to the working folder), then to the one row with the
    same file name. `find(key)` gives the row or None."""

    def __init__(self, path: str | os.PathLike, rows: Mapping[str, object]):
        self.path = Path(path)
        folder = self.path.parent
        self._by_file = {os.path.realpath(folder / key): row for key, row in rows.items()}
        self._by_cwd = {os.path.realpath(key): row for key, row in rows.items()}
        self._by_name: dict[str, list] = {}
        for key, row in rows.items():
            self._by_name.setdefault(os.path.basename(key), []).append(row)

    def __len__(self) -> int:
        return len(self._by_file)

    def rows(self) -> list:
        return list(self._by_file.values())

    def find(self, key: str | os.PathLike):
        real = os.path.realpath(key)
        row = self._by_file.get(real) or self._by_cwd.get(real)
        if row is None:
            named = self._by_name.get(os.path.basename(os.fspath(key)), [])
            if len(named) == 1:
                row = named[0]
        return row


class ExtraInputsTable(RowsByImage):
    """Callable: table(image_key) -> {input name: values} for that image. `identity` is the file's
    digest (records' fingerprints: editing the table recomputes the images on --resume)."""

    def __init__(self, path: str | os.PathLike, rows: Mapping[str, Mapping[str, np.ndarray]], identity: str):
        super().__init__(path, rows)
        self.identity = identity

    def __call__(self, key: str | os.PathLike) -> Mapping[str, np.ndarray]:
        row = self.find(key)
        if row is None:
            raise UsageError(f"no row for {os.fspath(key)} in {self.path}: add one keyed by the image's path "
                             "(relative to the table's folder) or its file name")
        return row


def read_table(path: str | os.PathLike) -> ExtraInputsTable:
    """An ExtraInputsTable from a .csv or .json file; UsageError with one line when it cannot be read."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read extra inputs {path}: {error}; give a UTF-8 CSV or JSON file") from None
    rows = _json_rows(path, text) if path.suffix.lower() == ".json" else _csv_rows(path, text)
    if not rows:
        raise UsageError(f"{path} has no rows; give one row per image")
    return ExtraInputsTable(path, rows, "sha256:" + hashlib.sha256(raw).hexdigest())
