"""One shard's files on disk: written whole, read back, checksummed, and only then given their names.

`CacheWriter` decides what a shard holds; this module decides how it reaches the disk so
that a final name always means a shard that is complete and right, whatever fails:

1. the data goes to a hidden temporary (`emo.atomic.temp_name`) and is flushed and closed;
2. it is read back whole and compared, array by array, with what was meant to be written:
   a write the file system lost (a full disk reported late, a flaky mount) shows up as a
   file that opens but reads as zeros, and such a file never gets a final name;
3. the checksums in the sidecar are taken from the bytes on disk, after the read-back;
4. the sidecar is written to its own temporary first, so a disk too full for it fails
   before anything is renamed;
5. the old sidecar goes (the shard is unfinished from here), the data is renamed into
   place, then the sidecar: finished.

Any failure, Ctrl-C included, removes the temporaries, and data renamed in step 5 whose
sidecar did not follow, so an interrupted or failed write leaves the shard missing -
never wrong - and the same command run again redoes exactly that shard. A write that
failed for lack of room becomes a `DiskFullError` naming the file.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from emo import atomic
from emo.cache import layout, storage
from emo.cache.metadata import sealed
from emo.cache.records import json_safe
from emo.errors import CacheError, DiskFullError

# (files: {relative name: {"bytes", "sha256"}}, timings: {"write_s", "checksum_s"}) -> the sidecar
Describe = Callable[[dict[str, dict[str, Any]], dict[str, float]], dict[str, Any]]


def write_shard_files(
    folder: Path,
    shard_index: int,
    fmt: str,
    arrays: dict[str, Any],
    attrs: dict[str, Any],
    compression: str,
    describe: Describe,
) -> dict[str, Any]:
    """Write one shard's data and sidecar into `folder` (steps 1-5 above); returns the sidecar
    that `describe(files, timings)` made."""
    folder.mkdir(parents=True, exist_ok=True)
    data_name = layout.shard_data_name(shard_index, fmt)
    final = folder / data_name
    # A previous attempt at this shard index (this process's own shard: the writer locks
    # see to that) may have left a temporary; it is garbage now.
    for child in folder.iterdir():
        parsed = layout.parse_temp_name(child.name)
        if parsed and parsed[0] == shard_index:
            layout.remove_path(child)
    tmp = folder / atomic.temp_name(data_name)
    try:
        with atomic.disk_full_as_error(final):
            files, timings = _stage(tmp, fmt, arrays, attrs, compression, final)
        sidecar = describe(files, timings)
        _commit(folder, tmp, final, folder / layout.sidecar_name(shard_index), sidecar)
    except BaseException:
        layout.remove_path(tmp)
        raise
    return sidecar


def _stage(tmp: Path, fmt: str, arrays: dict[str, Any], attrs: dict[str, Any], compression: str, final: Path):
    """Steps 1-3: the temporary written, flushed, read back and checksummed."""
    started = time.perf_counter()
    storage.write_arrays(tmp, fmt, arrays, attrs, compression)
    layout.fsync_path(tmp)
    written = time.perf_counter()
    problem = storage.read_back_problem(tmp, fmt, arrays)
    if problem is not None:
        raise _lost_write(final, problem)
    files = layout.checksum_files(tmp)
    return files, {"write_s": round(written - started, 4), "checksum_s": round(time.perf_counter() - written, 4)}


def _lost_write(final: Path, problem: str) -> CacheError:
    """The error for a shard that read back wrong: a full disk when it is one (HDF5 and some
    network file systems report lack of room late or not at all), else a file system that
    lost data."""
    try:
        full = shutil.disk_usage(final.parent).free == 0
    except OSError:
        full = False
    if full:
        return DiskFullError(atomic.disk_full_sentence(final))
    return CacheError(
        f"Shard {final} {problem} after it was written, so it was not kept; check the disk and file system "
        "that hold the cache, and run the same command again."
    )


def _commit(folder: Path, tmp: Path, final: Path, sidecar_path: Path, sidecar: dict[str, Any]) -> None:
    """Steps 4-5: the sidecar's temporary, then the renames; a failure in between takes the
    renamed data away again."""
    # sealed like cache.json and set.json: a sidecar edited afterwards no longer finishes its shard
    text = json.dumps(sealed(sidecar, default=json_safe), indent=1) + "\n"
    moved = False
    try:
        with atomic.disk_full_as_error(sidecar_path), atomic.atomic_path(sidecar_path, durable=True) as side_tmp:
            side_tmp.write_text(text, encoding="utf-8")
            layout.remove_path(sidecar_path)  # unfinished first, then swap the data, then finish
            if final.is_dir():
                trash = folder / atomic.temp_name(final.name + ".old")
                final.rename(trash)
                layout.remove_path(trash)
            tmp.replace(final)
            moved = True
    except BaseException:
        if moved:
            layout.remove_path(final)
        raise
    atomic.fsync_dir(folder)


def reports_disk_full(where: Callable[..., Path]) -> Callable:
    """Decorate a writer method so that a write inside it that fails for lack of room (an
    OSError ENOSPC/EDQUOT/EFBIG) ends as one `DiskFullError` naming `where(self, *args)`,
    for the cache's small files (cache.json, config.toml, set.json, split.json, manifest)."""

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            with atomic.disk_full_as_error(where(self, *args, **kwargs)):
                return method(self, *args, **kwargs)

        return wrapper

    return decorate
