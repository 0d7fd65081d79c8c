"""emo.cache on real HDF5 and Zarr files: round trips, atomicity, resume, fingerprints,
multi-process shards, verification and the `emo cache` commands."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from emo import atomic
from emo.cache import CacheWriter, ClipFailure, ClipRecord, ShardSpec, UnknownSplitError, load_split, open_cache, verify_cache
from emo.cache import layout, storage
from emo.commands.cache import app
from emo.errors import CacheError, ConfigError, UsageError

FINGERPRINT = {"text_model": "tiny-bert", "visual_model": "tiny-clip", "n_mels": 6, "frames": 3}
FORMATS = ("h5", "zarr")


def make_rows(seed: int, start: int, n: int, views: int = 2, modalities=("text", "audio", "visual")) -> dict:
    """One shard's columns with awkward but valid content: empty mel for some clips,
    non-ASCII speakers, failures, shard-relative mel_index."""
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
            failures.append({"reason": "missing", "modality": "all", "dialogue_id": start + 1, "utterance_id": 1})
        plan.append((index, make_rows(seed + index, start, n, modalities=modalities), failures))
        start += n
    return plan


def write_cache(root: Path, fmt: str, plan=None, indices=None, **kwargs) -> CacheWriter:
    plan = plan if plan is not None else shard_plan()
    writer = CacheWriter(root, FINGERPRINT, fmt=fmt, **kwargs)
    for index, rows, failures in plan:
        if indices is None or index in indices:
            writer.write_shard("train", index, rows, failures, {"decode_s": 0.5})
    writer.finalize("train", total_rows=sum(SHARD_SIZES), expected_shards=len(SHARD_SIZES), ignored_videos=2)
    return writer


def expected_split(plan) -> dict:
    """What load_split must return: shards concatenated, mel_index made global."""
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


def assert_equal_features(features, expected: dict) -> None:
    for name, value in expected.items():
        got = getattr(features, name)
        if isinstance(value, list):
            assert got == value, name
        else:
            assert got.dtype == value.dtype, name
            np.testing.assert_array_equal(got, value, err_msg=name)


def shard_data(root: Path, index: int) -> Path:
    return next((root / "train").glob(f"shard-{index:05d}.[hz]*"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_array_round_trips_exactly(tmp_path, fmt):
    plan = shard_plan()
    write_cache(tmp_path / "c", fmt, plan)
    features = load_split(tmp_path / "c", "train")
    assert len(features) == sum(SHARD_SIZES)
    assert features.modalities == ("text", "audio", "visual")
    assert features.fingerprint == FINGERPRINT
    assert_equal_features(features, expected_split(plan))
    # mel_index is global: every clip's view-0 frames equal the shard-local slice
    rows = plan[1][1]
    local = rows["mel_index"][2, 0]
    start, length = features.mel_index[SHARD_SIZES[0] + 2, 0]
    np.testing.assert_array_equal(features.mel[start : start + length], rows["mel"][local[0] : local[0] + local[1]])


def test_h5_and_zarr_caches_hold_identical_arrays(tmp_path):
    plan = shard_plan(seed=7)
    loaded = {}
    for fmt in FORMATS:
        write_cache(tmp_path / fmt, fmt, plan)
        loaded[fmt] = load_split(tmp_path / fmt, "train")
    expected = {name: getattr(loaded["h5"], name) for name in plan[0][1]}
    assert_equal_features(loaded["zarr"], expected)


@pytest.mark.parametrize("fmt", FORMATS)
def test_float32_features_are_stored_as_float16_and_subsets_load(tmp_path, fmt):
    plan = shard_plan(modalities=("text",))
    for _, rows, _ in plan:
        rows["text_cls"] = rows["text_cls"].astype(np.float32)
    write_cache(tmp_path / "c", fmt, plan)
    features = load_split(tmp_path / "c", "train", modalities=("text",))
    assert features.text_cls.dtype == np.float16 and features.mel is None and features.visual is None
    with pytest.raises(CacheError, match="holds no audio features"):
        load_split(tmp_path / "c", "train", modalities=("text", "audio"))
    with pytest.raises(UsageError, match="Unknown modality"):
        load_split(tmp_path / "c", "train", modalities=("smell",))


def test_modality_subset_skips_other_columns(tmp_path):
    write_cache(tmp_path / "c", "h5")
    features = load_split(tmp_path / "c", "train", modalities=("audio",))
    assert features.modalities == ("audio",)
    assert features.text_cls is None and features.visual is None and features.mel is not None


def test_malformed_shards_are_rejected_at_write_time(tmp_path):
    writer = CacheWriter(tmp_path / "c", FINGERPRINT)
    rows = make_rows(0, 0, 4)
    bad = dict(rows, emotion=rows["emotion"][:3])
    with pytest.raises(ValueError, match="rows"):
        writer.write_shard("train", 0, bad, [])
    bad = dict(rows, mel_index=rows["mel_index"] + 1000)
    with pytest.raises(ValueError, match="mel_index"):
        writer.write_shard("train", 0, bad, [])
    bad = {k: v for k, v in rows.items() if k != "text_mean"}
    with pytest.raises(ValueError, match="text"):
        writer.write_shard("train", 0, bad, [])
    with pytest.raises(ValueError, match="reason"):
        writer.write_shard("train", 0, rows, [{"modality": "audio"}])
    assert not writer.shard_done("train", 0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_leftover_temporaries_are_never_read_and_get_cleaned(tmp_path, fmt):
    root = tmp_path / "c"
    write_cache(root, fmt)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    host = atomic.this_host()
    stale = root / "train" / f".shard-00001.{fmt}.tmp-{host}-{dead_pid}"
    if fmt == "zarr":
        (stale / "mel").mkdir(parents=True)
        (stale / "mel" / "zarr.json").write_text("garbage")
    else:
        stale.write_bytes(b"garbage")
    stale_new_shard = root / "train" / f".shard-00009.{fmt}.tmp-{host}-{dead_pid}"
    stale_new_shard.write_bytes(b"garbage")
    stale_manifest = root / f".manifest.json.tmp-{host}-{dead_pid}"
    stale_manifest.write_text("{")
    live = root / "train" / f".shard-00002.{fmt}.tmp-{host}-{os.getpid()}"
    live.write_bytes(b"someone is writing this")

    assert len(load_split(root, "train")) == sum(SHARD_SIZES)
    assert verify_cache(root) == []
    assert open_cache(root).splits["train"].missing_shards == []

    CacheWriter(root, FINGERPRINT, fmt=fmt)  # reopening cleans dead processes' temporaries
    assert not stale.exists() and not stale_new_shard.exists() and not stale_manifest.exists()
    assert live.exists(), "a temporary of a live process must be left alone"
    writer = CacheWriter(root, FINGERPRINT, fmt=fmt, overwrite=True)
    writer.write_shard("train", 2, shard_plan()[2][1], [])  # rewriting shard 2 drops its old temporary
    assert not live.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_shard_without_sidecar_is_not_done(tmp_path, fmt):
    root = tmp_path / "c"
    writer = write_cache(root, fmt)
    assert writer.shard_done("train", 1)
    (root / "train" / "shard-00001.json").unlink()
    assert shard_data(root, 1).exists()
    assert not writer.shard_done("train", 1)
    with pytest.raises(CacheError, match="shard-00001 has no readable sidecar.*re-run `emo extract --split train`"):
        load_split(root, "train")
    assert any("shard-00001" in p for p in verify_cache(root))
    assert not open_cache(root).splits["train"].complete


@pytest.mark.parametrize("fmt", FORMATS)
def test_interrupted_write_leaves_no_shard_and_resume_equals_uninterrupted(tmp_path, fmt, monkeypatch):
    plan = shard_plan()
    reference = tmp_path / "ref"
    write_cache(reference, fmt, plan)

    root = tmp_path / "c"
    writer = CacheWriter(root, FINGERPRINT, fmt=fmt)
    writer.write_shard("train", 0, plan[0][1], plan[0][2], {"decode_s": 0.5})
    real_write = storage.write_arrays

    def crash_midway(path, *args, **kwargs):
        real_write(path, *args, **kwargs)  # the temporary is complete on disk...
        raise KeyboardInterrupt  # ...but the process dies before the rename

    monkeypatch.setattr(storage, "write_arrays", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        writer.write_shard("train", 1, plan[1][1], plan[1][2])
    monkeypatch.setattr(storage, "write_arrays", real_write)
    assert not writer.shard_done("train", 1)
    assert not (root / "train" / f"shard-00001.{fmt}").exists()
    assert any(layout.parse_temp_name(p.name) for p in (root / "train").iterdir())
    writer.finalize("train", total_rows=sum(SHARD_SIZES), expected_shards=3)
    with pytest.raises(CacheError, match="incomplete"):
        load_split(root, "train")

    resumed = CacheWriter(root, FINGERPRINT, fmt=fmt)
    todo = [index for index, _, _ in plan if not resumed.shard_done("train", index)]
    assert todo == [1, 2]
    write_cache(root, fmt, plan, indices=todo)
    assert not any(layout.parse_temp_name(p.name) for p in (root / "train").iterdir())
    got, want = load_split(root, "train"), load_split(reference, "train")
    assert_equal_features(got, {name: getattr(want, name) for name in plan[0][1]})
    assert _shard_checksums(root) == _shard_checksums(reference)


def _shard_checksums(root: Path) -> list[str]:
    return [shard.sha256 for shard in open_cache(root).splits["train"].shards]


@pytest.mark.parametrize("fmt", FORMATS)
def test_fingerprint_or_format_mismatch_is_refused(tmp_path, fmt):
    root = tmp_path / "c"
    write_cache(root, fmt)
    changed = dict(FINGERPRINT, n_mels=40)
    with pytest.raises(CacheError, match=r"n_mels \(6 vs 40\).*--overwrite.*--cache"):
        CacheWriter(root, changed, fmt=fmt)
    other = "zarr" if fmt == "h5" else "h5"
    with pytest.raises(CacheError, match=f"stored as {fmt}, not {other}"):
        CacheWriter(root, FINGERPRINT, fmt=other)
    assert len(load_split(root, "train")) == sum(SHARD_SIZES), "a refused writer must not touch the cache"
    with pytest.raises(ConfigError):
        CacheWriter(tmp_path / "d", FINGERPRINT, fmt="parquet")


def test_overwrite_with_new_fingerprint_wipes_only_emo_files(tmp_path):
    root = tmp_path / "c"
    write_cache(root, "h5")
    (root / "notes.txt").write_text("mine")
    writer = CacheWriter(root, dict(FINGERPRINT, n_mels=40), fmt="zarr", overwrite=True)
    assert not (root / "train").exists() and (root / "notes.txt").read_text() == "mine"
    info = open_cache(root)
    assert info.format == "zarr" and info.fingerprint["n_mels"] == 40 and info.splits == {}
    assert not writer.shard_done("train", 0)


def test_overwrite_same_fingerprint_redoes_shards_and_drops_stale_ones(tmp_path):
    root = tmp_path / "c"
    writer = CacheWriter(root, FINGERPRINT)
    for index in range(4):
        writer.write_shard("train", index, make_rows(index, index * 4, 4), [])
    writer.finalize("train", total_rows=16, expected_shards=4)
    redo = CacheWriter(root, FINGERPRINT, overwrite=True)
    assert not redo.shard_done("train", 0)
    plan = shard_plan(seed=3)
    for index, rows, failures in plan:
        redo.write_shard("train", index, rows, failures)
        assert redo.shard_done("train", index)
    redo.finalize("train", total_rows=sum(SHARD_SIZES), expected_shards=3)
    assert not (root / "train" / "shard-00003.h5").exists()
    assert_equal_features(load_split(root, "train"), expected_split(plan))


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
    assert_equal_features(
        load_split(shared, "train"), {n: getattr(load_split(single, "train"), n) for n in shard_plan()[0][1]}
    )
    assert _shard_checksums(shared) == _shard_checksums(single)
    manifest = json.loads((shared / "manifest.json").read_text())
    # the last finalizer may have run before the other process's last shard; a re-derive is always right
    assert open_cache(shared).splits["train"].complete
    assert manifest["fingerprint"] == FINGERPRINT


def test_partial_multi_process_run_is_incomplete_until_all_parts_finish(tmp_path):
    root = tmp_path / "c"
    _write_part(str(root), "h5", 2, 0)
    info = open_cache(root).splits["train"]
    assert not info.complete and info.missing_shards == [1]
    with pytest.raises(CacheError, match="shard 1 is missing"):
        load_split(root, "train")
    _write_part(str(root), "h5", 2, 1)
    assert open_cache(root).splits["train"].complete


@pytest.mark.parametrize("fmt", FORMATS)
def test_verify_catches_a_flipped_byte_and_names_the_shard(tmp_path, fmt):
    root = tmp_path / "c"
    write_cache(root, fmt)
    assert verify_cache(root) == []
    files = layout.list_data_files(shard_data(root, 1))
    _, victim = max(files, key=lambda item: item[1].stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))

    problems = verify_cache(root)
    assert len(problems) == 1 and "train/shard-00001" in problems[0] and "checksum" in problems[0]
    load_split(root, "train")  # sizes still match: the cheap check cannot see it...
    with pytest.raises(CacheError, match="shard-00001.*checksum"):
        load_split(root, "train", verify=True)  # ...the checksum can

    result = CliRunner().invoke(app, ["verify", str(root)])
    assert result.exit_code == 1
    assert isinstance(result.exception, CacheError)
    assert "train/shard-00001" in str(result.exception)


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_shard_is_detected_cheaply(tmp_path, fmt):
    root = tmp_path / "c"
    write_cache(root, fmt)
    _, victim = max(layout.list_data_files(shard_data(root, 2)), key=lambda item: item[1].stat().st_size)
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(CacheError, match="shard-00002 has .* bytes where the sidecar records"):
        load_split(root, "train")
    assert any("shard-00002" in p for p in verify_cache(root))


def test_info_counts_and_cli(tmp_path):
    root = tmp_path / "c"
    write_cache(root, "zarr", config={"text_model": "tiny-bert", "frames": 3, "modalities": ["text"]})
    CacheWriter(root, FINGERPRINT, fmt="zarr").finalize("dev", total_rows=0, expected_shards=0)
    info = open_cache(root)
    train = info.splits["train"]
    assert (info.format, info.fingerprint) == ("zarr", FINGERPRINT)
    assert train.rows == sum(SHARD_SIZES) and len(train.shards) == 3 and train.complete
    assert train.failures_by_reason == {"unreadable": 3, "missing": 1}
    assert train.failures_by_modality == {"visual": 3, "all": 1}
    assert train.ignored_videos == 2
    assert train.stats["decode_s"] == pytest.approx(1.5) and "write_s" in train.stats
    on_disk = sum(p.stat().st_size for s in train.shards for _, p in layout.list_data_files(s.path))
    assert info.bytes == on_disk > 0
    assert info.config_path is not None and 'text_model = "tiny-bert"' in info.config_path.read_text()
    assert len(load_split(root, "dev")) == 0

    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["splits"]["train"]["rows"] == 12 and manifest["totals"]["failures"] == 4
    assert [s["index"] for s in manifest["splits"]["train"]["shards"]] == [0, 1, 2]

    runner = CliRunner()
    result = runner.invoke(app, ["info", str(root)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "train" in result.output and " 12 " in result.output and "unreadable" in result.output
    assert info.digest in result.output
    # Stage times in words, not the sidecar's keys, and plurals that agree.
    assert "1.5 s decoding" in result.output and "s writing" in result.output, result.output
    assert "write_s" not in result.output and "decode_s" not in result.output and "3 shards" in result.output
    result = runner.invoke(app, ["info", str(root), "--json"])
    assert json.loads(result.output)["splits"]["train"]["failures"]["by_reason"] == {"unreadable": 3, "missing": 1}
    result = runner.invoke(app, ["verify", str(root)])
    assert result.exit_code == 0 and "all 3 shards match" in result.output


def test_user_errors_are_one_sentence(tmp_path):
    with pytest.raises(CacheError, match="does not exist"):
        open_cache(tmp_path / "nope")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "clip.mp4").write_bytes(b"")
    with pytest.raises(CacheError, match="not an emo feature cache"):
        open_cache(tmp_path / "data")
    with pytest.raises(CacheError, match="not empty and is not an emo feature cache"):
        CacheWriter(tmp_path / "data", FINGERPRINT)
    write_cache(tmp_path / "c", "h5")
    with pytest.raises(UnknownSplitError, match="no split 'test'; it holds: train"):
        load_split(tmp_path / "c", "test")
    result = CliRunner().invoke(app, ["info", str(tmp_path / "nope")])
    # A path the user gave that is not there is a usage error (exit 2), like everywhere in emo.
    assert isinstance(result.exception, CacheError) and isinstance(result.exception, UsageError)
    assert result.exception.exit_code == 2


def test_resuming_with_another_shard_size_is_caught(tmp_path):
    root = tmp_path / "c"
    rows = make_rows(0, 0, 12, modalities=())  # labels only: slicing rows is then trivial
    take = lambda lo, hi: {name: value[lo:hi] for name, value in rows.items()}  # noqa: E731
    writer = CacheWriter(root, FINGERPRINT)
    writer.write_shard("train", 0, take(0, 6), [])  # an earlier run used shards of 6
    writer.write_shard("train", 1, take(4, 8), [])  # the resumed run uses shards of 4
    writer.write_shard("train", 2, take(8, 12), [])
    writer.finalize("train", total_rows=12, expected_shards=3)
    with pytest.raises(CacheError, match="14 rows where its plan expects 12.*--shard-size"):
        load_split(root, "train")
    problems = verify_cache(root)
    assert any("duplicated rows" in p and "shard-00000.h5 and shard-00001.h5" in p for p in problems)


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
    CacheWriter(tmp_path / "c", FINGERPRINT, config=config)
    loaded = build_config(TinyExtractConfig, tmp_path / "c" / "config.toml", section="extract")
    assert loaded == config


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_and_labels_only_shards_round_trip(tmp_path, fmt):
    plan = [(0, make_rows(0, 0, 4, modalities=()), []), (1, make_rows(1, 4, 0, modalities=()), [])]
    writer = CacheWriter(tmp_path / "c", FINGERPRINT, fmt=fmt)
    for index, rows, failures in plan:
        writer.write_shard("dev", index, rows, failures)
    writer.finalize("dev", total_rows=4, expected_shards=2)
    features = load_split(tmp_path / "c", "dev")
    assert features.modalities == () and features.mel is None
    assert_equal_features(features, expected_split(plan))


_KILLED_WRITER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from emo.cache import CacheWriter, storage
from test_cache import FINGERPRINT, shard_plan
plan = shard_plan()
writer = CacheWriter(Path({root!r}), FINGERPRINT, fmt={fmt!r})
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
    temps = [p for p in (root / "train").iterdir() if layout.parse_temp_name(p.name)]
    assert temps and not (root / "train" / f"shard-00001.{fmt}").exists()

    writer = CacheWriter(root, FINGERPRINT, fmt=fmt)
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
    assert_equal_features(load_split(tmp_path / "c", "train", verify=True), expected_split(plan))
    with pytest.raises(ConfigError, match="compression"):
        CacheWriter(tmp_path / "d", FINGERPRINT, fmt=fmt, compression="gzip9")


# --------------------------------------------------------------------------- per-clip writer


def clip_records(start: int, n: int, views: int = 2) -> list[ClipRecord]:
    """Clips as extraction hands them over: some lost audio or video (with failures), one
    has fewer encoded frames than slots, mel lengths differ per view."""
    rng = np.random.default_rng(start)
    clips = []
    for i in range(n):
        key = start + i
        clip = ClipRecord(
            dialogue_id=key // 3, utterance_id=key % 3, emotion=key % 7, sentiment=key % 3,
            speaker=["Ross", "Jöey 🎭"][i % 2], clip=f"dia{key // 3}_utt{key % 3}.mp4",
            text_cls=rng.standard_normal(8).astype(np.float32), text_mean=rng.standard_normal(8).astype(np.float32),
            visual=rng.standard_normal((3 if i != 1 else 2, 5)).astype(np.float32),
            mel=[rng.standard_normal((int(rng.integers(1, 9)), 6)).astype(np.float16) for _ in range(views)],
            truncated=i == 2,
        )  # fmt: skip
        if i % 4 == 0:
            clip.mel = None
            clip.failures = [ClipFailure("no_audio", ("audio",), "no audio stream")]
        if i % 5 == 3:
            clip.mel, clip.visual = None, None
            clip.failures = [ClipFailure("unreadable", ("audio", "visual"), "cannot be decoded")]
        clips.append(clip)
    return clips


SPEC = ShardSpec(modalities=("text", "audio", "visual"), text_dim=8, frames=3, visual_dim=5, n_mels=6, mel_views=2)


@pytest.mark.parametrize("fmt", FORMATS)
def test_clips_are_packed_into_columns_by_the_cache(tmp_path, fmt):
    """write_clips owns the layout: ragged mel + index, presence flags, masks, failures."""
    shards = [clip_records(0, 6), clip_records(6, 5)]
    writer = CacheWriter(tmp_path / "c", FINGERPRINT, fmt=fmt)
    for index, clips in enumerate(shards):
        writer.write_clips("train", index, clips, SPEC, {"extract_s": 0.25})
    writer.finalize("train", total_rows=11, expected_shards=2)
    features = load_split(tmp_path / "c", "train")
    clips = [clip for shard in shards for clip in shard]
    assert len(features) == 11 and features.modalities == ("text", "audio", "visual")
    assert features.speaker == [c.speaker for c in clips]
    for i, clip in enumerate(clips):
        assert (features.dialogue_id[i], features.utterance_id[i]) == (clip.dialogue_id, clip.utterance_id)
        assert features.has_text[i]
        np.testing.assert_array_equal(features.text_mean[i], clip.text_mean.astype(np.float16))
        assert features.has_audio[i] == (clip.mel is not None)
        assert features.has_visual[i] == (clip.visual is not None)
        assert features.truncated[i] == clip.truncated
        assert features.failure[i] == ",".join(f.reason for f in clip.failures)
        if clip.visual is None:
            assert not features.visual_mask[i].any() and not features.visual[i].any()
        else:
            frames = len(clip.visual)
            assert features.visual_mask[i].tolist() == [True] * frames + [False] * (3 - frames)
            np.testing.assert_array_equal(features.visual[i, :frames], clip.visual.astype(np.float16))
        for view in range(2):
            start, length = features.mel_index[i, view]
            if clip.mel is None:
                assert length == 0
            else:
                np.testing.assert_array_equal(features.mel[start : start + length], clip.mel[view])
    info = open_cache(tmp_path / "c").splits["train"]
    assert info.failures_by_reason == {"no_audio": 4, "unreadable": 2}
    assert info.failures_by_modality == {"audio": 4, "audio+visual": 2}
    assert {f["clip"] for f in info.failures} <= {c.clip for c in clips}
    assert info.stats["extract_s"] == pytest.approx(0.5)


def test_clips_without_a_modality_anywhere_get_zeros_of_the_right_shape(tmp_path):
    clips = clip_records(0, 4)
    for clip in clips:
        clip.mel, clip.visual = None, None
    writer = CacheWriter(tmp_path / "c", FINGERPRINT)
    writer.write_clips("dev", 0, clips, SPEC)
    writer.finalize("dev", total_rows=4, expected_shards=1)
    features = load_split(tmp_path / "c", "dev")
    assert features.mel.shape == (0, 6) and features.mel_index.shape == (4, 2, 2) and not features.mel_index.any()
    assert features.visual.shape == (4, 3, 5) and not features.has_visual.any() and not features.has_audio.any()
    text_only = CacheWriter(tmp_path / "t", FINGERPRINT)
    text_only.write_clips("dev", 0, clips, ShardSpec(modalities=("text",), text_dim=8))
    text_only.finalize("dev", total_rows=4, expected_shards=1)
    assert load_split(tmp_path / "t", "dev").modalities == ("text",)


def test_deferred_writer_touches_the_disk_only_when_it_writes(tmp_path):
    """A run that fails before its first shard leaves nothing behind, and a mismatched cache
    is still refused up front (before any work), or replaced only once there is work to keep."""
    root = tmp_path / "c"
    writer = CacheWriter(root, FINGERPRINT, config={"frames": 3}, defer_create=True)
    assert not root.exists() and not writer.shard_done("train", 0)
    writer.write_clips("train", 0, clip_records(0, 3), SPEC)
    assert (root / "cache.json").is_file() and (root / "config.toml").is_file() and writer.shard_done("train", 0)

    other = dict(FINGERPRINT, n_mels=7)
    with pytest.raises(CacheError, match="n_mels"):
        CacheWriter(root, other, defer_create=True)
    replacing = CacheWriter(root, other, overwrite=True, defer_create=True)
    assert open_cache(root).fingerprint == FINGERPRINT, "nothing is wiped before there is something to write"
    replacing.write_clips("train", 0, clip_records(0, 3), SPEC)
    assert open_cache(root).fingerprint == other


def test_the_cache_uses_the_one_atomic_temp_name_scheme(tmp_path):
    """Temporaries come from emo.atomic and layout parses them back (dead ones get cleaned)."""
    name = atomic.temp_name("shard-00003.h5")
    assert layout.parse_temp_name(name) == (3, atomic.this_host(), os.getpid())
    assert layout.parse_any_temp(atomic.temp_name("manifest.json")) == ("manifest.json", atomic.this_host(), os.getpid())
    assert not hasattr(layout, "write_json_atomic") and not hasattr(layout, "temp_name")
