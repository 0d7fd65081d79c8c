"""What `emo extract` runs with: one flat dataclass whose defaults are the seed's design.

Every field is settable from a TOML file (`[extract]` section or top level), from
`--set key=value`, and the common ones from named options. The values that change the
cached numbers also go into the cache fingerprint (see `emo.extract.encoders.fingerprint`), so two
runs with different preprocessing can never write into the same cache. The config saved
beside a cache has any preset folded into the encoder fields (`with_preset_resolved`), so
it says which models were really used.

Audio framing: 16 kHz mono, 40 mel bands, n_fft 1024 with a 25 ms Hann window
(win_length 400) zero-padded to the FFT size and a 10 ms hop (hop_length 160), i.e. 100
mel frames per second of speech; log is `10*log10(power)` with a 1e-10 floor (absolute dB,
not relative to each clip's maximum, so loudness differences survive).

Frames: `frame_resize = "exact"` resizes full decoded frames with PIL exactly as the image
model's own eval transform does; `"ffmpeg"` lets FFmpeg scale while it converts colours,
which skips the full-resolution RGB frames (much faster on 720p video) at the price of a
slightly different resampling filter (mean absolute pixel difference about 1.5/255 on
real MELD frames). Either way the crop and normalisation are the model's own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from emo.errors import ConfigError
from emo.labels import MODALITIES

SPLIT_CHOICES = ("train", "dev", "test", "all")
PRESETS = ("none", "offline")
FORMATS = ("h5", "zarr")
FRAME_RESIZE = ("exact", "ffmpeg")

# The pip-shipped encoders `--preset offline` swaps in (no network needed).
OFFLINE_TEXT_MODEL = "all-MiniLM-L6-v2"
OFFLINE_VISUAL_MODEL = "efficientnet-lite0"
OFFLINE_MPNET_MODEL = "all-mpnet-base-v2"  # also pip-shipped, as a split archive (emo.extract.encoders.pip_models)
CROPS = ("none", "faces")
DEFAULT_TEXT_MODEL = "bert-base-uncased"  # the seed design's encoders (the dataclass defaults)
DEFAULT_VISUAL_MODEL, DEFAULT_VISUAL_PRETRAINED = "ViT-B-32", "openai"


def _plain_set_name(modality: str, name: str) -> str:
    """A `--name` value, if the cache can hold it: it becomes a folder, so ASCII letters, digits,
    '_', '.' and '-' only (the cache's own rule, `emo.cache.sets.check_set_name`)."""
    from emo.cache.sets import check_set_name

    try:
        check_set_name(f"{modality}/{name}")
    except ValueError:
        raise ConfigError(
            f"--name {name!r} cannot name a {modality} feature set: it becomes a folder, so use ASCII letters, "
            "digits, '_', '.' or '-', starting with a letter or digit (e.g. --name audio=whisper-l6)."
        ) from None
    return name


@dataclass
class ExtractConfig:
    data_root: Path = Path("MELD.Raw")  # folder with {train,dev,test}_sent_emo.csv and the clip folders
    cache: Path = Path("cache")  # feature cache folder (created; shared by all splits)
    split: str = "train"  # train, dev, test, or all
    modalities: tuple[str, ...] = MODALITIES  # any subset of text, audio, visual
    text_model: str = DEFAULT_TEXT_MODEL  # Hugging Face id or local folder (BERT family)
    text_max_length: int = 128  # tokens per utterance (context included), truncated beyond
    context: int = 0  # earlier utterances of the dialogue prepended as "speaker: text" turns
    text_layers: str = "last"  # text-model hidden states pooled per utterance: last, all, or e.g. 6,8,12 (a layers set)
    visual_model: str = DEFAULT_VISUAL_MODEL  # open_clip architecture name, or efficientnet-lite0
    visual_pretrained: str = DEFAULT_VISUAL_PRETRAINED  # open_clip pretrained tag or a checkpoint file
    audio_model: str = "mel"  # mel (log-mel, the seed), whisper-base, egemaps, or a transformers speech id/folder
    audio_layers: str = "last"  # speech-model layers mean-pooled per clip: last, all, or e.g. 6,12 (a layers set)
    crop: str = "none"  # none: whole frames; faces: the image encoder sees the most prominent face
    name: str = ""  # feature set name(s) instead of the model's: NAME (one modality) or audio=NAME,visual=NAME
    preset: str = "none"  # none, or offline: MiniLM-L6 text + EfficientNet-Lite0 frames, pip-shipped
    frames: int = 16  # frames sampled per clip (more than the head uses, for frame-sampling augmentation)
    frame_resize: str = "exact"  # exact: the image model's own PIL resize; ffmpeg: scale while decoding (faster)
    format: str = "h5"  # h5 or zarr
    shard_size: int = 256  # clips per shard file; the unit of resume and of parallel runs
    device: str = "auto"  # auto, cpu or cuda; auto uses a GPU when present
    batch_size: int = 64  # texts or frames per encoder forward pass
    workers: int = 2  # decoding/mel processes; 0 decodes in the main process
    threads: int = 0  # torch CPU threads for the encoders; 0: the cores the workers leave free (at least 1)
    num_shards: int = 1  # split the shard list across this many processes ...
    shard_index: int = 0  # ... and run the shards k with k % num_shards == shard_index
    overwrite: bool = False  # redo shards that are already in the cache
    max_duration: float = 30.0  # seconds of each clip decoded; longer clips are cut and flagged
    audio_views: int = 0  # augmented mel copies per clip (time-stretch, pitch shift, noise)
    sample_rate: int = 16000  # Hz the audio is resampled to
    n_mels: int = 40  # mel bands
    n_fft: int = 1024  # FFT size (the window is zero-padded to this)
    hop_length: int = 160  # samples between mel frames (10 ms at 16 kHz)
    win_length: int = 400  # Hann window length in samples (25 ms at 16 kHz)
    fmin: float = 0.0  # lowest mel band edge, Hz
    fmax: float = 8000.0  # highest mel band edge, Hz (at most sample_rate / 2)
    seed: int = 0  # seeds the augmented audio views

    def __post_init__(self) -> None:
        self.data_root = Path(self.data_root)
        self.cache = Path(self.cache)
        if isinstance(self.modalities, str):
            self.modalities = tuple(m.strip() for m in self.modalities.split(",") if m.strip())
        self.modalities = tuple(self.modalities)

    # The effective encoders: `preset` wins over the individual fields so one flag is enough.
    @property
    def resolved_text_model(self) -> str:
        if self.preset == "offline":
            return OFFLINE_TEXT_MODEL
        return self.text_model

    @property
    def resolved_visual_model(self) -> tuple[str, str]:
        if self.preset == "offline":
            return OFFLINE_VISUAL_MODEL, ""
        return self.visual_model, self.visual_pretrained

    def with_preset_resolved(self) -> "ExtractConfig":
        """This config with the preset replaced by the encoder fields it stands for.

        Saved beside a cache, it names the models that made it (an offline-preset cache
        would otherwise claim bert-base-uncased and ViT-B-32), and `--config` on it runs
        the same encoders again.
        """
        if self.preset == "none":
            return self
        visual_model, visual_pretrained = self.resolved_visual_model
        return dataclasses.replace(
            self,
            preset="none",
            text_model=self.resolved_text_model,
            visual_model=visual_model,
            visual_pretrained=visual_pretrained,
        )

    def set_names(self) -> dict[str, str]:
        """`--name` as {modality: set name}: `NAME` when one modality is extracted, else
        `audio=NAME,visual=NAME`; one sentence when it cannot be read."""
        text = str(self.name or "").strip()
        if not text:
            return {}
        if "=" not in text:
            if len(self.modalities) != 1:
                raise ConfigError(
                    f"--name {text} is ambiguous with {len(self.modalities)} modalities; write it as "
                    "modality=name pairs, e.g. --name audio=whisper-l6,visual=faces."
                )
            return {self.modalities[0]: _plain_set_name(self.modalities[0], text)}
        names = {}
        for piece in text.split(","):
            modality, _, value = piece.partition("=")
            modality, value = modality.strip(), value.strip()
            if modality not in self.modalities or not value:
                raise ConfigError(
                    f"--name piece {piece.strip()!r} must be modality=name for one of the extracted modalities "
                    f"({', '.join(self.modalities)})."
                )
            if modality in names and names[modality] != value:
                raise ConfigError(f"--name names {modality} twice ({names[modality]} and {value}); give one name.")
            names[modality] = _plain_set_name(modality, value)
        return names

    def check_options_apply(self) -> None:
        """Refuse options that the chosen encoders would silently ignore (exit 2), rather than
        writing a set that is not what the command line asked for."""
        if self.preset == "offline":
            if "text" in self.modalities and self.text_model not in (DEFAULT_TEXT_MODEL, OFFLINE_TEXT_MODEL):
                raise ConfigError(
                    f"--preset offline picks {OFFLINE_TEXT_MODEL} for text, so --text-model {self.text_model} would be "
                    "ignored; give one of them."
                )
            if self.visual_model not in (DEFAULT_VISUAL_MODEL, OFFLINE_VISUAL_MODEL):
                ignored = f"--visual-model {self.visual_model}"
            elif self.visual_pretrained not in (DEFAULT_VISUAL_PRETRAINED, ""):
                ignored = f"--visual-pretrained {self.visual_pretrained}"
            else:
                ignored = ""
            if "visual" in self.modalities and ignored:
                raise ConfigError(
                    f"--preset offline picks {OFFLINE_VISUAL_MODEL} for frames, so {ignored} would be ignored; "
                    "give one of them."
                )
        if "audio" not in self.modalities:
            return
        audio = str(self.audio_model or "mel")
        if audio != "mel" and self.audio_views:
            raise ConfigError(
                f"--audio-views {self.audio_views} makes augmented log-mel copies, which --audio-model {audio} does "
                "not store; leave it out or extract audio/mel."
            )

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", "dev", "test") if self.split == "all" else (self.split,)

    @property
    def ordered_modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.modalities)

    def validate(self) -> None:
        """Reject values that cannot work, each with one sentence naming the key."""
        from emo.config import require_finite

        require_finite(self)  # inf and nan first: the range checks below are false for nan
        if self.split not in SPLIT_CHOICES:
            raise ConfigError(f"Unknown split '{self.split}'; use one of {', '.join(SPLIT_CHOICES)}.")
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown:
            raise ConfigError(
                f"Unknown modality '{unknown[0]}'; choose any of {', '.join(MODALITIES)} (comma-separated)."
            )
        if not self.modalities:
            raise ConfigError("At least one modality is needed; choose any of text, audio, visual.")
        if len(set(self.modalities)) != len(self.modalities):
            raise ConfigError(f"Modalities {', '.join(self.modalities)} name one modality twice.")
        if self.preset not in PRESETS:
            raise ConfigError(f"Unknown preset '{self.preset}'; use none or offline.")
        if self.crop not in CROPS:
            raise ConfigError(f"Unknown crop '{self.crop}'; use none or faces.")
        self.set_names()
        self.check_options_apply()
        # What an encoder accepts (--text-layers, --audio-layers, --crop) is the encoder's own fact: the registry
        # checks it when it picks the encoders (`emo.extract.encoders.registry.entry_for`).
        if self.frame_resize not in FRAME_RESIZE:
            raise ConfigError(f"Unknown frame_resize '{self.frame_resize}'; use exact or ffmpeg.")
        if self.format not in FORMATS:
            raise ConfigError(f"Unknown cache format '{self.format}'; use h5 or zarr.")
        from emo.device import check_device_name

        check_device_name(self.device)
        positive = {
            "text_max_length": self.text_max_length,
            "frames": self.frames,
            "shard_size": self.shard_size,
            "batch_size": self.batch_size,
            "num_shards": self.num_shards,
            "sample_rate": self.sample_rate,
            "n_mels": self.n_mels,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "win_length": self.win_length,
        }
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"Config key '{key}' must be at least 1, got {value}.")
        for key, value in {
            "context": self.context,
            "workers": self.workers,
            "threads": self.threads,
            "audio_views": self.audio_views,
            "seed": self.seed,
        }.items():
            if value < 0:
                raise ConfigError(f"Config key '{key}' must be 0 or more, got {value}.")
        if not 0 <= self.shard_index < self.num_shards:
            raise ConfigError(
                f"shard_index {self.shard_index} must be between 0 and num_shards - 1 ({self.num_shards - 1})."
            )
        if self.text_max_length < 8:
            raise ConfigError(f"text_max_length {self.text_max_length} is too short to hold a sentence; use 8 or more.")
        if not self.max_duration > 0:
            raise ConfigError(f"max_duration must be a positive number of seconds, got {self.max_duration}.")
        if self.win_length > self.n_fft:
            raise ConfigError(f"win_length ({self.win_length}) cannot be longer than n_fft ({self.n_fft}).")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ConfigError(
                f"Mel band edges need 0 <= fmin < fmax <= sample_rate/2, got fmin {self.fmin}, "
                f"fmax {self.fmax}, sample_rate {self.sample_rate}."
            )
        if self.preset == "none" and not self.visual_pretrained and "visual" in self.modalities:
            if self.visual_model != OFFLINE_VISUAL_MODEL:
                raise ConfigError(
                    "visual_pretrained is empty; give an open_clip pretrained tag or a checkpoint file "
                    "(random weights would give meaningless features)."
                )
