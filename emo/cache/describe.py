"""Describing a feature cache without reading any array: `open_cache`.

What `emo cache info`, the extract planner and the trainer's checks need to know - splits,
shards, feature sets, rows present, failures, sizes - all comes from cache.json, the
set.json files and the sidecars. Loading arrays is `emo.cache.load.load_split`.

Damaged metadata is described, not hidden (`emo.cache.metadata`): a set whose set.json
cannot be trusted is in `CacheInfo.damaged_sets` (never simply absent, so no caller can
mistake it for a set that was never extracted and fall back to another), and a split
whose split.json cannot be trusted has its `damage`. A damaged cache.json is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emo.cache import layout
from emo.cache.manifest import (
    default_sets,
    failure_summary,
    list_splits,
    merge_failures,
    read_cache_meta,
    scan_set_split,
    scan_sets,
    scan_split,
)
from emo.cache.metadata import Damage
from emo.cache.sets import SetSpec, spec_from_meta
from emo.errors import CacheError, UsageError
from emo.labels import MODALITIES


@dataclass
class ShardInfo:
    index: int
    path: Path
    rows: int
    bytes: int
    sha256: str
    failures: int
    first_key: tuple[int, int] | None
    last_key: tuple[int, int] | None
    rows_sha256: str | None = None  # digest of the shard's ids, labels and speakers (emo.cache.digests)
    texts_sha256: str | None = None  # digest of its utterance texts; None when it holds none


@dataclass
class SplitInfo:
    name: str
    rows: int
    expected_rows: int | None
    expected_shards: int | None
    complete: bool
    missing_shards: list[int]
    unfinished_shards: list[dict[str, Any]]
    modalities: tuple[str, ...]
    shards: list[ShardInfo]
    bytes: int
    failures: list[dict[str, Any]]
    failures_by_reason: dict[str, int]
    failures_by_modality: dict[str, int]
    ignored_videos: int
    stats: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    damage: Damage | None = None  # its split.json cannot be trusted (the split then counts as incomplete)


@dataclass
class SetSplitInfo:
    """One feature set in one split."""

    rows: int
    shards: int  # finished shards
    present: int  # rows that have this set's features
    complete: bool
    bytes: int
    missing_shards: list[int]
    unfinished_shards: list[dict[str, Any]]
    failures: list[dict[str, Any]]


@dataclass
class SetInfo:
    """A feature set as `emo cache info` lists it (from set.json and the sidecars)."""

    name: str
    modality: str
    kind: str
    dim: int
    encoder: str
    fingerprint: dict[str, Any]
    digest: str
    created: str
    meta: dict[str, Any]
    splits: dict[str, SetSplitInfo]

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.splits.values())

    @property
    def spec(self) -> SetSpec:
        return spec_from_meta(self.meta)

    @property
    def layers(self) -> tuple[int, ...]:
        """A layers set's hidden-state indices (L of them); () for every other kind."""
        return tuple(int(i) for i in self.meta.get("layers") or ())

    @property
    def shape(self) -> str:
        """One row's size for people: `D`, or `L x D` for a layers set."""
        return f"{len(self.layers)} x {self.dim}" if self.layers else str(self.dim)


@dataclass
class CacheInfo:
    root: Path
    format: str
    schema_version: int
    fingerprint: dict[str, Any]
    digest: str
    emo_version: str
    created: str
    splits: dict[str, SplitInfo]
    config_path: Path | None
    sets: dict[str, SetInfo] = field(default_factory=dict)
    damaged_sets: dict[str, Damage] = field(default_factory=dict)  # set folders whose set.json cannot be trusted

    @property
    def bytes(self) -> int:
        """Size on disk of every finished shard (what `du` would roughly say)."""
        return sum(s.bytes for s in self.splits.values()) + sum(s.bytes for s in self.sets.values())

    @property
    def damage(self) -> list[Damage]:
        """Every damaged split.json and set.json (a damaged cache.json is refused by `open_cache`)."""
        return [s.damage for s in self.splits.values() if s.damage] + list(self.damaged_sets.values())

    def default_sets(self) -> dict[str, str]:
        """Each modality's default set (the first one extracted), by modality."""
        return default_sets({name: {"modality": info.modality} for name, info in self.sets.items()})


class UnknownSplitError(CacheError, UsageError):
    """The user asked for a split the cache does not hold (exit 2, like a usage error)."""


def _split_info(root: Path, raw: dict[str, Any], sets: dict[str, SetInfo]) -> SplitInfo:
    here = [(info, info.splits[raw["name"]]) for info in sets.values() if raw["name"] in info.splits]
    modalities = tuple(m for m in MODALITIES if any(i.modality == m and part.complete for i, part in here))
    failures = merge_failures([f for _, part in here for f in part.failures])
    summary = failure_summary(failures)
    return SplitInfo(
        name=raw["name"],
        rows=raw["rows"],
        expected_rows=raw["expected_rows"],
        expected_shards=raw["expected_shards"],
        complete=raw["complete"],
        missing_shards=raw["missing_shards"],
        unfinished_shards=raw["unfinished_shards"],
        modalities=modalities,
        shards=[
            ShardInfo(
                index=s["shard_index"],
                path=root / raw["name"] / s["file"],
                rows=s["rows"],
                bytes=sum(e["bytes"] for e in s.get("files", {}).values()),
                sha256=s["sha256"],
                failures=len(s.get("failures", [])),
                first_key=tuple(s["first_key"]) if s.get("first_key") else None,
                last_key=tuple(s["last_key"]) if s.get("last_key") else None,
                rows_sha256=s.get("rows_sha256"),
                texts_sha256=s.get("texts_sha256"),
            )
            for s in raw["shards"]
        ],
        bytes=raw["bytes"],
        failures=failures,
        failures_by_reason=summary["by_reason"],
        failures_by_modality=summary["by_modality"],
        ignored_videos=raw["ignored_videos"],
        stats=raw["stats"],
        extra=raw["plan"].get("extra", {}),
        damage=raw.get("damage"),
    )


def set_config_path(root: str | Path, name: str) -> Path:
    """The extract config that made feature set `name` (its `config.toml`), which `emo
    predict` rebuilds the set's encoder from."""
    return layout.set_dir(Path(root), name) / layout.CONFIG_FILE


def _set_info(root: Path, set_meta: dict[str, Any], splits: list[str], meta: dict[str, Any]) -> SetInfo:
    parts = {}
    for split in splits:
        raw = scan_set_split(root, set_meta, split, meta)
        if not raw["shards"] and not raw["unfinished_shards"]:
            continue
        parts[split] = SetSplitInfo(
            rows=raw["rows"],
            shards=len(raw["shards"]),
            present=raw["present"],
            complete=raw["complete"],
            bytes=raw["bytes"],
            missing_shards=raw["missing_shards"],
            unfinished_shards=raw["unfinished_shards"],
            failures=raw["failures"],
        )
    return SetInfo(
        name=set_meta["name"],
        modality=str(set_meta.get("modality")),
        kind=str(set_meta.get("kind")),
        dim=int(set_meta.get("dim", 0)),
        encoder=str(set_meta.get("encoder", "")),
        fingerprint=set_meta.get("fingerprint", {}),
        digest=str(set_meta.get("fingerprint_digest", "")),
        created=str(set_meta.get("created", "")),
        meta=set_meta,
        splits=parts,
    )


def open_cache(root: str | Path) -> CacheInfo:
    """Describe the cache at `root` from its cache.json, set.json files and sidecars (reads no arrays)."""
    root = Path(root)
    meta = read_cache_meta(root)
    names = list_splits(root)
    sound, damaged = scan_sets(root)
    sets = {name: _set_info(root, m, names, meta) for name, m in sound.items()}
    splits = {name: _split_info(root, scan_split(root, name, meta), sets) for name in names}
    config = root / layout.CONFIG_FILE
    return CacheInfo(
        root=root,
        format=meta["format"],
        schema_version=meta["schema_version"],
        fingerprint=meta.get("fingerprint", {}),
        digest=meta["fingerprint_digest"],
        emo_version=str(meta.get("emo_version", "")),
        created=str(meta.get("created", "")),
        splits=splits,
        config_path=config if config.is_file() else None,
        sets=sets,
        damaged_sets=damaged,
    )
