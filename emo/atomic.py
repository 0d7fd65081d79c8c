"""The one way `emo` writes a file: whole or not at all.

Every artifact (cache shards' sidecars, configs, checkpoints, reports, charts) is written
under a hidden temporary name in the destination folder, flushed, and then renamed over
its final name. A rename within one folder is atomic on POSIX filesystems, so a process
killed at any instant leaves either the old file or the new one, never half of either;
readers and resumed runs can trust that a file that exists is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from pathlib import Path
from typing import Any, Callable, Iterator

_HOST_SAFE = re.compile(r"[^A-Za-z0-9_]")


def this_host() -> str:
    """The host name reduced to [A-Za-z0-9_], so it can sit inside a file name."""
    return _HOST_SAFE.sub("_", socket.gethostname()) or "host"


def temp_name(final_name: str) -> str:
    """`.NAME.tmp-HOST-PID`: hidden, unique to this process on this machine (caches live on
    shared filesystems), and recognisable as leftover work that a later run may delete."""
    return f".{final_name}.tmp-{this_host()}-{os.getpid()}"


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
