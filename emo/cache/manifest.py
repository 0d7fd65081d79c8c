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
from emo.cache.schema import SCHEMA_VERSION
from emo.errors import CacheError, UsageError
from emo.labels import MODALITIES


class MissingCacheError(CacheError, UsageError):
    """The cache path the user gave does not exist (exit 2, like any path that is not there)."""


class NotACacheError(CacheError, UsageError):
    """The path the user gave as a cache is a folder, but not a cache (exit 2: the wrong path was given)."""


class OldCacheError(CacheError):
    """A cache written by an older emo (cache version 1), which `emo cache upgrade` converts."""


def upgrade_hint(root: Path) -> str:
    return (
        f"Feature cache {root} was written by an older emo (cache version 1); convert it once with "
        f"`emo cache upgrade {root}` (nothing is re-extracted)."
    )


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
    if version < SCHEMA_VERSION:
        raise OldCacheError(upgrade_hint(root))
    if version > SCHEMA_VERSION:
        raise CacheError(
            f"Feature cache {root} uses cache schema {version}, newer than this emo understands "
            f"({SCHEMA_VERSION}); upgrade emo."
        )
    return meta


def existing_cache_meta(root: Path) -> dict[str, Any] | None:
    """cache.json of the cache at `root`; None where there is no cache yet (a missing or
    empty folder, or one holding only launcher files); one sentence for any other folder."""
    if not root.exists():
        return None
    if (root / layout.CACHE_FILE).exists():
        return read_cache_meta(root)
    leftovers = [
        p.name for p in root.iterdir() if not p.name.startswith(".") and p.name not in layout.LAUNCHER_DIRS
    ]
    if leftovers:
        raise CacheError(
            f"{root} is not empty and is not an emo feature cache; choose a new or empty folder with --cache."
        )
    return None


def list_splits(root: Path) -> list[str]:
    """Folders of `root` that hold a split plan, a sidecar or a shard."""
    splits = []
    for child in sorted(Path(root).iterdir()):
        if (
            not child.is_dir() or child.name.startswith(".") or child.name in layout.LAUNCHER_DIRS
            or child.name == layout.SETS_DIR
        ):
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


def read_plan(root: Path, split: str) -> dict[str, Any]:
    """The split's plan (split.json: expected rows and shards), {} when none is written yet."""
    path = Path(root) / split / layout.SPLIT_FILE
    if not path.is_file():
        return {}
    try:
        plan = layout.read_json(path)
    except (OSError, ValueError):
        return {}
    return plan if isinstance(plan, dict) else {}


def scan_split(root: Path, split: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Everything known about one split's row table: finished shards, gaps, counts."""
    return scan_part(Path(root) / split, split, meta["format"], meta["fingerprint_digest"], read_plan(root, split))


def scan_set_split(root: Path, set_meta: dict[str, Any], split: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Everything known about one feature set in one split; its plan is the row table's."""
    folder = layout.set_dir(root, set_meta["name"]) / split
    return scan_part(folder, split, meta["format"], set_meta["fingerprint_digest"], read_plan(root, split))


def misaligned_shards(row_shards: list[dict[str, Any]], set_shards: list[dict[str, Any]]) -> list[int]:
    """Indices of a set's finished shards that do not hold exactly the rows of the row
    table's shard of the same index (row count and first/last key, from the sidecars)."""
    by_index = {s["shard_index"]: s for s in row_shards}
    bad = []
    for shard in set_shards:
        rows = by_index.get(shard["shard_index"])
        same = rows is not None and int(rows["rows"]) == int(shard["rows"]) and (
            shard.get("first_key") in (None, rows.get("first_key")) and shard.get("last_key") in (None, rows.get("last_key"))
        )
        if not same:
            bad.append(int(shard["shard_index"]))
    return bad


def list_sets(root: Path) -> dict[str, dict[str, Any]]:
    """set.json of every feature set in the cache, by full name, oldest first."""
    found = []
    base = Path(root) / layout.SETS_DIR
    for path in sorted(base.glob(f"*/*/{layout.SET_FILE}")) if base.is_dir() else []:
        try:
            meta = layout.read_json(path)
        except (OSError, ValueError):
            continue  # written atomically: unreadable means damaged, and `verify` says so
        if isinstance(meta, dict) and meta.get("name") == f"{path.parent.parent.name}/{path.parent.name}":
            found.append(meta)
    found.sort(key=lambda m: (str(m.get("created", "")), m["name"]))
    return {m["name"]: m for m in found}


def default_sets(sets: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each modality's default set: the first one extracted (the seed design's, in a cache
    made by a plain `emo extract`)."""
    defaults: dict[str, str] = {}
    for name, meta in sets.items():
        defaults.setdefault(str(meta.get("modality")), name)
    return defaults


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
            merged[key]["modality"] = "+".join([m for m in MODALITIES if m in known] +
                                               [m for m in known if m not in MODALITIES])  # fmt: skip
        else:
            merged[key] = dict(f)
    return list(merged.values())


def build_manifest(root: Path) -> dict[str, Any]:
    """The manifest dict: cache.json plus a summary of every split, set and shard."""
    meta = read_cache_meta(root)
    names = list_splits(root)
    sets = list_sets(root)
    manifest_splits = {name: _part_summary(scan_split(root, name, meta), name) for name in names}
    manifest_sets = {}
    for set_name, set_meta in sets.items():
        prefix = f"{layout.SETS_DIR}/{set_name}"
        parts = {split: scan_set_split(root, set_meta, split, meta) for split in names}
        manifest_sets[set_name] = {
            **{k: set_meta.get(k) for k in ("modality", "kind", "dim", "encoder", "fingerprint_digest", "created")},
            "splits": {
                split: {**_part_summary(part, f"{prefix}/{split}"), "present": part["present"]}
                for split, part in parts.items()
                if part["shards"] or part["unfinished_shards"]
            },
        }
    for name, summary in manifest_splits.items():
        # The split's failures: every set's records, one per clip and reason.
        items = merge_failures([f for m in manifest_sets.values() if name in m["splits"]
                                for f in m["splits"][name]["failures"]["items"]])  # fmt: skip
        summary["failures"] = failure_summary(items)
    every = list(manifest_splits.values()) + [s for m in manifest_sets.values() for s in m["splits"].values()]
    return {
        **meta,
        "updated": now_iso(),
        "splits": manifest_splits,
        "sets": manifest_sets,
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
