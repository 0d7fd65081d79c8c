"""One input file -> its utterances: a transcript and, when segmenting, where each one is.

- A given transcript (`--transcript`) wins; timed cues become the segments when
  segmenting, otherwise their text is the clip's.
- Otherwise speech recognition runs over the file's audio: the whole clip is one
  utterance with everything said in it, or (segmenting) each recognised stretch of speech,
  found with the recogniser's voice-activity filter, is an utterance of its own.
- A file that cannot be opened is skipped and reported; a file without an audio stream or
  without speech is still predicted from what it has (frames, silence) and reported too.
  Each input gets one outcome: a file too short to predict is reported as skipped only.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from emo.predict.api import AUTO_SEGMENT_S, LONGEST_INPUT_S, MEDIA_SUFFIXES, MIN_MEDIA_S, InputProblem
from emo.predict.encode import Segment

MIN_SEGMENT_S = MIN_MEDIA_S


def _add(stages: dict[str, float], name: str, started: float) -> None:
    stages[name] = stages.get(name, 0.0) + time.perf_counter() - started


def plan_segments(predictor, index: int, path: Path, transcript, segment: bool | None, only_input: bool,
                  stages: dict[str, float]) -> tuple[list[Segment], list[InputProblem], float]:
    """(segments, problems, seconds of media) for input number `index`."""
    from emo.extract.decode import decode_clip
    from emo.extract.probe import ClipError, probe_clip

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
            spans = [(c.start, c.end, c.text, c.speaker) for c in timed]
        else:
            spans = [(0.0, duration, " ".join(c.text for c in cues if c.text), cues[0].speaker if cues else "")]
    elif not info.has_audio:
        problems.append(InputProblem(name, "no_audio", f"{path} has no audio: predicted from its frames alone.", False))
        spans = [(0.0, duration, "", "")]
    else:
        started = time.perf_counter()
        try:
            audio = decode_clip(path, video=False, audio=True, max_duration=LONGEST_INPUT_S).audio
        except ClipError as error:
            return [], [InputProblem(name, error.reason, _sentence(error))], 0.0
        finally:
            _add(stages, "decode", started)
        duration = duration or len(audio) / 16000.0
        recognizer = predictor.recognizer()
        started = time.perf_counter()
        found = recognizer.transcribe(audio, vad=split)
        _add(stages, "speech recognition", started)
        if not found:
            problems.append(InputProblem(name, "no_speech", f"No speech was recognised in {path}: predicted without words.",
                                         False))  # fmt: skip
            spans = [(0.0, duration, "", "")]
        elif split:
            spans = [(s.start, s.end, s.text, "") for s in found]
        else:
            spans = [(0.0, duration, " ".join(s.text for s in found), "")]
    segments = []
    for start, end, text, speaker in spans:
        end = end if end is not None else (duration or predictor.maker.config.max_duration)
        if duration is not None:
            end = min(end, duration)
        start = max(0.0, float(start))
        if end - start < MIN_SEGMENT_S:
            continue
        segments.append(Segment(index, len(segments), path, start, float(end), text, speaker))
    if not segments:  # one input, one outcome: skipped, not also "predicted without audio"
        problems = [InputProblem(name, "empty", f"{path} is shorter than {MIN_SEGMENT_S} s: nothing to predict.")]
    return segments, problems, float(duration or 0.0)


def _sentence(error) -> str:
    text = " ".join(str(error).split())
    return text if text.endswith(".") else text + "."
