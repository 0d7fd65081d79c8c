"""A synthetic dataset in the exact MELD release layout, for tests, the demo and benchmarks.

Why it looks like this:
- Same files as MELD.Raw: `{train,dev,test}_sent_emo.csv` (the 11 real columns, UTF-8,
  CRLF, both time formats) and `train_splits/`, `dev_splits_complete/`,
  `output_repeated_splits_test/` holding real h264 + AAC mp4 files written with PyAV - so
  everything downstream runs its real code paths on it, decoder included.
- The emotion is *partly* recoverable from each modality on its own: emotion words in the
  text, a pitch/rhythm pattern in the audio, a background colour in the frames. Each
  modality shows the true emotion's cue with probability `*_cue` and a different
  emotion's cue otherwise, independently per modality, and every cue is jittered - so no
  single modality is perfect, each is far above chance, and fusing them helps. That is
  what lets a test or a demo tell a working pipeline from a broken one.
- Labels follow MELD's train distribution (neutral-heavy), dialogues have Utterance_ID gaps
  and skipped Dialogue_IDs, like the real thing.
- Broken clips of every kind `emo.extract.decode` must survive can be mixed in, and the
  report says which clip is broken how (and which ClipError reason it should raise).
- Deterministic: every clip draws from its own seeded generator, so the same seed gives
  identical CSVs and identical decoded content whatever the order of writing.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

from emo.data.meld import CLIP_DIRS, COLUMNS, SPLITS, csv_name, format_time
from emo.errors import ConfigError, UsageError
from emo.labels import EMOTIONS

BROKEN_KINDS: tuple[str, ...] = (
    "zero_byte",
    "truncated",
    "no_audio",
    "no_video",
    "missing",
    "too_long",
    "not_video",
    "audio_longer",
)

# What `emo.extract.decode.decode_clip` does with each kind: the ClipError reason it
# raises, or None where the clip decodes (cut at max_duration, `truncated=True`).
EXPECTED_REASON: dict[str, str | None] = {
    "zero_byte": "empty",
    "truncated": "unreadable",
    "no_audio": "no_audio",
    "no_video": "no_video",
    "missing": "missing",
    "too_long": None,
    "not_video": "unreadable",
    "audio_longer": None,
}

# MELD train emotion counts (neutral, joy, surprise, anger, sadness, disgust, fear).
MELD_TRAIN_COUNTS: tuple[int, ...] = (4710, 1743, 1205, 1109, 683, 271, 268)

MANIFEST_NAME = "synth_manifest.json"


@dataclass
class SynthConfig:
    train_clips: int = 40  # utterances (CSV rows) in train
    dev_clips: int = 12  # utterances in dev
    test_clips: int = 12  # utterances in test
    min_duration: float = 1.0  # seconds, shortest clip
    max_duration: float = 3.0  # seconds, longest clip (broken 'too_long' clips excepted)
    width: int = 128  # frame width in pixels
    height: int = 96  # frame height in pixels
    fps: int = 10  # frames per second
    sample_rate: int = 22050  # audio sample rate (MELD: 48000); decoding resamples to 16 kHz
    audio_channels: int = 2  # audio channels (MELD: 6); decoding downmixes to mono
    seed: int = 0  # same seed -> identical CSVs and identical decoded content
    text_cue: float = 0.6  # chance the text carries the true emotion's words (else another emotion's)
    audio_cue: float = 0.6  # chance the audio carries the true emotion's pitch/rhythm
    visual_cue: float = 0.6  # chance the frames carry the true emotion's colour
    broken_fraction: float = 0.0  # fraction of each split's clips that are broken
    broken_kinds: tuple[str, ...] = BROKEN_KINDS  # broken kinds to cycle through
    long_duration: float = 40.0  # seconds of a 'too_long' clip and of an 'audio_longer' clip's audio
    unlabeled_videos: int = 0  # extra mp4s per clip folder that no CSV row names

    def validate(self) -> None:
        for name in ("train_clips", "dev_clips", "test_clips", "unlabeled_videos"):
            if getattr(self, name) < 0:
                raise ConfigError(f"Config key '{name}' must be 0 or more, got {getattr(self, name)}.")
        if not 0 < self.min_duration <= self.max_duration:
            raise ConfigError(
                f"Durations must satisfy 0 < min_duration <= max_duration, got {self.min_duration} and {self.max_duration}."
            )
        if self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            raise ConfigError(f"Frame size must be even and at least 16x16, got {self.width}x{self.height}.")
        if not 1 <= self.fps <= 120:
            raise ConfigError(f"Config key 'fps' must be between 1 and 120, got {self.fps}.")
        if self.sample_rate not in _AAC_RATES:
            raise ConfigError(
                f"Config key 'sample_rate' must be an AAC rate ({', '.join(map(str, _AAC_RATES))}), got {self.sample_rate}."
            )
        if self.audio_channels not in _LAYOUTS:
            raise ConfigError(f"Config key 'audio_channels' must be 1, 2 or 6, got {self.audio_channels}.")
        for name in ("text_cue", "audio_cue", "visual_cue", "broken_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"Config key '{name}' must be between 0 and 1, got {value}.")
        unknown = [k for k in self.broken_kinds if k not in BROKEN_KINDS]
        if unknown:
            raise ConfigError(f"Unknown broken kind '{unknown[0]}'; known kinds are: {', '.join(BROKEN_KINDS)}.")
        if self.broken_fraction > 0 and not self.broken_kinds:
            raise ConfigError("broken_fraction is above 0 but broken_kinds is empty.")
        if self.long_duration <= self.max_duration:
            raise ConfigError(
                f"Config key 'long_duration' ({self.long_duration}) must exceed max_duration ({self.max_duration})."
            )

    def clips_for(self, split: str) -> int:
        return {"train": self.train_clips, "dev": self.dev_clips, "test": self.test_clips}[split]


_AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


@dataclass
class SynthClip:
    """One CSV row and what was written for it."""

    split: str
    dialogue_id: int
    utterance_id: int
    path: Path
    emotion: str
    text_cue: str  # the emotion whose words the text carries
    audio_cue: str  # the emotion whose pitch/rhythm the audio carries
    visual_cue: str  # the emotion whose colour the frames carry
    duration: float
    broken: str | None = None  # one of BROKEN_KINDS, or None for a good clip
    row: dict[str, str] = field(default_factory=dict, repr=False)  # the CSV row, column -> text

    @property
    def expected_reason(self) -> str | None:
        """The ClipError reason decoding this clip raises (None: it decodes)."""
        return EXPECTED_REASON[self.broken] if self.broken else None


@dataclass
class SynthReport:
    out_dir: Path
    config: SynthConfig
    csv_paths: dict[str, Path]
    clip_dirs: dict[str, Path]
    clips: list[SynthClip]
    unlabeled: list[Path] = field(default_factory=list)

    @property
    def broken(self) -> list[SynthClip]:
        return [c for c in self.clips if c.broken]

    def split_clips(self, split: str) -> list[SynthClip]:
        return [c for c in self.clips if c.split == split]

    def summary(self) -> dict[str, dict[str, int]]:
        """Per split: rows, good clips, broken clips by kind, unlabeled videos."""
        out: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            clips = self.split_clips(split)
            row = {"rows": len(clips), "good": sum(1 for c in clips if not c.broken)}
            for kind in BROKEN_KINDS:
                n = sum(1 for c in clips if c.broken == kind)
                if n:
                    row[kind] = n
            row["unlabeled"] = sum(1 for p in self.unlabeled if p.parent == self.clip_dirs[split])
            out[split] = row
        return out


# ----------------------------------------------------------------------------- cues

_WORDS: dict[str, tuple[str, ...]] = {
    "neutral": ("okay", "so", "well", "sure", "alright", "fine", "yeah", "right"),
    "joy": ("great", "awesome", "love", "wonderful", "happy", "fantastic", "yay", "amazing"),
    "surprise": ("wow", "really", "whoa", "seriously", "unbelievable", "no way", "oh my god", "what"),
    "anger": ("hate", "stupid", "furious", "shut up", "damn", "ridiculous", "idiot", "enough"),
    "sadness": ("sorry", "miss", "cry", "lonely", "sad", "lost", "hurts", "alone"),
    "disgust": ("gross", "ew", "disgusting", "yuck", "nasty", "sick", "revolting", "eww"),
    "fear": ("scared", "afraid", "terrified", "help", "nervous", "panic", "creepy", "worried"),
}
# No opener or filler uses an emotion word: the text's cue is only the two words it carries.
_OPENERS = ("I’m", "You know,", "Hey,", "Listen,", "Look,", "Honestly,", "Oh,", "I mean,", "We’re", "That’s")
_FILLER = (
    "the coffee", "this apartment", "Central Perk", "the dinosaur", "my sandwich", "today", "just",
    "the couch", "your sweater", "the duck", "that guy", "the turkey", "Vegas", "the museum",
    "don’t know", "I think", "you guys", "it’s like", "the chick", "the foosball table",
)
_SPEAKERS = ("Joey", "Chandler", "Monica", "Rachel", "Ross", "Phoebe", "Gunther", "Janice", "The Interviewer")

# Per emotion: (pitch Hz, syllable rate Hz). Pitches are ~25% apart and jittered by up to
# 5%, so the pitch names the cue; the rhythm is a second, redundant hint.
_TONES: dict[str, tuple[float, float]] = {
    "sadness": (110.0, 1.5),
    "neutral": (140.0, 3.0),
    "disgust": (175.0, 2.5),
    "anger": (220.0, 7.0),
    "joy": (275.0, 5.0),
    "fear": (345.0, 9.0),
    "surprise": (430.0, 2.0),
}
# Per emotion: background RGB colour.
_COLOURS: dict[str, tuple[int, int, int]] = {
    "neutral": (128, 128, 128),
    "joy": (235, 205, 40),
    "surprise": (40, 210, 220),
    "anger": (210, 35, 35),
    "sadness": (40, 60, 200),
    "disgust": (60, 170, 60),
    "fear": (130, 50, 170),
}


def _cue(rng: np.random.Generator, emotion: str, strength: float) -> str:
    """The true emotion with probability `strength`, otherwise a different one."""
    if rng.random() < strength:
        return emotion
    others = [e for e in EMOTIONS if e != emotion]
    return others[int(rng.integers(len(others)))]


def _text(rng: np.random.Generator, cue: str) -> str:
    words = _WORDS[cue]
    first, second = (words[int(i)] for i in rng.choice(len(words), size=2, replace=False))
    opener = _OPENERS[int(rng.integers(len(_OPENERS)))]
    filler = _FILLER[int(rng.integers(len(_FILLER)))]
    punct = (".", "!", "?", "…")[int(rng.integers(4))]
    templates = (
        f"{opener} {first}, {filler} {second}{punct}",
        f"{first.capitalize()}! {opener} {filler} {second}{punct}",
        f"{opener} {filler}, {first} {second}{punct}",
    )
    return templates[int(rng.integers(len(templates)))]


def _audio(rng: np.random.Generator, cue: str, seconds: float, rate: int, channels: int) -> np.ndarray:
    """float32[channels, samples]: a harmonic tone with the cue's pitch and syllable rhythm."""
    pitch, syllables = _TONES[cue]
    pitch *= float(rng.uniform(0.95, 1.05))
    syllables *= float(rng.uniform(0.85, 1.15))
    n = max(1, int(round(seconds * rate)))
    t = np.arange(n) / rate
    phase = 2 * np.pi * pitch * t
    voice = np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase)
    envelope = 0.5 * (1 + np.sin(2 * np.pi * syllables * t + rng.uniform(0, 2 * np.pi))) ** 2
    mono = 0.18 * voice * envelope + rng.normal(0.0, 0.01, n)
    gains = np.linspace(1.0, 0.7, channels)[:, None]
    return np.clip(mono[None, :] * gains, -1, 1).astype(np.float32)


def _frames(rng: np.random.Generator, cue: str, n: int, width: int, height: int) -> np.ndarray:
    """uint8[n, H, W, 3]: the cue's background colour (jittered) and a moving grey square
    that carries no label information."""
    colour = np.clip(np.array(_COLOURS[cue]) + rng.normal(0, 18, 3), 0, 255)
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    frames[:] = colour.astype(np.uint8)
    side = max(4, min(width, height) // 3)
    grey = int(rng.integers(60, 200))
    x0, y0 = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
    step = int(rng.integers(1, 4))
    for i in range(n):
        x = (x0 + i * step) % (width - side)
        frames[i, y0 : y0 + side, x : x + side] = grey
    return frames


# ----------------------------------------------------------------------------- writing


def write_clip(
    path: str | Path,
    frames: np.ndarray | None,
    audio: np.ndarray | None,
    fps: int = 10,
    sample_rate: int = 22050,
    frame_times: np.ndarray | None = None,
    faststart: bool = False,
) -> Path:
    """Write an h264 + AAC mp4 with PyAV. Either stream may be left out.

    frames: uint8[T, H, W, 3]; frame_times (seconds, increasing) makes a variable-frame-rate
    file, otherwise frames are 1/fps apart. audio: float32[channels, samples] in [-1, 1].
    `faststart` puts the index (moov) before the media data, as web-ready files have it.
    Written to a temporary name and renamed, so an interrupted run never leaves a
    half-written clip that looks valid.
    """
    import av

    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    options = {"movflags": "faststart"} if faststart else {}
    container = av.open(str(tmp), mode="w", format="mp4", options=options)
    try:
        if frames is not None:
            time_base = Fraction(1, 1000) if frame_times is not None else Fraction(1, fps)
            video = container.add_stream("libx264", rate=fps)
            video.width, video.height = int(frames.shape[2]), int(frames.shape[1])
            video.pix_fmt = "yuv420p"
            video.codec_context.time_base = time_base
            # One thread: x264 output is then byte-identical for a seed.
            video.options = {"preset": "ultrafast", "threads": "1", "crf": "20"}
        if audio is not None:
            channels = int(audio.shape[0])
            sound = container.add_stream("aac", rate=sample_rate, layout=_LAYOUTS[channels])
        if frames is not None:
            for i, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame.pts = int(round(frame_times[i] * 1000)) if frame_times is not None else i
                frame.time_base = time_base
                for packet in video.encode(frame):
                    container.mux(packet)
            for packet in video.encode():
                container.mux(packet)
        if audio is not None:
            block = 1024
            for start in range(0, audio.shape[1], block):
                chunk = np.ascontiguousarray(audio[:, start : start + block], dtype=np.float32)
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=_LAYOUTS[channels])
                frame.sample_rate = sample_rate
                frame.pts = start
                frame.time_base = Fraction(1, sample_rate)
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    except BaseException:
        container.close()
        tmp.unlink(missing_ok=True)
        raise
    container.close()
    os.replace(tmp, path)
    return path


def _write_row_clip(clip: SynthClip, rng: np.random.Generator, config: SynthConfig) -> None:
    """Write one CSV row's clip, good or broken as `clip.broken` says."""
    kind = clip.broken
    path = clip.path
    if kind == "missing":
        return
    if kind == "zero_byte":
        path.write_bytes(b"")
        return
    if kind == "not_video":
        path.write_text("This is a text file with a video's name, as left behind by a failed download.\n")
        return
    n_frames = max(1, int(round(clip.duration * config.fps)))
    frames = None if kind == "no_video" else _frames(rng, clip.visual_cue, n_frames, config.width, config.height)
    audio_seconds = config.long_duration if kind == "audio_longer" else clip.duration
    audio = None
    if kind != "no_audio":
        audio = _audio(rng, clip.audio_cue, audio_seconds, config.sample_rate, config.audio_channels)
    truncated = kind == "truncated"
    write_clip(path, frames, audio, fps=config.fps, sample_rate=config.sample_rate, faststart=truncated)
    if truncated:
        # An interrupted download of a web-ready file: the index (moov) is intact and
        # promises the whole clip, but only the first 40% of the bytes arrived - the
        # hard case, which opens and decodes part way before failing.
        data = path.read_bytes()
        path.write_bytes(data[: max(1, int(len(data) * 0.4))])


# ----------------------------------------------------------------------------- layout


def plan_split(config: SynthConfig, split: str, out_dir: str | Path = ".") -> list[SynthClip]:
    """A split's rows without writing anything: ids with MELD-like gaps, labels, cues, times,
    broken kinds. `generate` writes exactly this plan; tests use it to check statistics."""
    if split not in SPLITS:
        raise UsageError(f"Unknown split '{split}'; use one of {', '.join(SPLITS)}.")
    split_index = SPLITS.index(split)
    clip_dir = Path(out_dir) / CLIP_DIRS[split]
    n = config.clips_for(split)
    rng = np.random.default_rng([config.seed, split_index, 0])
    prior = np.array(MELD_TRAIN_COUNTS, dtype=float)
    prior /= prior.sum()
    emotions = [EMOTIONS[int(i)] for i in rng.choice(len(EMOTIONS), size=n, p=prior)]

    n_broken = int(round(config.broken_fraction * n)) if config.broken_kinds else 0
    broken_rows = set(int(i) for i in rng.choice(n, size=min(n_broken, n), replace=False)) if n_broken else set()
    kinds_cycle = iter(config.broken_kinds * (n_broken // max(1, len(config.broken_kinds)) + 1))
    broken_by_row = {row: next(kinds_cycle) for row in sorted(broken_rows)}

    clips: list[SynthClip] = []
    dialogue_id = -1
    utterance_id = 0
    remaining_in_dialogue = 0
    sr_no = 0
    clock = 0.0
    season = episode = 1
    short_hours = False
    speakers: tuple[str, str] = ("Joey", "Chandler")
    for row_index in range(n):
        if remaining_in_dialogue == 0:
            dialogue_id += 2 if rng.random() < 0.05 else 1  # MELD skips a few dialogue ids
            remaining_in_dialogue = int(rng.integers(1, 9))
            utterance_id = 0
            season, episode = int(rng.integers(1, 10)), int(rng.integers(1, 25))
            clock = float(rng.uniform(30, 1200))
            short_hours = bool(rng.random() < 0.25)  # MELD mixes H:MM:SS and HH:MM:SS
            pair = rng.choice(len(_SPEAKERS), size=2, replace=False)
            speakers = (_SPEAKERS[int(pair[0])], _SPEAKERS[int(pair[1])])
        elif rng.random() < 0.06:
            utterance_id += 1  # an Utterance_ID gap, as in 72 train dialogues
            sr_no += 1
        kind = broken_by_row.get(row_index)
        clip_rng = np.random.default_rng([config.seed, split_index, 1, row_index])
        duration = round(float(clip_rng.uniform(config.min_duration, config.max_duration)), 3)
        if kind == "too_long":
            duration = float(config.long_duration)
        emotion = emotions[row_index]
        clip = SynthClip(
            split=split,
            dialogue_id=dialogue_id,
            utterance_id=utterance_id,
            path=clip_dir / f"dia{dialogue_id}_utt{utterance_id}.mp4",
            emotion=emotion,
            text_cue=_cue(clip_rng, emotion, config.text_cue),
            audio_cue=_cue(clip_rng, emotion, config.audio_cue),
            visual_cue=_cue(clip_rng, emotion, config.visual_cue),
            duration=duration,
            broken=kind,
        )
        sr_no += 1
        start = clock + float(clip_rng.uniform(0.05, 0.6))
        end = start + duration
        clock = end
        sentiment = _sentiment(emotion, clip_rng)
        clip.row = {
            "Sr No.": str(sr_no),
            "Utterance": _text(clip_rng, clip.text_cue),
            "Speaker": speakers[utterance_id % 2],
            "Emotion": emotion,
            "Sentiment": sentiment,
            "Dialogue_ID": str(dialogue_id),
            "Utterance_ID": str(utterance_id),
            "Season": str(season),
            "Episode": str(episode),
            "StartTime": format_time(start, short_hours),
            "EndTime": format_time(end, short_hours),
        }
        clips.append(clip)
        utterance_id += 1
        remaining_in_dialogue -= 1
    return clips


def _sentiment(emotion: str, rng: np.random.Generator) -> str:
    if emotion == "neutral":
        return "neutral"
    if emotion == "joy":
        return "positive"
    if emotion == "surprise":
        return "positive" if rng.random() < 0.5 else "negative"
    return "negative"


def csv_text(clips: list[SynthClip]) -> str:
    """The CSV exactly as MELD writes it: the 11 columns, quoted where needed, CRLF."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(c.row for c in clips)
    return buffer.getvalue()


def _owned_files(out_dir: Path) -> list[Path]:
    owned = [out_dir / csv_name(s) for s in SPLITS] + [out_dir / MANIFEST_NAME]
    for split in SPLITS:
        folder = out_dir / CLIP_DIRS[split]
        if folder.is_dir():
            owned += list(folder.glob("*.mp4")) + list(folder.glob("*.mp4.part"))
    return [p for p in owned if p.exists()]


def generate(
    out_dir: str | Path,
    config: SynthConfig | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SynthReport:
    """Write a MELD-layout synthetic dataset into `out_dir` and say what was written.

    Refuses to write over an existing dataset unless `overwrite`, and always refuses a
    folder whose MELD files it did not write (no manifest). Overwriting first removes the
    CSVs, the manifest and the mp4 files in the three clip folders (nothing else), so no
    stale clip of an earlier, larger run survives. `progress(done, total)` is called after
    each clip.
    """
    config = config or SynthConfig()
    config.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} exists and is not a folder.")
    existing = _owned_files(out_dir) if out_dir.is_dir() else []
    if existing and not overwrite:
        raise UsageError(f"{out_dir} already holds a dataset ({existing[0].name}); pass --force to replace it.")
    if existing and not (out_dir / MANIFEST_NAME).is_file():
        # --force deletes clips; never do that to a folder emo synth did not write (real MELD).
        raise UsageError(f"{out_dir} holds MELD files that emo synth did not write; choose another folder.")
    for path in existing:
        path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    # Claim the folder before writing any clip, so that after an interruption --force
    # knows these half-written files are ours to replace.
    (out_dir / MANIFEST_NAME).write_text(json.dumps({"complete": False}) + "\n", encoding="utf-8")

    plans = []
    for split_index, split in enumerate(SPLITS):
        clip_dir = out_dir / CLIP_DIRS[split]
        clip_dir.mkdir(exist_ok=True)
        clips = plan_split(config, split, out_dir)
        unlabeled = []
        last_dialogue = max((c.dialogue_id for c in clips), default=-1)
        for k in range(config.unlabeled_videos):
            # Named like a clip of a dialogue the CSV does not have.
            unlabeled.append((clip_dir / f"dia{last_dialogue + 1 + k}_utt0.mp4", k))
        plans.append((split_index, split, clip_dir, clips, unlabeled))

    total = sum(len(p[3]) + len(p[4]) for p in plans)
    done = 0
    report = SynthReport(out_dir=out_dir, config=config, csv_paths={}, clip_dirs={}, clips=[], unlabeled=[])
    for split_index, split, clip_dir, clips, unlabeled in plans:
        for row_index, clip in enumerate(clips):
            rng = np.random.default_rng([config.seed, split_index, 2, row_index])
            _write_row_clip(clip, rng, config)
            done += 1
            if progress:
                progress(done, total)
        for path, k in unlabeled:
            rng = np.random.default_rng([config.seed, split_index, 3, k])
            emotion = EMOTIONS[int(rng.integers(len(EMOTIONS)))]
            seconds = float(rng.uniform(config.min_duration, config.max_duration))
            frames = _frames(rng, emotion, max(1, int(round(seconds * config.fps))), config.width, config.height)
            audio = _audio(rng, emotion, seconds, config.sample_rate, config.audio_channels)
            write_clip(path, frames, audio, fps=config.fps, sample_rate=config.sample_rate)
            report.unlabeled.append(path)
            done += 1
            if progress:
                progress(done, total)
        csv_path = out_dir / csv_name(split)
        # The CSV goes last: a folder with a CSV is a finished split.
        tmp = csv_path.with_name(csv_path.name + ".part")
        tmp.write_bytes(csv_text(clips).encode("utf-8"))
        os.replace(tmp, csv_path)
        report.csv_paths[split] = csv_path
        report.clip_dirs[split] = clip_dir
        report.clips.extend(clips)

    _write_manifest(report)
    return report


def _write_manifest(report: SynthReport) -> None:
    """Per-clip ground truth (cues, broken kinds) next to the data, for benchmarks and demos."""
    payload = {
        "complete": True,
        "clips": [
            {
                "split": c.split,
                "clip": c.path.relative_to(report.out_dir).as_posix(),
                "emotion": c.emotion,
                "text_cue": c.text_cue,
                "audio_cue": c.audio_cue,
                "visual_cue": c.visual_cue,
                "duration": c.duration,
                "broken": c.broken,
                "expected_reason": c.expected_reason,
            }
            for c in report.clips
        ],
        "unlabeled": [p.relative_to(report.out_dir).as_posix() for p in report.unlabeled],
    }
    (report.out_dir / MANIFEST_NAME).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
