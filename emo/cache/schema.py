"""The logical schema of a shard: which arrays exist, their dtypes and ranks.

A version-2 cache has two kinds of shard, both stored the same way in HDF5 or Zarr:
- a row-table shard (`ROW_COLUMNS`): ids, labels, speaker and utterance text, written
  once per split and shared by every feature set;
- a feature-set shard (`set_columns(spec)`): the set's arrays for the same rows, plus
  `present` and `truncated` flags (see `emo.cache.sets` for the kinds).
Validation lives here, next to the schema, so a writer bug (a wrong shape or a row count
that disagrees) fails at write time, in the process that made it, instead of surfacing
later as a corrupt split in `fuse`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from emo.cache.sets import SetSpec

SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # numpy dtype name, or "str" for variable-length UTF-8 strings
    ndim: int
    per_row: bool = True  # False only for a sequence set's `values`, whose rows are frames, not clips


ROW_COLUMNS: dict[str, Column] = {
    c.name: c
    for c in (
        Column("dialogue_id", "int32", 1),
        Column("utterance_id", "int32", 1),
        Column("emotion", "int64", 1),
        Column("sentiment", "int64", 1),
        Column("speaker", "str", 1),
        Column("text", "str", 1),
    )
}
FLAG_COLUMNS = (Column("present", "bool", 1), Column("truncated", "bool", 1))


def set_columns(spec: SetSpec) -> dict[str, Column]:
    """The columns of one set's shards, in storage order."""
    if spec.kind == "vector":
        columns = [Column(name, "float16", 2) for name in spec.arrays]
    elif spec.kind == "layers":
        columns = [Column(name, "float16", 3) for name in spec.arrays]
    elif spec.kind == "frames":
        columns = [Column("values", "float16", 3), Column("mask", "bool", 2)]
    else:
        columns = [Column("values", "float16", 2, per_row=False), Column("index", "int64", 3)]
    return {c.name: c for c in (*FLAG_COLUMNS, *columns)}


def normalize_columns(columns: dict[str, Column], rows: dict[str, Any], what: str) -> dict[str, Any]:
    """Check one shard's arrays against `columns` and convert them to the on-disk dtypes,
    in storage order.

    Features may arrive as float32 and are stored as float16 (the cache's documented
    precision); everything else must already have the right kind, because silently casting
    a float label or a truncated id would hide an extraction bug. Raises ValueError: a bad
    shard is a bug in the caller, not something the user can fix.
    """
    unknown = sorted(set(rows) - set(columns))
    if unknown:
        raise ValueError(f"unknown {what} columns {unknown}; known: {sorted(columns)}")
    missing = [name for name in columns if name not in rows]
    if missing:
        raise ValueError(f"{what} shard is missing columns {missing}")
    first = next(c for c in columns.values() if c.per_row)
    n = len(rows[first.name])
    out: dict[str, Any] = {}
    for name, column in columns.items():
        value = rows[name]
        if column.dtype == "str":
            strings = [str(s) for s in (value.tolist() if isinstance(value, np.ndarray) else value)]
            out[name] = strings
            length = len(strings)
        else:
            array = _as_dtype(name, np.asarray(value), column)
            out[name] = np.ascontiguousarray(array)
            length = array.shape[0]
        if column.per_row and length != n:
            raise ValueError(f"column {name} has {length} rows but {first.name} has {n}")
    return out


def _as_dtype(name: str, array: np.ndarray, column: Column) -> np.ndarray:
    target = np.dtype(column.dtype)
    if array.ndim != column.ndim:
        raise ValueError(f"column {name} must have {column.ndim} dimensions, got shape {array.shape}")
    if array.dtype == target:
        return array
    if target.kind == "f" and array.dtype.kind == "f":
        return array.astype(target)
    if target.kind == "i" and array.dtype.kind in "iu":
        if array.size and (array.min() < np.iinfo(target).min or array.max() > np.iinfo(target).max):
            raise ValueError(f"column {name} has values outside {target}")
        return array.astype(target)
    if target.kind == "b" and array.size == 0:
        return array.astype(target)
    raise ValueError(f"column {name} must be {target}, got {array.dtype}")


def normalize_rows(rows: dict[str, Any]) -> dict[str, Any]:
    """A row-table shard's columns, checked (`text` may be left out: no utterance text)."""
    rows = dict(rows)
    if "text" not in rows and "emotion" in rows:
        rows["text"] = [""] * len(rows["emotion"])
    return normalize_columns(ROW_COLUMNS, rows, "row-table")


def normalize_set(spec: SetSpec, arrays: dict[str, Any]) -> dict[str, Any]:
    """A feature-set shard's columns, checked against the set's kind and dim."""
    out = normalize_columns(set_columns(spec), arrays, f"feature set {spec.name}")
    n = len(out["present"])
    if spec.kind == "vector":
        for name in spec.arrays:
            if out[name].shape[1] != spec.dim:
                raise ValueError(f"{spec.name}: {name} has dim {out[name].shape[1]}, the set's dim is {spec.dim}")
    elif spec.kind == "layers":
        for name in spec.arrays:
            if out[name].shape[1:] != (len(spec.layers), spec.dim):
                raise ValueError(
                    f"{spec.name}: {name} has shape {out[name].shape}, the set's is [N, {len(spec.layers)}, {spec.dim}]"
                )
    elif spec.kind == "frames":
        values, mask = out["values"], out["mask"]
        if values.shape[2] != spec.dim or mask.shape != values.shape[:2]:
            raise ValueError(f"{spec.name}: values {values.shape} / mask {mask.shape} do not fit dim {spec.dim}")
    else:
        values, index = out["values"], out["index"]
        if values.shape[1] != spec.dim or index.shape[0] != n or index.shape[2] != 2:
            raise ValueError(f"{spec.name}: values {values.shape} / index {index.shape} do not fit dim {spec.dim}")
        starts, lengths = index[..., 0], index[..., 1]
        if index.size and (starts.min() < 0 or lengths.min() < 0 or (starts + lengths).max() > len(values)):
            raise ValueError(f"{spec.name}: index points outside this shard's values (starts must be shard-relative)")
    return out


def describe_arrays(arrays: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """dtype and shape of every column, as stored in the sidecar so readers can preallocate."""
    spec = {}
    for name, value in arrays.items():
        if isinstance(value, list):
            spec[name] = {"dtype": "str", "shape": [len(value)]}
        else:
            spec[name] = {"dtype": value.dtype.name, "shape": list(value.shape)}
    return spec
