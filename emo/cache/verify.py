"""Checking a cache byte for byte against the checksums its writers recorded.

HDF5 and Zarr will often open a file with a flipped byte in a data chunk and return
wrong numbers without complaint, so the SHA-256 in each shard's sidecar (computed from the
bytes before they were renamed into place) is the source of truth, not whether the file
opens.

The metadata readers trust is checked too (`emo.cache.metadata`): a damaged cache.json
stops verification with its own sentence, and each damaged split.json or set.json is one
problem naming the file and the `emo extract` that rewrites it - and a damaged set's shards
are still checksummed from their sidecars, so nothing in the cache goes unchecked. Files
without a digest (written before the seal) are not problems: `unsealed_files` lists them
for a warning. manifest.json is derived and never read back, so it is not checked (see
`emo.cache.manifest`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from emo.cache import layout, storage
from emo.cache.manifest import (
    list_splits,
    misaligned_shards,
    read_cache_meta,
    read_sidecar,
    scan_set_split,
    scan_sets,
    scan_split,
)
from emo.cache.schema import ROW_COLUMNS


def check_shard(split_dir: Path, sidecar: dict[str, Any]) -> str | None:
    """One sentence naming what is wrong with a finished shard, or None if every file's
    size and SHA-256 match its sidecar and no file was added or removed."""
    data_path = split_dir / sidecar["file"]
    label = _label(split_dir, sidecar["file"])
    recorded = sidecar.get("files", {})
    found = {rel: path for rel, path in layout.list_data_files(data_path)} if data_path.exists() else {}
    missing = sorted(set(recorded) - set(found))
    if missing:
        return f"Shard {label} is missing {_names(missing, data_path)}"
    added = sorted(set(found) - set(recorded))
    if added:
        return f"Shard {label} has unexpected files {', '.join(added[:3])}"
    for rel, entry in recorded.items():
        path = found[rel]
        if path.stat().st_size != entry["bytes"]:
            return f"Shard {label} has the wrong size ({_names([rel], data_path)})"
        if layout.sha256_file(path) != entry["sha256"]:
            return f"Shard {label} fails its checksum ({_names([rel], data_path)} changed since it was written)"
    return None


def _names(rels: list[str], data_path: Path) -> str:
    return ", ".join(rel or data_path.name for rel in rels[:3])


def _label(folder: Path, file: str) -> str:
    """`train/shard-00000.h5`, or `audio/mel/train/shard-00000.h5` for a set's shard."""
    parts = folder.parts
    if len(parts) >= 4 and parts[-4] == layout.SETS_DIR:
        return "/".join(parts[-3:]) + f"/{file}"
    return f"{folder.name}/{file}"


def verify_cache(root: str | Path, on_shard: Callable[[str, int], None] | None = None) -> list[str]:
    """Recompute every finished shard's checksums (row tables and every feature set);
    return one sentence per problem found.

    Also reports shards that never finished (data without a sidecar) and gaps in a split
    whose plan says how many shards it should have. `on_shard(label, bytes)` is called
    after each shard is checked (for progress bars).
    """
    root = Path(root)
    meta = read_cache_meta(root)
    sets, damaged = scan_sets(root)
    splits = list_splits(root)
    problems = [f"{scan['damage'].line}." for scan in (scan_split(root, s, meta) for s in splits) if scan["damage"]]
    for name, damage in damaged.items():
        problems.append(f"{damage.line}.")
        for split in splits:
            problems += _damaged_set_shards(layout.set_dir(root, name) / split, on_shard)
    for split in splits:
        parts = [("", root / split, scan_split(root, split, meta))]
        for name, set_meta in sets.items():
            scan = scan_set_split(root, set_meta, split, meta)
            if scan["shards"] or scan["unfinished_shards"]:
                parts.append((name, layout.set_dir(root, name) / split, scan))
        rows_missing = set(parts[0][2]["missing_shards"])
        for set_name, folder, info in parts:
            # A shard missing from the row table is missing from every set too: say it once.
            skip = rows_missing if set_name else set()
            problems += _part_problems(split, set_name, folder, info, on_shard, skip)
            for index in misaligned_shards(parts[0][2]["shards"], info["shards"]) if set_name else []:
                problems.append(
                    f"Feature set {set_name} of split '{split}' does not match the row table at "
                    f"{layout.shard_stem(index)}; re-extract it with --overwrite."
                )
        intact = [s for s in parts[0][2]["shards"] if check_shard(root / split, s) is None]
        duplicate = _first_duplicate_key(root / split, meta["format"], intact)
        if duplicate:
            problems.append(duplicate)
    return problems


def _damaged_set_shards(folder: Path, on_shard) -> list[str]:
    """Checksums of a damaged set's shards, from their sidecars alone (its set.json cannot say more)."""
    problems = []
    indices = (
        sorted({p[0] for p in (layout.parse_shard_name(c.name) for c in folder.iterdir()) if p})
        if folder.is_dir()
        else []
    )
    for index in indices:
        sidecar = read_sidecar(folder, index)
        if not sidecar or not sidecar.get("file") or not isinstance(sidecar.get("files"), dict):
            problems.append(f"Shard {_label(folder, layout.shard_stem(index))} has no readable sidecar.")
            continue
        problem = check_shard(folder, sidecar)
        if problem:
            problems.append(problem + ".")
        if on_shard is not None:
            on_shard(_label(folder, sidecar["file"]), sum(e.get("bytes", 0) for e in sidecar["files"].values()))
    return problems


def _part_problems(split, set_name, folder, info, on_shard, skip: set[int] = frozenset()) -> list[str]:
    problems = []
    what = f"Split '{split}'" if not set_name else f"Feature set {set_name} of split '{split}'"
    for unfinished in info["unfinished_shards"]:
        problems.append(f"Shard {_label(folder, layout.shard_stem(unfinished['index']))} {unfinished['problem']}.")
    if not info["planned"] and info["shards"] and not set_name and not info.get("damage"):  # said as damage
        problems.append(
            f"{what} was never finalized (its extraction was interrupted or is still running); "
            f"{layout.finish_hint(split)}."
        )
    unfinished_indices = {u["index"] for u in info["unfinished_shards"]}
    missing = [i for i in info["missing_shards"] if i not in unfinished_indices and i not in skip]
    if missing:
        listed = ", ".join(layout.shard_stem(i) for i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        problems.append(f"{what} is missing {listed}{more}; {layout.finish_hint(split)}.")
    elif info["expected_rows"] is not None and info["rows"] != int(info["expected_rows"]) and not (skip and set_name):
        problems.append(f"{what} holds {info['rows']} rows but its plan expects {info['expected_rows']}.")
    for sidecar in info["shards"]:
        problem = check_shard(folder, sidecar)
        if problem:
            problems.append(problem + ".")
        if on_shard is not None:
            on_shard(_label(folder, sidecar["file"]), sum(e["bytes"] for e in sidecar.get("files", {}).values()))
    return problems


def _first_duplicate_key(split_dir: Path, fmt: str, sidecars: list[dict[str, Any]]) -> str | None:
    """A sentence naming a (dialogue, utterance) key stored twice, e.g. after shards were
    written with different shard sizes; None when every key is unique."""
    if not sidecars:
        return None
    total = sum(int(s["rows"]) for s in sidecars)
    ids = {"dialogue_id": np.empty(total, np.int32), "utterance_id": np.empty(total, np.int32)}
    owner = np.repeat(np.arange(len(sidecars)), [int(s["rows"]) for s in sidecars])
    start = 0
    for sidecar in sidecars:
        columns = {name: ROW_COLUMNS[name] for name in ids}
        storage.read_into(split_dir / sidecar["file"], fmt, columns, ids, start, 0)
        start += int(sidecar["rows"])
    keys = ids["dialogue_id"].astype(np.int64) << 32 | ids["utterance_id"].astype(np.int64) & 0xFFFFFFFF
    order = np.argsort(keys, kind="stable")
    same = np.nonzero(keys[order][1:] == keys[order][:-1])[0]
    if not same.size:
        return None
    a, b = order[same[0]], order[same[0] + 1]
    where = sorted({sidecars[owner[a]]["file"], sidecars[owner[b]]["file"]})
    return (
        f"Split '{split_dir.name}' holds {same.size} duplicated rows, e.g. dialogue {ids['dialogue_id'][a]} "
        f"utterance {ids['utterance_id'][a]} in {' and '.join(where)} (shards written with different "
        "--shard-size values?); re-extract it with --overwrite."
    )
