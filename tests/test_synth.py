"""The synthetic MELD-layout dataset: layout, round trip through the reader, determinism,
label statistics, and cues that survive real encoding and decoding."""

from __future__ import annotations

import collections
import re
import tomllib

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from emo.config import build_config
from emo.data import synth_media, synth_plan
from emo.data.meld import CLIP_DIRS, COLUMNS, SPLITS, load_split, read_annotations
from emo.data.synth import BROKEN_KINDS, MELD_TRAIN_COUNTS, SynthConfig, csv_text, generate, plan_split
from emo.errors import ConfigError, UsageError
from emo.extract.media.decode import decode_clip
from emo.labels import EMOTIONS
from emo.progress import TaskAdvanced, TaskFinished, TaskStarted


def test_layout_is_the_meld_release(synth_root):
    for split in SPLITS:
        raw = (synth_root / f"{split}_sent_emo.csv").read_bytes()
        text = raw.decode("utf-8")  # strict UTF-8, no BOM
        assert not text.startswith("\ufeff")
        assert text.split("\r\n")[0] == ",".join(COLUMNS)
        assert text.count("\n") == text.count("\r\n")  # CRLF everywhere
        assert (synth_root / CLIP_DIRS[split]).is_dir()


@pytest.mark.parametrize("split", SPLITS)
def test_round_trip_through_the_reader(synth_report, split):
    loaded = load_split(synth_report.out_dir, split)
    planned = sorted(synth_report.split_clips(split), key=lambda c: (c.dialogue_id, c.utterance_id))
    assert [u.key for u in loaded.utterances] == [(c.dialogue_id, c.utterance_id) for c in planned]
    for utterance, clip in zip(loaded.utterances, planned):
        assert utterance.emotion == clip.emotion
        assert utterance.text == clip.row["Utterance"]
        assert utterance.speaker == clip.row["Speaker"]
        assert utterance.end - utterance.start == pytest.approx(clip.duration, abs=1e-3)
        assert loaded.clip_path(utterance) == clip.path
        assert clip.path.exists() == (clip.broken != "missing")
    expected_unlabeled = [p for p in synth_report.unlabeled if p.parent == loaded.clip_dir]
    assert loaded.unlabeled_videos() == expected_unlabeled and len(expected_unlabeled) == 1


def test_broken_kinds_as_configured(synth_report):
    train = synth_report.split_clips("train")
    assert collections.Counter(c.broken for c in train if c.broken) == {k: 1 for k in BROKEN_KINDS}
    for split in ("dev", "test"):
        assert sorted(c.broken for c in synth_report.split_clips(split) if c.broken) == ["truncated", "zero_byte"]
    summary = synth_report.summary()
    assert summary["train"]["rows"] == 24 and summary["train"]["good"] == 16


def test_good_clips_decode_with_the_configured_shape(synth_report):
    config = synth_report.config
    for clip in [c for c in synth_report.clips if not c.broken][:6]:
        decoded = decode_clip(clip.path, num_frames=4)
        assert decoded.frames.shape == (4, config.height, config.width, 3)
        assert decoded.duration == pytest.approx(clip.duration, abs=0.15)
        assert len(decoded.audio) / 16000 == pytest.approx(clip.duration, abs=0.15)


def test_plan_has_meld_like_ids_times_and_labels(tmp_path):
    config = SynthConfig(train_clips=3000)
    clips = plan_split(config, "train")
    counts = collections.Counter(c.emotion for c in clips)
    expected = np.array(MELD_TRAIN_COUNTS) / sum(MELD_TRAIN_COUNTS)
    observed = np.array([counts[e] for e in EMOTIONS]) / len(clips)
    assert np.all(np.abs(observed - expected) < 0.03)
    assert counts["neutral"] == max(counts.values())
    # Utterance_ID gaps and skipped dialogue ids, like MELD
    by_dialogue = collections.defaultdict(list)
    for c in clips:
        by_dialogue[c.dialogue_id].append(c.utterance_id)
    assert any(ids != list(range(len(ids))) for ids in by_dialogue.values())
    assert sorted(by_dialogue) != list(range(len(by_dialogue)))
    # Both time formats, and the CSV reads back
    starts = [c.row["StartTime"] for c in clips]
    assert any(re.fullmatch(r"\d:\d\d:\d\d,\d{3}", s) for s in starts)
    assert any(re.fullmatch(r"\d\d:\d\d:\d\d,\d{3}", s) for s in starts)
    path = tmp_path / "train_sent_emo.csv"
    path.write_bytes(csv_text(clips).encode("utf-8"))
    assert [u.emotion for u in read_annotations(path)] == [c.emotion for c in clips]


def test_each_modality_is_informative_and_fusion_helps():
    config = SynthConfig(train_clips=4000)
    clips = plan_split(config, "train")
    truth = np.array([c.emotion for c in clips])
    cues = {m: np.array([getattr(c, f"{m}_cue") for c in clips]) for m in ("text", "audio", "visual")}
    accuracy = {m: float((cues[m] == truth).mean()) for m in cues}
    majority = max(collections.Counter(truth).values()) / len(truth)
    for m, value in accuracy.items():
        assert value == pytest.approx(getattr(config, f"{m}_cue"), abs=0.03), m
        assert majority + 0.1 < value < 0.9, m  # informative, not perfect
    votes = []
    for t, a, v in zip(cues["text"], cues["audio"], cues["visual"]):
        ranked = collections.Counter([t, a, v]).most_common()
        votes.append(ranked[0][0] if ranked[0][1] > 1 else t)
    fused = float((np.array(votes) == truth).mean())
    assert fused > max(accuracy.values()) + 0.05


_TEXT_WORDS = {
    e: [re.compile(rf"\b{re.escape(w)}\b", re.IGNORECASE) for w in words] for e, words in synth_plan.WORDS.items()
}


def _text_guess(text: str) -> str:
    scores = {e: sum(bool(p.search(text)) for p in patterns) for e, patterns in _TEXT_WORDS.items()}
    return max(scores, key=scores.get)


def _audio_guess(audio: np.ndarray) -> str:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    peak_hz = np.argmax(spectrum[1:]) * 16000 / len(audio) + 16000 / len(audio)
    return min(synth_media.TONES, key=lambda e: abs(np.log(synth_media.TONES[e][0] / peak_hz)))


def _visual_guess(frames: np.ndarray) -> str:
    colour = np.median(frames.reshape(-1, 3), axis=0)
    return min(synth_media.COLOURS, key=lambda e: np.linalg.norm(colour - np.array(synth_media.COLOURS[e])))


def test_cues_survive_encoding_and_decoding(tmp_path):
    """Simple per-modality classifiers read back the cue each clip was written with."""
    config = SynthConfig(
        train_clips=28,
        dev_clips=0,
        test_clips=0,
        min_duration=0.5,
        max_duration=0.8,
        width=32,
        height=24,
        fps=8,
        seed=3,
    )
    report = generate(tmp_path / "cues", config)
    agree = collections.Counter()
    for clip in report.clips:
        decoded = decode_clip(clip.path, num_frames=4)
        agree["text"] += _text_guess(clip.row["Utterance"]) == clip.text_cue
        agree["audio"] += _audio_guess(decoded.audio) == clip.audio_cue
        agree["visual"] += _visual_guess(decoded.frames) == clip.visual_cue
    n = len(report.clips)
    assert agree["text"] / n >= 0.9 and agree["audio"] / n >= 0.9 and agree["visual"] / n >= 0.9, agree
    # and the cues are not simply the labels
    assert sum(c.text_cue != c.emotion for c in report.clips) > 0


def test_same_seed_same_dataset_other_seed_other_dataset(tmp_path):
    small = dict(
        train_clips=3, dev_clips=1, test_clips=1, min_duration=0.4, max_duration=0.6, width=32, height=32, fps=5
    )
    first = generate(tmp_path / "a", SynthConfig(seed=11, **small))
    second = generate(tmp_path / "b", SynthConfig(seed=11, **small))
    other = generate(tmp_path / "c", SynthConfig(seed=12, **small))
    for split in SPLITS:
        name = f"{split}_sent_emo.csv"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "train_sent_emo.csv").read_bytes() != (tmp_path / "c" / "train_sent_emo.csv").read_bytes()
    for one, two in zip(first.clips, second.clips):
        a, b = decode_clip(one.path, num_frames=3), decode_clip(two.path, num_frames=3)
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
    assert not np.array_equal(
        decode_clip(first.clips[0].path).audio[:1000], decode_clip(other.clips[0].path).audio[:1000]
    )


def test_existing_dataset_needs_overwrite_and_leaves_no_stale_clips(tmp_path):
    small = dict(dev_clips=1, test_clips=1, min_duration=0.3, max_duration=0.4, width=16, height=16, fps=4)
    generate(tmp_path, SynthConfig(train_clips=6, **small))
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="already holds a dataset"):
        generate(tmp_path, SynthConfig(train_clips=2, **small))
    report = generate(tmp_path, SynthConfig(train_clips=2, **small), overwrite=True)
    assert sorted(p.name for p in (tmp_path / "train_splits").glob("*.mp4")) == sorted(
        c.path.name for c in report.split_clips("train")
    )
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_interrupted_run_can_be_replaced_with_force(tmp_path):
    small = dict(
        train_clips=4, dev_clips=1, test_clips=1, min_duration=0.3, max_duration=0.4, width=16, height=16, fps=4
    )

    events = []

    def stop_after_two(event):
        events.append(event)
        if isinstance(event, TaskAdvanced) and event.completed == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, SynthConfig(**small), progress=stop_after_two)
    assert isinstance(events[0], TaskStarted) and events[0].total == 6 and events[0].unit == "clips"
    assert not (tmp_path / "train_sent_emo.csv").exists()  # the CSV is written last
    left = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert len(left) == 3 and left[-1] == "synth_manifest.json"  # two whole clips, no temporaries
    assert all(re.fullmatch(r"dia\d+_utt\d+\.mp4", name) for name in left[:2]), left
    with pytest.raises(UsageError, match="--force"):
        generate(tmp_path, SynthConfig(**small))
    events.clear()
    report = generate(tmp_path, SynthConfig(**small), overwrite=True, progress=events.append)
    assert len(load_split(tmp_path, "train").utterances) == 4 and len(report.clips) == 6
    assert [e.completed for e in events if isinstance(e, TaskAdvanced)] == [1, 2, 3, 4, 5, 6]
    assert isinstance(events[-1], TaskFinished) and events[-1].task == events[0].task == "synth"


def test_force_never_deletes_a_real_meld_folder(tmp_path):
    (tmp_path / "train_sent_emo.csv").write_text("real")
    (tmp_path / "train_splits").mkdir()
    (tmp_path / "train_splits" / "dia0_utt0.mp4").write_bytes(b"real video")
    with pytest.raises(UsageError, match="did not write"):
        generate(tmp_path, SynthConfig(train_clips=1, dev_clips=0, test_clips=0), overwrite=True)
    assert (tmp_path / "train_splits" / "dia0_utt0.mp4").read_bytes() == b"real video"


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"min_duration": "3", "max_duration": "1"}, "min_duration <= max_duration"),
        ({"width": "33"}, "even"),
        ({"sample_rate": "12345"}, "AAC rate"),
        ({"audio_channels": "3"}, "1, 2 or 6"),
        ({"broken_fraction": "1.5"}, "between 0 and 1"),
        ({"broken_kinds": "zero_byte,exploded"}, "Unknown broken kind 'exploded'"),
        ({"long_duration": "2"}, "must exceed max_duration"),
        ({"train_clips": "-1"}, "0 or more"),
    ],
)
def test_bad_config_is_one_sentence(overrides, words):
    with pytest.raises(ConfigError, match=words):
        build_config(SynthConfig, None, overrides)


# --------------------------------------------------------------------------- CLI


@pytest.fixture()
def cli():
    from emo.commands import synth as synth_command

    app = typer.Typer()
    app.command("synth")(synth_command.command)

    @app.command("other")
    def _other() -> None:  # a second command keeps typer from collapsing the group
        pass

    return app


def test_cli_writes_dataset_and_resolved_config(cli, tmp_path):
    out = tmp_path / "out"
    config = tmp_path / "base.toml"
    config.write_text("[synth]\nfps = 6\nwidth = 32\nheight = 32\nmin_duration = 0.3\nmax_duration = 0.5\n")
    result = CliRunner().invoke(
        cli,
        [
            "synth",
            str(out),
            "--clips",
            "8",
            "--config",
            str(config),
            "--set",
            "seed=5",
            "--height",
            "16",
            "--broken-fraction",
            "0.25",
            "--broken-kinds",
            "zero_byte,missing",
        ],
    )
    assert result.exit_code == 0, result.output
    saved = tomllib.loads((out / "synth.toml").read_text())["synth"]
    assert saved["train_clips"] == 8 and saved["dev_clips"] == 2 and saved["test_clips"] == 2
    assert (saved["fps"], saved["width"], saved["height"], saved["seed"]) == (6, 32, 16, 5)
    assert saved["broken_kinds"] == ["zero_byte", "missing"]
    assert "train" in result.output and "zero_byte 1" in result.output
    assert len(load_split(out, "train").utterances) == 8
    # the saved config reproduces the dataset exactly
    again = CliRunner().invoke(cli, ["synth", str(tmp_path / "again"), "--config", str(out / "synth.toml")])
    assert again.exit_code == 0, again.output
    for split in SPLITS:
        assert (out / f"{split}_sent_emo.csv").read_bytes() == (
            tmp_path / "again" / f"{split}_sent_emo.csv"
        ).read_bytes()


def test_cli_user_errors_are_emo_errors(cli, tmp_path):
    result = CliRunner().invoke(cli, ["synth", str(tmp_path), "--set", "colour=red"])
    assert isinstance(result.exception, ConfigError) and "Unknown config key 'colour'" in str(result.exception)
    result = CliRunner().invoke(cli, ["synth", str(tmp_path), "--fps", "0"])
    assert isinstance(result.exception, ConfigError)


@pytest.mark.parametrize("clips", ["100000000000", "1000001"])
def test_an_impossible_clip_count_is_refused_before_anything_is_written(tmp_path, clips):
    """A count within 64 bits but far beyond any dataset ended in a MemoryError traceback
    after the folders were made; now it is one usage sentence and nothing is written."""
    from emo.cli import app, run

    out = tmp_path / "synth"
    assert run(app, ["synth", str(out), "--clips", clips]) == 2
    assert not out.exists()
