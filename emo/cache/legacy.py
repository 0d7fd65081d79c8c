"""Version-1 caches: their one-shard-per-row-range columns, and their translation into a
row table plus the seed's three feature sets.

A version-1 shard held the labels and every modality's features side by side (fixed
columns `text_cls`, `text_mean`, `visual`, `mel`, ...) under one cache-wide fingerprint.
The same translation serves two callers: `emo cache upgrade` (old shards on disk) and
`tests/cache_writing.py`'s `V1Writer` (tests and benchmarks that fabricate caches).
Each seed set's fingerprint is the slice of the old fingerprint that made its numbers,
exactly what `emo extract` records for the same encoder today, so an upgraded cache and a
fresh extraction agree and a later `emo extract` adds sets to an upgraded cache.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emo.cache.schema import ROW_COLUMNS, Column
from emo.cache.sets import SetSpec, plain_name

# The version-1 shard: the row table's columns (but the text), then flags and features side by side.
ROW_KEYS = ("dialogue_id", "utterance_id", "emotion", "sentiment", "speaker")
V1_COLUMNS: dict[str, Column] = {
    c.name: c
    for c in (
        *(ROW_COLUMNS[key] for key in ROW_KEYS),
        Column("has_text", "bool", 1),
        Column("has_audio", "bool", 1),
        Column("has_visual", "bool", 1),
        Column("truncated", "bool", 1),
        Column("failure", "str", 1),
        Column("text_cls", "float16", 2),
        Column("text_mean", "float16", 2),
        Column("visual", "float16", 3),
        Column("visual_mask", "bool", 2),
        Column("mel", "float16", 2, per_row=False),
        Column("mel_index", "int64", 3),
    )
}
V1_MODALITY_COLUMNS: dict[str, tuple[str, ...]] = {
    "text": ("text_cls", "text_mean"),
    "audio": ("mel", "mel_index"),
    "visual": ("visual", "visual_mask"),
}
# The fingerprint keys that made each seed set's numbers.
SEED_KEYS: dict[str, tuple[str, ...]] = {
    "text": ("extract_version", "text_encoder", "text_pooling"),
    "visual": ("extract_version", "visual_encoder", "frames", "max_duration"),
    "audio": ("extract_version", "audio", "max_duration"),
}


def seed_set_name(modality: str, fingerprint: dict[str, Any]) -> str:
    """`text/<model>`, `visual/<model>` or `audio/mel` for a seed encoder's fingerprint."""
    if modality == "audio":
        return "audio/mel"
    encoder = fingerprint.get(f"{modality}_encoder")
    name = encoder.get("name") if isinstance(encoder, dict) else encoder
    return f"{modality}/{plain_name(str(name or modality))}"


def seed_set_fingerprint(modality: str, fingerprint: dict[str, Any]) -> dict[str, Any]:
    return {key: fingerprint[key] for key in SEED_KEYS[modality] if key in fingerprint}


def seed_set_spec(modality: str, fingerprint: dict[str, Any], dim: int, frames: int = 0, views: int = 1) -> SetSpec:
    """The SetSpec of one of the seed's sets, from a cache-wide (version-1 style) fingerprint."""
    name = seed_set_name(modality, fingerprint)
    encoder = fingerprint.get(f"{modality}_encoder") if modality != "audio" else "log-mel"
    label = encoder.get("name") if isinstance(encoder, dict) else encoder
    if modality == "text":
        return SetSpec(name, "vector", dim, str(label), seed_set_fingerprint(modality, fingerprint), ("cls", "mean"))
    if modality == "visual":
        return SetSpec(name, "frames", dim, str(label), seed_set_fingerprint(modality, fingerprint), frames=frames)
    return SetSpec(name, "sequence", dim, "log-mel", seed_set_fingerprint(modality, fingerprint), views=views)


def split_v1_columns(
    columns: dict[str, Any], fingerprint: dict[str, Any], failures: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[tuple[SetSpec, dict[str, Any], list[dict[str, Any]]]]]:
    """A version-1 shard's columns as (row-table columns, [(set spec, set columns, failures)])."""
    n = len(columns["emotion"])
    rows = {key: columns[key] for key in ROW_KEYS}
    truncated = np.asarray(columns.get("truncated", np.zeros(n, bool)), dtype=bool)
    sets = []
    for modality, names in V1_MODALITY_COLUMNS.items():
        given = [name for name in names if name in columns]
        if not given:
            continue
        if len(given) != len(names):
            raise ValueError(f"{modality} needs all of {list(names)}, got only {given}")
        present = np.asarray(columns.get(f"has_{modality}", np.ones(n, bool)), dtype=bool)
        flags = {"present": present, "truncated": truncated if modality != "text" else np.zeros(n, bool)}
        if modality == "text":
            cls = np.asarray(columns["text_cls"])
            spec = seed_set_spec("text", fingerprint, cls.shape[1])
            arrays = {**flags, "cls": cls, "mean": columns["text_mean"]}
        elif modality == "visual":
            visual = np.asarray(columns["visual"])
            spec = seed_set_spec("visual", fingerprint, visual.shape[2], frames=visual.shape[1])
            arrays = {**flags, "values": visual, "mask": columns["visual_mask"]}
        else:
            mel, index = np.asarray(columns["mel"]), np.asarray(columns["mel_index"])
            spec = seed_set_spec("audio", fingerprint, mel.shape[1], views=index.shape[1])
            arrays = {**flags, "values": mel, "index": index}
        mine = [f for f in failures if _costs(f, modality)]
        sets.append((spec, arrays, mine))
    return rows, sets


def _costs(failure: dict[str, Any], modality: str) -> bool:
    """Whether a version-1 failure record concerns `modality` (records name what they cost
    as `audio+visual`; older ones name nothing, which meant every media modality)."""
    cost = str(failure.get("modality") or "")
    if not cost or cost == "all":
        return modality != "text"
    return modality in cost.split("+")
