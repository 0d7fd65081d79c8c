"""`SynthConfig`: what `emo synth` writes, and the limits it checks before writing anything.

Its own module so that the plan (`emo.data.synth_plan`), the media (`emo.data.synth_media`)
and the folder writer (`emo.data.synth`) all read it without importing one another in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass

from emo.errors import ConfigError

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

AAC_RATES: tuple[int, ...] = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
LAYOUTS: dict[int, str] = {1: "mono", 2: "stereo", 6: "5.1"}  # audio channels -> AAC layout
MAX_CLIPS = 1_000_000  # per split: a synthetic dataset exists to try the pipeline, and its plan lives in memory


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
        from emo.config import require_finite

        require_finite(self)  # inf and nan first: the range checks below are false for nan
        for name in ("train_clips", "dev_clips", "test_clips", "unlabeled_videos", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"Config key '{name}' must be 0 or more, got {getattr(self, name)}.")
        for name in ("train_clips", "dev_clips", "test_clips", "unlabeled_videos"):
            if getattr(self, name) > MAX_CLIPS:
                raise ConfigError(
                    f"Config key '{name}' must be at most {MAX_CLIPS:,} (MELD has 13,708 utterances), "
                    f"got {getattr(self, name):,}."
                )
        if not 0 < self.min_duration <= self.max_duration:
            raise ConfigError(
                f"Durations must satisfy 0 < min_duration <= max_duration, got {self.min_duration} and {self.max_duration}."
            )
        if self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            raise ConfigError(f"Frame size must be even and at least 16x16, got {self.width}x{self.height}.")
        if not 1 <= self.fps <= 120:
            raise ConfigError(f"Config key 'fps' must be between 1 and 120, got {self.fps}.")
        if self.sample_rate not in AAC_RATES:
            raise ConfigError(
                f"Config key 'sample_rate' must be an AAC rate ({', '.join(map(str, AAC_RATES))}), got {self.sample_rate}."
            )
        if self.audio_channels not in LAYOUTS:
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
