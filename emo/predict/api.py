"""`Predictor`: a trained run applied to new video or audio files, no labels needed.

    predictor = Predictor.from_run("runs/seed")
    result = predictor.predict(["clip.mp4", "folder/"])
    for s in result.segments:
        print(s.file, s.start, s.emotion, s.probabilities["joy"], s.transcript)

For each input: a transcript (given with `transcript=`, else speech recognition), the
utterances (the whole clip, or the recogniser's segments when segmenting: by default for
inputs over 30 s), the run's own encoders over each utterance's frames, audio and text
(`emo.predict.encode`), and the run's head. A trained dialogue-context head sees the
utterances of one input as one dialogue, in order. An input that cannot be decoded is
reported in `result.problems` and the others are still predicted.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from emo.errors import DataError, UsageError
from emo.predict.segments import MEDIA_SUFFIXES, MIN_MEDIA_S, InputProblem
from emo.progress import Message, ProgressCallback, TaskAdvanced, TaskFinished, TaskStarted, emit
from emo.units import count


@dataclass
class SegmentPrediction:
    """One utterance's prediction; times in seconds from the start of its file."""

    file: str
    segment: int
    start: float
    end: float
    transcript: str
    emotion: str
    probabilities: dict[str, float]  # the 7 emotions, summing to 1
    modalities: list[str]  # the modalities the prediction used
    sentiment: str | None = None  # only when the run trained a sentiment head
    sentiment_probabilities: dict[str, float] | None = None
    speaker: str = ""
    transcript_source: str = "none"  # asr (speech recognition: check it), given (--transcript) or none

    def to_row(self) -> dict[str, Any]:
        row = {
            "file": self.file,
            "segment": self.segment,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "transcript": self.transcript,
            "transcript_source": self.transcript_source,
            "speaker": self.speaker,
            "emotion": self.emotion,
            "emotion_probabilities": self.probabilities,
        }
        if self.sentiment is not None:
            row["sentiment"] = self.sentiment
            row["sentiment_probabilities"] = self.sentiment_probabilities
        row["modalities"] = "+".join(self.modalities)
        return row


@dataclass
class PredictResult:
    segments: list[SegmentPrediction] = field(default_factory=list)
    problems: list[InputProblem] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # where the time went, by stage
    inputs: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0  # total length of the predicted inputs
    durations: dict[str, float] = field(default_factory=dict)  # each predicted input's length, by file
    heads: tuple[str, ...] = ("emotion",)  # the run's heads: the columns a prediction has

    def require_any(self) -> None:
        """One sentence (exit 1) when not one utterance was predicted: every input was
        skipped, for the reasons in `problems`."""
        if not self.segments:
            n = len(self.inputs)
            raise DataError(
                f"Nothing was predicted: {'the input was' if n == 1 else f'all {n} inputs were'} skipped "
                f"(reasons above); pass video or audio files with at least {MIN_MEDIA_S} s of media."
            )

    def for_file(self, file: str | Path) -> list[SegmentPrediction]:
        return [s for s in self.segments if s.file == str(file)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def media_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Files to predict, in the order given; folders contribute their media files, sorted."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise UsageError(f"Input {path} does not exist; pass video or audio files or folders of them.")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
            if not found:
                raise UsageError(f"Folder {path} holds no video or audio files ({', '.join(MEDIA_SUFFIXES[:4])}, ...).")
            files += found
        else:
            files.append(path)
    if not files:
        raise UsageError("No input given; pass video or audio files or folders of them.")
    return files


class Predictor:
    """A run's head plus the encoders that made its features (and a recogniser, on first need)."""

    def __init__(
        self,
        run_dir: Path,
        model,
        payload: dict[str, Any],
        features,
        device,
        asr_model: str | None = None,
        language: str | None = "en",
        progress: ProgressCallback | None = None,
        ensemble=None,
    ):
        from emo.fuse.ensemble import Ensemble, Member

        self.run_dir, self.model, self.payload, self.maker = Path(run_dir), model, payload, features
        # the models that predict: this run alone, or an ensemble's members (their probabilities averaged)
        self.ensemble = ensemble or Ensemble(
            [Member(self.run_dir.name, self.run_dir, str(run_dir), model, payload)], str(run_dir)
        )
        self.device = device
        self.asr_model, self.language = asr_model, language
        self.progress = progress
        self._recognizer = None

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        cache: str | Path | None = None,
        device: str = "auto",
        asr_model: str | None = None,
        language: str | None = "en",
        progress: ProgressCallback | None = None,
    ) -> "Predictor":
        """Load `run_dir`'s checkpoint and the encoders of the cache it was trained on; an
        ensemble folder (`emo ensemble`) loads every member, and the features are made once
        for all of them (they share their sets) and their probabilities averaged."""
        from emo.fuse.ensemble import open_members
        from emo.predict.encode import FeatureMaker, recipe_cache, set_recipes

        from emo.device import check_device_name
        from emo.predict.asr import check_language

        run_dir = Path(run_dir)
        language = check_language(language)  # a typo fails here, not after the encoders load
        check_device_name(device)  # and so does a device typo, before torch loads
        ensemble = open_members([run_dir], "cpu")  # one finished run, or an ensemble's compatible members
        model, payload = ensemble.first.model, ensemble.first.payload
        folder = recipe_cache(payload, run_dir, Path(cache) if cache is not None else None)
        recipes = set_recipes(payload, run_dir, folder, tuple(model.config.modalities))
        maker = FeatureMaker(recipes, payload["fingerprint"], device, run_dir, progress)
        for member in ensemble.members:
            member.model.to(maker.device).eval()
        return cls(run_dir, model, payload, maker, maker.device, asr_model, language, progress, ensemble)

    def close(self) -> None:
        """Release the encoders' native resources (MediaPipe) now rather than at exit."""
        self.maker.close()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.model.config.heads)

    def recognizer(self):
        if self._recognizer is None:
            from emo.predict.asr import Recognizer

            emit(self.progress, Message(f"Loading speech recognition ({self.asr_model or 'offline Whisper base'})."))
            asr_device = "cuda" if getattr(self.device, "type", "cpu") == "cuda" else "cpu"
            self._recognizer = Recognizer(self.asr_model, device=asr_device, language=self.language)
        return self._recognizer

    def predict(
        self,
        inputs: str | Path | Iterable[str | Path],
        transcript: str | Path | None = None,
        segment: bool | None = None,
        segment_pad: str | float = "next",
    ) -> PredictResult:
        """Predict every utterance of `inputs` (files or folders). `segment`: split inputs at
        speech segments (None: only inputs over 30 s); `transcript`: a CSV, SRT, WebVTT or JSON
        file to use instead of speech recognition; `segment_pad`: how far a recognised
        segment's end is moved on (next: to the next segment's start or the media's end,
        none, or seconds; see `emo.predict.segments.pad_ends`)."""
        from emo.predict.segments import parse_segment_pad, plan_segments
        from emo.predict.transcripts import read_transcript

        if isinstance(inputs, (str, Path)):
            inputs = [inputs]
        files = media_files(inputs)
        pad = parse_segment_pad(segment_pad)
        cues = read_transcript(transcript) if transcript is not None else None
        result = PredictResult(inputs=[str(f) for f in files], heads=self.heads)
        stages: dict[str, float] = {}
        emit(self.progress, TaskStarted("predict:plan", "transcribe and segment", len(files), "files"))
        segments = []
        for index, path in enumerate(files):
            planned, problems, seconds = plan_segments(
                self.recognizer, self.maker.max_duration, index, path, cues, segment, len(files) == 1, stages, pad
            )
            segments += planned
            result.problems += problems
            result.audio_seconds += seconds if planned else 0.0
            if planned:
                result.durations[str(path)] = seconds or max(s.end for s in planned)
            emit(self.progress, TaskAdvanced("predict:plan", index + 1))
        emit(self.progress, TaskFinished("predict:plan", count(len(segments), "utterance")))
        if segments:
            result.segments, damaged = self._predict_segments(segments, stages)
            known = {(p.file, p.reason) for p in result.problems}
            result.problems += [p for p in damaged if (p.file, p.reason) not in known]
        result.seconds = {k: round(v, 4) for k, v in stages.items()}
        return result

    def _predict_segments(
        self, segments, stages: dict[str, float]
    ) -> tuple[list[SegmentPrediction], list[InputProblem]]:
        from emo.fuse.ensemble import predict_loaded
        from emo.fuse.predictions import head_columns, used_modalities

        emit(self.progress, TaskStarted("predict:encode", "encode utterances", len(segments), "utterances"))
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            emit(self.progress, TaskAdvanced("predict:encode", done))

        features, records, encode_stages = self.maker.encode(segments, advance)
        for name, value in encode_stages.items():
            stages[name] = stages.get(name, 0.0) + value
        emit(self.progress, TaskFinished("predict:encode"))
        started = time.perf_counter()
        logits, present = predict_loaded(self.ensemble, features, self.device)  # one run's, or the members' mean
        stages["head"] = stages.get("head", 0.0) + time.perf_counter() - started
        used = used_modalities(self.model.config.modalities, present)
        out = []
        for row, s in enumerate(segments):
            heads = head_columns(logits, row)
            out.append(
                SegmentPrediction(
                    file=str(s.path),
                    segment=s.index,
                    start=s.start,
                    end=s.end,
                    transcript=s.text,
                    emotion=heads.get("emotion", ""),
                    probabilities=heads.get("emotion_probabilities", {}),
                    modalities=[m for m in used[row].split("+") if m],
                    sentiment=heads.get("sentiment"),
                    sentiment_probabilities=heads.get("sentiment_probabilities"),
                    speaker=s.speaker,
                    transcript_source=s.transcript_source,
                )
            )
        return out, _media_problems(segments, records)


def _media_problems(segments, records) -> list[InputProblem]:
    """What decoding a segment's media cost it (once per file and reason): the prediction
    still stands on the modalities left."""
    seen, problems = set(), []
    for s, record in zip(segments, records):
        for failure in record.failures:
            if (str(s.path), failure.reason) in seen:
                continue
            seen.add((str(s.path), failure.reason))
            lost = "+".join(failure.modalities) or "nothing"
            said = failure.message.rstrip(".")
            said = said if str(s.path) in said else f"{s.path}: {said}"  # name the file once, not twice
            problems.append(
                InputProblem(str(s.path), failure.reason, f"{said} (predicted without {lost}).", skipped=False)
            )
    return problems
