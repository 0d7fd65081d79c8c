"""Learnable synthetic model inputs (`ModelInputs`), for tests and benchmarks that need no media.

Each modality carries its class as a fixed per-class prototype plus noise, but only for a
share (`reliability`) of clips - the rest show a random class - so every modality alone
beats chance, no single one is perfect, and fusing them helps, as on MELD. Prototypes
come from `world_seed`, so train/dev/test splits made with different `seed`s share them.
Class frequencies default to MELD's train split, so weighted F1 behaves as it does there.

`to_feature_sets` turns such a split into the `LoadedSplit` a cache would load (what
`fit_splits` takes); `write_synthetic_cache` writes splits as a cache.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emo.cache.load import LoadedSplit
from emo.fuse.inputs import ModelInputs
from emo.labels import EMOTIONS, MODALITIES, SENTIMENTS

# MELD train counts in emo.labels.EMOTIONS order (neutral, joy, surprise, anger, sadness, disgust, fear).
MELD_TRAIN_COUNTS: tuple[int, ...] = (4710, 1743, 1205, 1109, 683, 271, 268)
# Sentiment implied by each emotion (surprise is split between positive and negative in MELD).
EMOTION_SENTIMENT: tuple[int, ...] = (0, 1, 1, 2, 2, 2, 2)

SYNTHETIC_FINGERPRINT: dict[str, Any] = {
    "text_encoder": "synthetic",
    "visual_encoder": "synthetic",
    "sample_rate": 16000,
    "n_mels": 40,
    "hop_ms": 10,
}


def make_synthetic_split(
    n: int,
    split: str = "train",
    seed: int = 0,
    world_seed: int = 1234,
    modalities: tuple[str, ...] = MODALITIES,
    text_dim: int = 768,
    visual_dim: int = 512,
    frames: int = 16,
    n_mels: int = 40,
    mean_mel_frames: int = 360,
    max_mel_frames: int = 1000,
    audio_views: int = 1,
    reliability: float = 0.7,
    signal: float = 1.0,
    missing: float = 0.1,
    class_counts: tuple[int, ...] = MELD_TRAIN_COUNTS,
    fingerprint: dict[str, Any] | None = None,
    mean_dialogue: float = 9.6,
) -> ModelInputs:
    """A split of `n` clips with MELD-like labels and learnable, partly-missing features,
    grouped into dialogues of MELD-like lengths (mean `mean_dialogue` utterances)."""
    world = np.random.default_rng(world_seed)
    rng = np.random.default_rng([seed, world_seed])
    num_classes = len(EMOTIONS)
    text_proto = world.standard_normal((num_classes, text_dim)).astype(np.float32)
    visual_proto = world.standard_normal((num_classes, visual_dim)).astype(np.float32)
    mel_proto = world.standard_normal((num_classes, n_mels)).astype(np.float32)
    probs = np.asarray(class_counts, dtype=float) / np.sum(class_counts)
    emotion = rng.choice(num_classes, size=n, p=probs).astype(np.int64)
    sentiment = np.asarray(EMOTION_SENTIMENT, dtype=np.int64)[emotion]
    surprise = emotion == EMOTIONS.index("surprise")
    sentiment[surprise] = rng.choice([1, 2], size=int(surprise.sum()))
    assert len(SENTIMENTS) == 3

    def shown_class() -> np.ndarray:
        """The class a modality 'shows' for each clip: the true one with chance `reliability`."""
        noisy = rng.random(n) >= reliability
        return np.where(noisy, rng.integers(0, num_classes, n), emotion)

    def presence() -> np.ndarray:
        return rng.random(n) >= missing

    has = {m: (presence() if m in modalities else np.zeros(n, dtype=bool)) for m in MODALITIES}
    dialogue_id, utterance_id = dialogue_ids(n, mean_dialogue, seed)
    out = ModelInputs(
        split=split,
        fingerprint=dict(fingerprint or SYNTHETIC_FINGERPRINT),
        dialogue_id=dialogue_id,
        utterance_id=utterance_id,
        emotion=emotion,
        sentiment=sentiment,
        speaker=[f"speaker{i % 6}" for i in range(n)],
        has_text=has["text"],
        has_audio=has["audio"],
        has_visual=has["visual"],
        truncated=np.zeros(n, dtype=bool),
    )
    if "text" in modalities:
        shown = shown_class()
        cls = signal * text_proto[shown] + rng.standard_normal((n, text_dim), dtype=np.float32) * 2.0
        cls[~has["text"]] = 0
        out.text_cls = cls.astype(np.float16)
        mean = cls + rng.standard_normal((n, text_dim), dtype=np.float32) * 0.5
        mean[~has["text"]] = 0
        out.text_mean = mean.astype(np.float16)
    if "visual" in modalities:
        shown = shown_class()
        counts = rng.integers(frames // 2, frames + 1, n)
        mask = np.arange(frames)[None, :] < counts[:, None]
        mask[~has["visual"]] = False
        visual = np.zeros((n, frames, visual_dim), dtype=np.float16)
        for start in range(0, n, 1024):  # chunks keep the float32 temporaries small at MELD size
            stop = min(start + 1024, n)
            noise = rng.standard_normal((stop - start, frames, visual_dim), dtype=np.float32) * 3.0
            block = signal * visual_proto[shown[start:stop]][:, None, :] + noise
            visual[start:stop] = np.where(mask[start:stop, :, None], block, 0).astype(np.float16)
        out.visual, out.visual_mask = visual, mask
    if "audio" in modalities:
        shown = shown_class()
        scale = mean_mel_frames / 2.0
        base = np.clip(rng.gamma(2.0, scale, n), 20, max_mel_frames * 1.2).astype(np.int64)
        base[~has["audio"]] = 0
        out.truncated = base > max_mel_frames
        base = np.minimum(base, max_mel_frames)
        index = np.zeros((n, audio_views, 2), dtype=np.int64)
        chunks, start = [], 0
        for view in range(audio_views):
            stretch = 1.0 if view == 0 else rng.uniform(0.9, 1.1, n)
            lengths = np.where(base > 0, np.maximum((base * stretch).astype(np.int64), 1), 0)
            index[:, view, 0] = start + np.concatenate([[0], np.cumsum(lengths)[:-1]])
            index[:, view, 1] = lengths
            start += int(lengths.sum())
            rows = np.repeat(np.arange(n), lengths)
            for lo in range(0, len(rows), 1 << 20):
                part = rows[lo : lo + (1 << 20)]
                noise = rng.standard_normal((len(part), n_mels), dtype=np.float32) * (1.5 if view == 0 else 1.8)
                chunks.append((-4.0 + signal * mel_proto[shown[part]] + noise).astype(np.float16))
        out.mel = np.concatenate(chunks) if chunks else np.zeros((0, n_mels), dtype=np.float16)
        out.mel_index = index
    return out


def dialogue_ids(n: int, mean: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive rows grouped into dialogues whose lengths have mean `mean` (1 or more
    turns, geometric like MELD's); its own RNG, so labels and features do not change."""
    rng = np.random.default_rng([seed, 777])
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(int(rng.geometric(1.0 / mean)))
    sizes[-1] -= sum(sizes) - n
    dialogue = np.repeat(np.arange(len(sizes)), sizes).astype(np.int32)
    utterance = np.concatenate([np.arange(k) for k in sizes]).astype(np.int32)
    return dialogue, utterance


def make_reaction_split(
    dialogues: int,
    split: str = "train",
    seed: int = 0,
    text_dim: int = 32,
    reaction_share: float = 0.5,
    world_seed: int = 99,
) -> ModelInputs:
    """Text-only dialogues in which some turns are reactions ("Really?", "Oh my God.").

    An ordinary turn's text shows its own emotion (a class prototype plus noise). A
    reaction's text is the same "Really?" vector whatever it means, and its label is the
    previous turn's: an utterance-only head cannot tell reactions apart, a context head
    can. Utterance_IDs have gaps (as in MELD) and rows are shuffled, so order must come
    from the ids, not from positions.
    """
    world = np.random.default_rng(world_seed)
    rng = np.random.default_rng([seed, world_seed])
    prototypes = world.standard_normal((len(EMOTIONS), text_dim)).astype(np.float32) * 2.0
    really = world.standard_normal(text_dim).astype(np.float32) * 2.0
    rows: list[tuple[int, int, int, bool, str]] = []  # dialogue, utterance, emotion, reaction, speaker
    for d in range(dialogues):
        turns = int(rng.integers(3, 9))
        utterance, previous = 0, None
        for t in range(turns):
            utterance += int(rng.integers(1, 3))  # gaps in Utterance_ID
            reaction = previous is not None and rng.random() < reaction_share
            emotion = previous if reaction else int(rng.integers(0, len(EMOTIONS)))
            rows.append((d, utterance, emotion, reaction, f"speaker{(d + t) % 2}"))
            previous = emotion
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    n = len(rows)
    emotion = np.asarray([r[2] for r in rows], dtype=np.int64)
    reaction = np.asarray([r[3] for r in rows], dtype=bool)
    text = prototypes[emotion] + rng.standard_normal((n, text_dim), dtype=np.float32) * 0.5
    text[reaction] = really + rng.standard_normal((int(reaction.sum()), text_dim), dtype=np.float32) * 0.5
    out = ModelInputs(
        split=split,
        fingerprint=dict(SYNTHETIC_FINGERPRINT),
        dialogue_id=np.asarray([r[0] for r in rows], dtype=np.int32),
        utterance_id=np.asarray([r[1] for r in rows], dtype=np.int32),
        emotion=emotion,
        sentiment=np.asarray(EMOTION_SENTIMENT, dtype=np.int64)[emotion],
        speaker=[r[4] for r in rows],
        has_text=np.ones(n, dtype=bool),
        has_audio=np.zeros(n, dtype=bool),
        has_visual=np.zeros(n, dtype=bool),
        truncated=np.zeros(n, dtype=bool),
        text_cls=text.astype(np.float16),
        text_mean=text.astype(np.float16),
    )
    out.extra["reaction"] = reaction
    return out


def split_rows(features: ModelInputs, start: int, stop: int) -> dict[str, Any]:
    """Rows [start, stop) as one cache shard's columns (mel re-based to the shard)."""
    rows: dict[str, Any] = {
        "dialogue_id": features.dialogue_id[start:stop],
        "utterance_id": features.utterance_id[start:stop],
        "emotion": features.emotion[start:stop],
        "sentiment": features.sentiment[start:stop],
        "speaker": features.speaker[start:stop],
        "has_text": features.has_text[start:stop],
        "has_audio": features.has_audio[start:stop],
        "has_visual": features.has_visual[start:stop],
        "truncated": features.truncated[start:stop],
    }
    if features.text_cls is not None:
        rows["text_cls"] = features.text_cls[start:stop]
        rows["text_mean"] = features.text_mean[start:stop]
    if features.visual is not None:
        rows["visual"] = features.visual[start:stop]
        rows["visual_mask"] = features.visual_mask[start:stop]
    if features.mel is not None:
        source = features.mel_index[start:stop]
        index = np.zeros_like(source)
        pieces, offset = [], 0
        for row in range(source.shape[0]):
            for view in range(source.shape[1]):
                begin, length = (int(x) for x in source[row, view])
                pieces.append(features.mel[begin : begin + length])
                index[row, view] = (offset, length)
                offset += length
        rows["mel"] = np.concatenate(pieces) if pieces else np.zeros((0, features.mel.shape[1]), np.float16)
        rows["mel_index"] = index
    return rows


def write_synthetic_cache(root, splits: list[ModelInputs], fmt: str = "h5", shard_rows: int = 2048) -> Any:
    """Write splits through `emo.cache.CacheWriter` as the seed's three sets (`cache_writing.V1Writer`),
    shard by shard as `emo extract` would; returns the CacheInfo."""
    from cache_writing import V1Writer
    from emo.cache import open_cache

    writer = V1Writer(root, splits[0].fingerprint, fmt=fmt, overwrite=True)
    for features in splits:
        shards = 0
        for shards, start in enumerate(range(0, len(features), shard_rows), start=1):
            rows = split_rows(features, start, min(start + shard_rows, len(features)))
            writer.write_shard(features.split, shards - 1, rows)
        writer.finalize(features.split, total_rows=len(features), expected_shards=shards)
    return open_cache(root)


def to_feature_sets(
    features: ModelInputs,
    text: str = "text/synthetic-text",
    audio: str = "audio/mel",
    visual: str = "visual/synthetic-visual",
) -> LoadedSplit:
    """A synthetic split as a cache loads one: the row table plus one raw feature set per
    modality it holds; the row table's fingerprint is the split's own (so splits made with
    another fingerprint stay told apart), its extra (`reaction`, say) is kept."""
    from emo.cache.sets import LoadedSet

    n = len(features)
    no_truncation = np.zeros(n, dtype=bool)

    def loaded(name: str, kind: str, dim: int, present, arrays, truncated=no_truncation) -> LoadedSet:
        fingerprint = {"encoder": "synthetic", "set": name, "kind": kind}
        return LoadedSet(
            name=name,
            kind=kind,
            dim=dim,
            encoder="synthetic",
            fingerprint=fingerprint,
            digest=name,
            present=np.asarray(present, dtype=bool),
            truncated=truncated,
            arrays=arrays,
        )

    sets: dict[str, Any] = {}
    if features.text_cls is not None:
        sets[text] = loaded(
            text,
            "vector",
            features.text_cls.shape[1],
            features.has_text,
            {"cls": features.text_cls, "mean": features.text_mean},
        )
    if features.mel is not None:
        sets[audio] = loaded(
            audio,
            "sequence",
            features.mel.shape[1],
            features.has_audio,
            {"values": features.mel, "index": features.mel_index},
            np.asarray(features.truncated),
        )
    if features.visual is not None:
        sets[visual] = loaded(
            visual,
            "frames",
            features.visual.shape[2],
            features.has_visual,
            {"values": features.visual, "mask": features.visual_mask},
        )
    return LoadedSplit(
        split=features.split,
        fingerprint=dict(features.fingerprint),
        dialogue_id=features.dialogue_id,
        utterance_id=features.utterance_id,
        emotion=features.emotion,
        sentiment=features.sentiment,
        speaker=list(features.speaker),
        text=list(features.text or [""] * n),
        sets=sets,
        extra=dict(features.extra),
    )


def default_inputs(split: LoadedSplit) -> ModelInputs:
    """A loaded split's model inputs from each modality's first loaded set: what a fit
    without `--features` trains on, and the arrays extraction tests check."""
    from emo.fuse.feature_sets import default_sets
    from emo.fuse.inputs import compose

    return compose(split, {modality: [name] for modality, name in default_sets(split.sets).items()})
