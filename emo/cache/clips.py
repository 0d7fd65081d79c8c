"""Per-clip results, and how a shard's worth of them becomes the shard's columns.

Extraction thinks in clips: one annotated utterance, the features each encoder produced
for it and what went wrong with its media. The cache thinks in columns: one row table and,
per feature set, fixed-shape arrays (or a ragged sequence packed with a per-row index),
presence flags and failure records. Keeping that translation here means the on-disk
layout is known to `emo.cache` alone: `emo.extract` hands over `ClipRecord`s and never
builds an array whose shape or packing the reader depends on.

A set is stored for every row of a shard (zeros plus a False `present` flag where a clip
lacks it), so the set's `SetSpec` says the sizes a clip that lost its media still needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from emo.cache.sets import SetSpec


@dataclass(frozen=True)
class ClipFailure:
    """One way a clip's media failed, and which modalities it cost."""

    reason: str  # a clip error reason: missing, empty, unreadable, no_video, no_audio
    modalities: tuple[str, ...]  # what the failure cost, in emo.labels.MODALITIES order
    message: str = ""


@dataclass
class ClipRecord:
    """One row of a shard: the utterance's labels and whatever features each set got.

    `features` maps a set's full name to the clip's value, by the set's kind:
    - vector: {array name: float[D]} (e.g. {"cls": ..., "mean": ...}), or one float[D]
      for a set whose only array is `values`;
    - layers: the same with float[L, D] (one pooled vector per stored hidden state);
    - frames: float[t, D] (every frame valid), or (float[t, D], bool[t]) with a mask;
    - sequence: a list of float[T_v, D], one per view (view 0 clean).
    A set missing from `features` (or None) means the clip lacks it: its `present` flag is
    False and the row holds zeros. Float features may be float32; the cache stores float16.
    """

    dialogue_id: int
    utterance_id: int
    emotion: int  # index into emo.labels.EMOTIONS
    sentiment: int  # index into emo.labels.SENTIMENTS
    speaker: str = ""
    text: str = ""  # the utterance as annotated
    clip: str = ""  # the clip's file name, named in failure records
    features: dict[str, Any] = field(default_factory=dict)
    truncated: bool = False  # the clip was longer than max_duration and was cut
    failures: list[ClipFailure] = field(default_factory=list)


def build_row_columns(clips: Sequence[ClipRecord]) -> dict[str, Any]:
    """The row table's columns (see `emo.cache.schema.ROW_COLUMNS`) of these clips."""
    return {
        "dialogue_id": np.array([c.dialogue_id for c in clips], dtype=np.int32),
        "utterance_id": np.array([c.utterance_id for c in clips], dtype=np.int32),
        "emotion": np.array([c.emotion for c in clips], dtype=np.int64),
        "sentiment": np.array([c.sentiment for c in clips], dtype=np.int64),
        "speaker": [c.speaker for c in clips],
        "text": [c.text for c in clips],
    }


def build_set_columns(clips: Sequence[ClipRecord], spec: SetSpec) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One set's columns for these clips and the failure records that concern it."""
    n = len(clips)
    present = np.zeros(n, dtype=bool)
    media = spec.modality != "text"
    truncated = np.array([bool(c.truncated) and media for c in clips], dtype=bool)
    values = [c.features.get(spec.name) for c in clips]
    if spec.kind in ("vector", "layers"):
        arrays = _vector_columns(values, spec, present)
    elif spec.kind == "frames":
        arrays = _frames_columns(values, spec, present)
    else:
        arrays = _sequence_columns(values, spec, present)
    failures = [r for c in clips for r in failure_records([c]) if spec.modality in r["modality"].split("+")]
    return {"present": present, "truncated": truncated, **arrays}, failures


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


def _vector_columns(values: list[Any], spec: SetSpec, present: np.ndarray) -> dict[str, np.ndarray]:
    """Named [N, D] arrays (vector) or [N, L, D] arrays (layers: a row per stored layer)."""
    shape = (len(spec.layers), spec.dim) if spec.kind == "layers" else (spec.dim,)
    out = {name: np.zeros((len(values), *shape), dtype=np.float16) for name in spec.arrays}
    for i, value in enumerate(values):
        if value is None:
            continue
        parts = value if isinstance(value, dict) else {"values": value}
        for name in spec.arrays:
            out[name][i] = parts[name]
        present[i] = True
    return out


def _frames_columns(values: list[Any], spec: SetSpec, present: np.ndarray) -> dict[str, np.ndarray]:
    frames = np.zeros((len(values), spec.frames, spec.dim), dtype=np.float16)
    mask = np.zeros((len(values), spec.frames), dtype=bool)
    for i, value in enumerate(values):
        if value is None:
            continue
        rows, valid = value if isinstance(value, tuple) else (value, np.ones(len(value), dtype=bool))
        count = min(len(rows), spec.frames)
        if count == 0:
            continue
        valid = np.asarray(valid[:count], dtype=bool)
        frames[i, :count] = np.where(valid[:, None], rows[:count], 0)
        mask[i, :count] = valid
        present[i] = bool(valid.any())
    return {"values": frames, "mask": mask}


def _sequence_columns(values: list[Any], spec: SetSpec, present: np.ndarray) -> dict[str, np.ndarray]:
    """`index[i, v]` is (start, length) of clip i's view v in the shard's `values`; a clip
    without the set gets length 0 at the current offset, so starts never decrease."""
    index = np.zeros((len(values), spec.views, 2), dtype=np.int64)
    chunks: list[np.ndarray] = []
    offset = 0
    for i, views in enumerate(values):
        index[i, :, 0] = offset
        if views is None:
            continue
        present[i] = True
        for v, sequence in enumerate(list(views)[: spec.views]):
            index[i, v] = (offset, sequence.shape[0])
            chunks.append(sequence)
            offset += sequence.shape[0]
    flat = np.concatenate(chunks).astype(np.float16) if chunks else np.zeros((0, spec.dim), dtype=np.float16)
    return {"values": flat, "index": index}


def features_from_clips(
    clips: Sequence[ClipRecord], specs: Sequence[SetSpec], fingerprint: dict[str, Any], split: str = "predict"
):
    """The `LoadedSplit` that a shard of these clips would load back as, without writing it:
    the same columns and float16 rounding, for code that scores freshly encoded clips
    (`emo predict`) exactly as the heads see a cache."""
    from emo.cache.load import LoadedSplit
    from emo.cache.digests import set_digest
    from emo.cache.sets import LoadedSet

    rows = build_row_columns(clips)
    sets = {}
    for spec in specs:
        columns, failures = build_set_columns(clips, spec)
        present, truncated = columns.pop("present"), columns.pop("truncated")
        sets[spec.name] = LoadedSet(
            name=spec.name,
            kind=spec.kind,
            dim=spec.dim,
            encoder=spec.encoder,
            fingerprint=dict(spec.fingerprint),
            digest=set_digest(spec),
            present=present,
            truncated=truncated,
            arrays=columns,
            failures=failures,
            layers=spec.layers,
        )
    return LoadedSplit(split=split, fingerprint=dict(fingerprint), sets=sets, **rows)
