"""The cache's state, derived from what is on disk: cache.json, split plans and sidecars.

Nothing here trusts `manifest.json`: it is rebuilt from the per-shard sidecars whenever a
writer finalizes a split, so N processes that each rewrite it can never lose a shard (the
last rewrite may be stale, but readers re-derive the state themselves from the sidecars,
which only ever grow).
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from pathlib import Path
from typing import Any

from emo import atomic
from emo.cache import layout
from emo.cache.schema import MODALITY_COLUMNS, SCHEMA_VERSION
from emo.errors import CacheError, UsageError


class MissingCacheError(CacheError, UsageError):
    """The cache path the user gave does not exist (exit 2, like any path that is not there)."""


class NotACacheError(CacheError, UsageError):
    """The path the user gave as a cache is a folder, but not a cache (exit 2: the wrong path was given)."""


def _annotation_csvs(root: Path) -> list[str]:
    """MELD annotation CSVs in `root` (or its train/dev/test sub-folders): a dataset folder, not a cache."""
    found = sorted(p.name for p in root.glob("*_sent_emo.csv"))
    return found or sorted(p.name for p in root.glob("*/*_sent_emo.csv"))


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def read_cache_meta(root: Path) -> dict[str, Any]:
    """cache.json of the cache at `root`, or one clear sentence saying why there is none."""
    root = Path(root)
    if not root.exists():
        raise MissingCacheError(f"Feature cache {root} does not exist; create it with `emo extract --cache {root}`.")
    if not root.is_dir():
        raise CacheError(f"Feature cache {root} is a file, not a cache folder.")
    meta_path = root / layout.CACHE_FILE
    if not meta_path.is_file():
        csvs = _annotation_csvs(root)
        if csvs:
            raise NotACacheError(
                f"{root} is a dataset folder (it holds {csvs[0]}), not an emo feature cache; extract it first "
                f"with `emo extract --split all --data-root {root} --cache CACHE` and pass that CACHE."
            )
        raise NotACacheError(
            f"{root} is not an emo feature cache (it has no {layout.CACHE_FILE}); "
            f"create one with `emo extract --cache {root}`."
        )
    try:
        meta = layout.read_json(meta_path)
    except (OSError, ValueError) as error:
        raise CacheError(f"{meta_path} is unreadable or not valid JSON ({error}).") from None
    version = meta.get("schema_version") if isinstance(meta, dict) else None
    if not isinstance(version, int) or meta.get("format") not in layout.FORMATS:
        raise CacheError(f"{meta_path} is not a valid emo cache description.")
    if version > SCHEMA_VERSION:
        raise CacheError(
            f"Feature cache {root} uses cache schema {version}, newer than this emo understands "
            f"({SCHEMA_VERSION}); upgrade emo."
        )
    return meta


def list_splits(root: Path) -> list[str]:
    """Folders of `root` that hold a split plan, a sidecar or a shard."""
    splits = []
    for child in sorted(Path(root).iterdir()):
        if not child.is_dir() or child.name.startswith(".") or child.name in layout.LAUNCHER_DIRS:
            continue
        if (child / layout.SPLIT_FILE).exists() or any(layout.parse_shard_name(p.name) for p in child.iterdir()):
            splits.append(child.name)
    return splits


def read_sidecar(split_dir: Path, index: int) -> dict[str, Any] | None:
    path = split_dir / layout.sidecar_name(index)
    try:
        data = layout.read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


_SIDECAR_KEYS = {"schema_version", "format", "fingerprint_digest", "shard_index", "file", "rows", "arrays", "files", "sha256"}


def sidecar_problem(split_dir: Path, sidecar: dict[str, Any] | None, fmt: str, digest: str) -> str | None:
    """Why a shard is not (validly) finished, or None if its sidecar matches its data.

    Cheap: compares file names and sizes, never reads the data (that is `verify`'s job).
    """
    if sidecar is None:
        return "has no readable sidecar (its write was interrupted)"
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
    """Everything known about one split: finished shards, gaps, counts, failures."""
    split_dir = Path(root) / split
    fmt, digest = meta["format"], meta["fingerprint_digest"]
    plan = {}
    if (split_dir / layout.SPLIT_FILE).is_file():
        try:
            plan = layout.read_json(split_dir / layout.SPLIT_FILE)
        except (OSError, ValueError):
            plan = {}
    indices: set[int] = set()
    temps = []
    for child in split_dir.iterdir() if split_dir.is_dir() else []:
        parsed = layout.parse_shard_name(child.name)
        if parsed:
            indices.add(parsed[0])
        elif layout.parse_temp_name(child.name):
            temps.append(child.name)

    shards, unfinished = [], []
    for index in sorted(indices):
        sidecar = read_sidecar(split_dir, index)
        problem = sidecar_problem(split_dir, sidecar, fmt, digest)
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
        "modalities": [m for m in MODALITY_COLUMNS if any(m in s.get("modalities", []) for s in shards)],
        "columns": column_specs[0] if column_specs else {},
        "failures": failures,
        "failures_by_reason": dict(Counter(str(f.get("reason", "unknown")) for f in failures)),
        "failures_by_modality": dict(Counter(str(f.get("modality", "all")) for f in failures)),
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


def build_manifest(root: Path) -> dict[str, Any]:
    """The manifest dict: cache.json plus a summary of every split and shard."""
    meta = read_cache_meta(root)
    splits = {name: scan_split(root, name, meta) for name in list_splits(root)}
    manifest_splits = {}
    for name, info in splits.items():
        manifest_splits[name] = {
            "rows": info["rows"],
            "expected_rows": info["expected_rows"],
            "expected_shards": info["expected_shards"],
            "complete": info["complete"],
            "missing_shards": info["missing_shards"],
            "modalities": info["modalities"],
            "ignored_videos": info["ignored_videos"],
            "extra": info["plan"].get("extra", {}),
            "bytes": info["bytes"],
            "stats": info["stats"],
            "failures": {
                "total": len(info["failures"]),
                "by_reason": info["failures_by_reason"],
                "by_modality": info["failures_by_modality"],
                "items": info["failures"],
            },
            "shards": [
                {
                    "index": s["shard_index"],
                    "file": f"{name}/{s['file']}",
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
    return {
        **meta,
        "updated": now_iso(),
        "splits": manifest_splits,
        "totals": {
            "rows": sum(s["rows"] for s in manifest_splits.values()),
            "shards": sum(len(s["shards"]) for s in manifest_splits.values()),
            "bytes": sum(s["bytes"] for s in manifest_splits.values()),
            "failures": sum(s["failures"]["total"] for s in manifest_splits.values()),
            "ignored_videos": sum(s["ignored_videos"] for s in manifest_splits.values()),
        },
    }


def write_manifest(root: Path) -> dict[str, Any]:
    manifest = build_manifest(root)
    atomic.write_json(Path(root) / layout.MANIFEST_FILE, manifest, durable=True)
    return manifest
