"""Reading a feature cache: describe it (`open_cache`) or load a whole split (`load_split`).

`load_split` is the trainer's only door to the features, so it is built for one thing:
getting every shard of a split into contiguous numpy arrays as fast as the page cache
allows. The sidecars say every column's shape up front, so the outputs are allocated
once and each shard's columns are read straight into their slices (one read call per
column per shard, no per-row Python).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emo.cache import layout, storage
from emo.cache.features import SplitFeatures
from emo.cache.manifest import read_cache_meta, list_splits, scan_split
from emo.cache.schema import BASE_COLUMNS, COLUMNS, MODALITY_COLUMNS
from emo.errors import CacheError, UsageError


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

    @property
    def bytes(self) -> int:
        """Size on disk of every finished shard (what `du` would roughly say)."""
        return sum(s.bytes for s in self.splits.values())


class UnknownSplitError(CacheError, UsageError):
    """The user asked for a split the cache does not hold (exit 2, like a usage error)."""


def _split_info(root: Path, raw: dict[str, Any]) -> SplitInfo:
    return SplitInfo(
        name=raw["name"],
        rows=raw["rows"],
        expected_rows=raw["expected_rows"],
        expected_shards=raw["expected_shards"],
        complete=raw["complete"],
        missing_shards=raw["missing_shards"],
        unfinished_shards=raw["unfinished_shards"],
        modalities=tuple(raw["modalities"]),
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
            )
            for s in raw["shards"]
        ],
        bytes=raw["bytes"],
        failures=raw["failures"],
        failures_by_reason=raw["failures_by_reason"],
        failures_by_modality=raw["failures_by_modality"],
        ignored_videos=raw["ignored_videos"],
        stats=raw["stats"],
        extra=raw["plan"].get("extra", {}),
    )


def open_cache(root: str | Path) -> CacheInfo:
    """Describe the cache at `root` from its cache.json and sidecars (reads no arrays)."""
    root = Path(root)
    meta = read_cache_meta(root)
    splits = {name: _split_info(root, scan_split(root, name, meta)) for name in list_splits(root)}
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
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def load_split(
    root: str | Path,
    split: str,
    modalities: list[str] | tuple[str, ...] | None = None,
    verify: bool = False,
) -> SplitFeatures:
    """Load every shard of `split` into one `SplitFeatures` (rows in shard order).

    `modalities` limits which feature columns are read (labels and metadata always are);
    None reads everything the cache holds. Every shard's file sizes are checked against
    its sidecar; `verify=True` also recomputes checksums (slower: reads every byte twice).
    """
    root = Path(root)
    meta = read_cache_meta(root)
    present = list_splits(root)
    if split not in present:
        held = ", ".join(present) if present else "none"
        raise UnknownSplitError(f"Feature cache {root} has no split '{split}'; it holds: {held}.")
    raw = scan_split(root, split, meta)
    if not raw["complete"]:
        unfinished = raw["unfinished_shards"]
        if unfinished:
            first = unfinished[0]
            detail = f"{layout.shard_stem(first['index'])} {first['problem']}"
            if len(unfinished) > 1:
                detail += f", and {len(unfinished) - 1} more shards are unfinished"
        elif raw["missing_shards"]:
            gaps = raw["missing_shards"]
            detail = f"shard {gaps[0]} is missing" if len(gaps) == 1 else f"shards {_short_list(gaps)} are missing"
        elif not raw.get("planned", True):
            detail = "its extraction never finished: the split plan is not written yet"
        elif raw["expected_rows"] is not None and raw["shards"]:
            raise CacheError(
                f"Split '{split}' of feature cache {root} holds {raw['rows']} rows where its plan expects "
                f"{raw['expected_rows']} (were its shards written with different --shard-size values?); "
                f"re-extract it with `emo extract --split {split} --overwrite`."
            )
        else:
            detail = "it has no finished shards"
        raise CacheError(
            f"Split '{split}' of feature cache {root} is incomplete ({detail}); {layout.finish_hint(split)}."
        )
    shards = raw["shards"]
    fmt = meta["format"]

    held = tuple(raw["modalities"])
    wanted = tuple(held) if modalities is None else tuple(modalities)
    unknown = [m for m in wanted if m not in MODALITY_COLUMNS]
    if unknown:
        raise UsageError(f"Unknown modality {unknown[0]!r}; choose from {', '.join(MODALITY_COLUMNS)}.")
    absent = [m for m in wanted if m not in held]
    if absent:
        raise CacheError(
            f"Split '{split}' of feature cache {root} holds no {', '.join(absent)} features "
            f"(it holds: {', '.join(held) or 'labels only'}); extract them with --modalities."
        )
    names = list(BASE_COLUMNS) + [c for m in wanted for c in MODALITY_COLUMNS[m]]

    # Every shard must agree on each column's trailing shape and dtype.
    specs = [s["arrays"] for s in shards]
    for name in names:
        shapes = {(tuple(spec[name]["shape"][1:]), spec[name]["dtype"]) for spec in specs if name in spec}
        if len(shapes) > 1 or any(name not in spec for spec in specs):
            raise CacheError(
                f"Shards of split '{split}' in {root} disagree on column '{name}'; the cache is inconsistent, "
                "re-extract it with --overwrite."
            )

    if verify:
        from emo.cache.verify import check_shard

        for sidecar in shards:
            problem = check_shard(root / split, sidecar)
            if problem:
                raise CacheError(f"{problem}; re-extract it with `emo extract --split {split} --overwrite`.")

    if not shards:  # a split that legitimately has no rows
        specs = [{name: {"shape": [0] + [0] * (COLUMNS[name].ndim - 1)} for name in names}]
    total_rows = sum(int(s["rows"]) for s in shards)
    total_mel = sum(int(s["arrays"]["mel"]["shape"][0]) for s in shards) if "mel" in names else 0
    outputs: dict[str, Any] = {}
    for name in names:
        column = COLUMNS[name]
        if column.dtype == "str":
            outputs[name] = []
            continue
        trailing = tuple(specs[0][name]["shape"][1:])
        first = total_rows if column.per_row else total_mel
        outputs[name] = np.empty((first, *trailing), dtype=np.dtype(column.dtype))

    row_start = mel_start = 0
    for sidecar in shards:
        path = root / split / sidecar["file"]
        n = int(sidecar["rows"])
        try:
            storage.read_into(path, fmt, names, outputs, row_start, mel_start)
        except Exception as error:  # any library error here means a damaged shard file
            raise CacheError(
                f"Shard {split}/{sidecar['file']} of feature cache {root} cannot be read ({type(error).__name__}: "
                f"{error}); run `emo cache verify {root}` and re-extract it."
            ) from None
        if "mel_index" in names and mel_start:
            outputs["mel_index"][row_start : row_start + n, :, 0] += mel_start
        row_start += n
        if "mel" in names:
            mel_start += int(sidecar["arrays"]["mel"]["shape"][0])
    for name in ("speaker", "failure"):
        if len(outputs[name]) != total_rows:
            raise CacheError(f"Split '{split}' of feature cache {root} has a damaged '{name}' column.")

    features = SplitFeatures(
        split=split,
        fingerprint=meta.get("fingerprint", {}),
        **{name: outputs[name] for name in BASE_COLUMNS if name != "failure"},
        **{name: outputs[name] for name in names if name not in BASE_COLUMNS},
        failure=outputs["failure"],
        extra={
            "cache": str(root),
            "format": fmt,
            "fingerprint_digest": meta["fingerprint_digest"],
            "shards": len(shards),
            "failures": raw["failures"],
            "ignored_videos": raw["ignored_videos"],
        },
    )
    return features


def _short_list(items: list[int], limit: int = 6) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
