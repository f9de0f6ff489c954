"""One writer per output folder: the lock a run holds while it writes (camcli.runs.layout names it).

`explain`, `evaluate` and `audit` hold `.camcli.lock.tmp` in their output folder; a second run that
meets it stops with one line (exit 2). Shard K of N holds `.camcli.lock.K-of-N.tmp` instead: shards
write disjoint files (each image belongs to one shard, each shard has its own summary), so N shards
share one folder, while two runs of the same shard, or a shard and a whole-folder run, do not.

The lock holds the writer's pid and host. A lock whose run was killed (same host, pid no longer
alive) is stale, and the next run takes it over; a lock from another host is respected (its pid
cannot be checked from here), and the message says how to remove it. A process that already holds
the lock (audit explaining its images, then auditing them) enters it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

from camcli.errors import UsageError, one_line
from camcli.runs.layout import SHARD_LOCK, is_lock, lock_name

_HELD: dict[Path, int] = {}  # lock path -> how many times this process entered it


def _owner(path: Path) -> dict | None:
    """The lock's {"pid", "host"}, or None when it is gone or unreadable (a run killed while writing it)."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's process, alive
        return True
    return True


def _live_owner(path: Path) -> dict | None:
    """Who holds the lock at `path`, or None when nobody does (no lock, or a stale one, then removed)."""
    if not os.path.lexists(path):
        return None
    owner = _owner(path)
    if owner is not None and (owner.get("host") != socket.gethostname() or _alive(owner["pid"])) and not (
            owner["pid"] == os.getpid() and path.absolute() not in _HELD):  # our pid, not our lock: pid reused
        return owner
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a killed run's lock: taken over
    return None


def _others(out_dir: Path, shard: tuple[int, int] | None) -> list[Path]:
    """The locks that exclude this run's: a whole-folder run's excludes every shard's; a shard's is
    excluded by a whole-folder run's."""
    if shard is not None:
        return [out_dir / lock_name()]
    return sorted(path for path in out_dir.iterdir() if SHARD_LOCK.fullmatch(path.name))


def _refuse(out_dir: Path, path: Path, owner: dict) -> UsageError:
    return UsageError(f"{out_dir} is being written by another camcli run (pid {owner['pid']} on {owner.get('host')}, "
                      f"lock {path.name}): wait for it to end, or write to another output folder (`out`); if that "
                      "run is gone, remove the lock")


def _create(path: Path) -> bool:
    """Create the lock at `path`, holding this process's pid and host from its first moment (written
    aside, then linked into place); False when it exists already."""
    aside = path.with_name(f"{path.name}.{os.getpid()}")
    aside.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}), "utf-8")
    try:
        os.link(aside, path)
    except FileExistsError:
        return False
    finally:
        aside.unlink()
    return True


def _acquire(out_dir: Path, shard: tuple[int, int] | None) -> Path:
    path = out_dir / lock_name(shard)
    for other in _others(out_dir, shard):
        owner = _live_owner(other)
        if owner is not None and other.absolute() not in _HELD:
            raise _refuse(out_dir, other, owner)
    for _ in range(3):  # a stale lock is removed, then created anew; another run may win the race
        if _create(path):
            return path
        owner = _live_owner(path)
        if owner is not None:
            raise _refuse(out_dir, path, owner)
    raise _refuse(out_dir, path, _owner(path) or {"pid": "?", "host": "?"})


def other_writers(out_dir) -> bool:
    """Whether another live run holds a lock in `out_dir` (a shard beside this one): its temporary
    files are in flight, and must not be cleaned up as a killed run's."""
    out_dir = Path(out_dir)
    try:
        names = [path for path in out_dir.iterdir() if is_lock(path.name)]
    except OSError:
        return False
    return any(path.absolute() not in _HELD and _live_owner(path) is not None for path in names)


@contextlib.contextmanager
def output_lock(out_dir, shard: tuple[int, int] | None = None):
    """Hold the output folder's lock (creating the folder) while the block writes into it; a UsageError
    when another live run holds it."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create output folder {out_dir}: {one_line(error)}") from error
    path = (out_dir / lock_name(shard)).absolute()
    if path in _HELD:
        _HELD[path] += 1
    else:
        try:
            _acquire(out_dir, shard)
        except UsageError:
            raise
        except OSError as error:
            raise UsageError(f"cannot write to output folder {out_dir}: {one_line(error)}") from error
        _HELD[path] = 1
    try:
        yield path
    finally:
        _HELD[path] -= 1
        if not _HELD[path]:
            del _HELD[path]
            with contextlib.suppress(OSError):
                path.unlink()
