"""Issue 18, cache writing: a full disk during `emo extract` ends the run in one sentence
(exit 1, no traceback, no crash), leaves no shard under a final name that is not exactly
what was meant, and the same command run after freeing space gives a cache equal, array
for array, to an uninterrupted run. Disks are really full (a tiny tmpfs, see
tests/disk_fixtures.py); `emo extract` runs as a real child process with worker processes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from disk_fixtures import small_disk
from reliability_fixtures import Result, assert_clean_error, child_env, emo_argv

from emo.cache import CacheWriter, layout, storage, verify_cache
from emo.errors import CacheError, DiskFullError

# Room for about half of each format's cache (h5: ~370 KiB, zarr: ~1.3 MiB on a page-sized
# file system), so the run gets some shards done and then fails.
HALF_CACHE_KIB = {"h5": 192, "zarr": 640}
PER_FILE_KIB = 24  # the file-size-limit fallback fails each file above this instead


def extract(data_root: Path, cache: Path, fmt: str, workers: int = 0, preexec=None) -> Result:
    args = (
        "extract",
        "--split",
        "train",
        "--data-root",
        data_root,
        "--cache",
        cache,
        "--format",
        fmt,
        "--modalities",
        "audio",
        "--workers",
        workers,
        "--shard-size",
        "4",
        "--max-duration",
        "3",
        "--device",
        "cpu",
    )
    done = subprocess.run(
        emo_argv(*args), env=child_env(), capture_output=True, text=True, timeout=300, preexec_fn=preexec
    )
    return Result(tuple(map(str, args)), done.returncode, done.stdout, done.stderr)


def shard_files(cache: Path) -> list[Path]:
    """Every shard data file or folder under its final name (row table and sets)."""
    return sorted(p for p in cache.rglob("shard-*") if layout.parse_shard_name(p.name) and p.suffix != ".json")


def temporaries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob(".*") if layout.parse_any_temp(p.name))


def read_all(path: Path) -> dict[str, np.ndarray]:
    """Every array of one shard, straight from h5py / zarr (strings as lists)."""
    if path.suffix == ".h5":
        import h5py

        with h5py.File(path, "r", locking=False) as f:
            return {k: (f[k].asstr()[()].tolist() if f[k].dtype.kind == "O" else f[k][()]) for k in f}
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return {k: group[k][...] for k in group.array_keys()}


def assert_same_arrays(got: dict, want: dict, where: str) -> None:
    assert sorted(got) == sorted(want), where
    for name, value in want.items():
        if isinstance(value, list):
            assert got[name] == value, f"{where}:{name}"
        else:
            assert got[name].dtype == value.dtype and got[name].shape == value.shape, f"{where}:{name}"
            assert np.array_equal(got[name], value, equal_nan=True), f"{where}:{name}"


# Decoding worker processes in one of the runs: they must shut down without a word too.
@pytest.mark.parametrize("fmt, workers", [("h5", 2), ("zarr", 0)])
def test_full_disk_stops_extract_in_one_sentence_and_rerun_equals_uninterrupted(synth_root, tmp_path, fmt, workers):
    reference = tmp_path / "reference"
    done = extract(synth_root, reference, fmt)  # the numbers do not depend on --workers
    assert done.returncode == 0, done.describe()

    with small_disk(tmp_path, kib=HALF_CACHE_KIB[fmt]) as disk:
        print(f"small disk: {disk.method}")
        if disk.method != "tmpfs":
            disk.kib = PER_FILE_KIB
        cache = disk.path / "cache"
        full = extract(synth_root, cache, fmt, workers, preexec=disk.preexec)
        sentence = assert_clean_error(full, 1, mentions=("Disk full while writing", "free space"))
        assert "run the same command again" in sentence and str(cache) in sentence
        assert "Exception ignored" not in full.stderr  # nothing swallowed in a destructor

        # Whatever carries a final name is a finished, verified shard: no data without its
        # sidecar, no sidecar whose checksums the bytes fail.
        finals = shard_files(cache)
        if disk.method == "tmpfs":
            assert finals, "the disk should have room for some shards: the failure is mid-way"
        for data in finals:
            assert (data.parent / layout.sidecar_name(layout.parse_shard_name(data.name)[0])).is_file(), data
        if (cache / layout.CACHE_FILE).is_file():
            shard_problems = [p for p in verify_cache(cache) if p.startswith("Shard ")]
            assert shard_problems == []
        assert temporaries(cache) == [], "a failed write removes its temporaries"

        disk.grow()
        again = extract(synth_root, cache, fmt, workers, preexec=disk.preexec)
        assert again.returncode == 0 and "Traceback" not in again.stderr, again.describe()
        assert temporaries(cache) == []
        assert verify_cache(cache) == []
        names = [p.relative_to(cache) for p in shard_files(cache)]
        assert names == [p.relative_to(reference) for p in shard_files(reference)]
        for name in names:
            assert_same_arrays(read_all(cache / name), read_all(reference / name), str(name))
            side = json.loads((cache / name).with_suffix(".json").read_text())
            ref_side = json.loads((reference / name).with_suffix(".json").read_text())
            assert side["sha256"] == ref_side["sha256"], f"{name}: the same bytes as the uninterrupted run"


# -- the writer, without a subprocess ----------------------------------------------------


def _rows_and_set(n: int = 4):
    from emo.cache import SetSpec

    rows = {
        "dialogue_id": np.arange(n, dtype=np.int32),
        "utterance_id": np.zeros(n, np.int32),
        "emotion": np.arange(n, dtype=np.int64) % 7,
        "sentiment": np.arange(n, dtype=np.int64) % 3,
        "speaker": [f"s{i}" for i in range(n)],
        "text": [f"line {i}" for i in range(n)],
    }
    spec = SetSpec("text/toy", "vector", 8, "toy-encoder", {"model": "toy"}, arrays=("mean",))
    rng = np.random.default_rng(0)
    arrays = {
        "mean": rng.standard_normal((n, 8)).astype(np.float16),
        "present": np.ones(n, bool),
        "truncated": np.zeros(n, bool),
    }
    return rows, spec, arrays


@pytest.mark.parametrize("fmt", ["h5", "zarr"])
def test_a_shard_that_reads_back_wrong_never_gets_its_final_name(tmp_path, fmt, monkeypatch):
    """What h5py did on a full disk: the file is written, closes 'fine', and reads back as zeros."""
    rows, spec, arrays = _rows_and_set()
    writer = CacheWriter(tmp_path / "c", fmt=fmt)
    writer.add_set(spec)
    writer.write_set("train", spec.name, 0, arrays)  # a good, finished shard 0
    folder = layout.part_dir(writer.root, "train", spec.name)
    before = layout.checksum_files(folder / layout.shard_data_name(0, fmt))
    real_write = storage.write_arrays

    def write_zeros(path, fmt_, values, *args, **kwargs):
        real_write(
            path, fmt_, {k: (np.zeros_like(v) if k == "mean" else v) for k, v in values.items()}, *args, **kwargs
        )

    monkeypatch.setattr(storage, "write_arrays", write_zeros)
    for index in (1, 0):  # a new shard, and a rewrite of a finished one (overwrite)
        writer.overwrite = index == 0
        with pytest.raises(CacheError, match=r"reads back different values in mean .*not kept") as raised:
            writer.write_set("train", spec.name, index, arrays)
        assert not isinstance(raised.value, DiskFullError)
        assert not any(layout.parse_any_temp(p.name) for p in folder.iterdir()), "its temporary is removed"
    writer.overwrite = False
    assert not (folder / layout.shard_data_name(1, fmt)).exists() and not (folder / layout.sidecar_name(1)).exists()
    assert layout.checksum_files(folder / layout.shard_data_name(0, fmt)) == before, "the finished shard stays"
    assert writer.part_done("train", 0, spec.name) and not writer.part_done("train", 1, spec.name)


def _write_toy_cache(root: Path, rows, spec, arrays) -> None:
    writer = CacheWriter(root, fmt="h5", config={"n_mels": 40}, defer_create=True)
    writer.add_set(spec)
    for index in range(3):
        if not writer.shard_done("train", index):
            writer.write_set("train", spec.name, index, arrays)
            writer.write_rows("train", index, dict(rows, dialogue_id=rows["dialogue_id"] + 10 * index))
    writer.finalize("train", total_rows=12, expected_shards=3)


def _checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): layout.sha256_file(p) for p in shard_files(root)}


def test_every_file_of_the_cache_reports_a_full_disk_and_resumes(tmp_path):
    """cache.json, set.json, a shard, its sidecar, split.json, manifest.json: whichever runs
    out of room, one DiskFullError names it (or its folder), nothing unfinished carries a
    final name, and after freeing space the same writes finish the cache byte for byte. A
    sweep of disk sizes lands the failure on each kind of file in turn."""
    rows, spec, arrays = _rows_and_set()
    _write_toy_cache(tmp_path / "reference", rows, spec, arrays)
    want = _checksums(tmp_path / "reference")
    named: set[str] = set()
    for kib in range(4, 160, 4):
        with small_disk(tmp_path, kib=kib) as disk:
            if disk.method != "tmpfs":
                pytest.skip("needs a file system that really fills up (root mounts a tmpfs)")
            root = disk.path / "c"
            try:
                _write_toy_cache(root, rows, spec, arrays)
                break  # room for everything: every smaller disk failed somewhere
            except DiskFullError as error:
                message = str(error)
            assert message.startswith(f"Disk full while writing {root}") and message.endswith("command again.")
            named.add(Path(message.split(" while writing ")[1].split(";")[0]).name)
            for data in shard_files(root) if root.is_dir() else []:
                sidecar = json.loads(
                    (data.parent / layout.sidecar_name(layout.parse_shard_name(data.name)[0])).read_text()
                )
                assert sidecar["files"][""]["sha256"] == layout.sha256_file(data), data
            assert not (temporaries(root) if root.is_dir() else [])
            disk.grow()
            _write_toy_cache(root, rows, spec, arrays)
            assert _checksums(root) == want and verify_cache(root) == []
    else:
        pytest.fail("the largest disk of the sweep should have had room for the whole cache")
    # The cache folder (cache.json, config.toml), the set's folder (set.json), each shard and
    # sidecar, and the split's folder (split.json, manifest.json) each ran out of room once.
    assert {"c", "toy", "shard-00000.h5", "shard-00000.json", "shard-00002.json", "train"} <= named, named
