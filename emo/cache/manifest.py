"""The cache's state, derived from what is on disk: cache.json, split plans, set.json files and sidecars.

`manifest.json` is derived, never trusted: it is rebuilt from those files whenever a
writer finalizes a split (and by `emo cache rm` and `upgrade`), so N processes that each
rewrite it can never lose a shard. The last rewrite may lag the disk while another
process is still writing, which is why no reader (`open_cache`, `load_split`, `verify`,
`status`) reads it back, and why `emo cache verify` does not compare it with a fresh
build: a lagging manifest is not damage, and whatever it says is never believed. The
files readers do trust are sealed and checked by `emo.cache.metadata`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from emo import atomic
from emo.cache import layout
from emo.cache.metadata import (  # noqa: F401 - re-exported: the readers' and writer's one place to import from
    DamagedMetadataError,
    MissingCacheError,
    NotACacheError,
    OldCacheError,
    default_sets,
    existing_cache_meta,
    list_sets,
    load_sealed,
    now_iso,
    plan_and_damage,
    read_cache_meta,
    read_plan,
    scan_sets,
    upgrade_hint,
)
from emo.cache.metadata import split_names as list_splits
from emo.cache.schema import SCHEMA_VERSION
from emo.labels import MODALITIES


def read_sidecar(split_dir: Path, index: int) -> dict[str, Any] | None:
    """A shard's sidecar, or None when it is missing, unreadable or fails its digest: the
    sidecar is what makes a shard count as finished, so one edited or damaged after emo
    wrote it (a changed `present` or `failures` record) makes the shard unfinished, to be
    redone by the same extract. Sidecars written before they were sealed are accepted."""
    data, problem, _ = load_sealed(split_dir / layout.sidecar_name(index))
    return data if problem is None and isinstance(data, dict) else None


_SIDECAR_KEYS = {
    "schema_version",
    "format",
    "fingerprint_digest",
    "shard_index",
    "file",
    "rows",
    "arrays",
    "files",
    "sha256",
}


def sidecar_problem(split_dir: Path, sidecar: dict[str, Any] | None, fmt: str, digest: str) -> str | None:
    """Why a shard is not (validly) finished, or None if its sidecar matches its data.

    Cheap: compares file names and sizes, never reads the data (that is `verify`'s job).
    """
    if sidecar is None:
        return "has no readable sidecar (its write was interrupted, or it was damaged or edited afterwards)"
    if not _SIDECAR_KEYS <= set(sidecar):
        return "has a damaged sidecar"
    if sidecar.get("schema_version") != SCHEMA_VERSION or sidecar.get("format") != fmt:
        return "has a sidecar from another cache schema or format"
    if sidecar.get("fingerprint_digest") != digest:
        return "was written with a different fingerprint"
    data_path = split_dir / sidecar.get("file", "")
    if not sidecar.get("file") or not data_path.exists():
        return "has a sidecar but its data is missing"
    files = sidecar.get("files") or {}
    for rel, entry in files.items():
        path = data_path / rel if rel else data_path
        try:
            size = path.stat().st_size
        except OSError:
            return f"is missing its file {rel or data_path.name}"
        if size != entry.get("bytes"):
            return f"has {rel or data_path.name} of {size} bytes where the sidecar records {entry.get('bytes')}"
    return None


def scan_split(root: Path, split: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Everything known about one split's row table: finished shards, gaps, counts, and
    `damage` (an `emo.cache.metadata.Damage`) when its split.json cannot be trusted."""
    plan, damage = plan_and_damage(root, split)
    return {**scan_part(Path(root) / split, split, meta["format"], meta["fingerprint_digest"], plan), "damage": damage}


def scan_set_split(root: Path, set_meta: dict[str, Any], split: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Everything known about one feature set in one split; its plan is the row table's."""
    folder = layout.set_dir(root, set_meta["name"]) / split
    plan, damage = plan_and_damage(root, split)
    return {**scan_part(folder, split, meta["format"], set_meta["fingerprint_digest"], plan), "damage": damage}


def misaligned_shards(row_shards: list[dict[str, Any]], set_shards: list[dict[str, Any]]) -> list[int]:
    """Indices of a set's finished shards that do not hold exactly the rows of the row
    table's shard of the same index (row count and first/last key, from the sidecars)."""
    by_index = {s["shard_index"]: s for s in row_shards}
    bad = []
    for shard in set_shards:
        rows = by_index.get(shard["shard_index"])
        same = (
            rows is not None
            and int(rows["rows"]) == int(shard["rows"])
            and (
                shard.get("first_key") in (None, rows.get("first_key"))
                and shard.get("last_key") in (None, rows.get("last_key"))
            )
        )
        if not same:
            bad.append(int(shard["shard_index"]))
    return bad


def scan_part(folder: Path, split: str, fmt: str, digest: str, plan: dict[str, Any]) -> dict[str, Any]:
    """Finished shards, gaps and counts of one folder of shards (a row table or a set's)."""
    indices: set[int] = set()
    temps = []
    for child in folder.iterdir() if folder.is_dir() else []:
        parsed = layout.parse_shard_name(child.name)
        if parsed:
            indices.add(parsed[0])
        elif layout.parse_temp_name(child.name):
            temps.append(child.name)

    shards, unfinished = [], []
    for index in sorted(indices):
        sidecar = read_sidecar(folder, index)
        problem = sidecar_problem(folder, sidecar, fmt, digest)
        if problem is not None:
            unfinished.append({"index": index, "problem": problem})
            continue
        assert sidecar is not None
        shards.append(sidecar)

    rows = sum(int(s["rows"]) for s in shards)
    failures = [dict(f, shard=s["shard_index"]) for s in shards for f in s.get("failures", [])]
    expected_rows = plan.get("total_rows")
    expected_shards = plan.get("expected_shards")
    done = {s["shard_index"] for s in shards}
    if expected_shards is not None:
        missing = [i for i in range(int(expected_shards)) if i not in done]
    else:
        top = max(done) + 1 if done else 0
        missing = [i for i in range(top) if i not in done]
    # The plan (split.json) is written by `finalize`, after a process's last shard: without it
    # a split is still being extracted, or its extraction was killed, however many of its
    # shards happen to be contiguous - so it is never complete.
    planned = expected_rows is not None or expected_shards is not None
    complete = planned and bool(shards) and not missing and (expected_rows is None or rows == int(expected_rows))
    if expected_rows is not None and int(expected_rows) == 0 and not missing:
        complete = True
    column_specs = [s.get("arrays", {}) for s in shards]
    return {
        "name": split,
        "rows": rows,
        "expected_rows": expected_rows,
        "expected_shards": expected_shards,
        "complete": complete,
        "planned": planned,
        "missing_shards": missing,
        "unfinished_shards": unfinished,
        "temp_files": sorted(temps),
        "shards": shards,
        "bytes": sum(sum(e["bytes"] for e in s.get("files", {}).values()) for s in shards),
        "columns": column_specs[0] if column_specs else {},
        "present": sum(int(s.get("present", 0)) for s in shards),
        "failures": failures,
        "ignored_videos": int(plan.get("ignored_videos", 0) or 0),
        "stats": _sum_stats(shards),
        "plan": plan,
    }


def _sum_stats(shards: list[dict[str, Any]]) -> dict[str, float]:
    """Per-stage totals over shards (numeric stats only, e.g. seconds per stage)."""
    totals: dict[str, float] = {}
    for shard in shards:
        for key, value in (shard.get("stats") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                totals[key] = round(totals.get(key, 0.0) + value, 4)
    return totals


def merge_failures(failures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per clip and reason: a clip that failed to decode is recorded by every
    media set extracted from it."""
    merged: dict[tuple, dict[str, Any]] = {}
    for f in failures:
        key = (f.get("dialogue_id"), f.get("utterance_id"), f.get("reason"))
        if key in merged:
            known = [m for m in str(merged[key].get("modality", "")).split("+") if m]
            known += [m for m in str(f.get("modality", "")).split("+") if m and m not in known]
            # Modalities in their usual order; anything else a record names ("all") kept after them.
            merged[key]["modality"] = "+".join(
                [m for m in MODALITIES if m in known] + [m for m in known if m not in MODALITIES]
            )
        else:
            merged[key] = dict(f)
    return list(merged.values())


def build_manifest(root: Path) -> dict[str, Any]:
    """The manifest dict: cache.json plus a summary of every split, set and shard."""
    meta = read_cache_meta(root)
    names = list_splits(root)
    sets, damaged = scan_sets(root)
    scans = {name: scan_split(root, name, meta) for name in names}
    manifest_splits = {name: _part_summary(scan, name) for name, scan in scans.items()}
    manifest_sets = {}
    for set_name, set_meta in sets.items():
        prefix = f"{layout.SETS_DIR}/{set_name}"
        parts = {split: scan_set_split(root, set_meta, split, meta) for split in names}
        manifest_sets[set_name] = {
            **{k: set_meta.get(k) for k in ("modality", "kind", "dim", "encoder", "fingerprint_digest", "created")},
            **({"layers": set_meta["layers"]} if set_meta.get("layers") else {}),  # a layers set: which ones
            "splits": {
                split: {**_part_summary(part, f"{prefix}/{split}"), "present": part["present"]}
                for split, part in parts.items()
                if part["shards"] or part["unfinished_shards"]
            },
        }
    for name, summary in manifest_splits.items():
        # The split's failures: every set's records, one per clip and reason.
        items = merge_failures(
            [f for m in manifest_sets.values() if name in m["splits"] for f in m["splits"][name]["failures"]["items"]]
        )
        summary["failures"] = failure_summary(items)
    every = list(manifest_splits.values()) + [s for m in manifest_sets.values() for s in m["splits"].values()]
    return {
        **meta,
        "updated": now_iso(),
        "splits": manifest_splits,
        "sets": manifest_sets,
        # Metadata that cannot be trusted (emo.cache.metadata), by file: what `emo cache verify` reports.
        "damaged": {
            d.file: d.line for d in [s["damage"] for s in scans.values() if s["damage"]] + list(damaged.values())
        },
        "totals": {
            "rows": sum(s["rows"] for s in manifest_splits.values()),
            "sets": len(manifest_sets),
            "shards": sum(len(s["shards"]) for s in every),
            "bytes": sum(s["bytes"] for s in every),
            "failures": sum(s["failures"]["total"] for s in manifest_splits.values()),
            "ignored_videos": sum(s["ignored_videos"] for s in manifest_splits.values()),
        },
    }


def failure_summary(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "total": len(items),
        "by_reason": dict(Counter(str(f.get("reason", "unknown")) for f in items)),
        "by_modality": dict(Counter(str(f.get("modality", "all")) for f in items)),
        "items": items,
    }


def _part_summary(info: dict[str, Any], folder: str) -> dict[str, Any]:
    return {
        "rows": info["rows"],
        "expected_rows": info["expected_rows"],
        "expected_shards": info["expected_shards"],
        "complete": info["complete"],
        "missing_shards": info["missing_shards"],
        "ignored_videos": info["ignored_videos"],
        "extra": info["plan"].get("extra", {}),
        "bytes": info["bytes"],
        "stats": info["stats"],
        "failures": failure_summary(info["failures"]),
        "shards": [
            {
                "index": s["shard_index"],
                "file": f"{folder}/{s['file']}",
                "rows": s["rows"],
                "bytes": sum(e["bytes"] for e in s.get("files", {}).values()),
                "sha256": s["sha256"],
                "files": s.get("files", {}),
                "first_key": s.get("first_key"),
                "last_key": s.get("last_key"),
                "failures": len(s.get("failures", [])),
                "stats": s.get("stats", {}),
            }
            for s in info["shards"]
        ],
    }


def write_manifest(root: Path) -> dict[str, Any]:
    manifest = build_manifest(root)
    atomic.write_json(Path(root) / layout.MANIFEST_FILE, manifest, durable=True)
    return manifest
