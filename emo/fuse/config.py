"""`FitConfig`: every knob of `emo fit`, with defaults equal to the seed report's design.

One flat dataclass, so a TOML `[fit]` section, `--set key=value` and the named options
all address the same names, and the resolved copy saved in the run directory re-creates
the run exactly (`emo fit --config runs/NAME/config.toml`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emo.errors import ConfigError
from emo.labels import MODALITIES

CLASS_WEIGHTS: tuple[str, ...] = ("none", "balanced", "meld")
TEXT_FEATURES: tuple[str, ...] = ("auto", "cls", "mean")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
LAYER_MIXES: tuple[str, ...] = ("weighted", "mean", "concat", "last")  # emo.fuse.layer_mix says what each does


@dataclass
class FitConfig:
    # where
    cache: Path | None = None  # feature cache written by `emo extract`
    out: Path | None = None  # run directory: checkpoint, config, metrics, curves
    overwrite: bool = False  # replace an existing run in `out`
    train_split: str = "train"
    dev_split: str = "dev"  # model selection and LR schedule use this split
    # model
    # any subset of text, audio, visual; empty (the default) = every modality the cache holds,
    # decided by `emo.fuse.fit_request.check_fit` (a full cache: all three, the seed design)
    modalities: tuple[str, ...] = ()
    # cached feature sets per modality, e.g. "text=all-MiniLM-L6-v2,audio=mel+whisper-base" ('+'
    # concatenates); a modality not named uses the cache's default set ("" = the seed design)
    features: str = ""
    fusion: str = "ensemble"  # a fusion head of emo.fuse.heads: early | late | ensemble | a plugin's
    task: str = "emotion"  # emotion | sentiment | both (joint heads)
    text_feature: str = "auto"  # auto | cls | mean: cached text embedding; auto = the encoder's own pooling
    proj_dim: int = 256  # per-modality projection size
    # how a `layers` set (every hidden state of one encoder) enters the head (emo.fuse.layer_mix):
    # weighted (learned softmax weight per layer x gamma) | mean | concat | last; no effect without one
    layer_mix: str = "weighted"
    layer_norm: bool = False  # LayerNorm (no affine) over each layer's features before mixing
    # dialogue context (off in the seed design)
    context_model: str = "none"  # none | gru | transformer over each dialogue's utterance embeddings
    context_direction: str = "both"  # both (whole dialogue, offline) | past (earlier turns only, live use)
    context_layers: int = 1  # layers of the context GRU / transformer
    speaker_embedding: str = "none"  # none | speaker (learned per recurring speaker) | turn (same speaker as before?)
    # with a context model, batches are whole dialogues, at most this many utterances (about
    # 6-7 MELD dialogues): a recurrent step costs the same for 3 dialogues as for 7, so
    # bigger dialogue batches keep a context fit within 25 % of a plain one per epoch
    dialogue_batch_size: int = 64
    # optimisation (seed design)
    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-5
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    plateau_factor: float = 0.5  # ReduceLROnPlateau on dev weighted F1
    plateau_patience: int = 3
    class_weights: str = "none"  # none | balanced (from train counts) | meld (official 4,15,15,3,1,6,3)
    label_smoothing: float = 0.0  # cross-entropy label smoothing in training (0 = the seed's plain loss)
    seed: int = 0
    # robustness and augmentation (all off by default, as in the seed)
    modality_dropout: float = 0.0  # per-sample chance of hiding each present modality in training
    spec_augment: bool = False  # frequency/time masks on the cached mel
    freq_masks: int = 2
    freq_mask_width: int = 8  # max mel bins per frequency mask
    time_masks: int = 2
    time_mask_width: int = 40  # max frames per time mask (10 ms each)
    frame_sampling: bool = False  # train on a random subset of each clip's cached frames
    frame_keep: float = 0.5  # chance of keeping each valid frame when frame_sampling is on
    mel_crop_frames: int = 0  # train on a random window of this many mel frames; 0 = whole clip
    audio_view_sampling: bool = False  # draw one of the cache's K audio views per clip per epoch
    # speed
    max_mel_frames: int = 1000  # mel is padded/cut to this (1000 frames = 10 s)
    length_bucketing: bool = True  # batch clips of similar length so padding costs no compute
    precision: str = "fp32"  # fp32 | bf16 (CPU autocast; faster where the CPU has bf16 units)
    eval_batch_size: int = 256
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads; 0 keeps torch's default

    def __post_init__(self) -> None:
        if isinstance(self.modalities, str):
            self.modalities = tuple(m.strip() for m in self.modalities.split(",") if m.strip())
        self.modalities = tuple(self.modalities)

    def copy_with(self, **changes: Any) -> "FitConfig":
        """A copy with some fields changed (the original is left as it was)."""
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Reject impossible values with one sentence each, before any work starts."""
        from emo.config import require_finite
        from emo.device import check_device_name
        from emo.fuse.heads import head_names

        require_finite(self)  # inf and nan first: every range check below is false for nan
        check_device_name(self.device)
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown:
            raise ConfigError(
                f"modalities must be a subset of {', '.join(MODALITIES)}; got {', '.join(self.modalities)}."
            )
        self.modalities = tuple(m for m in MODALITIES if m in self.modalities)
        choices = {
            "fusion": head_names(),
            "task": ("emotion", "sentiment", "both"),
            "text_feature": TEXT_FEATURES,
            "layer_mix": LAYER_MIXES,
            "class_weights": CLASS_WEIGHTS,
            "precision": PRECISIONS,
            "context_model": ("none", "gru", "transformer"),
            "context_direction": ("both", "past"),
            "speaker_embedding": ("none", "speaker", "turn"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {getattr(self, key)!r}.")
        positive = ("epochs", "batch_size", "max_mel_frames", "eval_batch_size", "proj_dim", "context_layers")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1; got {getattr(self, key)}.")
        if self.batch_size < 2:
            raise ConfigError("batch_size must be at least 2 because the early-fusion head uses batch norm.")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive; got {self.lr}.")
        if not 0.0 <= self.label_smoothing < 1.0:  # 1 would leave no trace of the label in the target
            raise ConfigError(f"label_smoothing must be at least 0 and below 1; got {self.label_smoothing}.")
        # dropping every modality or keeping no frame means nothing; ReduceLROnPlateau refuses a factor >= 1
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ConfigError(f"modality_dropout must be at least 0 and below 1; got {self.modality_dropout}.")
        if not 0.0 < self.frame_keep <= 1.0:
            raise ConfigError(f"frame_keep must be above 0 and at most 1; got {self.frame_keep}.")
        if not 0.0 < self.plateau_factor < 1.0:
            raise ConfigError(f"plateau_factor must be above 0 and below 1; got {self.plateau_factor}.")
        not_negative = (
            "weight_decay",
            "grad_clip",
            "plateau_patience",
            "freq_masks",
            "freq_mask_width",
            "time_masks",
            "time_mask_width",
            "mel_crop_frames",
            "threads",
            "seed",
        )
        for key in not_negative:
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must not be negative; got {getattr(self, key)}.")
        if self.seed >= 2**32:  # numpy's seed range
            raise ConfigError(f"seed must be below {2**32}; got {self.seed}.")
        if self.dialogue_batch_size < 2:
            raise ConfigError(f"dialogue_batch_size must be at least 2; got {self.dialogue_batch_size}.")
        if self.context_model == "none" and self.speaker_embedding != "none":
            raise ConfigError("speaker_embedding needs a context model; pass --context-model gru or transformer.")
        from emo.fuse.feature_sets import parse_features

        parse_features(self.features)  # syntax only: the names are checked against the cache
        if self.train_split == self.dev_split:
            raise ConfigError(
                f"train_split and dev_split are both '{self.train_split}'; model selection needs a held-out split."
            )

    def check_options_apply(self) -> None:
        """For one fit (`emo fit`): refuse options its modalities would silently ignore. Not part
        of `validate`, because an ablation's cells share one base config across modality
        subsets, where a text-only cell rightly ignores the audio options."""
        from emo.fuse.feature_sets import parse_features

        unused = [m for m in parse_features(self.features) if m not in self.modalities]
        if unused:
            raise ConfigError(
                f"--features chooses {unused[0]} sets, but --modalities is {','.join(self.modalities)}; add {unused[0]} "
                f"to --modalities or leave it out of --features."
            )
        if "audio" not in self.modalities:
            for key, flag in (("spec_augment", "--spec-augment"), ("audio_view_sampling", "--audio-views")):
                if getattr(self, key):
                    raise ConfigError(
                        f"{flag} works on audio, but --modalities is {','.join(self.modalities)}; "
                        "add audio or leave it out."
                    )
        if self.context_model == "none" and self.context_direction != "both":
            raise ConfigError(
                f"context_direction {self.context_direction} needs a context model; pass --context-model gru or transformer."
            )


# Sentence encoders are trained for mean pooling and their CLS vector is not; BERT-style
# encoders (the seed's bert-base-uncased) are used through CLS. Names that mark the former:
_MEAN_POOLED_NAMES = (
    "sentence-transformers",
    "minilm",
    "mpnet",
    "all-",
    "paraphrase-",
    "multi-qa",
    "gte-",
    "e5-",
    "bge-",
)


def encoder_pooling(fingerprint: dict[str, Any]) -> str | None:
    """The pooling the cache's text encoder was trained for ("cls" or "mean"), if known.

    Newer caches record it in the fingerprint (`text_pooling`, read from the model folder); for older
    ones it is inferred from the encoder's name. A run trained on feature sets has a composite
    fingerprint (`emo.fuse.feature_sets`): its `text_pooling`, else its text set's own
    fingerprint, else the text set's name (named after its model: `text/all-MiniLM-L6-v2`).
    """
    if not isinstance(fingerprint, dict):
        return None
    if isinstance(fingerprint.get("sets"), dict) and "features" in fingerprint:
        recorded = fingerprint.get("text_pooling")
        if recorded in ("cls", "mean"):
            return recorded
        from emo.fuse.feature_sets import recorded_pooling

        texts = list((fingerprint.get("features") or {}).get("text") or [])
        sets = fingerprint["sets"]
        found = {
            recorded_pooling(sets.get(n)) or encoder_pooling(sets.get(n) or {}) or _pooling_by_name(n) for n in texts
        }
        return found.pop() if len(found) == 1 else None
    encoder = fingerprint.get("text_encoder")
    recorded = fingerprint.get("text_pooling") or (encoder.get("text_pooling") if isinstance(encoder, dict) else None)
    if recorded in ("cls", "mean"):
        return recorded
    if not isinstance(encoder, dict):
        return None
    return _pooling_by_name(str(encoder.get("name", "")))


def _pooling_by_name(name: str) -> str:
    name = name.lower()
    return "mean" if any(mark in name for mark in _MEAN_POOLED_NAMES) else "cls"


def resolve_text_feature(text_feature: str, fingerprint: dict[str, Any]) -> str:
    """`auto` becomes the text encoder's own pooling (CLS when nothing is known)."""
    if text_feature != "auto":
        return text_feature
    return encoder_pooling(fingerprint) or "cls"
