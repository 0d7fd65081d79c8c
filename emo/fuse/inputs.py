"""A split as a model reads it (`ModelInputs`), composed from the cache's raw feature sets.

`emo.cache.load_split` returns a `LoadedSplit`: the row table and each feature set as
stored. `compose(split, selection)` is the one way from that to what the trainer, eval and
predict read: the per-modality fields below, filled from the sets a run chose. Combining
several sets of one modality is a modelling choice, so it lives here and not in the
cache, and `TensorSplit` and the model need no knowledge of sets.

Arrays are plain numpy so the trainer can move a whole split to the device in one copy
and gather batches by index (nanoGPT's memmap idea), with no per-sample Python objects.
Shapes (N rows = every annotated utterance of the split, failed clips included):
- ids/labels: dialogue_id, utterance_id int32[N]; emotion, sentiment int64[N] (indices
  into `emo.labels.EMOTIONS` / `SENTIMENTS`); speaker list[str]; text list[str].
- presence: has_text, has_audio, has_visual bool[N] - False where the modality's sets
  hold nothing for that clip (missing/broken clip, no face, no words).
- text_cls, text_mean: float16[N, D_text] (CLS token and attention-masked mean).
- visual: float16[N, F, D_vis] per-frame embeddings; visual_mask bool[N, F].
- mel: float16[M, n_mels] every log-mel frame of every clip and audio view, concatenated;
  mel_index int64[N, V, 2] = (start row in `mel`, number of frames) for clip i, view v.
  View 0 is the clean audio; views 1..V-1 are augmented copies made at extract time.
- audio_vector: float16[N, D] pooled speech-model features, besides or instead of mel.
- layouts: {modality: parts} where a modality's row holds a `layers` set ([N, L, D], every
  hidden state of one encoder): the set is flattened to L*D columns of the text/audio row
  (one gather per batch, as for any vector), and the layout (`emo.fuse.layer_mix`) tells
  the model where each part's columns are, so it mixes the layers before the projection.
- truncated bool[N]: a selected set's clip was longer than the max duration and was cut.
- failure list[str]: why the selected sets failed for the clip, "" where they did not.
Modalities the run did not select are None.

The fingerprint names exactly the sets composed, with each set's own fingerprint
(`emo.fuse.feature_sets.composite_fingerprint`), so train/dev compatibility and the
checkpoint's digest cover what the model saw - no more, no less.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from emo.cache.load import LoadedSplit
from emo.errors import CacheError, ConfigError
from emo.fuse.feature_sets import composite_fingerprint, extract_hint
from emo.labels import MODALITIES

POOL_CHUNK = 2048  # rows per masked-mean block: keeps float32 temporaries small at MELD size


@dataclass
class ModelInputs:
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
    extra: dict[str, Any] = field(default_factory=dict)
    layouts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

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


def check_compatible(inputs: ModelInputs, modalities: Sequence[str], text_feature: str = "cls") -> None:
    """One sentence when a config asks for something these inputs do not hold."""
    missing = [m for m in modalities if m not in inputs.modalities]
    if missing:
        held = ", ".join(inputs.modalities) or "no modality"
        raise CacheError(
            f"The cache's '{inputs.split}' split holds no {' or '.join(missing)} features (it has {held}); "
            f"choose --modalities from those or re-extract with them."
        )
    if "text" in modalities and text_feature == "mean" and inputs.text_mean is None:
        raise CacheError(
            f"The cache's '{inputs.split}' split holds no mean-pooled text features; use text_feature=cls."
        )


def _vector(loaded, want: str) -> np.ndarray | None:
    """A vector set's [N, D] array for `want` (cls/mean), else its `values`, else its only array;
    a layers set's [N, L, D] array the same way, flattened to [N, L*D] (a view, no copy)."""
    arrays = loaded.arrays
    if want in arrays:
        found = arrays[want]
    elif "values" in arrays:
        found = arrays["values"]
    else:
        found = next(iter(arrays.values())) if len(arrays) == 1 else None
    if found is not None and loaded.kind == "layers":
        found = found.reshape(found.shape[0], -1)
    return found


def layer_indices(loaded) -> list[int]:
    """A layers set's hidden-state indices (`LoadedSet.layers`), else 0..L-1 from its arrays."""
    recorded = [int(i) for i in (getattr(loaded, "layers", None) or ())]
    if recorded:
        return recorded
    return list(range(next(iter(loaded.arrays.values())).shape[1]))


def _part(loaded, width: int) -> dict[str, Any]:
    """One set's place in its modality's row (see `emo.fuse.layer_mix.MixedInput`)."""
    if loaded.kind == "layers":
        layers = layer_indices(loaded)
        return {"set": loaded.name, "kind": "layers", "layers": layers, "dim": width // len(layers)}
    return {"set": loaded.name, "kind": "vector", "width": int(width)}


def _layout(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The parts, only when one of them is a layers set ([] means "a plain vector")."""
    return parts if any(p["kind"] == "layers" for p in parts) else []


def pooled(loaded) -> tuple[np.ndarray, np.ndarray]:
    """One set as float32 [N, D] plus bool[N] "has features": a vector set as it is, a frames
    set averaged over ITS OWN valid frames (a row without any valid frame has none: its zeros
    are never passed off as a face or a voice)."""
    present = np.asarray(loaded.present, dtype=bool)
    if loaded.kind in ("vector", "layers"):  # a layers set as its L*D flattened columns
        values = _vector(loaded, "values")
        if values is None:
            raise ConfigError(
                f"Feature set {loaded.name} holds several arrays ({', '.join(loaded.arrays)}) and no "
                f"`values`; it cannot be used as {loaded.modality} input."
            )
        return np.asarray(values, dtype=np.float32), present
    if loaded.kind != "frames":
        raise ConfigError(
            f"Feature set {loaded.name} is a {loaded.kind} set; only vector, layers and frames sets can be pooled "
            f"and concatenated (a run takes at most one sequence set, the log-mel)."
        )
    values, mask = loaded.arrays["values"], np.asarray(loaded.arrays["mask"], dtype=bool)
    out = np.zeros((values.shape[0], values.shape[2]), dtype=np.float32)
    for lo in range(0, values.shape[0], POOL_CHUNK):
        weights = mask[lo : lo + POOL_CHUNK, :, None].astype(np.float32)
        block = (values[lo : lo + POOL_CHUNK].astype(np.float32) * weights).sum(1)
        out[lo : lo + POOL_CHUNK] = block / np.maximum(weights.sum(1), 1.0)
    return out, present & mask.any(1)


def _concat(parts: list[np.ndarray | None], dtype=np.float16) -> np.ndarray | None:
    if any(p is None for p in parts) or not parts:
        return None
    if len(parts) == 1:
        return parts[0] if parts[0].dtype == dtype else parts[0].astype(dtype)
    return np.concatenate([np.asarray(p, dtype=dtype) for p in parts], axis=1)


def _all(flags: list[np.ndarray], n: int) -> np.ndarray:
    out = np.ones(n, dtype=bool)
    for f in flags:
        out &= np.asarray(f, dtype=bool)
    return out


def _compose_text(out: ModelInputs, sets: list) -> None:
    wrong = [s for s in sets if s.kind not in ("vector", "layers")]
    if wrong:
        raise ConfigError(
            f"Text feature set {wrong[0].name} is a {wrong[0].kind} set; text sets must be vector or layers sets."
        )
    cls, mean = [_vector(s, "cls") for s in sets], [_vector(s, "mean") for s in sets]
    out.text_cls, out.text_mean = _concat(cls), _concat(mean)
    widths = next((p for p in (cls, mean) if all(a is not None for a in p)), None)
    if widths is not None:
        layout = _layout([_part(s, a.shape[1]) for s, a in zip(sets, widths)])
        if layout:
            out.layouts["text"] = layout
    out.has_text = _all([s.present for s in sets], len(out))


def _pooled_together(sets: list) -> tuple[np.ndarray, np.ndarray]:
    """Several vector/frames sets as one vector per row, and where the row has any of them.

    Each set is pooled over its own valid frames; where a row lacks a set (no face in any
    frame, say) that set's part is zeros and a presence column per set (at the end) says
    so, so the head tells "no face" from a face with zero features and still uses the
    other sets. One set alone is just its pooled values."""
    parts = [pooled(s) for s in sets]
    if len(parts) == 1:
        return _concat([parts[0][0]]), parts[0][1]
    values = [np.where(ok[:, None], v, 0.0) for v, ok in parts]
    flags = [ok[:, None].astype(np.float32) for _, ok in parts]
    present = np.zeros(len(parts[0][1]), dtype=bool)
    for _, ok in parts:
        present |= ok
    return _concat(values + flags), present


def _pooled_layout(sets: list) -> list[dict[str, Any]]:
    """`_pooled_together`'s columns as layout parts: each set, then its presence columns."""
    parts = [_part(s, _width(s)) for s in sets]
    if len(sets) > 1:
        parts.append({"set": "+".join(s.name for s in sets), "kind": "vector", "width": len(sets)})
    return _layout(parts)


def _width(loaded) -> int:
    """Columns one set takes once pooled: D (L*D for a layers set)."""
    if loaded.kind == "frames":
        return int(loaded.arrays["values"].shape[2])
    return int(_vector(loaded, "values").shape[1])


def _compose_visual(out: ModelInputs, sets: list) -> None:
    layered = [s for s in sets if s.kind == "layers"]
    if layered:
        raise ConfigError(
            f"Feature set {layered[0].name} is a layers set, and layer mixing works for text and audio sets only; "
            f"choose a vector or frames set for visual."
        )
    if len(sets) == 1 and sets[0].kind == "frames":  # as extracted: frame sampling keeps working
        only = sets[0]
        present = np.asarray(only.present, dtype=bool)
        out.visual = only.arrays["values"]
        out.visual_mask = np.asarray(only.arrays["mask"], dtype=bool) & present[:, None]
        out.has_visual = present & out.visual_mask.any(1)
        return
    values, ok = _pooled_together(sets)
    out.visual = values[:, None, :]
    out.visual_mask = ok[:, None].copy()
    out.has_visual = ok


def _compose_audio(out: ModelInputs, sets: list) -> None:
    n = len(out)
    sequences = [s for s in sets if s.kind == "sequence"]
    others = [s for s in sets if s.kind != "sequence"]
    if len(sequences) > 1:
        raise ConfigError(
            f"A run takes at most one audio sequence set (the log-mel for the mel CNN); "
            f"{' and '.join(s.name for s in sequences)} are both sequences."
        )
    flags = []
    if sequences:
        out.mel, out.mel_index = sequences[0].arrays["values"], sequences[0].arrays["index"]
        flags.append(sequences[0].present)
    if others:
        out.audio_vector, any_vector = _pooled_together(others)
        flags.append(any_vector)
        layout = _pooled_layout(others)
        if layout:
            out.layouts["audio"] = layout
    out.has_audio = _all(flags, n)  # the log-mel (the mel CNN needs it) and at least one of the others


def _failures(features: LoadedSplit, sets: list) -> list[str]:
    """Per row, every distinct failure reason of the selected sets (comma-joined, as the cache
    writes them); a loaded but unselected set's failures are not this run's."""
    reasons: list[list[str]] = [[] for _ in range(len(features))]
    rows = {(int(d), int(u)): i for i, (d, u) in enumerate(zip(features.dialogue_id, features.utterance_id))}
    for loaded in sets:
        for record in loaded.failures or []:
            i = rows.get((int(record.get("dialogue_id", -1)), int(record.get("utterance_id", -1))))
            reason = str(record.get("reason") or record.get("message") or "")
            if i is not None and reason and reason not in reasons[i]:
                reasons[i].append(reason)
    return [",".join(r) for r in reasons]


COMPOSERS = {"text": _compose_text, "audio": _compose_audio, "visual": _compose_visual}


def compose(split: LoadedSplit, selection: Mapping[str, Sequence[str]]) -> ModelInputs:
    """`split`'s rows with the per-modality fields filled from `selection`'s sets (see the
    module docstring); the fingerprint is the composite one of exactly those sets.

    Text: vector sets, `cls`/`mean` arrays (or `values` for both), concatenated along D;
    present where every text set is. Visual: one frames set as it is; several sets (or a
    vector set) pooled each over its own valid frames and concatenated with a presence
    column per set, as one frame, present where any set is. Audio: a sequence set feeds the
    mel CNN, the other sets are pooled and concatenated (as for visual) into
    `audio_vector`; both together feed both, present where the log-mel and any other set are.
    """
    names = [n for m in MODALITIES for n in selection.get(m, [])]
    missing = [n for n in names if n not in split.sets]
    if missing:
        held = ", ".join(split.sets) or "none"
        modality = missing[0].partition("/")[0]
        raise CacheError(
            f"The cache's '{split.split}' split has no feature set {missing[0]} (it has {held}); "
            f"extract it with {extract_hint(modality, split.extra.get('cache'), missing[0].partition('/')[2])}."
        )
    n = len(split)
    chosen = [split.sets[name] for name in names]
    truncated = np.zeros(n, dtype=bool)  # the selected sets' only: a loaded but unused set's cut clip is not ours
    for loaded in chosen:
        truncated = truncated | np.asarray(loaded.truncated, dtype=bool)
    out = ModelInputs(
        split=split.split,
        fingerprint=composite_fingerprint(
            split.fingerprint, selection, {name: split.sets[name].fingerprint for name in names}
        ),
        dialogue_id=split.dialogue_id,
        utterance_id=split.utterance_id,
        emotion=split.emotion,
        sentiment=split.sentiment,
        speaker=split.speaker,
        text=split.text,
        has_text=np.zeros(n, dtype=bool),
        has_audio=np.zeros(n, dtype=bool),
        has_visual=np.zeros(n, dtype=bool),
        truncated=truncated,
        failure=_failures(split, chosen),
        extra=dict(split.extra),
    )
    for modality in MODALITIES:
        if selection.get(modality):
            COMPOSERS[modality](out, [split.sets[name] for name in selection[modality]])
    return out
