"""emo.cache on real HDF5 and Zarr files: round trips, atomicity, resume, per-set
fingerprints, multi-process shards, verification, feature sets added / replaced / removed
without touching other files, version-1 caches and the `emo cache` commands."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from emo import atomic
from emo.cache import (
    CacheWriter,
    ClipFailure,
    ClipRecord,
    OldCacheError,
    SetSpec,
    UnknownSplitError,
    load_split,
    open_cache,
    set_config_path,
    verify_cache,
)
from emo.cache import layout, storage
from cache_writing import V1Writer
from emo.cache.clips import build_set_columns
from emo.cache.fingerprint import describe_difference, fingerprint_digest
from emo.cache.maintenance import remove_set, upgrade_cache
from emo.cache.manifest import build_manifest
from emo.commands.cache import app
from emo.errors import CacheError, ConfigError, UsageError
from emo.fuse.inputs import compose

# A version-1 style cache-wide fingerprint, as `write_shard` takes it: the seed's sets are
# named after its encoders and each gets the slice of it that made its numbers.
FINGERPRINT = {
    "extract_version": 1,
    "text_encoder": "tiny-bert",
    "visual_encoder": "tiny-clip",
    "frames": 3,
    "audio": {"n_mels": 6, "views": 2},
    "max_duration": 4.0,
}
TEXT, VISUAL, AUDIO = "text/tiny-bert", "visual/tiny-clip", "audio/mel"
SEED_SETS = (TEXT, AUDIO, VISUAL)
SET_FINGERPRINTS = {
    TEXT: {"extract_version": 1, "text_encoder": "tiny-bert"},
    VISUAL: {"extract_version": 1, "visual_encoder": "tiny-clip", "frames": 3, "max_duration": 4.0},
    AUDIO: {"extract_version": 1, "audio": {"n_mels": 6, "views": 2}, "max_duration": 4.0},
}
ALL_SETS = {"text": [TEXT], "audio": [AUDIO], "visual": [VISUAL]}
FORMATS = ("h5", "zarr")


def make_rows(seed: int, start: int, n: int, views: int = 2, modalities=("text", "audio", "visual")) -> dict:
    """One shard's version-1 style columns with awkward but valid content: empty mel for
    some clips, non-ASCII speakers, failures, shard-relative mel_index."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 9, size=(n, views))
    lengths[::4] = 0  # clips without audio
    flat = lengths.ravel()
    starts = (np.cumsum(flat) - flat).reshape(n, views)
    rows = {
        "dialogue_id": np.arange(start, start + n, dtype=np.int32) // 3,
        "utterance_id": np.arange(start, start + n, dtype=np.int32) % 3,
        "emotion": rng.integers(0, 7, n).astype(np.int64),
        "sentiment": rng.integers(0, 3, n).astype(np.int64),
        "speaker": [["Ross", "Phoebe", "Jöey 🎭", ""][i % 4] for i in range(n)],
        "has_text": np.ones(n, dtype=bool),
        "has_audio": lengths[:, 0] > 0,
        "has_visual": rng.random(n) > 0.2,
        "truncated": rng.random(n) > 0.7,
        "failure": ["" if i % 5 else "unreadable" for i in range(n)],
    }
    if "text" in modalities:
        rows["text_cls"] = rng.standard_normal((n, 8)).astype(np.float16)
        rows["text_mean"] = rng.standard_normal((n, 8)).astype(np.float16)
    if "visual" in modalities:
        rows["visual"] = rng.standard_normal((n, 3, 5)).astype(np.float16)
        rows["visual_mask"] = rng.random((n, 3)) > 0.3
    if "audio" in modalities:
        rows["mel"] = rng.standard_normal((int(flat.sum()), 6)).astype(np.float16)
        rows["mel_index"] = np.stack([starts, lengths], axis=-1).astype(np.int64)
    return rows


SHARD_SIZES = (5, 4, 3)


def shard_plan(seed: int = 0, modalities=("text", "audio", "visual")):
    plan, start = [], 0
    for index, n in enumerate(SHARD_SIZES):
        failures = [{"reason": "unreadable", "modality": "visual", "dialogue_id": start, "utterance_id": 0}]
        if index == 1:
            failures.append(
                {"reason": "missing", "modality": "audio+visual", "dialogue_id": start + 1, "utterance_id": 1}
            )
        plan.append((index, make_rows(seed + index, start, n, modalities=modalities), failures))
        start += n
    return plan


def write_cache(root: Path, fmt: str, plan=None, indices=None, **kwargs) -> CacheWriter:
    plan = plan if plan is not None else shard_plan()
    writer = V1Writer(root, FINGERPRINT, fmt=fmt, **kwargs)
    for index, rows, failures in plan:
        if indices is None or index in indices:
            writer.write_shard("train", index, rows, failures, {"decode_s": 0.5})
    writer.finalize("train", total_rows=sum(SHARD_SIZES), expected_shards=len(SHARD_SIZES), ignored_videos=2)
    return writer


def expected_split(plan) -> dict:
    """The version-1 columns a split must load back as: shards concatenated, mel_index made global."""
    out = {}
    for name in plan[0][1]:
        parts = [rows[name] for _, rows, _ in plan]
        out[name] = sum(parts, []) if isinstance(parts[0], list) else np.concatenate(parts)
    if "mel" in out:
        offset, indices = 0, []
        for _, rows, _ in plan:
            index = rows["mel_index"].copy()
            index[..., 0] += offset
            offset += len(rows["mel"])
            indices.append(index)
        out["mel_index"] = np.concatenate(indices)
    return out


ROW_FIELDS = ("dialogue_id", "utterance_id", "emotion", "sentiment", "speaker")
# Where write_shard files each version-1 column: (set, array); "present" is the set's flag.
V1_IN_SETS = {
    "has_text": (TEXT, "present"),
    "text_cls": (TEXT, "cls"),
    "text_mean": (TEXT, "mean"),
    "has_visual": (VISUAL, "present"),
    "visual": (VISUAL, "values"),
    "visual_mask": (VISUAL, "mask"),
    "has_audio": (AUDIO, "present"),
    "mel": (AUDIO, "values"),
    "mel_index": (AUDIO, "index"),
}
# The model inputs `compose` fills from a modality's only set, and from which set.
MODALITY_FIELDS = {
    "has_text": TEXT,
    "text_cls": TEXT,
    "text_mean": TEXT,
    "has_visual": VISUAL,
    "visual": VISUAL,
    "visual_mask": VISUAL,
    "has_audio": AUDIO,
    "mel": AUDIO,
    "mel_index": AUDIO,
}


def _check(name: str, got, want) -> None:
    if isinstance(want, list):
        assert got == want, name
    else:
        assert got.dtype == want.dtype, f"{name}: {got.dtype} != {want.dtype}"
        np.testing.assert_array_equal(got, want, err_msg=name)


def assert_matches_v1(features, expected: dict, sets=None) -> None:
    """A loaded split holds exactly `sets` (default: every set `expected`'s columns fill),
    with the row table, each set's arrays and the model inputs composed from them (one set
    per modality) equal to the version-1 columns they were written from. (The v1 `failure` column has no
    v2 form: failures live in set sidecars, see the per-clip tests.)"""
    if sets is None:
        sets = {name for column, (name, array) in V1_IN_SETS.items() if column in expected and array != "present"}
    assert set(features.sets) == set(sets)
    n = len(expected["emotion"])
    assert len(features) == n and features.text == [""] * n
    for name in ROW_FIELDS:
        _check(name, getattr(features, name), expected[name])
    for column, (name, array) in V1_IN_SETS.items():
        if name in sets:
            loaded = features.sets[name]
            _check(column, loaded.present if array == "present" else loaded.arrays[array], expected[column])
    for name in sets:
        loaded = features.sets[name]
        truncated = np.zeros(n, dtype=bool) if name == TEXT else expected["truncated"]  # text is never cut
        _check(f"{name} truncated", loaded.truncated, truncated)
        assert loaded.fingerprint == SET_FINGERPRINTS[name]
    inputs = compose(features, {name.partition("/")[0]: [name] for name in sets})
    composed = dict(expected)
    if VISUAL in sets:  # only frames of a present row count, and a row without a valid frame has no visual input
        composed["visual_mask"] = expected["visual_mask"] & expected["has_visual"][:, None]
        composed["has_visual"] = composed["visual_mask"].any(1)
    for field, name in MODALITY_FIELDS.items():
        if name in sets:
            _check(field, getattr(inputs, field), composed[field])
        elif field.startswith("has_"):
            assert not getattr(inputs, field).any(), field
        else:
            assert getattr(inputs, field) is None, field
    modalities = tuple(m for m, name in (("text", TEXT), ("audio", AUDIO), ("visual", VISUAL)) if name in sets)
    assert features.modalities == inputs.modalities == modalities
    media = bool(set(sets) & {AUDIO, VISUAL})
    _check("truncated", inputs.truncated, expected["truncated"] if media else np.zeros(n, dtype=bool))


def assert_same_split(got, want) -> None:
    """Two loaded splits hold the same rows and the same sets, array for array."""
    for name in (*ROW_FIELDS, "text"):
        _check(name, getattr(got, name), getattr(want, name))
    assert set(got.sets) == set(want.sets)
    for name, loaded in want.sets.items():
        other = got.sets[name]
        assert (other.kind, other.dim, other.digest, other.fingerprint) == (
            loaded.kind,
            loaded.dim,
            loaded.digest,
            loaded.fingerprint,
        )
        _check(f"{name} present", other.present, loaded.present)
        _check(f"{name} truncated", other.truncated, loaded.truncated)
        assert set(other.arrays) == set(loaded.arrays)
        for array, value in loaded.arrays.items():
            _check(f"{name} {array}", other.arrays[array], value)


def shard_data(root: Path, index: int, set_name: str | None = None) -> Path:
    """Shard `index` of the train row table, or of feature set `set_name`."""
    return next(layout.part_dir(root, "train", set_name).glob(f"shard-{index:05d}.[hz]*"))


def _shard_checksums(root: Path) -> dict[str, str]:
    """Every finished shard's checksum, row table and sets alike, by path in the cache."""
    return {
        p.relative_to(root).as_posix(): json.loads(p.read_text())["sha256"] for p in sorted(root.rglob("shard-*.json"))
    }


def _file_hashes(*folders: Path, root: Path | None = None) -> dict[str, str]:
    """sha256 of every file under `folders` (a file path counts as itself)."""
    out = {}
    for folder in folders:
        paths = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
        for path in paths:
            out[path.relative_to(root or folder.parent).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _row_table_files(root: Path, split: str = "train") -> list[Path]:
    return sorted((root / split).glob("shard-*"))


def _flip_byte_in(data_path: Path, fmt: str, array: str) -> None:
    """Flip one bit in the middle of one array's stored bytes (not in a header), so the
    shard still opens and reads, with a wrong number."""
    if fmt == "h5":
        import h5py

        with h5py.File(data_path, "r", locking=False) as f:
            offset, size = f[array].id.get_offset(), f[array].id.get_storage_size()
        victim = data_path
    else:
        chunks = [p for rel, p in layout.list_data_files(data_path) if rel.startswith(f"{array}/c")]
        victim, offset, size = chunks[0], 0, chunks[0].stat().st_size
    assert size > 0
    data = bytearray(victim.read_bytes())
    data[offset + size // 2] ^= 0x01
    victim.write_bytes(bytes(data))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_array_round_trips_exactly(tmp_path, fmt):
    plan = shard_plan()
    write_cache(tmp_path / "c", fmt, plan)
    features = load_split(tmp_path / "c", "train")
    assert len(features) == sum(SHARD_SIZES)
    assert set(features.sets) == set(SEED_SETS) and features.modalities == ("text", "audio", "visual")
    assert_matches_v1(features, expected_split(plan))
    # Each set carries its own fingerprint and digest (the ones `emo cache info` lists).
    info = open_cache(tmp_path / "c")
    assert {n: s.digest for n, s in features.sets.items()} == {n: s.digest for n, s in info.sets.items()}
    assert len({s.digest for s in info.sets.values()}) == 3
    assert features.extra["fingerprint_digest"] == info.digest == fingerprint_digest(features.fingerprint)
    # mel index is global: every clip's view-0 frames equal the shard-local slice
    rows = plan[1][1]
    local = rows["mel_index"][2, 0]
    mel, index = features.sets[AUDIO].arrays["values"], features.sets[AUDIO].arrays["index"]
    start, length = index[SHARD_SIZES[0] + 2, 0]
    np.testing.assert_array_equal(mel[start : start + length], rows["mel"][local[0] : local[0] + local[1]])
    # Composing the raw sets gives the same per-modality fields.
    composed = compose(features, ALL_SETS)
    assert composed.modalities == ("text", "audio", "visual")
    expected = expected_split(plan)
    for name in ("text_cls", "text_mean", "visual", "mel", "mel_index"):
        _check(name, getattr(composed, name), expected[name])


def test_h5_and_zarr_caches_hold_identical_arrays(tmp_path):
    plan = shard_plan(seed=7)
    loaded = {}
    for fmt in FORMATS:
        write_cache(tmp_path / fmt, fmt, plan)
        loaded[fmt] = load_split(tmp_path / fmt, "train")
    assert_same_split(loaded["zarr"], loaded["h5"])
    assert_matches_v1(loaded["zarr"], expected_split(plan))


@pytest.mark.parametrize("fmt", FORMATS)
def test_float32_features_are_stored_as_float16_and_subsets_load(tmp_path, fmt):
    plan = shard_plan(modalities=("text",))
    for _, rows, _ in plan:
        rows["text_cls"] = rows["text_cls"].astype(np.float32)
    write_cache(tmp_path / "c", fmt, plan)
    features = load_split(tmp_path / "c", "train", modalities=("text",))
    assert set(features.sets) == {TEXT} and features.sets[TEXT].arrays["cls"].dtype == np.float16
    expected = expected_split(plan)
    expected["text_cls"] = expected["text_cls"].astype(np.float16)
    assert_matches_v1(features, expected)
    with pytest.raises(CacheError, match="holds no audio features"):
        load_split(tmp_path / "c", "train", modalities=("text", "audio"))
    with pytest.raises(CacheError, match=f"has no feature set {AUDIO}; it holds: {TEXT}"):
        load_split(tmp_path / "c", "train", sets=[AUDIO])
    with pytest.raises(UsageError, match="Unknown modality"):
        load_split(tmp_path / "c", "train", modalities=("smell",))


def test_modality_and_set_subsets_read_only_their_own_files(tmp_path, monkeypatch):
    root = tmp_path / "c"
    plan = shard_plan()
    write_cache(root, "h5", plan)
    read = []
    real_read = storage.read_into
    monkeypatch.setattr(storage, "read_into", lambda path, *a, **k: (read.append(path), real_read(path, *a, **k))[1])
    features = load_split(root, "train", modalities=("audio",))
    assert set(features.sets) == {AUDIO}
    assert_matches_v1(features, expected_split(plan), sets={AUDIO})
    assert read and all(p.parent in (root / "train", layout.set_dir(root, AUDIO) / "train") for p in read)
    read.clear()
    features = load_split(root, "train", sets=[VISUAL, TEXT])
    assert list(features.sets) == [VISUAL, TEXT]
    assert_matches_v1(features, expected_split(plan), sets={TEXT, VISUAL})
    assert not [p for p in read if layout.set_dir(root, AUDIO) in p.parents]


def test_malformed_shards_are_rejected_at_write_time(tmp_path):
    writer = V1Writer(tmp_path / "c", FINGERPRINT)
    rows = make_rows(0, 0, 4)
    bad = dict(rows, emotion=rows["emotion"][:3])
    with pytest.raises(ValueError, match="rows"):
        writer.write_shard("train", 0, bad, [])
    bad = dict(rows, mel_index=rows["mel_index"] + 1000)
    with pytest.raises(ValueError, match="audio/mel: index points outside"):
        writer.write_shard("train", 0, bad, [])
    with pytest.raises(ValueError, match="reason"):
        writer.write_shard("train", 0, rows, [{"modality": "audio"}])
    assert not writer.shard_done("train", 0)
    # The same checks on a set's own columns: each array is required, at the set's dim.
    text = {
        "present": np.ones(4, bool),
        "truncated": np.zeros(4, bool),
        "cls": rows["text_cls"],
        "mean": rows["text_mean"],
    }
    with pytest.raises(ValueError, match=r"missing columns \['mean'\]"):
        writer.write_set("train", TEXT, 0, {k: v for k, v in text.items() if k != "mean"})
    with pytest.raises(ValueError, match="dim"):
        writer.write_set("train", TEXT, 0, dict(text, mean=np.zeros((4, 7), np.float16)))
    with pytest.raises(ValueError, match="must be bool"):
        writer.write_set("train", TEXT, 0, dict(text, present=np.ones(4, np.int64)))
    with pytest.raises(ValueError, match=r"unknown feature set text/tiny-bert columns \['extra'\]"):
        writer.write_set("train", TEXT, 0, dict(text, extra=np.zeros(4, bool)))
    # A set shard must hold its row-table shard's rows.
    writer.write_rows("train", 1, {k: rows[k] for k in ROW_FIELDS})
    with pytest.raises(ValueError, match="has 3 rows, the row table's has 4"):
        writer.write_set("train", TEXT, 1, {k: v[:3] for k, v in text.items()})
    with pytest.raises(ValueError, match="invalid feature set name"):
        SetSpec("smell/nose", "vector", 4, "nose", {})
    with pytest.raises(ValueError, match="kind"):
        SetSpec("text/x", "matrix", 4, "x", {})
    with pytest.raises(ValueError, match="invalid feature set name"):
        SetSpec("text/a+b", "vector", 4, "x", {})


@pytest.mark.parametrize("fmt", FORMATS)
def test_leftover_temporaries_are_never_read_and_get_cleaned(tmp_path, fmt):
    root = tmp_path / "c"
    write_cache(root, fmt)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    host = atomic.this_host()
    audio = layout.set_dir(root, AUDIO) / "train"
    stale = root / "train" / f".shard-00001.{fmt}.tmp-{host}-{dead_pid}"
    if fmt == "zarr":
        (stale / "emotion").mkdir(parents=True)
        (stale / "emotion" / "zarr.json").write_text("garbage")
    else:
        stale.write_bytes(b"garbage")
    stale_set = audio / f".shard-00001.{fmt}.tmp-{host}-{dead_pid}"
    stale_set.write_bytes(b"garbage")
    stale_new_shard = root / "train" / f".shard-00009.{fmt}.tmp-{host}-{dead_pid}"
    stale_new_shard.write_bytes(b"garbage")
    stale_manifest = root / f".manifest.json.tmp-{host}-{dead_pid}"
    stale_manifest.write_text("{")
    stale_set_json = layout.set_dir(root, TEXT) / f".set.json.tmp-{host}-{dead_pid}"
    stale_set_json.write_text("{")
    live = root / "train" / f".shard-00002.{fmt}.tmp-{host}-{os.getpid()}"
    live.write_bytes(b"someone is writing this")
    live_set = audio / f".shard-00002.{fmt}.tmp-{host}-{os.getpid()}"
    live_set.write_bytes(b"someone is writing this")

    assert len(load_split(root, "train")) == sum(SHARD_SIZES)
    assert verify_cache(root) == []
    info = open_cache(root)
    assert info.splits["train"].missing_shards == [] and all(s.splits["train"].complete for s in info.sets.values())

    CacheWriter(root, fmt=fmt)  # reopening cleans dead processes' temporaries
    for path in (stale, stale_set, stale_new_shard, stale_manifest, stale_set_json):
        assert not path.exists(), path
    assert live.exists() and live_set.exists(), "a temporary of a live process must be left alone"
    writer = V1Writer(root, FINGERPRINT, fmt=fmt, overwrite=True)
    writer.write_shard("train", 2, shard_plan()[2][1], [])  # rewriting shard 2 drops its old temporaries
    assert not live.exists() and not live_set.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_shard_without_sidecar_is_not_done(tmp_path, fmt):
    root = tmp_path / "c"
    writer = write_cache(root, fmt)
    assert writer.shard_done("train", 1)
    # A set's shard without its sidecar: that set is unfinished, the others still load.
    (layout.set_dir(root, VISUAL) / "train" / "shard-00001.json").unlink()
    assert shard_data(root, 1, VISUAL).exists()
    assert not writer.shard_done("train", 1) and not writer.part_done("train", 1, VISUAL)
    assert writer.part_done("train", 1) and writer.part_done("train", 1, TEXT)
    with pytest.raises(
        CacheError,
        match=f"Feature set {VISUAL} of split 'train'.*incomplete "
        r"\(shard-00001 has no readable sidecar.*re-run `emo extract --split train`",
    ):
        load_split(root, "train")
    assert set(load_split(root, "train", sets=[TEXT, AUDIO]).sets) == {TEXT, AUDIO}
    assert any(f"{VISUAL}/train/shard-00001" in p for p in verify_cache(root))
    info = open_cache(root)
    assert info.splits["train"].complete and not info.sets[VISUAL].splits["train"].complete
    assert info.splits["train"].modalities == ("text", "audio")
    # The row table's shard without its sidecar: the whole split is unfinished.
    (root / "train" / "shard-00001.json").unlink()
    assert shard_data(root, 1).exists() and not writer.part_done("train", 1)
    with pytest.raises(CacheError, match="Split 'train'.*shard-00001 has no readable sidecar.*re-run `emo extract"):
        load_split(root, "train", sets=[TEXT])
    assert any(p.startswith("Shard train/shard-00001") for p in verify_cache(root))
    assert not open_cache(root).splits["train"].complete


@pytest.mark.parametrize("crash_at", ["rows", "set"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_interrupted_write_leaves_no_shard_and_resume_equals_uninterrupted(tmp_path, fmt, crash_at, monkeypatch):
    plan = shard_plan()
    reference = tmp_path / "ref"
    write_cache(reference, fmt, plan)

    root = tmp_path / "c"
    writer = V1Writer(root, FINGERPRINT, fmt=fmt)
    writer.write_shard("train", 0, plan[0][1], plan[0][2], {"decode_s": 0.5})
    real_write = storage.write_arrays
    calls = []
    crash_call = 3 if crash_at == "rows" else 1  # write_shard writes text, audio, visual, then the row table

    def crash_midway(path, *args, **kwargs):
        real_write(path, *args, **kwargs)  # the temporary is complete on disk...
        calls.append(path)
        if len(calls) > crash_call:
            raise KeyboardInterrupt  # ...but the process dies before the rename

    monkeypatch.setattr(storage, "write_arrays", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        writer.write_shard("train", 1, plan[1][1], plan[1][2])
    monkeypatch.setattr(storage, "write_arrays", real_write)
    assert not writer.shard_done("train", 1)
    crashed = None if crash_at == "rows" else AUDIO
    folder = layout.part_dir(root, "train", crashed)
    assert not (folder / f"shard-00001.{fmt}").exists()
    # Ctrl-C removes the temporary it was writing (a SIGKILL leaves one: see the killed-process test)
    assert not any(layout.parse_temp_name(p.name) for p in folder.iterdir())
    if crash_at == "set":  # what finished before the crash stays finished; the row table comes last
        assert writer.part_done("train", 1, TEXT)
        assert not writer.part_done("train", 1, VISUAL) and not writer.part_done("train", 1)
    else:  # every set of the shard is written; only the row table that marks it done is missing
        assert all(writer.part_done("train", 1, name) for name in (TEXT, AUDIO, VISUAL))
    writer.finalize("train", total_rows=sum(SHARD_SIZES), expected_shards=3)
    with pytest.raises(CacheError, match="incomplete"):
        load_split(root, "train")

    resumed = V1Writer(root, FINGERPRINT, fmt=fmt)
    for spec in SPECS:  # as extraction does: a set counts once registered (write_shard registers on first write)
        resumed.add_set(spec)
    todo = [index for index, _, _ in plan if not resumed.shard_done("train", index)]
    assert todo == [1, 2]
    write_cache(root, fmt, plan, indices=todo)
    assert not any(layout.parse_temp_name(p.name) for p in folder.iterdir())
    assert_same_split(load_split(root, "train"), load_split(reference, "train"))
    assert _shard_checksums(root) == _shard_checksums(reference)
    assert len(_shard_checksums(root)) == 12  # 3 row-table shards + 3 sets x 3 shards


def test_a_fingerprint_difference_names_the_settings_that_differ_by_their_paths():
    made = {"encoder": {"id": "minilm", "max_length": 128, "layers": [6]}, "sample_rate": 16000, "fps": 1}
    now = {"encoder": {"id": "minilm", "max_length": 64, "layers": [6]}, "sample_rate": 16000}
    assert describe_difference(now, made) == "encoder.max_length (128 vs 64), fps (1 vs None)"
    many = {f"k{i}": {"v": i} for i in range(5)}
    assert (
        describe_difference(many, {})
        == "k0 (None vs {'v': 0}), k1 (None vs {'v': 1}), k2 (None vs {'v': 2}) and 2 more"
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_set_fingerprint_or_format_mismatch_is_refused(tmp_path, fmt):
    root = tmp_path / "c"
    write_cache(root, fmt)
    before = _file_hashes(root, root=root)
    changed = dict(FINGERPRINT, audio={"n_mels": 40, "views": 2})
    writer = V1Writer(root, changed, fmt=fmt)  # the row table is the same: opening is fine...
    # the one setting that differs, by its path, not both whole fingerprints
    refusal = (
        r"Feature set audio/mel .* made differently \(fingerprint\.audio\.n_mels \(6 vs 40\)\); .*--name.*--overwrite"
    )
    with pytest.raises(CacheError, match=refusal):
        writer.write_shard("train", 0, shard_plan()[0][1], [])  # ...the audio set made differently is not
    other = "zarr" if fmt == "h5" else "h5"
    with pytest.raises(CacheError, match=f"stored as {fmt}, not {other}.*--overwrite.*--cache"):
        CacheWriter(root, fmt=other)
    assert _file_hashes(root, root=root) == before, "a refused writer must not touch the cache"
    # A row table of another layout (another cache schema's rows) is refused as a whole.
    original = (root / "cache.json").read_bytes()
    meta = json.loads(original)
    meta["fingerprint"] = dict(meta["fingerprint"], rows="ids and labels only")
    meta["fingerprint_digest"] = fingerprint_digest(meta["fingerprint"])
    # Sealed as emo writes it (a plain hand edit is damage, which a writer repairs from the sidecars).
    from emo.cache.metadata import sealed

    (root / "cache.json").write_text(json.dumps(sealed(meta)))
    with pytest.raises(CacheError, match="layout differs: rows .*--overwrite.*--cache"):
        CacheWriter(root, fmt=fmt)
    (root / "cache.json").write_bytes(original)
    assert _file_hashes(root, root=root) == before
    assert len(load_split(root, "train")) == sum(SHARD_SIZES)
    with pytest.raises(ConfigError):
        CacheWriter(tmp_path / "d", fmt="parquet")


def test_overwrite_with_another_format_wipes_only_emo_files(tmp_path):
    root = tmp_path / "c"
    write_cache(root, "h5")
    (root / "notes.txt").write_text("mine")
    (root / "mine").mkdir()
    (root / "mine" / "data.csv").write_text("a,b\n")
    writer = V1Writer(root, dict(FINGERPRINT, audio={"n_mels": 40, "views": 2}), fmt="zarr", overwrite=True)
    assert not (root / "train").exists() and not (root / "sets").exists()
    assert (root / "notes.txt").read_text() == "mine" and (root / "mine" / "data.csv").read_text() == "a,b\n"
    info = open_cache(root)
    assert info.format == "zarr" and info.splits == {} and info.sets == {}
    assert not writer.shard_done("train", 0)
    writer.write_shard("train", 0, make_rows(0, 0, 4), [])
    assert open_cache(root).sets[AUDIO].fingerprint["audio"]["n_mels"] == 40


def test_overwrite_same_fingerprint_redoes_shards_and_drops_stale_ones(tmp_path):
    root = tmp_path / "c"
    writer = V1Writer(root, FINGERPRINT)
    for index in range(4):
        writer.write_shard("train", index, make_rows(index, index * 4, 4), [])
    writer.finalize("train", total_rows=16, expected_shards=4)
    redo = V1Writer(root, FINGERPRINT, overwrite=True)
    assert not redo.shard_done("train", 0)
    plan = shard_plan(seed=3)
    for index, rows, failures in plan:
        redo.write_shard("train", index, rows, failures)
        assert redo.shard_done("train", index)
    redo.finalize("train", total_rows=sum(SHARD_SIZES), expected_shards=3)
    for folder in [root / "train"] + [layout.set_dir(root, name) / "train" for name in SEED_SETS]:
        assert not list(folder.glob("shard-00003.*")), f"stale shard 3 left in {folder}"
    assert_matches_v1(load_split(root, "train"), expected_split(plan))


def _write_part(root: str, fmt: str, num_shards: int, shard_index: int) -> None:
    """One `--num-shards N --shard-index i` process: writes shards with index % N == i."""
    plan = shard_plan()
    indices = {index for index, _, _ in plan if index % num_shards == shard_index}
    write_cache(Path(root), fmt, plan, indices=indices)


@pytest.mark.parametrize("fmt", FORMATS)
def test_disjoint_writer_processes_union_equals_single_writer(tmp_path, fmt):
    single = tmp_path / "single"
    write_cache(single, fmt)
    shared = tmp_path / "shared"
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_write_part, args=(str(shared), fmt, 2, i)) for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert_same_split(load_split(shared, "train"), load_split(single, "train"))
    assert _shard_checksums(shared) == _shard_checksums(single)
    manifest = json.loads((shared / "manifest.json").read_text())
    # the last finalizer may have run before the other process's last shard; a re-derive is always right
    info = open_cache(shared)
    assert info.splits["train"].complete and all(s.splits["train"].complete for s in info.sets.values())
    reference = open_cache(single)
    assert manifest["fingerprint_digest"] == reference.digest
    assert {n: s["fingerprint_digest"] for n, s in manifest["sets"].items()} == {
        n: s.digest for n, s in reference.sets.items()
    }


def test_partial_multi_process_run_is_incomplete_until_all_parts_finish(tmp_path):
    root = tmp_path / "c"
    _write_part(str(root), "h5", 2, 0)
    info = open_cache(root)
    assert not info.splits["train"].complete and info.splits["train"].missing_shards == [1]
    assert all(s.splits["train"].missing_shards == [1] and not s.splits["train"].complete for s in info.sets.values())
    with pytest.raises(CacheError, match="shard 1 is missing"):
        load_split(root, "train")
    _write_part(str(root), "h5", 2, 1)
    info = open_cache(root)
    assert info.splits["train"].complete and all(s.splits["train"].complete for s in info.sets.values())


@pytest.mark.parametrize("fmt", FORMATS)
def test_verify_catches_a_flipped_byte_in_a_set_and_in_the_row_table(tmp_path, fmt):
    root = tmp_path / "c"
    plan = shard_plan()
    write_cache(root, fmt, plan)
    assert verify_cache(root) == []
    audio_label = f"{AUDIO}/train/shard-00001.{fmt}"
    rows_label = f"train/shard-00002.{fmt}"

    _flip_byte_in(shard_data(root, 1, AUDIO), fmt, "values")
    problems = verify_cache(root)
    assert len(problems) == 1 and audio_label in problems[0] and "checksum" in problems[0], problems
    silently_wrong = load_split(root, "train")  # sizes still match: the cheap check cannot see it...
    assert not np.array_equal(silently_wrong.sets[AUDIO].arrays["values"], expected_split(plan)["mel"])
    with pytest.raises(CacheError, match=f"{re.escape(audio_label)} fails its checksum"):
        load_split(root, "train", verify=True)  # ...the checksum can
    load_split(root, "train", sets=[TEXT, VISUAL], verify=True)  # the other sets are intact

    _flip_byte_in(shard_data(root, 2), fmt, "dialogue_id")
    problems = verify_cache(root)
    assert len(problems) == 2, problems
    assert any(audio_label in p and "checksum" in p for p in problems)
    assert any(p.startswith(f"Shard {rows_label}") and "checksum" in p for p in problems)
    assert not np.array_equal(load_split(root, "train", sets=[]).dialogue_id, expected_split(plan)["dialogue_id"])
    with pytest.raises(CacheError, match=f"Shard {re.escape(rows_label)} fails its checksum"):
        load_split(root, "train", sets=[TEXT], verify=True)  # every set needs the row table

    result = CliRunner().invoke(app, ["verify", str(root)])
    assert result.exit_code == 1
    assert isinstance(result.exception, CacheError)
    message = str(result.exception)
    assert "and 1 more problems" in message and (audio_label in message or rows_label in message)


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_shard_is_detected_cheaply(tmp_path, fmt):
    root = tmp_path / "c"
    write_cache(root, fmt)
    _, victim = max(layout.list_data_files(shard_data(root, 2, VISUAL)), key=lambda item: item[1].stat().st_size)
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(CacheError, match=f"Feature set {VISUAL} .*shard-00002 has .* bytes where the sidecar records"):
        load_split(root, "train")
    assert len(load_split(root, "train", sets=[TEXT, AUDIO])) == sum(SHARD_SIZES)
    _, victim = max(layout.list_data_files(shard_data(root, 0)), key=lambda item: item[1].stat().st_size)
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(CacheError, match="Split 'train' .*shard-00000 has .* bytes where the sidecar records"):
        load_split(root, "train", sets=[TEXT])
    problems = verify_cache(root)
    assert any(f"{VISUAL}/train/shard-00002" in p for p in problems)
    assert any(p.startswith("Shard train/shard-00000") for p in problems)


def test_info_counts_and_cli(tmp_path):
    root = tmp_path / "c"
    write_cache(root, "zarr", config={"text_model": "tiny-bert", "frames": 3, "modalities": ["text"]})
    CacheWriter(root, fmt="zarr").finalize("dev", total_rows=0, expected_shards=0)
    info = open_cache(root)
    train = info.splits["train"]
    assert info.format == "zarr" and info.schema_version == 2
    assert train.rows == sum(SHARD_SIZES) and len(train.shards) == 3 and train.complete
    assert train.modalities == ("text", "audio", "visual")
    # Failures live with the sets they cost; a clip that lost both media counts once.
    assert train.failures_by_reason == {"unreadable": 3, "missing": 1}
    assert train.failures_by_modality == {"visual": 3, "audio+visual": 1}
    assert {n: len(s.splits["train"].failures) for n, s in info.sets.items()} == {TEXT: 0, AUDIO: 1, VISUAL: 4}
    assert train.ignored_videos == 2
    assert train.stats["decode_s"] == pytest.approx(1.5) and "write_s" in train.stats
    # Every set: kind, dim, encoder, its own fingerprint and digest, rows present per split.
    described = {n: (s.modality, s.kind, s.dim, s.encoder) for n, s in info.sets.items()}
    assert described == {
        TEXT: ("text", "vector", 8, "tiny-bert"),
        VISUAL: ("visual", "frames", 5, "tiny-clip"),
        AUDIO: ("audio", "sequence", 6, "log-mel"),
    }
    assert {n: s.fingerprint for n, s in info.sets.items()} == SET_FINGERPRINTS
    assert len({s.digest for s in info.sets.values()} | {info.digest}) == 4
    expected = expected_split(shard_plan())
    assert info.sets[TEXT].splits["train"].present == 12
    assert info.sets[AUDIO].splits["train"].present == int(expected["has_audio"].sum())
    assert info.sets[VISUAL].splits["train"].present == int(expected["has_visual"].sum())
    assert info.default_sets() == {"text": TEXT, "audio": AUDIO, "visual": VISUAL}
    on_disk = sum(
        p.stat().st_size
        for sidecar in root.rglob("shard-*.json")
        for _, p in layout.list_data_files(sidecar.parent / json.loads(sidecar.read_text())["file"])
    )
    assert info.bytes == on_disk > 0 and info.bytes > train.bytes
    assert info.config_path is not None and 'text_model = "tiny-bert"' in info.config_path.read_text()
    for name in SEED_SETS:  # each set keeps the config that made it
        assert 'text_model = "tiny-bert"' in set_config_path(root, name).read_text()
    assert len(load_split(root, "dev")) == 0

    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["splits"]["train"]["rows"] == 12 and manifest["schema_version"] == 2
    assert [s["index"] for s in manifest["splits"]["train"]["shards"]] == [0, 1, 2]
    assert manifest["totals"]["sets"] == 3 and manifest["totals"]["shards"] == 12
    assert manifest["sets"][VISUAL]["splits"]["train"]["failures"]["by_reason"] == {"unreadable": 3, "missing": 1}
    assert manifest["sets"][AUDIO]["splits"]["train"]["failures"]["by_reason"] == {"missing": 1}
    assert [s["file"] for s in manifest["sets"][AUDIO]["splits"]["train"]["shards"]] == [
        f"sets/{AUDIO}/train/shard-{i:05d}.zarr" for i in range(3)
    ]

    runner = CliRunner()
    result = runner.invoke(app, ["info", str(root)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "train" in result.output and " 12 " in result.output and "unreadable" in result.output
    for name, item in info.sets.items():
        assert name in result.output and item.digest in result.output
    # Stage times in words, not the sidecar's keys, and plurals that agree.
    assert "1.5 s decoding" in result.output and "s writing" in result.output, result.output
    assert "write_s" not in result.output and "decode_s" not in result.output and "3 shards" in result.output
    result = runner.invoke(app, ["info", str(root), "--json"])
    printed = json.loads(result.output)
    assert printed["splits"]["train"]["rows"] == 12 and set(printed["sets"]) == set(SEED_SETS)
    digests = {n: s.digest for n, s in info.sets.items()}
    assert {n: s["fingerprint_digest"] for n, s in printed["sets"].items()} == digests
    assert printed["sets"][VISUAL]["splits"]["train"]["failures"]["by_reason"] == {"unreadable": 3, "missing": 1}
    assert printed["sets"][AUDIO]["splits"]["train"]["present"] == info.sets[AUDIO].splits["train"].present
    result = runner.invoke(app, ["verify", str(root)])
    assert (
        result.exit_code == 0 and "all 12 shards match" in result.output
    )  # the row table and three sets, 3 shards each


def test_user_errors_are_one_sentence(tmp_path):
    with pytest.raises(CacheError, match="does not exist"):
        open_cache(tmp_path / "nope")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "clip.mp4").write_bytes(b"")
    with pytest.raises(CacheError, match="not an emo feature cache"):
        open_cache(tmp_path / "data")
    with pytest.raises(CacheError, match="not empty and is not an emo feature cache"):
        CacheWriter(tmp_path / "data")
    write_cache(tmp_path / "c", "h5")
    with pytest.raises(UnknownSplitError, match="no split 'test'; it holds: train"):
        load_split(tmp_path / "c", "test")
    result = CliRunner().invoke(app, ["info", str(tmp_path / "nope")])
    # A path the user gave that is not there is a usage error (exit 2), like everywhere in emo.
    assert isinstance(result.exception, CacheError) and isinstance(result.exception, UsageError)
    assert result.exception.exit_code == 2


def test_resuming_with_another_shard_size_is_caught(tmp_path):
    root = tmp_path / "c"
    rows = make_rows(0, 0, 12, modalities=("text", "visual"))  # no ragged mel: slicing rows is then trivial
    take = lambda lo, hi: {name: value[lo:hi] for name, value in rows.items()}  # noqa: E731
    writer = V1Writer(root, FINGERPRINT)
    writer.write_shard("train", 0, take(0, 6), [])  # an earlier run used shards of 6
    writer.write_shard("train", 1, take(4, 8), [])  # the resumed run uses shards of 4
    writer.write_shard("train", 2, take(8, 12), [])
    writer.finalize("train", total_rows=12, expected_shards=3)
    with pytest.raises(CacheError, match="14 rows where its plan expects 12.*--shard-size"):
        load_split(root, "train")
    problems = verify_cache(root)
    assert any("duplicated rows" in p and "shard-00000.h5 and shard-00001.h5" in p for p in problems)
    for name in (TEXT, VISUAL):
        assert any(f"Feature set {name} of split 'train' holds 14 rows but its plan expects 12" in p for p in problems)


def test_config_dataclass_is_saved_loadably(tmp_path):
    from dataclasses import dataclass

    from emo.config import build_config

    @dataclass
    class TinyExtractConfig:
        text_model: str = "bert-base-uncased"
        frames: int = 16
        modalities: tuple[str, ...] = ("text", "audio")
        max_duration: float | None = None

    config = TinyExtractConfig(text_model="tiny", frames=3)
    writer = V1Writer(tmp_path / "c", FINGERPRINT, config=config)
    loaded = build_config(TinyExtractConfig, tmp_path / "c" / "config.toml", section="extract")
    assert loaded == config
    writer.add_set(TEXT_SPEC)
    writer.write_clips("train", 0, clip_records(0, 2))
    assert build_config(TinyExtractConfig, set_config_path(tmp_path / "c", TEXT), section="extract") == config


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_and_labels_only_shards_round_trip(tmp_path, fmt):
    plan = [(0, make_rows(0, 0, 4, modalities=()), []), (1, make_rows(1, 4, 0, modalities=()), [])]
    writer = V1Writer(tmp_path / "c", FINGERPRINT, fmt=fmt)
    for index, rows, failures in plan:
        writer.write_shard("dev", index, rows, failures)
    writer.finalize("dev", total_rows=4, expected_shards=2)
    features = load_split(tmp_path / "c", "dev")
    assert features.sets == {} and features.modalities == ()
    assert open_cache(tmp_path / "c").sets == {} and open_cache(tmp_path / "c").splits["dev"].modalities == ()
    assert_matches_v1(features, expected_split(plan), sets=set())
    with pytest.raises(CacheError, match="holds no text features .*labels only"):
        load_split(tmp_path / "c", "dev", modalities=("text",))


_KILLED_WRITER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from emo.cache import storage
from cache_writing import V1Writer
from test_cache import FINGERPRINT, shard_plan
plan = shard_plan()
writer = V1Writer(Path({root!r}), FINGERPRINT, fmt={fmt!r})
writer.write_shard("train", 0, plan[0][1], plan[0][2], {{"decode_s": 0.5}})
real = storage.write_arrays
def write_then_hang(*args, **kwargs):
    real(*args, **kwargs)
    print("writing", flush=True)
    time.sleep(60)
storage.write_arrays = write_then_hang
writer.write_shard("train", 1, plan[1][1], plan[1][2])
"""


@pytest.mark.parametrize("fmt", FORMATS)
def test_process_killed_mid_shard_resumes_to_the_same_cache(tmp_path, fmt):
    root = tmp_path / "c"
    script = _KILLED_WRITER.format(tests=str(Path(__file__).parent), root=str(root), fmt=fmt)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.kill()  # SIGKILL: no cleanup handlers run
        child.wait(10)
    first = layout.part_dir(root, "train", TEXT)  # a shard's sets are written first, its row table last
    temps = [p for p in first.iterdir() if layout.parse_temp_name(p.name)]
    assert temps and not (first / f"shard-00001.{fmt}").exists()

    writer = V1Writer(root, FINGERPRINT, fmt=fmt)
    assert not any(p.exists() for p in temps), "the dead writer's temporary is cleaned on reopen"
    todo = [index for index in range(len(SHARD_SIZES)) if not writer.shard_done("train", index)]
    assert todo == [1, 2]
    write_cache(root, fmt, indices=todo)
    reference = tmp_path / "ref"
    write_cache(reference, fmt)
    assert _shard_checksums(root) == _shard_checksums(reference)
    assert verify_cache(root) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_compressed_multi_chunk_columns_round_trip(tmp_path, fmt, monkeypatch):
    monkeypatch.setattr(storage, "_MAX_CHUNK_BYTES", 64)  # force several chunks per column
    plan = shard_plan(seed=11)
    write_cache(tmp_path / "c", fmt, plan, compression="fast")
    assert_matches_v1(load_split(tmp_path / "c", "train", verify=True), expected_split(plan))
    with pytest.raises(ConfigError, match="compression"):
        CacheWriter(tmp_path / "d", fmt=fmt, compression="gzip9")


# --------------------------------------------------------------------------- per-clip writer

# The seed's three sets as extraction registers them (the same specs write_shard derives
# from FINGERPRINT, so both ways of writing agree on every set's digest).
TEXT_SPEC = SetSpec(TEXT, "vector", 8, "tiny-bert", SET_FINGERPRINTS[TEXT], arrays=("cls", "mean"))
VISUAL_SPEC = SetSpec(VISUAL, "frames", 5, "tiny-clip", SET_FINGERPRINTS[VISUAL], frames=3)
AUDIO_SPEC = SetSpec(AUDIO, "sequence", 6, "log-mel", SET_FINGERPRINTS[AUDIO], views=2)
SPECS = (TEXT_SPEC, AUDIO_SPEC, VISUAL_SPEC)


def clip_records(start: int, n: int, views: int = 2) -> list[ClipRecord]:
    """Clips as extraction hands them over: some lost audio or video (with failures), one
    has fewer encoded frames than slots, one a frame without a face (masked), mel lengths
    differ per view."""
    rng = np.random.default_rng(start)
    clips = []
    for i in range(n):
        key = start + i
        frames = rng.standard_normal((3 if i != 1 else 2, 5)).astype(np.float32)
        features = {
            TEXT: {"cls": rng.standard_normal(8).astype(np.float32), "mean": rng.standard_normal(8).astype(np.float32)},
            VISUAL: (frames, np.array([True, False, True])) if i % 5 == 2 else frames,
            AUDIO: [rng.standard_normal((int(rng.integers(1, 9)), 6)).astype(np.float16) for _ in range(views)],
        }
        clip = ClipRecord(
            dialogue_id=key // 3,
            utterance_id=key % 3,
            emotion=key % 7,
            sentiment=key % 3,
            speaker=["Ross", "Jöey 🎭"][i % 2],
            text=f"line {key}: ¿qué? 🎭",
            clip=f"dia{key // 3}_utt{key % 3}.mp4",
            features=features,
            truncated=i == 2,
        )
        if i % 4 == 0:
            del features[AUDIO]
            clip.failures = [ClipFailure("no_audio", ("audio",), "no audio stream")]
        if i % 5 == 3:
            features.pop(AUDIO, None)
            features.pop(VISUAL)
            clip.failures = [ClipFailure("unreadable", ("audio", "visual"), "cannot be decoded")]
        clips.append(clip)
    return clips


def write_clip_cache(root: Path, fmt: str, shards, specs=SPECS, **kwargs) -> CacheWriter:
    writer = CacheWriter(root, fmt=fmt, **kwargs)
    for spec in specs:
        writer.add_set(spec)
    for index, clips in enumerate(shards):
        writer.write_clips("train", index, clips, stats={"extract_s": 0.25})
    writer.finalize("train", total_rows=sum(len(s) for s in shards), expected_shards=len(shards))
    return writer


@pytest.mark.parametrize("fmt", FORMATS)
def test_clips_are_packed_into_sets_by_the_cache(tmp_path, fmt):
    """write_clips owns the layout: the row table, and per set ragged mel + index, presence
    flags, masks, truncation and failures."""
    shards = [clip_records(0, 6), clip_records(6, 5)]
    write_clip_cache(tmp_path / "c", fmt, shards)
    features = load_split(tmp_path / "c", "train")
    clips = [clip for shard in shards for clip in shard]
    assert len(features) == 11 and set(features.sets) == set(SEED_SETS)
    assert features.speaker == [c.speaker for c in clips] and features.text == [c.text for c in clips]
    text, visual, audio = (features.sets[n] for n in (TEXT, VISUAL, AUDIO))
    assert not text.truncated.any()
    inputs = compose(features, ALL_SETS)  # the model's view: flags and failures of every set
    reasons = {}
    for f in features.extra["failures"]:
        reasons.setdefault((f["dialogue_id"], f["utterance_id"]), set()).add(f["reason"])
    for i, clip in enumerate(clips):
        assert (features.dialogue_id[i], features.utterance_id[i]) == (clip.dialogue_id, clip.utterance_id)
        assert (features.emotion[i], features.sentiment[i]) == (clip.emotion, clip.sentiment)
        assert text.present[i]
        for array in ("cls", "mean"):
            np.testing.assert_array_equal(text.arrays[array][i], clip.features[TEXT][array].astype(np.float16))
        assert audio.present[i] == (AUDIO in clip.features)
        assert visual.present[i] == (VISUAL in clip.features)
        assert audio.truncated[i] == visual.truncated[i] == inputs.truncated[i] == clip.truncated
        assert reasons.get((clip.dialogue_id, clip.utterance_id), set()) == {f.reason for f in clip.failures}
        assert inputs.failure[i] == ",".join(f.reason for f in clip.failures)
        assert (inputs.has_text[i], inputs.has_audio[i], inputs.has_visual[i]) == (
            True,
            AUDIO in clip.features,
            VISUAL in clip.features,
        )
        value = clip.features.get(VISUAL)
        if value is None:
            assert not visual.arrays["mask"][i].any() and not visual.arrays["values"][i].any()
        else:
            frames, valid = value if isinstance(value, tuple) else (value, np.ones(len(value), bool))
            count = len(frames)
            assert visual.arrays["mask"][i].tolist() == valid.tolist() + [False] * (3 - count)
            want = np.where(valid[:, None], frames, 0).astype(np.float16)
            np.testing.assert_array_equal(visual.arrays["values"][i, :count], want)
            assert not visual.arrays["values"][i, count:].any()
        for view in range(2):
            start, length = audio.arrays["index"][i, view]
            if AUDIO not in clip.features:
                assert length == 0
            else:
                got = audio.arrays["values"][start : start + length]
                np.testing.assert_array_equal(got, clip.features[AUDIO][view])
    info = open_cache(tmp_path / "c")
    split = info.splits["train"]
    assert split.failures_by_reason == {"no_audio": 4, "unreadable": 2}
    assert split.failures_by_modality == {"audio": 4, "audio+visual": 2}
    assert {f["clip"] for f in split.failures} <= {c.clip for c in clips}
    assert {n: len(s.splits["train"].failures) for n, s in info.sets.items()} == {TEXT: 0, AUDIO: 6, VISUAL: 2}
    assert split.stats["extract_s"] == pytest.approx(0.5)
    # The same sets as write_shard's seed sets: one digest per set, whichever way it was written.
    write_cache(tmp_path / "v1", fmt)
    seed = open_cache(tmp_path / "v1")
    assert {n: s.digest for n, s in info.sets.items()} == {n: s.digest for n, s in seed.sets.items()}


def test_clips_without_a_modality_anywhere_get_zeros_of_the_right_shape(tmp_path):
    clips = clip_records(0, 4)
    for clip in clips:
        clip.features.pop(AUDIO, None)
        clip.features.pop(VISUAL, None)
    writer = CacheWriter(tmp_path / "c")
    for spec in SPECS:
        writer.add_set(spec)
    writer.write_clips("dev", 0, clips)
    writer.finalize("dev", total_rows=4, expected_shards=1)
    features = load_split(tmp_path / "c", "dev")
    audio, visual = features.sets[AUDIO], features.sets[VISUAL]
    assert audio.arrays["values"].shape == (0, 6) and audio.arrays["index"].shape == (4, 2, 2)
    assert not audio.arrays["index"].any() and not audio.present.any()
    assert visual.arrays["values"].shape == (4, 3, 5) and visual.arrays["mask"].shape == (4, 3)
    assert not visual.present.any() and not visual.arrays["mask"].any()
    assert open_cache(tmp_path / "c").splits["dev"].modalities == ("text", "audio", "visual")
    text_only = CacheWriter(tmp_path / "t")
    text_only.add_set(TEXT_SPEC)
    text_only.write_clips("dev", 0, clips)
    text_only.finalize("dev", total_rows=4, expected_shards=1)
    assert set(load_split(tmp_path / "t", "dev").sets) == {TEXT}
    assert open_cache(tmp_path / "t").splits["dev"].modalities == ("text",)


def test_deferred_writer_touches_the_disk_only_when_it_writes(tmp_path):
    """A run that fails before its first shard leaves nothing behind, and a mismatched set
    is still refused up front (before any work), or replaced only once there is work to keep."""
    root = tmp_path / "c"
    writer = CacheWriter(root, config={"frames": 3}, defer_create=True)
    for spec in SPECS:
        writer.add_set(spec)
    assert not root.exists() and not writer.shard_done("train", 0)
    writer.write_clips("train", 0, clip_records(0, 3))
    assert (root / "cache.json").is_file() and (root / "config.toml").is_file() and writer.shard_done("train", 0)
    for spec in SPECS:
        assert (layout.set_dir(root, spec.name) / "set.json").is_file() and set_config_path(root, spec.name).is_file()

    other = dataclasses.replace(AUDIO_SPEC, fingerprint=dict(SET_FINGERPRINTS[AUDIO], audio={"n_mels": 7, "views": 2}))
    before = _file_hashes(root, root=root)
    with pytest.raises(CacheError, match="audio/mel.*n_mels.*--name.*--overwrite"):
        CacheWriter(root, defer_create=True).add_set(other)
    with pytest.raises(CacheError, match="stored as h5, not zarr"):
        CacheWriter(root, fmt="zarr", defer_create=True)
    replacing = CacheWriter(root, overwrite=True, defer_create=True)
    replacing.add_set(other)
    assert _file_hashes(root, root=root) == before, "nothing is wiped before there is something to write"
    assert open_cache(root).sets[AUDIO].fingerprint == SET_FINGERPRINTS[AUDIO]
    replacing.write_clips("train", 0, clip_records(0, 3))
    assert open_cache(root).sets[AUDIO].fingerprint == other.fingerprint
    after = _file_hashes(root, root=root)
    for name in (TEXT, VISUAL):  # the other sets were not touched
        prefix = f"sets/{name}/"
        assert {k: v for k, v in after.items() if k.startswith(prefix)} == {
            k: v for k, v in before.items() if k.startswith(prefix)
        }


# --------------------------------------------------------------------------- feature sets


@pytest.mark.parametrize("fmt", FORMATS)
def test_adding_a_set_leaves_every_earlier_file_byte_for_byte(tmp_path, fmt):
    root = tmp_path / "c"
    shards = [clip_records(0, 6), clip_records(6, 5)]
    write_clip_cache(root, fmt, shards, specs=(TEXT_SPEC, AUDIO_SPEC), config={"text_model": "tiny-bert"})
    before = _file_hashes(
        layout.set_dir(root, TEXT),
        layout.set_dir(root, AUDIO),
        *_row_table_files(root),
        root / "cache.json",
        root / "config.toml",
        root=root,
    )
    assert any(k.startswith(f"sets/{TEXT}/train/shard-00001") for k in before)
    assert any(k.startswith("train/shard-00001") for k in before)
    reference = load_split(root, "train")

    writer = CacheWriter(root, fmt=fmt, config={"visual_model": "tiny-clip"})  # a later `emo extract` run
    writer.add_set(VISUAL_SPEC)
    todo = [index for index in range(len(shards)) if not writer.shard_done("train", index)]
    assert todo == [0, 1] and all(writer.part_done("train", index) for index in todo)
    for index in todo:
        writer.write_clips("train", index, shards[index])
    writer.finalize("train", total_rows=11, expected_shards=2)

    after = _file_hashes(
        layout.set_dir(root, TEXT),
        layout.set_dir(root, AUDIO),
        *_row_table_files(root),
        root / "cache.json",
        root / "config.toml",
        root=root,
    )
    assert after == before
    features = load_split(root, "train", sets=[VISUAL])
    clips = [clip for shard in shards for clip in shard]
    assert features.sets[VISUAL].present.tolist() == [VISUAL in c.features for c in clips]
    both = load_split(root, "train")
    assert set(both.sets) == set(SEED_SETS)
    for name in (TEXT, AUDIO):
        reference_set, loaded = reference.sets[name], both.sets[name]
        assert loaded.digest == reference_set.digest
        for array, value in reference_set.arrays.items():
            _check(f"{name} {array}", loaded.arrays[array], value)
    assert 'visual_model = "tiny-clip"' in set_config_path(root, VISUAL).read_text()
    assert 'text_model = "tiny-bert"' in set_config_path(root, TEXT).read_text()
    assert verify_cache(root) == []


def test_a_set_made_differently_is_refused_unless_overwritten_and_then_replaced_alone(tmp_path):
    root = tmp_path / "c"
    shards = [clip_records(0, 6), clip_records(6, 5)]
    write_clip_cache(root, "h5", shards)
    old_digest = open_cache(root).sets[TEXT].digest
    mean_pooled = dataclasses.replace(TEXT_SPEC, fingerprint=dict(SET_FINGERPRINTS[TEXT], text_pooling="mean"))
    before = _file_hashes(root, root=root)

    with pytest.raises(CacheError) as refused:
        CacheWriter(root).add_set(mean_pooled)
    message = str(refused.value)
    assert message.startswith(f"Feature set {TEXT} in {root} was made differently") and "text_pooling" in message
    assert "--name" in message and "--overwrite" in message
    assert len(re.findall(r"[.;!?]\s+[A-Z]", message)) == 0 and message.endswith(".")  # one sentence
    assert len(re.findall(r"\.\s", message + " ")) == 1
    assert _file_hashes(root, root=root) == before

    replacing = CacheWriter(root, overwrite=True)
    assert replacing.add_set(mean_pooled) != old_digest
    for clip in (c for shard in shards for c in shard):
        clip.features[TEXT] = {k: v + 1 for k, v in clip.features[TEXT].items()}  # other numbers
    for index, clips in enumerate(shards):
        replacing.write_clips("train", index, clips)
    replacing.finalize("train", total_rows=11, expected_shards=2)

    info = open_cache(root)
    assert info.sets[TEXT].fingerprint == mean_pooled.fingerprint and info.sets[TEXT].digest != old_digest
    features = load_split(root, "train")
    clips = [c for shard in shards for c in shard]
    np.testing.assert_array_equal(
        features.sets[TEXT].arrays["cls"], np.stack([c.features[TEXT]["cls"] for c in clips]).astype(np.float16)
    )
    after = _file_hashes(root, root=root)
    for name in (AUDIO, VISUAL):  # every file of the other sets is as it was
        prefix = f"sets/{name}/"
        assert {k: v for k, v in after.items() if k.startswith(prefix)} == {
            k: v for k, v in before.items() if k.startswith(prefix)
        }
    for path in _row_table_files(root):  # the row table holds the same data
        if path.suffix != ".json":
            key = path.relative_to(root).as_posix()
            assert {k: v for k, v in after.items() if k.startswith(key)} == {
                k: v for k, v in before.items() if k.startswith(key)
            }
    assert verify_cache(root) == []


def test_remove_set_removes_one_set_only(tmp_path):
    root = tmp_path / "c"
    plan = shard_plan()
    write_cache(root, "h5", plan)
    before = _file_hashes(root, root=root)
    removed = remove_set(root, AUDIO)
    assert removed["name"] == AUDIO and removed["encoder"] == "log-mel"
    assert not layout.set_dir(root, AUDIO).exists() and not (root / "sets" / "audio").exists()
    info = open_cache(root)
    assert set(info.sets) == {TEXT, VISUAL} and info.splits["train"].modalities == ("text", "visual")
    features = load_split(root, "train")
    assert_matches_v1(features, expected_split(plan), sets={TEXT, VISUAL})
    with pytest.raises(CacheError, match="holds no audio features"):
        load_split(root, "train", modalities=("audio",))
    after = _file_hashes(root, root=root)
    kept = {k: v for k, v in before.items() if not k.startswith(f"sets/{AUDIO}/") and k != "manifest.json"}
    assert {k: v for k, v in after.items() if k != "manifest.json"} == kept
    assert set(json.loads((root / "manifest.json").read_text())["sets"]) == {TEXT, VISUAL}
    assert verify_cache(root) == []

    with pytest.raises(UsageError, match=f"has no feature set whisper; it holds: {TEXT}, {VISUAL}"):
        remove_set(root, "whisper")
    from emo.cache import locks

    with locks.acquire(root, {VISUAL: "a running extract"}, locks.Scope(("train",))):  # being written right now
        with pytest.raises(CacheError, match=f"Feature set {VISUAL} .* is being written .* by process {os.getpid()}"):
            remove_set(root, VISUAL)
    assert layout.set_dir(root, VISUAL).is_dir(), "a set being written is not removed under its writer"
    result = CliRunner().invoke(app, ["rm", str(root), "--set", "tiny-clip"])  # a unique short name will do
    assert result.exit_code == 0 and f"removed feature set {VISUAL}" in result.output
    assert set(open_cache(root).sets) == {TEXT}
    result = CliRunner().invoke(app, ["rm", str(root), "--set", "mel"])
    assert isinstance(result.exception, UsageError) and result.exception.exit_code == 2
    assert f"it holds: {TEXT}" in str(result.exception)


def write_v1_cache(root: Path, fmt: str, plan, unfinished=None) -> None:
    """A cache exactly as emo wrote it before feature sets (cache version 1): one shard per
    row range holding labels and every modality's columns, under one fingerprint."""
    from emo.cache.legacy import V1_COLUMNS
    from emo.cache.schema import describe_arrays, normalize_columns

    digest = fingerprint_digest(FINGERPRINT)
    split = root / "train"
    split.mkdir(parents=True)
    meta = {
        "schema_version": 1,
        "format": fmt,
        "fingerprint": FINGERPRINT,
        "fingerprint_digest": digest,
        "emo_version": "0.1.0",
        "created": "2025-01-01T00:00:00+00:00",
    }
    (root / "cache.json").write_text(json.dumps(meta))
    (root / "config.toml").write_text('[extract]\ntext_model = "tiny-bert"\nframes = 3\n')
    for index, rows, failures in plan:
        columns = {name: column for name, column in V1_COLUMNS.items() if name in rows}
        arrays = normalize_columns(columns, rows, "version-1")
        data = split / layout.shard_data_name(index, fmt)
        storage.write_arrays(
            data,
            fmt,
            arrays,
            {"emo_schema_version": 1, "fingerprint_digest": digest, "split": "train", "shard_index": index},
        )
        files = layout.checksum_files(data)
        sidecar = {
            "schema_version": 1,
            "format": fmt,
            "fingerprint_digest": digest,
            "split": "train",
            "shard_index": index,
            "file": data.name,
            "rows": len(arrays["emotion"]),
            "arrays": describe_arrays(arrays),
            "files": files,
            "sha256": layout.combined_sha256(files),
            "failures": failures,
            "stats": {"decode_s": 0.5},
            "written": "2025-01-01T00:00:00+00:00",
        }
        (split / layout.sidecar_name(index)).write_text(json.dumps(sidecar))
    if unfinished is not None:  # a killed v1 writer's shard: data, no sidecar
        index, rows, _ = unfinished
        columns = {name: column for name, column in V1_COLUMNS.items() if name in rows}
        arrays = normalize_columns(columns, rows, "version-1")
        storage.write_arrays(split / layout.shard_data_name(index, fmt), fmt, arrays, {})
    plan_json = {
        "split": "train",
        "total_rows": sum(len(rows["emotion"]) for _, rows, _ in plan),
        "expected_shards": len(plan),
        "ignored_videos": 2,
    }
    (split / "split.json").write_text(json.dumps(plan_json))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_version_1_cache_is_refused_then_upgraded_in_place(tmp_path, fmt):
    root = tmp_path / "old"
    plan = shard_plan(seed=5)
    write_v1_cache(root, fmt, plan, unfinished=(3, make_rows(9, 12, 2), []))
    original = _file_hashes(root, root=root)
    for attempt in (
        lambda: open_cache(root),
        lambda: load_split(root, "train"),
        lambda: verify_cache(root),
        lambda: CacheWriter(root, fmt=fmt),
    ):
        with pytest.raises(OldCacheError, match=f"cache version 1.*`emo cache upgrade {re.escape(str(root))}`"):
            attempt()
    result = CliRunner().invoke(app, ["info", str(root)])
    assert isinstance(result.exception, OldCacheError) and "emo cache upgrade" in str(result.exception)
    assert _file_hashes(root, root=root) == original, "refusing an old cache changes nothing"

    upgraded = []
    report = upgrade_cache(root, on_shard=upgraded.append)
    assert not report.already and report.splits == {"train": sum(SHARD_SIZES)}
    assert report.sets == sorted(SEED_SETS) and report.skipped_shards == ["train/shard-00003"]
    assert upgraded == [f"train/{layout.shard_data_name(i, fmt)}" for i in range(3)]
    info = open_cache(root)
    assert info.schema_version == 2 and info.format == fmt and info.splits["train"].complete
    assert {n: s.fingerprint for n, s in info.sets.items()} == SET_FINGERPRINTS
    assert info.splits["train"].failures_by_reason == {"unreadable": 3, "missing": 1}
    assert info.splits["train"].ignored_videos == 2
    features = load_split(root, "train", verify=True)
    assert_matches_v1(features, expected_split(plan))  # float16 features equal to the old arrays
    assert features.sets[TEXT].arrays["cls"].dtype == np.float16
    assert verify_cache(root) == []
    assert 'text_model = "tiny-bert"' in set_config_path(root, TEXT).read_text()
    assert not [p for p in tmp_path.iterdir() if p.name != "old"], "no leftover of the upgrade beside the cache"
    # An upgraded cache is what a fresh write of the same shards makes, shard for shard.
    write_cache(tmp_path / "fresh", fmt, plan)
    assert _shard_checksums(root) == _shard_checksums(tmp_path / "fresh")
    fresh = open_cache(tmp_path / "fresh")
    assert {n: s.digest for n, s in info.sets.items()} == {n: s.digest for n, s in fresh.sets.items()}

    again = upgrade_cache(root)
    assert again.already and again.splits == {}
    result = CliRunner().invoke(app, ["upgrade", str(root)])
    assert result.exit_code == 0 and "already a version-2 cache" in result.output


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_set_whose_rows_disagree_with_the_row_table_is_refused(tmp_path, fmt):
    root = tmp_path / "c"
    write_cache(root, fmt)
    assert len(load_split(root, "train")) == sum(SHARD_SIZES)
    # The row table's shard 1 is rewritten with other rows (same count): the sets' shard 1
    # no longer belongs to it.
    rows = {k: v for k, v in shard_plan()[1][1].items() if k in ROW_FIELDS}
    rows["dialogue_id"] = rows["dialogue_id"] + 100
    CacheWriter(root, fmt=fmt, overwrite=True).write_rows("train", 1, rows)
    for name in SEED_SETS:
        with pytest.raises(
            CacheError,
            match=f"Feature set {name} of split 'train' .*does not match the row table at "
            "shard-00001; re-extract it with --overwrite",
        ):
            load_split(root, "train", sets=[name])
    assert len(load_split(root, "train", sets=[])) == sum(SHARD_SIZES)  # the row table alone is fine

    # Shards of another size: a set written before its row table, with other shard bounds.
    other = tmp_path / "d"
    writer = CacheWriter(other, fmt=fmt)
    writer.add_set(TEXT_SPEC)
    clips = clip_records(0, 9)
    for index, (lo, hi) in enumerate(((0, 5), (5, 9))):  # the set: 5 + 4 rows
        columns, _ = build_set_columns(clips[lo:hi], TEXT_SPEC)
        writer.write_set("train", TEXT, index, columns)
    for index, (lo, hi) in enumerate(((0, 4), (4, 9))):  # the row table: 4 + 5 rows
        writer.write_rows("train", index, {k: [getattr(c, k) for c in clips[lo:hi]] for k in (*ROW_FIELDS, "text")})
    writer.finalize("train", total_rows=9, expected_shards=2)
    with pytest.raises(CacheError, match=f"Feature set {TEXT} .*does not match the row table at shard-00000"):
        load_split(other, "train")
    # `emo cache verify` finds the same mismatch without loading anything.
    assert any(
        f"Feature set {TEXT} of split 'train' does not match the row table at shard-00000" in p
        for p in verify_cache(other)
    )


def test_a_failure_two_sets_record_is_counted_once_and_keeps_its_modality(tmp_path):
    """A version-1 record that cost "all" media is filed under the audio and the visual set;
    the cache reports it once, with its modality."""
    root = tmp_path / "c"
    writer = V1Writer(root, FINGERPRINT, fmt="h5")
    columns = shard_plan()[0][1]
    n = len(columns["emotion"])
    key = (int(columns["dialogue_id"][0]), int(columns["utterance_id"][0]))
    failure = {"dialogue_id": key[0], "utterance_id": key[1], "reason": "missing", "modality": "all"}
    writer.write_shard("train", 0, columns, [failure])
    writer.finalize("train", total_rows=n, expected_shards=1)
    (recorded,) = open_cache(root).splits["train"].failures
    assert recorded["modality"] == "all" and recorded["reason"] == "missing"
    assert build_manifest(root)["totals"]["failures"] == 1


def test_half_of_a_version_1_modality_is_refused(tmp_path):
    columns = dict(shard_plan()[0][1])
    del columns["text_mean"]
    with pytest.raises(ValueError, match=r"text needs all of \['text_cls', 'text_mean'\]"):
        V1Writer(tmp_path / "c", FINGERPRINT, fmt="h5").write_shard("train", 0, columns)


def test_the_cache_uses_the_one_atomic_temp_name_scheme(tmp_path):
    """Temporaries come from emo.atomic and layout parses them back (dead ones get cleaned)."""
    name = atomic.temp_name("shard-00003.h5")
    assert layout.parse_temp_name(name) == (3, atomic.this_host(), os.getpid())
    assert layout.parse_any_temp(atomic.temp_name("manifest.json")) == (
        "manifest.json",
        atomic.this_host(),
        os.getpid(),
    )
    assert not hasattr(layout, "write_json_atomic") and not hasattr(layout, "temp_name")
