"""Loading one split of a feature cache into memory: `LoadedSplit` and `load_split`.

`load_split` is the trainer's only door to the features, so it is built for one thing:
getting every shard of the row table and of each requested feature set into contiguous
numpy arrays as fast as the page cache allows. The sidecars say every column's shape up
front, so the outputs are allocated once and each shard's columns are read straight into
their slices (one read call per column per shard, no per-row Python). Describing a cache
without reading arrays is `emo.cache.describe.open_cache`.

What comes back is the cache's own shape, nothing more: the row table and each set's
arrays as stored (`LoadedSet`). Turning sets into a model's inputs (which sets, how
several of one modality combine) is a modelling choice and lives in `emo.fuse.inputs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emo.cache import layout, storage
from emo.cache.describe import UnknownSplitError, merge_failures
from emo.cache.manifest import (
    default_sets,
    list_splits,
    misaligned_shards,
    read_cache_meta,
    scan_set_split,
    scan_sets,
    scan_split,
)
from emo.cache.schema import ROW_COLUMNS, Column, set_columns
from emo.cache.sets import LoadedSet, spec_from_meta
from emo.cache.status import finish_advice
from emo.errors import CacheError, UsageError
from emo.labels import MODALITIES


@dataclass
class LoadedSplit:
    """One split as the cache holds it: the row table plus the loaded feature sets, raw.

    Rows (N = every annotated utterance of the split, failed clips included, in shard
    order): dialogue_id, utterance_id int32[N]; emotion, sentiment int64[N] (indices into
    `emo.labels.EMOTIONS` / `SENTIMENTS`); speaker and text list[str] (text is "" where the
    cache holds none). `sets`: full set name (`audio/mel`) -> `LoadedSet` with its arrays,
    `present`/`truncated` flags and failure records. `fingerprint` is the row table's;
    each set carries its own. `extra`: where it came from (cache, format, shards) and the
    sets' failure records merged.
    """

    split: str
    fingerprint: dict[str, Any]
    dialogue_id: np.ndarray
    utterance_id: np.ndarray
    emotion: np.ndarray
    sentiment: np.ndarray
    speaker: list[str]
    text: list[str]
    sets: dict[str, LoadedSet] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.emotion.shape[0])

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities at least one loaded set belongs to, in `emo.labels.MODALITIES` order."""
        held = {item.modality for item in self.sets.values()}
        return tuple(m for m in MODALITIES if m in held)


def load_split(
    root: str | Path,
    split: str,
    modalities: list[str] | tuple[str, ...] | None = None,
    sets: list[str] | tuple[str, ...] | None = None,
    verify: bool = False,
) -> LoadedSplit:
    """Load the row table of `split` and the feature sets asked for (rows in shard order).

    `sets` names the sets to read (full names, `audio/mel`); without it, each of
    `modalities`' default set (the first one extracted), or every modality's when both are
    None. The sets come back raw in `LoadedSplit.sets`; `emo.fuse.inputs` composes them
    into model inputs. Every shard's file sizes are checked against its sidecar and every set
    shard against the row table's rows; `verify=True` also recomputes checksums. Damaged
    metadata (`emo.cache.metadata`) is refused in one sentence: a damaged split.json, a
    damaged set asked for by name, or any damaged set of a modality whose default is asked
    for (it may have been that default: another set is never silently used instead).
    """
    root = Path(root)
    meta = read_cache_meta(root)
    require_split(root, split)
    raw = scan_split(root, split, meta)
    _require_complete(root, split, raw, "")
    chosen = _choose_sets(root, *scan_sets(root), modalities, sets)
    fmt = meta["format"]
    rows = _read_part(root, root / split, raw["shards"], ROW_COLUMNS, fmt, split, verify)
    loaded = {}
    for set_meta in chosen:
        part = scan_set_split(root, set_meta, split, meta)
        _require_complete(root, split, part, set_meta["name"])
        _require_aligned(root, split, set_meta["name"], raw["shards"], part["shards"])
        spec_columns = set_columns(spec_from_meta(set_meta))
        folder = layout.set_dir(root, set_meta["name"]) / split
        arrays = _read_part(root, folder, part["shards"], spec_columns, fmt, split, verify)
        loaded[set_meta["name"]] = LoadedSet(
            name=set_meta["name"],
            kind=set_meta["kind"],
            dim=int(set_meta["dim"]),
            encoder=str(set_meta.get("encoder")),
            fingerprint=set_meta.get("fingerprint", {}),
            digest=set_meta["fingerprint_digest"],
            present=arrays.pop("present"),
            truncated=arrays.pop("truncated"),
            arrays=arrays,
            failures=part["failures"],
            layers=tuple(int(i) for i in set_meta.get("layers") or ()),
        )
    return LoadedSplit(
        split=split,
        fingerprint=meta.get("fingerprint", {}),
        dialogue_id=rows["dialogue_id"],
        utterance_id=rows["utterance_id"],
        emotion=rows["emotion"],
        sentiment=rows["sentiment"],
        speaker=rows["speaker"],
        text=rows["text"],
        sets=loaded,
        extra={
            "cache": str(root),
            "format": fmt,
            "fingerprint_digest": meta["fingerprint_digest"],
            "shards": len(raw["shards"]),
            "failures": merge_failures([f for item in loaded.values() for f in item.failures]),
            "ignored_videos": raw["ignored_videos"],
        },
    )


def require_split(root: Path | str, split: str) -> None:
    """One sentence unless cache `root` holds `split` (or is still writing it). Metadata
    only, so a command checks its --split here before it loads torch or any array."""
    root = Path(root)
    present = list_splits(root)
    if split in present:
        return
    advice = finish_advice(root, split)
    if advice != layout.finish_hint(split):  # an extraction may still be writing it
        raise CacheError(f"Feature cache {root} is incomplete (split '{split}' has no finished shard yet); {advice}.")
    held = ", ".join(present) if present else "none"
    raise UnknownSplitError(f"Feature cache {root} has no split '{split}'; it holds: {held}.")


def _choose_sets(
    root: Path, available: dict[str, dict[str, Any]], damaged: dict, modalities, sets
) -> list[dict[str, Any]]:
    if sets is not None:
        for name in sets:
            if name in damaged:
                raise damaged[name].error()
        unknown = [name for name in sets if name not in available]
        if unknown:
            held = ", ".join(available) or "none"
            raise CacheError(f"Feature cache {root} has no feature set {unknown[0]}; it holds: {held}.")
        return [available[name] for name in sets]
    defaults = default_sets(available)
    every = {*defaults, *(name.partition("/")[0] for name in damaged)}
    wanted = tuple(m for m in MODALITIES if m in every) if modalities is None else tuple(modalities)
    for name, damage in damaged.items():
        if name.partition("/")[0] in wanted:
            raise damage.error()
    bad = [m for m in wanted if m not in MODALITIES]
    if bad:
        raise UsageError(f"Unknown modality {bad[0]!r}; choose from {', '.join(MODALITIES)}.")
    absent = [m for m in wanted if m not in defaults]
    if absent:
        raise CacheError(
            f"Feature cache {root} holds no {', '.join(absent)} features "
            f"(it holds: {', '.join(sorted(defaults)) or 'labels only'}); extract them with --modalities."
        )
    return [available[defaults[m]] for m in MODALITIES if m in wanted]


def _require_complete(root: Path, split: str, raw: dict[str, Any], set_name: str) -> None:
    if raw.get("damage") is not None:
        raise raw["damage"].error()
    if raw["complete"]:
        return
    what = (
        f"Split '{split}' of feature cache {root}"
        if not set_name
        else f"Feature set {set_name} of split '{split}' in {root}"
    )
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
            f"{what} holds {raw['rows']} rows where its plan expects {raw['expected_rows']} (were its shards "
            f"written with different --shard-size values?); re-extract it with `emo extract --split {split} --overwrite`."
        )
    else:
        detail = "it has no finished shards"
    raise CacheError(f"{what} is incomplete ({detail}); {finish_advice(root, split)}.")


def _require_aligned(root: Path, split: str, name: str, row_shards: list, set_shards: list) -> None:
    misaligned = misaligned_shards(row_shards, set_shards)
    if misaligned:
        raise CacheError(
            f"Feature set {name} of split '{split}' in {root} does not match the row table at "
            f"{layout.shard_stem(misaligned[0])}; re-extract it with --overwrite."
        )


def _read_part(
    root: Path, folder: Path, shards: list, columns: dict[str, Column], fmt: str, split: str, verify: bool
) -> dict[str, Any]:
    """Every shard of one folder read into contiguous arrays (one read per column per shard)."""
    if verify:
        from emo.cache.verify import check_shard

        for sidecar in shards:
            problem = check_shard(folder, sidecar)
            if problem:
                raise CacheError(f"{problem}; re-extract it with `emo extract --split {split} --overwrite`.")
    for name, column in columns.items():
        shapes = {
            (tuple(s["arrays"][name]["shape"][1:]), s["arrays"][name]["dtype"]) for s in shards if name in s["arrays"]
        }
        if len(shapes) > 1 or any(name not in s["arrays"] for s in shards):
            raise CacheError(
                f"Shards in {folder} disagree on column '{name}'; the cache is inconsistent, re-extract it with --overwrite."
            )
    total_rows = sum(int(s["rows"]) for s in shards)
    flat_names = [name for name, c in columns.items() if not c.per_row]
    total_flat = sum(int(s["arrays"][flat_names[0]]["shape"][0]) for s in shards) if flat_names else 0
    outputs: dict[str, Any] = {}
    for name, column in columns.items():
        if column.dtype == "str":
            outputs[name] = []
            continue
        trailing = tuple(shards[0]["arrays"][name]["shape"][1:]) if shards else (0,) * (column.ndim - 1)
        outputs[name] = np.empty(
            (total_rows if column.per_row else total_flat, *trailing), dtype=np.dtype(column.dtype)
        )
    row_start = flat_start = 0
    for sidecar in shards:
        path = folder / sidecar["file"]
        n = int(sidecar["rows"])
        try:
            storage.read_into(path, fmt, columns, outputs, row_start, flat_start)
        except Exception as error:  # any library error here means a damaged shard file
            where = path.relative_to(root) if path.is_relative_to(root) else path
            raise CacheError(
                f"Shard {where} of feature cache {root} cannot be read ({type(error).__name__}: "
                f"{error}); run `emo cache verify {root}` and re-extract it."
            ) from None
        if "index" in columns and flat_start:
            outputs["index"][row_start : row_start + n, :, 0] += flat_start
        row_start += n
        if flat_names:
            flat_start += int(sidecar["arrays"][flat_names[0]]["shape"][0])
    for name, column in columns.items():
        if column.dtype == "str" and len(outputs[name]) != total_rows:
            raise CacheError(f"Split '{split}' of feature cache {root} has a damaged '{name}' column.")
    return outputs


def _short_list(items: list[int], limit: int = 6) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
