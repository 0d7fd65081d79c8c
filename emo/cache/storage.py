"""Reading and writing one shard's arrays in HDF5 or Zarr v3: the only format-specific code.

Both formats store each column as one uncompressed array, contiguous (HDF5) or in
whole-column chunks (Zarr), because a split is always read whole: one contiguous read per
column per shard is the fastest path from page cache to numpy, and fp16 embeddings barely
compress (bench/cache_load.py: "fast" compression saves ~10% on disk and costs 2-15x load time). Strings (speaker, failure) are variable-length UTF-8
in both formats; no pickled objects anywhere, so the files open in any HDF5/Zarr tool.
Heavy imports (h5py, zarr) happen inside functions to keep `emo --help` fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from emo.cache.schema import Column

# Optional light compression, chosen per format from what each ships with: HDF5's
# built-in LZF filter, Zarr's Blosc-LZ4 with byte shuffle. Off by default (see module doc).
COMPRESSIONS = ("none", "fast")
_MAX_CHUNK_BYTES = 256 << 20


def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Whole-column chunks (a split is always read whole, so fewer chunks mean fewer
    calls), capped in size so huge shards stay under HDF5's 4 GiB chunk limit and
    compressors never need a giant buffer."""
    row_bytes = itemsize * max(1, int(np.prod(shape[1:], dtype=np.int64)))
    rows = max(1, min(shape[0], _MAX_CHUNK_BYTES // row_bytes))
    return (rows, *(max(1, s) for s in shape[1:]))


def write_arrays(
    path: Path, fmt: str, arrays: dict[str, Any], attrs: dict[str, Any], compression: str = "none"
) -> None:
    """Create a new shard at `path` (which must not exist) holding `arrays`, in their order."""
    if fmt == "h5":
        _write_h5(path, arrays, attrs, compression)
    elif fmt == "zarr":
        _write_zarr(path, arrays, attrs, compression)
    else:
        raise ValueError(f"unknown cache format {fmt!r}")


def _write_h5(path: Path, arrays: dict[str, Any], attrs: dict[str, Any], compression: str) -> None:
    """Build the whole file in memory, then write its bytes with plain `os.write`.

    HDF5 writing to disk itself would meet a full disk inside C code that reports it only
    from destructors (h5py's "Exception ignored"), leave a file that reads back as zeros and
    can crash the interpreter; an in-memory image cannot run out of disk, and the one real
    write raises an ordinary OSError (ENOSPC, EDQUOT, EFBIG) that the writer reports."""
    import io

    image = io.BytesIO()
    _fill_h5(image, arrays, attrs, compression)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = image.getbuffer()
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fill_h5(target: Any, arrays: dict[str, Any], attrs: dict[str, Any], compression: str) -> None:
    import h5py

    # track_times=False keeps the bytes a pure function of the data, so re-extracting an
    # unchanged shard yields the same checksum.
    with h5py.File(target, "w", track_order=True) as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        for name, value in arrays.items():
            if isinstance(value, list):
                data = np.array(value, dtype=h5py.string_dtype("utf-8"))
                f.create_dataset(name, data=data, dtype=h5py.string_dtype("utf-8"), track_times=False)
                continue
            options: dict[str, Any] = {}
            if compression == "fast" and value.size:
                options = {"compression": "lzf", "shuffle": True, "chunks": _chunks(value.shape, value.itemsize)}
            f.create_dataset(name, data=value, track_times=False, **options)


def _write_zarr(path: Path, arrays: dict[str, Any], attrs: dict[str, Any], compression: str) -> None:
    import zarr

    compressors: Any = None
    if compression == "fast":
        from zarr.codecs import BloscCodec

        compressors = BloscCodec(cname="lz4", clevel=1, shuffle="shuffle")
    group = zarr.open_group(str(path), mode="w-", zarr_format=3, attributes=dict(attrs))
    for name, value in arrays.items():
        if isinstance(value, list):
            data = np.array(value, dtype=np.dtypes.StringDType())
            arr = group.create_array(name, shape=data.shape, dtype=str, chunks=(max(1, len(data)),), compressors=None)
        else:
            data = value
            chunks = _chunks(data.shape, data.itemsize)
            arr = group.create_array(
                name, shape=data.shape, dtype=data.dtype, chunks=chunks, compressors=compressors, fill_value=0
            )
        if data.size:
            arr[...] = data


def read_attrs(path: Path, fmt: str) -> dict[str, Any]:
    if fmt == "h5":
        import h5py

        with h5py.File(path, "r", locking=False) as f:
            return {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    import zarr

    return dict(zarr.open_group(str(path), mode="r").attrs)


def read_into(
    path: Path,
    fmt: str,
    columns: dict[str, Column],
    outputs: dict[str, Any],
    row_start: int,
    flat_start: int = 0,
) -> None:
    """Read whole columns of one shard straight into slices of preallocated arrays.

    Per-row columns land at rows [row_start, row_start + n); a sequence set's flat
    `values` at [flat_start, ...). String columns are appended to the lists in `outputs`.
    """
    if fmt == "h5":
        _read_h5(path, columns, outputs, row_start, flat_start)
    else:
        _read_zarr(path, columns, outputs, row_start, flat_start)


def _target(column: Column, out: np.ndarray, n: int, row_start: int, flat_start: int) -> np.ndarray:
    start = row_start if column.per_row else flat_start
    return out[start : start + n]


def _read_h5(path: Path, columns: dict[str, Column], outputs: dict[str, Any], row_start: int, flat_start: int) -> None:
    import h5py

    with h5py.File(path, "r", locking=False) as f:
        for name, column in columns.items():
            ds = f[name]
            if column.dtype == "str":
                outputs[name].extend(ds.asstr()[()].tolist() if ds.shape[0] else [])
                continue
            n = ds.shape[0]
            if n == 0:
                continue
            target = _target(column, outputs[name], n, row_start, flat_start)
            if target.shape != ds.shape:
                raise ValueError(f"{name} has shape {ds.shape}, sidecar promised {target.shape}")
            if ds.chunks is None:
                ds.read_direct(target)
            else:
                target[...] = ds[...]


def _read_zarr(
    path: Path, columns: dict[str, Column], outputs: dict[str, Any], row_start: int, flat_start: int
) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="r")
    for name, column in columns.items():
        arr = group[name]
        if column.dtype == "str":
            outputs[name].extend(arr[...].tolist() if arr.shape[0] else [])
            continue
        n = arr.shape[0]
        if n == 0:
            continue
        target = _target(column, outputs[name], n, row_start, flat_start)
        if target.shape != arr.shape:
            raise ValueError(f"{name} has shape {arr.shape}, sidecar promised {target.shape}")
        target[...] = arr[...]


def read_back_problem(path: Path, fmt: str, arrays: dict[str, Any]) -> str | None:
    """What differs between the shard at `path` and the `arrays` it was meant to hold, read
    back whole and compared bit for bit (strings as text); None when they are the same.

    A file system that lost a write (a full disk reported late, a flaky network mount)
    can leave a file that opens fine and reads as zeros; only reading it back tells."""
    if fmt == "h5":
        import h5py

        with h5py.File(path, "r", locking=False) as f:
            names = list(f.keys())
            stored = {
                name: (f[name].asstr()[()].tolist() if isinstance(arrays.get(name), list) else f[name][()])
                for name in names
                if name in arrays
            }
    else:
        import zarr

        group = zarr.open_group(str(path), mode="r")
        names = list(group.array_keys())
        stored = {name: group[name][...] for name in names if name in arrays}
        stored = {name: (value.tolist() if isinstance(arrays[name], list) else value) for name, value in stored.items()}
    if sorted(names) != sorted(arrays):
        return f"holds the arrays {sorted(names)} instead of {sorted(arrays)}"
    for name, meant in arrays.items():
        got = stored[name]
        if isinstance(meant, list):
            if [str(v) for v in got] != [str(v) for v in meant]:
                return f"reads back different text in {name}"
            continue
        got = np.asarray(got)
        if got.dtype != meant.dtype or got.shape != meant.shape:
            return f"reads back {name} as {got.dtype}{list(got.shape)} instead of {meant.dtype}{list(meant.shape)}"
        if np.ascontiguousarray(got).tobytes() != np.ascontiguousarray(meant).tobytes():
            return f"reads back different values in {name}"
    return None
