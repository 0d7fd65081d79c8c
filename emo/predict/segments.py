"""One input file -> its utterances: a transcript and, when segmenting, where each one is.

- A given transcript (`--transcript`) wins; timed cues become the segments when
  segmenting, otherwise their text is the clip's.
- Otherwise speech recognition runs over the file's audio: the whole clip is one
  utterance with everything said in it, or (segmenting) each recognised stretch of speech,
  found with the recogniser's voice-activity filter, is an utterance of its own. Whisper
  ends a stretch 0.3-0.5 s before the voice stops (its last word's timestamp: measured on
  espeak-ng speech and the real MELD clip, where a cut at 2.0 s of 2.46 s lost the clip's
  tail), so each recognised segment's end is padded (`pad_ends`): by default to the next
  segment's start, the last one to the media's end. A given transcript's times are the
  user's own and are kept.
- Each utterance says where its words came from (`transcript_source`: asr, given or none),
  so a reader knows which transcripts a recogniser guessed.
- A file that cannot be opened is skipped and reported; a file without an audio stream or
  without speech is still predicted from what it has (frames, silence) and reported too.
  Each input gets one outcome: a file too short to predict is reported as skipped only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from emo.predict.encode import Segment

AUTO_SEGMENT_S = 30.0  # inputs longer than this are split at the recogniser's segments by default
MEDIA_SUFFIXES = (
    ".mp4",
    ".mkv",
    ".mov",
    ".avi",
    ".webm",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".ts",
    ".wav",
    ".mp3",
    ".m4a",
    ".aac",
    ".flac",
    ".ogg",
    ".opus",
    ".wma",
)
SEGMENT_PADS = ("next", "none")  # --segment-pad's words; a number of seconds is the third form
LONGEST_INPUT_S = 6 * 3600.0  # decoded for recognition at most (a film is shorter)
MIN_MEDIA_S = 0.1  # an utterance shorter than this is not predicted
MIN_SEGMENT_S = MIN_MEDIA_S


@dataclass
class InputProblem:
    """An input that was skipped (reason: missing, empty, unreadable, not_media) or predicted
    with less than it could have (no_audio, no_speech, no_video); `message` says what happened."""

    file: str
    reason: str
    message: str
    skipped: bool = True


def parse_segment_pad(value: str | float | None) -> str | float:
    """`--segment-pad` as `plan_segments` takes it: "next", "none" or seconds >= 0 (a float);
    one sentence for anything else, before any model loads."""
    from emo.errors import UsageError

    if value is None:
        return "next"
    if isinstance(value, str) and value.strip().lower() in SEGMENT_PADS:
        return value.strip().lower()
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise UsageError(f"--segment-pad takes next, none or a number of seconds >= 0, not {value!r}.")
    return seconds


def pad_ends(spans: list[tuple], duration: float | None, pad: str | float) -> list[tuple]:
    """Recognised `spans` ((start, end, ...) in order) with each end moved later: "next" to
    the next span's start (the last to `duration`), seconds: by that much but never into the
    next span or past `duration`, "none": as recognised. An end is never moved earlier."""
    if pad == "none":
        return list(spans)
    out = []
    for i, (start, end, *rest) in enumerate(spans):
        following = spans[i + 1][0] if i + 1 < len(spans) else duration
        if pad == "next":
            padded = following if following is not None else end
        else:
            padded = end + float(pad)
            padded = min(padded, following) if following is not None else padded
        out.append((start, max(end, padded), *rest))
    return out


def _add(stages: dict[str, float], name: str, started: float) -> None:
    stages[name] = stages.get(name, 0.0) + time.perf_counter() - started


def plan_segments(
    recognizer: Callable[[], Any],
    max_duration: float,
    index: int,
    path: Path,
    transcript,
    segment: bool | None,
    only_input: bool,
    stages: dict[str, float],
    pad: str | float = "next",
) -> tuple[list[Segment], list[InputProblem], float]:
    """(segments, problems, seconds of media) for input number `index`.

    `recognizer()` gives the speech recogniser (loaded on first call: only inputs with audio
    and no transcript need one); `max_duration` is how long an input whose container states
    no duration is taken to be when nothing else says where its utterance ends; `pad` is how
    recognised segments' ends are padded (`parse_segment_pad`, `pad_ends`)."""
    from emo.extract.media.decode import decode_clip
    from emo.extract.media.probe import ClipError, probe_clip

    name = str(path)
    started = time.perf_counter()
    try:
        info = probe_clip(path)
    except ClipError as error:
        return [], [InputProblem(name, error.reason, _sentence(error))], 0.0
    finally:
        _add(stages, "decode", started)
    if not (info.has_video or info.has_audio):
        return [], [InputProblem(name, "not_media", f"{path} holds no video or audio stream.")], 0.0
    if path.suffix.lower() not in MEDIA_SUFFIXES and not info.has_video and not info.has_audio:
        return [], [InputProblem(name, "not_media", f"{path} is not a video or audio file.")], 0.0
    duration = info.duration if math.isfinite(info.duration) and info.duration > 0 else None
    split = segment if segment is not None else (duration or 0.0) > AUTO_SEGMENT_S
    problems: list[InputProblem] = []
    cues = transcript.cues_for(path, only_input) if transcript is not None else None
    if cues is not None:
        timed = [c for c in cues if c.start is not None and c.end is not None]
        if split and timed:
            spans = [(c.start, c.end, c.text, c.speaker, "given") for c in timed]
        else:
            text = " ".join(c.text for c in cues if c.text)
            spans = [(0.0, duration, text, cues[0].speaker if cues else "", "given")]
    elif not info.has_audio:
        problems.append(InputProblem(name, "no_audio", f"{path} has no audio: predicted from its frames alone.", False))
        spans = [(0.0, duration, "", "", "none")]
    else:
        started = time.perf_counter()
        try:
            audio = decode_clip(path, video=False, audio=True, max_duration=LONGEST_INPUT_S).audio
        except ClipError as error:
            return [], [InputProblem(name, error.reason, _sentence(error))], 0.0
        finally:
            _add(stages, "decode", started)
        duration = duration or len(audio) / 16000.0
        asr = recognizer()
        started = time.perf_counter()
        found = asr.transcribe(audio, vad=split)
        _add(stages, "speech recognition", started)
        if not found:
            problems.append(
                InputProblem(name, "no_speech", f"No speech was recognised in {path}: predicted without words.", False)
            )
            spans = [(0.0, duration, "", "", "none")]
        elif split:
            spans = pad_ends([(s.start, s.end, s.text, "", "asr") for s in found], duration, pad)
        else:
            spans = [(0.0, duration, " ".join(s.text for s in found), "", "asr")]
    segments = []
    for start, end, text, speaker, source in spans:
        end = end if end is not None else (duration or max_duration)
        if duration is not None:
            end = min(end, duration)
        start = max(0.0, float(start))
        if end - start < MIN_SEGMENT_S:
            continue
        segments.append(Segment(index, len(segments), path, start, float(end), text, speaker, source))
    if not segments:  # one input, one outcome: skipped, not also "predicted without audio"
        problems = [InputProblem(name, "empty", f"{path} is shorter than {MIN_SEGMENT_S} s: nothing to predict.")]
    return segments, problems, float(duration or 0.0)


def _sentence(error) -> str:
    text = " ".join(str(error).split())
    return text if text.endswith(".") else text + "."
