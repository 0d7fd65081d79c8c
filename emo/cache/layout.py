"""Where everything lives inside a cache folder, and how files get there safely.

    CACHE/cache.json                  schema version, format, row-table fingerprint, emo version
    CACHE/config.toml                 resolved extract config of the latest run into the cache
    CACHE/manifest.json               derived index (rebuilt from cache.json + sidecars)
    CACHE/<split>/split.json          the split's plan: expected rows/shards, ignored videos
    CACHE/<split>/shard-00000.h5      the row table, one HDF5 file per shard (format "h5")
    CACHE/<split>/shard-00000.zarr/   ... or one Zarr v3 group per shard     (format "zarr")
    CACHE/<split>/shard-00000.json    the shard's sidecar: rows, keys, checksums
    CACHE/sets/<modality>/<name>/set.json             a feature set: kind, dim, encoder, fingerprint
    CACHE/sets/<modality>/<name>/config.toml          the extract config that made it
    CACHE/sets/<modality>/<name>/<split>/shard-*      its shards and sidecars (+ failures),
                                                      numbered like the row table's
    CACHE/slurm/                      a launcher's job files and per-task logs (never a split;
                                      marked as such, `emo.cache.launches`)

A set's shard k holds the same rows as the row table's shard k, so sets are added,
replaced or removed (`emo cache rm --set`) without touching any other file.

A shard counts as finished only when its data AND its sidecar exist, because the sidecar
is written after the data has been renamed into place. Every file is first written under
a hidden temporary name in the same folder (`emo.atomic.temp_name`:
`.NAME.tmp-HOST-PID`) and then `os.replace`d, so a killed process leaves either nothing
or a temporary that is never read. Independent processes writing disjoint shards
therefore never touch each other's files, even on a shared filesystem (which runs may
write a set at once is `emo.cache.locks`'s job, in the hidden `.locks/`). This module
parses those temporary names back, so a later run can tell a dead process's leftovers from
a live one's work.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from emo.atomic import pid_alive, this_host
from emo.cache.launches import LEGACY_DIRS, is_launcher_dir

CACHE_FILE = "cache.json"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.toml"
SPLIT_FILE = "split.json"
SET_FILE = "set.json"
SETS_DIR = "sets"
FORMATS = ("h5", "zarr")


def is_cache_folder(path: Path | str) -> bool:
    """Whether `path` is a feature cache's folder (it holds cache.json), e.g. to tell a user
    who passed a cache where a run folder belongs which is which."""
    return (Path(path) / CACHE_FILE).is_file()


_SHARD_RE = re.compile(r"^shard-(\d{5,})\.(h5|zarr|json)$")
_TEMP_RE = re.compile(r"^\.shard-(\d{5,})\..*\.tmp-(.+)-(\d+)$")
_SPLIT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HASH_BLOCK = 8 << 20


def check_split_name(split: str) -> str:
    """Split names become folder names, so they must be plain (no slashes, no dot-files)."""
    if not _SPLIT_NAME_RE.match(split) or split in (CACHE_FILE, MANIFEST_FILE, CONFIG_FILE, SETS_DIR, *LEGACY_DIRS):
        raise ValueError(f"invalid split name {split!r}")
    return split


def set_dir(root: Path, name: str) -> Path:
    """The folder of feature set `name` (`<modality>/<name>`)."""
    modality, _, short = name.partition("/")
    return Path(root) / SETS_DIR / modality / short


def part_dir(root: Path, split: str, set_name: str | None = None) -> Path:
    """Where the shards of one split live: the row table's, or one feature set's."""
    split = check_split_name(split)
    return Path(root) / split if set_name is None else set_dir(root, set_name) / split


def finish_hint(split: str) -> str:
    """How to finish an incomplete split, in words. Shard k belongs to --shard-index
    k % --num-shards, so one process given neither picks up every missing shard."""
    return (
        f"re-run `emo extract --split {split}` with the same options to finish it "
        "(without --num-shards/--shard-index, one process does every missing shard)"
    )


def shard_stem(index: int) -> str:
    return f"shard-{index:05d}"


def shard_data_name(index: int, fmt: str) -> str:
    return f"{shard_stem(index)}.{fmt}"


def sidecar_name(index: int) -> str:
    return f"{shard_stem(index)}.json"


def parse_shard_name(name: str) -> tuple[int, str] | None:
    """(index, kind) for `shard-00012.h5` -> (12, "h5"); None for anything else."""
    match = _SHARD_RE.match(name)
    return (int(match.group(1)), match.group(2)) if match else None


def parse_temp_name(name: str) -> tuple[int, str, int] | None:
    """(shard index, host, pid) of a leftover shard temporary (`emo.atomic.temp_name` of a
    shard's data or sidecar), None if `name` is not one."""
    match = _TEMP_RE.match(name)
    return (int(match.group(1)), match.group(2), int(match.group(3))) if match else None


_ANY_TEMP_RE = re.compile(r"^\.(.+)\.tmp-([A-Za-z0-9_]+)-(\d+)$")


def parse_any_temp(name: str) -> tuple[str, str, int] | None:
    """(final name, host, pid) of any temporary `emo.atomic.temp_name` made (shards,
    sidecars, cache.json, manifest.json, config.toml), None otherwise."""
    match = _ANY_TEMP_RE.match(name)
    return (match.group(1), match.group(2), int(match.group(3))) if match else None


def remove_path(path: Path) -> None:
    """Delete a file or a folder tree; missing is fine (another process may have won)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def fsync_path(path: Path) -> None:
    """Flush a file (or every file under a folder) so a rename cannot expose unwritten data."""
    paths = [path] if path.is_file() else [p for p in sorted(path.rglob("*")) if p.is_file()]
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(_HASH_BLOCK)
        view = memoryview(buffer)
        while True:
            n = handle.readinto(buffer)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()


def list_data_files(data_path: Path) -> list[tuple[str, Path]]:
    """Every file of a shard as (name relative to the shard, path), in a fixed order.

    An HDF5 shard is one file (relative name ""); a Zarr shard is every file in its group
    folder, sorted, so checksums are deterministic whatever order the OS lists them in.
    """
    if data_path.is_file():
        return [("", data_path)]
    files = [p for p in data_path.rglob("*") if p.is_file()]
    return sorted(((p.relative_to(data_path).as_posix(), p) for p in files), key=lambda item: item[0])


def checksum_files(data_path: Path) -> dict[str, dict[str, Any]]:
    """{relative name: {"bytes", "sha256"}} for every file of a shard."""
    return {rel: {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for rel, p in list_data_files(data_path)}


def combined_sha256(files: dict[str, dict[str, Any]]) -> str:
    """One checksum for a whole shard: the file's own for HDF5, a hash of the sorted
    (name, checksum) list for a Zarr folder."""
    if list(files) == [""]:
        return files[""]["sha256"]
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(f"{rel}\0{files[rel]['sha256']}\n".encode())
    return digest.hexdigest()


def wipe_cache(root: Path) -> None:
    """Remove everything emo put in the cache folder (and nothing else)."""
    for child in list(root.iterdir()):
        name = child.name
        ours = name in (CACHE_FILE, MANIFEST_FILE, CONFIG_FILE, SETS_DIR) or name.startswith(
            (f".{CACHE_FILE}", f".{MANIFEST_FILE}", f".{CONFIG_FILE}")
        )
        if child.is_dir() and not name.startswith(".") and name != SETS_DIR:
            entries = list(child.iterdir())
            ours = all(
                parse_shard_name(p.name)
                or parse_temp_name(p.name)
                or p.name == SPLIT_FILE
                or p.name.startswith(f".{SPLIT_FILE}")
                for p in entries
            )
        if ours:
            remove_path(child)


def clean_dead_temps(root: Path) -> None:
    """Delete temporaries left by killed processes on this machine; never a live one."""
    host = this_host()
    folders = [root] + [
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and not is_launcher_dir(p) and p.name != SETS_DIR
    ]
    sets_root = root / SETS_DIR
    if sets_root.is_dir():
        folders += [p for p in sets_root.glob("*/*") if p.is_dir()]
        folders += [p for p in sets_root.glob("*/*/*") if p.is_dir() and not p.name.startswith(".")]
    for folder in folders:
        for child in folder.iterdir():
            parsed = parse_any_temp(child.name)
            if parsed and parsed[1] == host and not pid_alive(parsed[2]):
                remove_path(child)
