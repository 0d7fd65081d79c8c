"""Per-clip results, and how a shard's worth of them becomes the shard's columns.

Extraction thinks in clips: one annotated utterance, the features its encoders produced
and what went wrong with its media. The cache thinks in columns: fixed-shape arrays per
shard, mel spectrograms packed into one ragged sequence with a per-row index, presence
flags, failure records. Keeping that translation here means the on-disk layout is known
to `emo.cache` alone: `emo.extract` hands over `ClipRecord`s and never builds an array
whose shape or packing the reader depends on.

A modality is stored for every row of a shard (zeros plus a False presence flag where a
clip lacks it), so a `ShardSpec` says which modalities the shard holds and their sizes;
a clip that lost a modality still needs zeros of the right shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from emo.labels import MODALITIES


@dataclass(frozen=True)
class ClipFailure:
    """One way a clip's media failed, and which modalities it cost."""

    reason: str  # a clip error reason: missing, empty, unreadable, no_video, no_audio
    modalities: tuple[str, ...]  # what the failure cost, in emo.labels.MODALITIES order
    message: str = ""


@dataclass
class ClipRecord:
    """One row of a shard: the utterance's labels and whatever features it got.

    A feature left as None means the clip lacks that modality (its presence flag is False
    and the row holds zeros). Float features may be float32; the cache stores float16.
    """

    dialogue_id: int
    utterance_id: int
    emotion: int  # index into emo.labels.EMOTIONS
    sentiment: int  # index into emo.labels.SENTIMENTS
    speaker: str = ""
    clip: str = ""  # the clip's file name, named in failure records
    text_cls: np.ndarray | None = None  # float[D_text]
    text_mean: np.ndarray | None = None  # float[D_text]
    visual: np.ndarray | None = None  # float[t, D_visual], one row per encoded frame (t <= spec.frames)
    mel: Sequence[np.ndarray] | None = None  # one float[T_v, n_mels] per audio view (view 0 is clean)
    truncated: bool = False  # the clip was longer than max_duration and was cut
    failures: list[ClipFailure] = field(default_factory=list)


@dataclass(frozen=True)
class ShardSpec:
    """What every row of a shard holds: the modalities and their sizes."""

    modalities: tuple[str, ...]
    text_dim: int = 0
    frames: int = 0  # frame slots per clip
    visual_dim: int = 0
    n_mels: int = 0
    mel_views: int = 1  # the clean view plus augmented copies

    def __post_init__(self) -> None:
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}")


def build_columns(clips: Sequence[ClipRecord], spec: ShardSpec) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The shard's columns (see `emo.cache.schema.COLUMNS`) and its failure records.

    `mel_index[i, v]` is (start, length) of clip i's view v in the shard's `mel`; a clip
    without audio gets length 0 at the current offset, so starts never decrease.
    """
    n = len(clips)
    columns: dict[str, Any] = {
        "dialogue_id": np.array([c.dialogue_id for c in clips], dtype=np.int32),
        "utterance_id": np.array([c.utterance_id for c in clips], dtype=np.int32),
        "emotion": np.array([c.emotion for c in clips], dtype=np.int64),
        "sentiment": np.array([c.sentiment for c in clips], dtype=np.int64),
        "speaker": [c.speaker for c in clips],
        "has_text": np.zeros(n, dtype=bool),
        "has_audio": np.zeros(n, dtype=bool),
        "has_visual": np.zeros(n, dtype=bool),
        "truncated": np.array([bool(c.truncated) for c in clips], dtype=bool),
        "failure": [",".join(f.reason for f in c.failures) for c in clips],
    }
    if "text" in spec.modalities:
        columns.update(_text_columns(clips, spec, columns["has_text"]))
    if "visual" in spec.modalities:
        columns.update(_visual_columns(clips, spec, columns["has_visual"]))
    if "audio" in spec.modalities:
        columns.update(_audio_columns(clips, spec, columns["has_audio"]))
    return columns, failure_records(clips)


def features_from_clips(clips: Sequence[ClipRecord], spec: ShardSpec, fingerprint: dict[str, Any],
                        split: str = "predict"):
    """The `SplitFeatures` that a shard of these clips would load back as, without writing it:
    the same columns and float16 rounding, for code that scores freshly encoded clips
    (`emo predict`) exactly as the heads see a cache."""
    from emo.cache.features import SplitFeatures

    columns, _ = build_columns(clips, spec)
    failure = columns.pop("failure")
    return SplitFeatures(split=split, fingerprint=dict(fingerprint), failure=failure, **columns)


def failure_records(clips: Sequence[ClipRecord]) -> list[dict[str, Any]]:
    """One dict per failure, as the sidecar stores it and `emo cache info` counts it."""
    return [
        {
            "dialogue_id": int(c.dialogue_id),
            "utterance_id": int(c.utterance_id),
            "clip": c.clip,
            "reason": f.reason,
            "modality": "+".join(f.modalities),
            "message": f.message,
        }
        for c in clips
        for f in c.failures
    ]


def _text_columns(clips: Sequence[ClipRecord], spec: ShardSpec, present: np.ndarray) -> dict[str, np.ndarray]:
    cls = np.zeros((len(clips), spec.text_dim), dtype=np.float16)
    mean = np.zeros((len(clips), spec.text_dim), dtype=np.float16)
    for i, clip in enumerate(clips):
        if clip.text_cls is not None and clip.text_mean is not None:
            cls[i] = clip.text_cls
            mean[i] = clip.text_mean
            present[i] = True
    return {"text_cls": cls, "text_mean": mean}


def _visual_columns(clips: Sequence[ClipRecord], spec: ShardSpec, present: np.ndarray) -> dict[str, np.ndarray]:
    visual = np.zeros((len(clips), spec.frames, spec.visual_dim), dtype=np.float16)
    mask = np.zeros((len(clips), spec.frames), dtype=bool)
    for i, clip in enumerate(clips):
        if clip.visual is None or len(clip.visual) == 0:
            continue
        count = min(len(clip.visual), spec.frames)
        visual[i, :count] = clip.visual[:count]
        mask[i, :count] = True
        present[i] = True
    return {"visual": visual, "visual_mask": mask}


def _audio_columns(clips: Sequence[ClipRecord], spec: ShardSpec, present: np.ndarray) -> dict[str, np.ndarray]:
    index = np.zeros((len(clips), spec.mel_views, 2), dtype=np.int64)
    chunks: list[np.ndarray] = []
    offset = 0
    for i, clip in enumerate(clips):
        index[i, :, 0] = offset
        if clip.mel is None:
            continue
        present[i] = True
        for v, spectrogram in enumerate(clip.mel[: spec.mel_views]):
            index[i, v] = (offset, spectrogram.shape[0])
            chunks.append(spectrogram)
            offset += spectrogram.shape[0]
    mel = np.concatenate(chunks).astype(np.float16) if chunks else np.zeros((0, spec.n_mels), dtype=np.float16)
    return {"mel": mel, "mel_index": index}
