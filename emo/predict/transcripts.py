"""Transcripts given with `emo predict --transcript FILE`, instead of speech recognition.

Four formats, chosen by the file's suffix:
- MELD-style CSV (`Utterance`, `Dialogue_ID`, `Utterance_ID`, optional `Speaker`): one
  utterance per clip, matched to inputs named `dia{D}_utt{U}.*`;
- SRT and WebVTT: timed cues, for one input;
- JSON: a list of `{"start", "end", "text"}` objects (optionally `"speaker"`), or
  `{"segments": [...]}` (Whisper's own output), for one input; or an object mapping input
  file names to such lists, for several.

A clip-level transcript (CSV) gives a clip's whole text; a timed one (SRT, WebVTT, JSON)
gives segments, which become the utterances when segmenting.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from emo.errors import DataError, UsageError

SUFFIXES = (".csv", ".srt", ".vtt", ".json")
_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{1,3})")


@dataclass(frozen=True)
class Cue:
    """A piece of transcript: times in seconds from the file's start (None for a whole clip)."""

    text: str
    start: float | None = None
    end: float | None = None
    speaker: str = ""


@dataclass
class Transcript:
    """Cues per input: by file stem (`by_name`) or for a single input (`single`)."""

    by_name: dict[str, list[Cue]]
    single: list[Cue] | None = None
    source: str = ""

    def cues_for(self, path: Path, only_input: bool) -> list[Cue] | None:
        """The cues of input `path`, or None when the transcript does not cover it."""
        for key in (path.name, path.stem):
            if key in self.by_name:
                return self.by_name[key]
        if self.single is not None and only_input:
            return self.single
        return None


def read_transcript(path: Path | str) -> Transcript:
    """Parse a transcript file; one sentence for a missing, unknown or malformed one."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"Transcript {path} does not exist; pass a MELD-style CSV, SRT, WebVTT or JSON file.")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UsageError(f"Transcript {path} is not a .csv, .srt, .vtt or .json file.")
    if suffix == ".csv":
        from emo.data.meld import read_annotations

        try:
            rows = read_annotations(path)
        except DataError:
            raise
        by_name = {Path(u.clip_name).stem: [Cue(text=u.text, speaker=u.speaker)] for u in rows}
        return Transcript(by_name=by_name, source=str(path))
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    if suffix == ".json":
        return _json(text, path)
    cues = _timed_cues(text, path)
    return Transcript(by_name={}, single=cues, source=str(path))


def seconds(stamp: str) -> float:
    """'01:02:03,450', '02:03.450' or '1:02:03.45' -> seconds."""
    match = _TIME.fullmatch(stamp.strip())
    if not match:
        raise ValueError(stamp)
    hours, minutes, secs, fraction = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(secs) + int(fraction.ljust(3, "0")) / 1000


def _timed_cues(text: str, path: Path) -> list[Cue]:
    """SRT and WebVTT: blocks whose timing line is `START --> END`, text on the lines after."""
    cues = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = [line.strip() for line in block.strip().split("\n") if line.strip()]
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is None:
            continue  # WEBVTT header, NOTE or STYLE blocks
        start_text, end_text = lines[timing].split("-->", 1)
        try:
            start, end = seconds(start_text), seconds(end_text.split()[0])
        except (ValueError, IndexError):
            raise DataError(f"Transcript {path} has a cue time that cannot be read: '{lines[timing]}'.") from None
        words = re.sub(r"<[^>]+>", "", " ".join(lines[timing + 1 :]))  # WebVTT voice/style tags
        speaker = ""
        voice = re.search(r"<v\s+([^>]+)>", " ".join(lines[timing + 1 :]))
        if voice:
            speaker = voice.group(1).strip()
        cues.append(Cue(text=" ".join(words.split()), start=start, end=end, speaker=speaker))
    if not cues:
        raise DataError(f"Transcript {path} holds no timed cues (lines like '00:00:01,000 --> 00:00:02,500').")
    return sorted(cues, key=lambda c: (c.start, c.end))


def _json(text: str, path: Path) -> Transcript:
    try:
        data = json.loads(text)
    except ValueError as error:
        raise DataError(f"Transcript {path} is not valid JSON ({error}).") from None
    if isinstance(data, dict) and "segments" in data:
        data = data["segments"]
    if isinstance(data, list):
        return Transcript(by_name={}, single=_json_cues(data, path), source=str(path))
    if isinstance(data, dict):
        by_name = {}
        for name, cues in data.items():
            cues = cues.get("segments", cues) if isinstance(cues, dict) else cues
            by_name[Path(name).name] = _json_cues(cues, path)
            by_name.setdefault(Path(name).stem, by_name[Path(name).name])
        return Transcript(by_name=by_name, source=str(path))
    raise DataError(
        f"Transcript {path} must be a list of {{start, end, text}} objects or a map of file names to such lists."
    )


def _json_cues(items, path: Path) -> list[Cue]:
    if not isinstance(items, list):
        raise DataError(f"Transcript {path} must hold lists of {{start, end, text}} objects.")
    cues = []
    for item in items:
        if not isinstance(item, dict) or "text" not in item:
            raise DataError(f"Transcript {path} has an entry without 'text': {str(item)[:60]}.")
        try:
            start = None if item.get("start") is None else float(item["start"])
            end = None if item.get("end") is None else float(item["end"])
        except (TypeError, ValueError):
            raise DataError(f"Transcript {path} has a start or end that is not a number: {str(item)[:60]}.") from None
        cues.append(
            Cue(
                text=" ".join(str(item["text"]).split()),
                start=start,
                end=end,
                speaker=str(item.get("speaker", "") or ""),
            )
        )
    return cues
