"""Changing a cache in place: removing a feature set, upgrading a version-1 cache.

Both are whole-folder operations done so that an interruption leaves either the old
cache or the new one, never a mix: a set is renamed away before it is deleted, and an
upgrade builds the version-2 cache beside the old one and swaps the folders at the end.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from emo import atomic
from emo.cache import layout, locks, storage
from emo.cache.launches import is_launcher_dir
from emo.cache.legacy import V1_COLUMNS, split_v1_columns
from emo.cache.manifest import list_splits, read_cache_meta, read_sidecar, scan_sets, write_manifest
from emo.cache.metadata import load_sealed
from emo.cache.repair import seal_old_metadata
from emo.errors import CacheError, UsageError


def remove_set(root: str | Path, name: str) -> dict[str, Any]:
    """Delete feature set `name` (full name, or a short name that is unique) from the cache;
    returns its set.json. Other sets and the row table are not touched. A damaged set
    (`emo.cache.metadata`) can be removed too, instead of being repaired."""
    root = Path(root)
    read_cache_meta(root)
    sound, damaged = scan_sets(root)
    sets = {**sound, **{n: {"name": n, "encoder": "damaged"} for n in damaged}}
    full = resolve_set_name(root, sets, name)
    folder = layout.set_dir(root, full)
    # Held as a writer of that set: a run writing it now is named instead of losing its files.
    with locks.acquire(root, {full: "emo cache rm"}, locks.Scope(tuple(list_splits(root)))):
        trash = folder.parent / atomic.temp_name(folder.name + ".removed")
        folder.rename(trash)
        layout.remove_path(trash)
        if not any(folder.parent.iterdir()):
            folder.parent.rmdir()
        write_manifest(root)
    return sets[full]


def resolve_set_name(root: Path, sets: dict[str, Any], name: str) -> str:
    """A full set name from what a user typed (`audio/mel` or `mel`), or one sentence."""
    if name in sets:
        return name
    matches = [full for full in sets if full.partition("/")[2] == name]
    if len(matches) == 1:
        return matches[0]
    held = ", ".join(sets) or "none"
    if len(matches) > 1:
        raise UsageError(
            f"Several feature sets in {root} are called {name} ({', '.join(matches)}); give the full name."
        )
    raise UsageError(f"Feature cache {root} has no feature set {name}; it holds: {held}.")


@dataclass
class UpgradeReport:
    root: Path
    already: bool = False  # the cache was version 2 already: nothing was converted
    sealed: list[str] = field(default_factory=list)  # metadata files of an older emo given their digest
    splits: dict[str, int] = field(default_factory=dict)  # rows per split
    sets: list[str] = field(default_factory=list)
    skipped_shards: list[str] = field(default_factory=list)  # unfinished version-1 shards (re-extract them)


def upgrade_cache(root: str | Path, on_shard: Callable[[str], None] | None = None) -> UpgradeReport:
    """Convert a version-1 cache into a version-2 one (row table + the seed's sets), in place.

    Nothing is re-extracted: every finished shard's columns are split into the row table and
    one set per modality it held. The new cache is built in a hidden folder beside the old
    one, then the two are swapped, so an interrupted upgrade leaves the old cache as it was.
    A version-2 cache written before metadata was sealed gets its digests instead
    (`emo.cache.metadata`: such files load as they are, and `emo cache verify` warns).
    """
    from emo.cache.writer import CacheWriter

    root = Path(root)
    meta_path = root / layout.CACHE_FILE
    if not meta_path.is_file():
        read_cache_meta(root)  # the one-sentence refusal for anything that is not a cache
    meta, _, _ = load_sealed(meta_path)
    report = UpgradeReport(root=root)
    if meta is None or meta.get("schema_version") != 1:
        read_cache_meta(root)  # a newer schema, or damage, gets its own sentence
        report.already = True
        report.sealed = seal_old_metadata(root)
        return report
    fmt, digest, fingerprint = meta["format"], meta["fingerprint_digest"], meta.get("fingerprint", {})
    building = root.parent / atomic.temp_name(root.name + ".upgrade")
    layout.remove_path(building)
    writer = CacheWriter(building, fmt=fmt, config=_old_config(root))
    try:
        for split_dir in sorted(p for p in root.iterdir() if _is_v1_split(p)):
            report.splits[split_dir.name] = _upgrade_split(
                split_dir, writer, fmt, digest, fingerprint, report, on_shard
            )
    except BaseException:
        layout.remove_path(building)
        raise
    report.sets = sorted(writer.sets)
    for folder in [p for p in root.iterdir() if p.is_dir() and is_launcher_dir(p)]:
        os.replace(folder, building / folder.name)
    old = root.parent / atomic.temp_name(root.name + ".v1")
    os.replace(root, old)
    os.replace(building, root)
    layout.remove_path(old)
    write_manifest(root)
    return report


def _is_v1_split(path: Path) -> bool:
    return (
        path.is_dir()
        and not path.name.startswith(".")
        and not is_launcher_dir(path)
        and ((path / layout.SPLIT_FILE).exists() or any(layout.parse_shard_name(p.name) for p in path.iterdir()))
    )


def _old_config(root: Path) -> dict[str, Any] | None:
    path = root / layout.CONFIG_FILE
    if not path.is_file():
        return None
    from emo.config import read_toml

    try:
        data = read_toml(path)
    except Exception:  # noqa: BLE001 - an unreadable old config is not worth failing the upgrade for
        return None
    return data.get("extract", data)


def _upgrade_split(split_dir, writer, fmt, digest, fingerprint, report, on_shard) -> int:
    split = split_dir.name
    indices = sorted({p[0] for p in (layout.parse_shard_name(c.name) for c in split_dir.iterdir()) if p})
    rows = 0
    for index in indices:
        sidecar = read_sidecar(split_dir, index)
        data = split_dir / (sidecar or {}).get("file", "")
        if not sidecar or sidecar.get("fingerprint_digest") != digest or not data.exists():
            report.skipped_shards.append(f"{split}/{layout.shard_stem(index)}")
            continue
        names = [name for name in V1_COLUMNS if name in sidecar.get("arrays", {})]
        columns = {name: V1_COLUMNS[name] for name in names}
        outputs: dict[str, Any] = {}
        for name in names:
            shape = sidecar["arrays"][name]["shape"]
            outputs[name] = [] if V1_COLUMNS[name].dtype == "str" else _empty(shape, V1_COLUMNS[name].dtype)
        try:
            storage.read_into(data, fmt, columns, outputs, 0, 0)
        except Exception as error:  # a damaged old shard: say which, keep the old cache
            raise CacheError(
                f"Shard {split}/{sidecar['file']} of {split_dir.parent} cannot be read ({type(error).__name__}); "
                "run `emo cache verify` on it and re-extract that split before upgrading."
            ) from None
        row_columns, sets = split_v1_columns(outputs, fingerprint, sidecar.get("failures", []))
        for spec, _, _ in sets:
            if spec.name not in writer.sets:
                writer.add_set(spec)
        writer.write_rows(split, index, row_columns, sidecar.get("stats"))
        for spec, arrays, failures in sets:
            writer.write_set(split, spec.name, index, arrays, failures, sidecar.get("stats"))
        rows += int(sidecar["rows"])
        if on_shard is not None:
            on_shard(f"{split}/{sidecar['file']}")
    plan = layout.read_json(split_dir / layout.SPLIT_FILE) if (split_dir / layout.SPLIT_FILE).is_file() else {}
    if plan:
        writer.finalize(
            split,
            total_rows=plan.get("total_rows"),
            ignored_videos=plan.get("ignored_videos", 0),
            extra=plan.get("extra"),
            expected_shards=plan.get("expected_shards"),
        )
    return rows


def _empty(shape: list[int], dtype: str):
    import numpy as np

    return np.empty(tuple(shape), dtype=np.dtype(dtype))
