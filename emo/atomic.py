"""The one way `emo` writes a file: whole or not at all.

Every artifact (cache shards' sidecars, configs, checkpoints, reports, charts) is written
under a hidden temporary name in the destination folder, flushed, and then renamed over
its final name. A rename within one folder is atomic on POSIX filesystems, so a process
killed at any instant leaves either the old file or the new one, never half of either;
readers and resumed runs can trust that a file that exists is complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any, Callable, Iterator

from emo.errors import DiskFullError, error_chain

_HOST_SAFE = re.compile(r"[^A-Za-z0-9_]")
# No space on the device, over quota, over the process's file-size limit: the user frees room.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# C libraries that lose errno on the way up still say it in words (HDF5, torch's zip writer).
_DISK_FULL_WORDS = ("no space left", "disk quota exceeded", "file too large")


def this_host() -> str:
    """The host name reduced to [A-Za-z0-9_], so it can sit inside a file name."""
    return _HOST_SAFE.sub("_", socket.gethostname()) or "host"


def temp_name(final_name: str) -> str:
    """`.NAME.tmp-HOST-PID`: hidden, unique to this process on this machine (caches live on
    shared filesystems), and recognisable as leftover work that a later run may delete."""
    return f".{final_name}.tmp-{this_host()}-{os.getpid()}"


_TEMP_NAME = re.compile(r"^\.(.+)\.tmp-[A-Za-z0-9_]+-\d+(\.[A-Za-z0-9]+)?$")


def final_name(name: str) -> str:
    """The name a `temp_name` temporary (with or without a kept suffix) was to become;
    `name` itself when it is not one."""
    match = _TEMP_NAME.match(name)
    return match.group(1) if match else name


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable; folders that refuse fsync keep an atomic rename anyway."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path | str, durable: bool = False, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed.

    For writers that need a file name rather than text (torch.save, matplotlib, h5py).
    `durable=True` also fsyncs the file and its folder (for data that must survive a crash
    of the machine, not only of the process). `keep_suffix=True` ends the temporary name
    with the final suffix too, for writers that choose a format from it (matplotlib).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name) + (path.suffix if keep_suffix else ""))
    try:
        yield tmp
        if durable and tmp.is_file():
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def is_disk_full(error: BaseException) -> bool:
    """True when `error`, or any error it was raised from, says the disk (or quota) is full."""
    for current in error_chain(error):
        if isinstance(current, DiskFullError):
            return True
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        if any(words in str(current).lower() for words in _DISK_FULL_WORDS):
            return True
    return False


def disk_full_sentence(what: Path | str) -> str:
    return f"Disk full while writing {what}; free space and run the same command again."


@contextlib.contextmanager
def disk_full_as_error(what: Path | str) -> Iterator[None]:
    """Turn a write that failed for lack of room into a `DiskFullError` naming `what`.

    Every library under emo reports a full disk its own way (an OSError with ENOSPC, an
    HDF5 "Can't write data", torch's "file write failed"); the user needs one sentence and
    one fix, whichever it was. Other errors pass through unchanged.
    """
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError, ValueError) as error:
        if is_disk_full(error):
            raise DiskFullError(disk_full_sentence(what)) from error
        raise


def write_text(path: Path | str, text: str, durable: bool = False) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    path = Path(path)
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_bytes(path: Path | str, data: bytes, durable: bool = False) -> Path:
    """Write `data` to `path` atomically."""
    path = Path(path)
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)
    return path


def _json_default(value: Any) -> Any:
    # numpy scalars and paths show up in stats, metrics and failure records
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_json(path: Path | str, data: Any, indent: int | None = 1, durable: bool = False) -> Path:
    """Write `data` as JSON atomically (numpy scalars and paths are converted)."""
    text = json.dumps(data, indent=indent, default=_json_default) + "\n"
    return write_text(path, text, durable=durable)


def write_with(path: Path | str, writer: Callable[[Path], Any], durable: bool = False) -> Path:
    """Call `writer(tmp_path)` and move the result into place atomically (the temporary
    keeps the final suffix, so writers that choose a format by extension work)."""
    path = Path(path)
    with atomic_path(path, durable=durable, keep_suffix=True) as tmp:
        writer(tmp)
    return path


@contextlib.contextmanager
def atomic_paths(paths: dict[str, Path]) -> Iterator[dict[str, Path]]:
    """Temporary paths beside several files that belong together (a report and its charts):
    all are renamed into place, in the order given, only once every one is written; on
    error every temporary is removed and the earlier files, if any, are left as they were.
    Temporaries keep the final suffix, for writers that choose a format from it."""
    finals = {kind: Path(path) for kind, path in paths.items()}
    temps = {kind: path.with_name(temp_name(path.name) + path.suffix) for kind, path in finals.items()}
    try:
        yield temps
        for kind, path in finals.items():
            os.replace(temps[kind], path)
    except BaseException:
        for tmp in temps.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_folder(path: Path | str) -> Iterator[Path]:
    """Yield an empty hidden folder beside `path` (`temp_name`); on success it takes `path`'s
    place whole, on error it is removed.

    For artifacts made of several files (a run, a set of predictions): readers never see
    half of one, and what was at `path` before (a finished earlier run) is kept until the
    new folder is complete, then replaced (see `replace_folder`). Leftovers of a killed
    process on this host are cleared first (`sweep_folder_leftovers`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_folder_leftovers(path)
    building = path.parent / temp_name(path.name)
    _remove_tree(building)
    building.mkdir()
    try:
        yield building
        replace_folder(building, path)
    except BaseException:
        _remove_tree(building)
        raise


def replace_folder(new: Path, path: Path) -> None:
    """Put folder `new` at `path`; whatever was at `path` is removed only once `new` is there.

    Where the kernel can swap two names in one step (Linux renameat2 RENAME_EXCHANGE) there
    is no instant at which `path` is missing; elsewhere the old folder is renamed aside
    (`.NAME.old.tmp-HOST-PID`) for the instant between two renames, and a process killed in
    that instant leaves it for `sweep_folder_leftovers` to put back.
    """
    new, path = Path(new), Path(path)
    if not os.path.lexists(path) or (path.is_dir() and not path.is_symlink() and not any(path.iterdir())):
        os.replace(new, path)  # nothing there, or an empty folder that a rename may replace
    elif _exchange(new, path):
        _remove_tree(new)  # now the old content
    else:
        old = path.parent / temp_name(path.name + ".old")
        os.replace(path, old)
        try:
            os.replace(new, path)
        except BaseException:
            os.replace(old, path)
            raise
        _remove_tree(old)
    fsync_dir(path.parent)


def sweep_folder_leftovers(path: Path | str) -> None:
    """Clear what killed processes on this host left beside `path`: their unfinished
    `.NAME.tmp-HOST-PID` folders are removed, and an old folder renamed aside
    (`.NAME.old.tmp-HOST-PID`) goes back to `path` when nothing took its place. Other hosts'
    leftovers (a shared filesystem) are left alone: their processes cannot be checked here."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    building, aside = f".{path.name}.tmp-{this_host()}-", f".{path.name}.old.tmp-{this_host()}-"
    for child in path.parent.iterdir():
        prefix = next((p for p in (building, aside) if child.name.startswith(p)), None)
        pid = child.name[len(prefix) :] if prefix else ""
        if not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
            continue
        if prefix == aside and not os.path.lexists(path):
            os.replace(child, path)
        else:
            _remove_tree(child)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (one owned by another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but belongs to another user
        return True
    return True


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names `a` and `b` atomically (Linux renameat2); False where it is not offered."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a C library without renameat2
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):  # filesystem without it (NFS)
        return False
    raise OSError(code, os.strerror(code), str(b))
