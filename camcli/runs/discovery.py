"""Turning the user's PATH arguments into an ordered list of images to explain.

What is included
    A file named on the command line is always included (the loader reports it if it is not an
    image). A directory is walked recursively in a fixed order (names sorted by their bytes),
    following directory symlinks; a directory already visited in the same walk (a symlink loop,
    or a second link to the same folder) is skipped silently. Inside a directory a file is
    included when its extension is in `IMAGE_EXTENSIONS` or its first bytes carry an image
    signature, so `notes.txt` is ignored while a text file named `cat.jpg` is included and fails
    loudly at load time. A broken symlink with an image extension is reported as skipped.

    When the output directory lies inside an input folder, nothing inside it is read (real paths
    are compared, so symlinks do not get around it, and it need not exist yet). When an input
    folder is the output directory or lies inside it (`--out` = the photo folder), the folder is
    walked all the same, and camcli's own overlays are recognised by the marker in their PNG
    text chunk (`camcli.runs.layout.is_camcli_output`; the report's JPEG thumbnails carry it as a
    comment), so last run's heatmaps and thumbnails are never read back as photos. The same file
    reached twice (named twice, or through a symlink) is included once, at its first occurrence.

Where the outputs go: `out_stem`
    Each task has a stem, a relative POSIX path without extension under the output directory to
    which writers append ".json", ".gradcam.281.png" and so on. A file named on the command line
    gets its own stem ("cat"); a file found under a directory gets its path relative to that
    directory ("a/b/cat" for <root>/a/b/cat.jpg). Stems are compared ignoring case and Unicode
    normalisation, since macOS and Windows file systems do too. When stems collide, the
    colliding tasks are renamed in rounds, each applied only to tasks still colliding:
      1. the file's extension is kept: "a/cat.jpg" and "a/cat.png" (-> a/cat.jpg.json ...);
      2. the root's basename is prefixed (for a file named on the command line, its parent
         folder's): "photos/cat.jpg" and "scans/cat.jpg";
      3. the PATH argument's 1-based position is prefixed: "1-photos/cat.jpg", "2-photos/cat.jpg";
      4. as a last resort, "~2", "~3"... is appended to all but the first.
    Stem components are sanitised so a stem never escapes the output directory: no absolute
    parts, no "." or "..", no empty components, no NUL or path separators (/ and \\ become _).
"""

import os
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from camcli.runs.decode import IMAGE_EXTENSIONS, sniff_image
from camcli.runs.layout import RESERVED_STEM, is_camcli_output


@dataclass(frozen=True)
class ImageTask:
    """One image to explain."""

    source: Path  # as found (not resolved), exact bytes included, so the file can be opened
    display: str  # the path as the user would type it, safe to print and to put in JSON
    out_stem: str  # relative POSIX path without extension under the output directory


@dataclass(frozen=True)
class SkippedInput:
    """An input that is bad before any decoding: missing, a broken symlink, unreadable..."""

    display: str
    reason: str


@dataclass(frozen=True)
class _Found:
    """A file to include, with what collision handling needs to know about it."""

    source: Path
    real: str  # resolved path, to notice the same file reached twice
    parts: tuple  # path relative to its root, as name components (the file name included)
    root_name: str  # basename of the walked root, or of the parent of a file argument
    arg_index: int  # 1-based position of the PATH argument it came from


def discover(paths, out_dir):
    """Expand PATH arguments into `(tasks, skipped)`, both in a deterministic order."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    out_real = os.path.realpath(out_dir)
    found, skipped, seen = [], [], set()
    for index, arg in enumerate(paths, start=1):
        arg = os.fsdecode(arg)
        for item in _expand(arg, index, out_real, skipped):
            if item.real not in seen:
                seen.add(item.real)
                found.append(item)
    return _make_tasks(found), skipped


def tasks_for_files(files, root):
    """Tasks for `files` that someone else listed under the folder `root` (a Ray Data dataset's files),
    as `discover([root], ...)` would make them: only the images (`is_input_image`), ordered like its
    walk, displayed as root/relative path, with the same stems and collision rounds. Each task's source
    is the file as given. A file outside `root` raises ValueError."""
    root_abs = os.path.abspath(root)
    root_name = os.path.basename(root_abs)
    found = []
    for file in files:
        relative = os.path.relpath(os.path.abspath(file), root_abs)
        if relative == os.curdir or relative.split(os.sep)[0] == os.pardir:
            raise ValueError(f"{printable(file)} is not inside {printable(root)}")
        parts = tuple(relative.split(os.sep))
        if is_input_image(file):
            found.append(_Found(Path(file), os.path.realpath(file), parts, root_name, 1))
    found.sort(key=lambda item: [os.fsencode(part) for part in item.parts])
    stems = _unique_stems(found)
    return [ImageTask(item.source, printable(Path(root, *item.parts)), stem) for item, stem in zip(found, stems)]


def _expand(arg, index, out_real, skipped):
    """Yield the files one PATH argument stands for, appending what is wrong to `skipped`."""
    try:
        st = os.stat(arg)
    except OSError as exc:
        skipped.append(SkippedInput(printable(arg), _stat_reason(arg, exc)))
        return
    except ValueError:  # a NUL byte in the argument
        skipped.append(SkippedInput(printable(arg), "invalid path"))
        return
    real = os.path.realpath(arg)
    in_out = is_inside(real, out_real)
    if in_out and stat.S_ISREG(st.st_mode) and is_camcli_output(arg):
        skipped.append(SkippedInput(printable(arg), "an output of camcli, not an input"))
    elif stat.S_ISDIR(st.st_mode):
        # A folder inside (or equal to) the output folder is walked for inputs all the same, but
        # camcli's own outputs in it are recognised by content and left alone.
        yield from _walk(arg, index, None if in_out else out_real, skipped)
    elif stat.S_ISREG(st.st_mode):
        parent_name = os.path.basename(os.path.dirname(os.path.abspath(arg)))
        yield _Found(Path(arg), real, (os.path.basename(arg),), parent_name, index)
    else:
        skipped.append(SkippedInput(printable(arg), "not a regular file or directory"))


def _walk(root, index, out_real, skipped):
    """Depth-first walk of `root` in sorted order, with an explicit stack (no recursion limit)."""
    root_real = os.path.realpath(root)
    root_name = os.path.basename(os.path.abspath(root))
    visited = {_dir_key(root)}
    # Each frame: (entries still to visit, their path components relative to root, real dir path).
    stack = [(iter(_sorted_entries(root, skipped)), (), root_real)]
    while stack:
        entries, rel, dir_real = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        parts = rel + (entry.name,)
        real = _real_path(entry, dir_real, skipped)
        if real is None:
            continue
        kind = _kind(entry)
        if kind == "dir":
            key = _dir_key(entry.path)  # (device, inode): the same folder by any path
            if key is not None and key not in visited and not is_inside(real, out_real):
                visited.add(key)
                stack.append((iter(_sorted_entries(entry.path, skipped)), parts, real))
        elif kind == "broken":
            if _has_image_extension(entry.name):
                skipped.append(SkippedInput(printable(Path(entry.path)), "broken symlink"))
        elif kind == "file" and not is_inside(real, out_real):
            if is_input_image(entry.path):
                yield _Found(Path(entry.path), real, parts, root_name, index)


def _real_path(entry, dir_real, skipped):
    """Where a directory entry really is; None, with the entry reported, for a symlink that cannot be
    read (/proc/1/cwd of another user's process: readlink is denied)."""
    try:
        # Only symlinks need resolving: anything else is really where its directory really is.
        return os.path.realpath(entry.path) if entry.is_symlink() else os.path.join(dir_real, entry.name)
    except OSError as exc:
        skipped.append(SkippedInput(printable(Path(entry.path)), _stat_reason(entry.path, exc)))
        return None


def _sorted_entries(directory, skipped):
    """Directory entries sorted by their name's bytes; an unreadable directory is reported."""
    try:
        with os.scandir(directory) as it:
            return sorted(it, key=lambda entry: os.fsencode(entry.name))
    except OSError as exc:
        skipped.append(SkippedInput(printable(Path(directory)), _stat_reason(directory, exc)))
        return []


def _kind(entry):
    """The kind of a directory entry: dir, file, broken (a dangling symlink) or other (FIFO...)."""
    try:
        mode = entry.stat(follow_symlinks=True).st_mode
    except OSError:  # a dangling symlink, one pointing at itself (ELOOP), or a file just deleted
        return "broken" if entry.is_symlink() else "other"
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "other"


def _dir_key(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def is_inside(real, out_real):
    """Whether the real path `real` is the folder `out_real` or lies inside it (never, for None)."""
    if out_real is None:
        return False
    return real == out_real or real.startswith(out_real.rstrip(os.sep) + os.sep)


def is_input_image(path) -> bool:
    """Whether a file found in a folder is one of its images: an image extension or signature, and not
    an output camcli wrote (the walk's rule, and camcli.ray's for a dataset's files)."""
    return (_has_image_extension(os.path.basename(path)) or sniff_image(path)) and not is_camcli_output(path)


def _has_image_extension(name):
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _stat_reason(path, exc):
    if isinstance(exc, FileNotFoundError):
        return "broken symlink" if os.path.islink(path) else "no such file or directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, NotADirectoryError):
        return "not a directory"
    return f"cannot access ({exc.strerror or exc})".lower()


def printable(path):
    """`path` as valid, printable text: undecodable bytes and control characters as \\x escapes."""
    text = os.fspath(path)
    if isinstance(text, str):
        try:
            # Undo Python's surrogateescape, so the original bytes are what gets escaped.
            text = os.fsencode(text)
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace")
    text = text.decode("utf-8", "backslashreplace")
    # Not printable: control characters, and also invisible format characters such as the
    # right-to-left override, which could make a name display as a different name.
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char):
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


# --- output stems --------------------------------------------------------------------------------


def _make_tasks(found):
    stems = _unique_stems(found)
    return [ImageTask(item.source, printable(item.source), stem) for item, stem in zip(found, stems)]


def _unique_stems(found):
    """One stem per found file, unique ignoring case, following the rounds in the module doc."""
    stems = [_join(item.parts[:-1] + (os.path.splitext(item.parts[-1])[0],)) for item in found]
    rounds = (
        lambda item, stem: _join(item.parts),  # keep the extension
        lambda item, stem: _join((item.root_name or "root", *stem.split("/"))),
        lambda item, stem: _join(f"{item.arg_index}-{stem}".split("/")),
    )
    for rename in rounds:
        for group in _collisions(stems):
            for i in group:
                stems[i] = rename(found[i], stems[i])
    for group in _collisions(stems):
        for n, i in enumerate(group[1:], start=2):
            stems[i] = _unique_suffix(stems, i, n)
    return stems




def _collisions(stems):
    """Groups (lists of indexes, in order) of stems equal up to case and Unicode normalisation,
    plus a group of one for each stem whose outputs would land on one of the run's own files or
    on a folder that other images' outputs go into (`a.png` next to a folder `a.json/`)."""
    groups = {}
    for i, stem in enumerate(stems):
        groups.setdefault(_fold(stem), []).append(i)
    blocked = _stems_blocked_by_folders(groups)
    return [group for key, group in groups.items()
            if len(group) > 1 or RESERVED_STEM.fullmatch(key) or key in blocked]


def _stems_blocked_by_folders(folded_stems):
    """Stems S for which some output folder is named "S.<anything>": S's own outputs ("S.json",
    "S.<method>.<class>.png") could be that folder."""
    blocked = set()
    for stem in folded_stems:
        parts = stem.split("/")
        for depth in range(1, len(parts)):
            parent, folder = "/".join(parts[: depth - 1]), parts[depth - 1]
            for position, char in enumerate(folder):
                if char == "." and position:
                    blocked.add(f"{parent}/{folder[:position]}" if parent else folder[:position])
    return blocked


def _unique_suffix(stems, i, n):
    taken = {_fold(stem) for stem in stems}
    while _fold(f"{stems[i]}~{n}") in taken:
        n += 1
    return f"{stems[i]}~{n}"


def _fold(stem):
    return unicodedata.normalize("NFC", stem).casefold()


def _join(parts):
    """A safe relative POSIX path from name components (each one sanitised)."""
    return "/".join(_safe_component(part) for part in parts)


def _safe_component(name):
    name = name.replace("\x00", "_").replace("/", "_").replace("\\", "_")
    if name in ("", ".", ".."):
        return "_" * max(len(name), 1)
    return name
