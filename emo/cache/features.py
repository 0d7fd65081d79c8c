"""The in-memory form of one cached split: the contract between `cache` and `fuse`.

`emo.cache.load_split` returns a `SplitFeatures`; `emo.fuse` trains from nothing else.
Arrays are plain numpy so the trainer can move a whole split to the device in one copy
and gather batches by index (nanoGPT's memmap idea), with no per-sample Python objects.

Shapes (N rows = every annotated utterance of the split, failed clips included):
- ids/labels: dialogue_id, utterance_id int32[N]; emotion, sentiment int64[N] (indices
  into `emo.labels.EMOTIONS` / `SENTIMENTS`); speaker list[str].
- presence: has_text, has_audio, has_visual bool[N] - False where the modality was not
  extracted for that clip (missing/broken clip, or modality not requested).
- text_cls, text_mean: float16[N, D_text] (CLS token and attention-masked mean).
- visual: float16[N, F, D_vis] per-frame image embeddings; visual_mask bool[N, F].
- mel: float16[M, n_mels] every log-mel frame of every clip and audio view, concatenated;
  mel_index int64[N, V, 2] = (start row in `mel`, number of frames) for clip i, view v.
  View 0 is the clean audio; views 1..V-1 are augmented copies made at extract time.
  A clip without audio has length 0 in every view.
- truncated bool[N]: the clip was longer than the max duration and was cut.
- failure list[str]: why the clip (or one of its modalities) failed, "" where it did not.
- audio_vector: float16[N, D] pooled speech-model features (e.g. whisper-base), the
  audio input besides (or instead of) mel.
Modalities that the cache does not hold are None.

A version-2 cache is loaded as the row table plus raw feature sets (`sets`: full name ->
`emo.cache.sets.LoadedSet`) with the per-modality fields above left None; `emo.fuse`
composes the sets a run asks for into those fields (`emo.fuse.feature_sets`), because how
several sets of one modality are combined is a modelling choice, not a storage one.
`text` holds each row's utterance text (the row table's, empty for old caches).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SplitFeatures:
    split: str
    fingerprint: dict[str, Any]
    dialogue_id: np.ndarray
    utterance_id: np.ndarray
    emotion: np.ndarray
    sentiment: np.ndarray
    speaker: list[str]
    has_text: np.ndarray
    has_audio: np.ndarray
    has_visual: np.ndarray
    truncated: np.ndarray
    text_cls: np.ndarray | None = None
    text_mean: np.ndarray | None = None
    visual: np.ndarray | None = None
    visual_mask: np.ndarray | None = None
    mel: np.ndarray | None = None
    mel_index: np.ndarray | None = None
    failure: list[str] | None = None
    audio_vector: np.ndarray | None = None
    text: list[str] | None = None
    sets: dict[str, Any] = field(default_factory=dict)  # full set name -> emo.cache.sets.LoadedSet
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.emotion.shape[0])

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities this split holds features for, in `emo.labels.MODALITIES` order."""
        held = []
        if self.text_cls is not None:
            held.append("text")
        if self.mel is not None or self.audio_vector is not None:
            held.append("audio")
        if self.visual is not None:
            held.append("visual")
        return tuple(held)

    @property
    def num_audio_views(self) -> int:
        return 0 if self.mel_index is None else int(self.mel_index.shape[1])

    def padded_mel(self, view: int = 0, max_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mel of one view as a dense float16[N, n_mels, T] (channels first, ready for Conv1d)
        plus int64[N] lengths, cut to `max_frames` (default: the longest clip)."""
        if self.mel is None or self.mel_index is None:
            raise ValueError("this split holds no audio features")
        starts = self.mel_index[:, view, 0]
        lengths = self.mel_index[:, view, 1].copy()
        limit = int(lengths.max()) if max_frames is None else int(max_frames)
        limit = max(limit, 1)
        lengths = np.minimum(lengths, limit)
        n_mels = self.mel.shape[1]
        out = np.zeros((len(self), limit, n_mels), dtype=np.float16)
        for i in np.nonzero(lengths)[0]:
            out[i, : lengths[i]] = self.mel[starts[i] : starts[i] + lengths[i]]
        return np.ascontiguousarray(out.transpose(0, 2, 1)), lengths.astype(np.int64)
