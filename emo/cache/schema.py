"""The logical schema of one shard: which arrays exist, their dtypes and ranks.

Both formats (HDF5 and Zarr) store exactly these arrays under exactly these names, so a
cache can be converted or compared array by array. Validation lives here, next to the
schema, so a writer bug (a wrong shape or a row count that disagrees) fails at write time,
in the process that made it, instead of surfacing later as a corrupt split in `fuse`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # numpy dtype name, or "str" for variable-length UTF-8 strings
    ndim: int
    per_row: bool = True  # False only for `mel`, whose rows are mel frames, not clips


COLUMNS: dict[str, Column] = {
    c.name: c
    for c in (
        Column("dialogue_id", "int32", 1),
        Column("utterance_id", "int32", 1),
        Column("emotion", "int64", 1),
        Column("sentiment", "int64", 1),
        Column("speaker", "str", 1),
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

BASE_COLUMNS = (
    "dialogue_id",
    "utterance_id",
    "emotion",
    "sentiment",
    "speaker",
    "has_text",
    "has_audio",
    "has_visual",
    "truncated",
    "failure",
)
MODALITY_COLUMNS: dict[str, tuple[str, ...]] = {
    "text": ("text_cls", "text_mean"),
    "audio": ("mel", "mel_index"),
    "visual": ("visual", "visual_mask"),
}
STRING_COLUMNS = tuple(name for name, c in COLUMNS.items() if c.dtype == "str")


def modalities_of(names: Any) -> tuple[str, ...]:
    """The modalities whose columns are all among `names`, in `emo.labels.MODALITIES` order."""
    held = set(names)
    return tuple(m for m, cols in MODALITY_COLUMNS.items() if all(c in held for c in cols))


def normalize_rows(rows: dict[str, Any]) -> dict[str, Any]:
    """Check one shard's columns and convert them to the on-disk dtypes.

    Features may arrive as float32 and are stored as float16 (the cache's documented
    precision); everything else must already have the right kind, because silently casting
    a float label or a truncated id would hide an extraction bug. `failure` may be left out
    (every clip succeeded). Raises ValueError: a bad shard is a bug in the caller, not
    something the user can fix.
    """
    unknown = sorted(set(rows) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown cache columns {unknown}; known: {sorted(COLUMNS)}")
    missing = [name for name in BASE_COLUMNS if name not in rows and name != "failure"]
    if missing:
        raise ValueError(f"shard is missing required columns {missing}")
    for modality, cols in MODALITY_COLUMNS.items():
        present = [c for c in cols if c in rows]
        if present and len(present) != len(cols):
            raise ValueError(f"{modality} needs all of {list(cols)}, got only {present}")

    n = len(rows["emotion"])
    out: dict[str, Any] = {}
    for name, value in rows.items():
        column = COLUMNS[name]
        if column.dtype == "str":
            strings = [str(s) for s in (value.tolist() if isinstance(value, np.ndarray) else value)]
            out[name] = strings
            length = len(strings)
        else:
            array = np.asarray(value)
            target = np.dtype(column.dtype)
            if array.ndim != column.ndim:
                raise ValueError(f"column {name} must have {column.ndim} dimensions, got shape {array.shape}")
            if array.dtype != target:
                if target.kind == "f" and array.dtype.kind in "f":
                    array = array.astype(target)
                elif target.kind == array.dtype.kind == "i" or (target.kind == "i" and array.dtype.kind == "u"):
                    if array.size and (array.min() < np.iinfo(target).min or array.max() > np.iinfo(target).max):
                        raise ValueError(f"column {name} has values outside {target}")
                    array = array.astype(target)
                elif target.kind == "b" and array.size == 0:
                    array = array.astype(target)
                else:
                    raise ValueError(f"column {name} must be {target}, got {array.dtype}")
            out[name] = np.ascontiguousarray(array)
            length = array.shape[0]
        if column.per_row and length != n:
            raise ValueError(f"column {name} has {length} rows but emotion has {n}")
    out.setdefault("failure", [""] * n)

    if "visual" in out and out["visual_mask"].shape != out["visual"].shape[:2]:
        raise ValueError(
            f"visual_mask shape {out['visual_mask'].shape} does not match visual {out['visual'].shape[:2]}"
        )
    if "mel" in out:
        index = out["mel_index"]
        if index.shape[2] != 2:
            raise ValueError(f"mel_index must be [N, views, 2], got {index.shape}")
        starts, lengths = index[..., 0], index[..., 1]
        if index.size and (starts.min() < 0 or lengths.min() < 0 or (starts + lengths).max() > len(out["mel"])):
            raise ValueError("mel_index points outside this shard's mel rows (starts must be shard-relative)")
    return out


def describe_arrays(arrays: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """dtype and shape of every column, as stored in the sidecar so readers can preallocate."""
    spec = {}
    for name in COLUMNS:
        if name not in arrays:
            continue
        value = arrays[name]
        if isinstance(value, list):
            spec[name] = {"dtype": "str", "shape": [len(value)]}
        else:
            spec[name] = {"dtype": value.dtype.name, "shape": list(value.shape)}
    return spec
