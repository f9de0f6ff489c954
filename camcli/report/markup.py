"""Text for the report page: escaping, paths under OUT and number formatting, shared by its sections
(camcli.report.page, camcli.report.audit_sections).

Everything taken from JSON goes through `esc` (text and attribute values) or `url` (paths under OUT):
file names may hold `<`, `&`, quotes, any Unicode, and even undecodable bytes (kept as lone
surrogates, see camcli.runs.discovery).
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from urllib.parse import quote


def valid_unicode(text) -> str:
    """str(text) as valid Unicode: lone surrogates (undecodable bytes of a file name) decoded as
    UTF-8 where they can be, else replaced by U+FFFD."""
    text = str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape" if _escapable(text) else "replace").decode("utf-8", "replace")


def _escapable(text: str) -> bool:
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def esc(text) -> str:
    return html.escape(valid_unicode(text), quote=True)


def url(relative: str) -> str:
    """A relative URL for a path under OUT: every byte that is not a plain path character is
    percent-encoded (`#`, `?`, `%`, quotes, spaces, non-ASCII, undecodable bytes)."""
    data = relative.encode("utf-8", "surrogateescape") if _escapable(relative) else relative.encode("utf-8", "replace")
    return quote(data, safe="/")


def inside(out_dir: Path, relative) -> Path | None:
    """out_dir / relative, or None when `relative` is not a plain relative path inside out_dir."""
    if not isinstance(relative, str) or not relative:
        return None
    normal = os.path.normpath(relative)
    if os.path.isabs(normal) or normal == ".." or normal.startswith(".." + os.sep):
        return None
    return out_dir / normal


def number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) else None


def cell(value) -> str:
    """A cell: numbers to 4 significant digits, booleans as yes/no, nested values as JSON."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "\u2014"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)[:200]
    return str(value)


def is_scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))
