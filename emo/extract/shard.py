"""One shard through the encoders: the shard's rows in, one `ClipRecord` per row out.

A shard is the unit the cache writes atomically and a resumed run redoes, so nothing in
its numbers may depend on timing or on which other shards run: texts are batched within
the shard, frames are cut into fixed chunks (one forward pass each) taken in row order,
and augmented audio views are seeded per clip (`emo.extract.prepare`). Resumed and
sharded runs therefore give bit-identical caches. How the records become columns on disk
is the cache's business (`emo.cache.clips`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from emo.cache.clips import ClipRecord, ShardSpec
from emo.extract.config import ExtractConfig
from emo.extract.summary import Stages
from emo.extract.workers import Prefetcher


@dataclass
class ShardRunner:
    """What stays the same for every shard of a run: the config, the loaded encoders, the
    clip prefetcher (None when no modality needs the media) and the stage clock."""

    config: ExtractConfig
    encoders: Any  # emo.extract.encoders.Encoders
    prefetch: Prefetcher | None
    stages: Stages

    def spec(self) -> ShardSpec:
        """The shapes every row of a shard holds, for the cache writer."""
        config, encoders = self.config, self.encoders
        return ShardSpec(
            modalities=config.ordered_modalities,
            text_dim=encoders.text.dim if encoders.text is not None else 0,
            frames=config.frames,
            visual_dim=encoders.visual.dim if encoders.visual is not None else 0,
            n_mels=config.n_mels,
            mel_views=1 + config.audio_views,
        )

    def run(self, split, row_range: range, on_clips: Callable[[int], None]) -> tuple[list[ClipRecord], dict]:
        """The records of the rows in `row_range` and the shard's stats; `on_clips(n)` is
        called as clips are done (for progress)."""
        started = time.perf_counter()
        rows = [split.utterances[i] for i in row_range]
        records = [
            ClipRecord(
                dialogue_id=u.dialogue_id,
                utterance_id=u.utterance_id,
                emotion=u.emotion_index,
                sentiment=u.sentiment_index,
                speaker=u.speaker,
                clip=u.clip_name,
            )
            for u in rows
        ]
        if "text" in self.config.modalities:
            self._encode_texts(split, rows, records)
            if self.prefetch is None:
                on_clips(len(records))
        if self.prefetch is not None:
            self._add_media(row_range, records, on_clips)
        return records, {"extract_s": round(time.perf_counter() - started, 4)}

    def _encode_texts(self, split, rows, records: list[ClipRecord]) -> None:
        t0 = time.perf_counter()
        config, text = self.config, self.encoders.text
        contexts = None
        if config.context > 0:
            contexts = [text.context_string(split.context(u, config.context)) for u in rows]
        cls, mean = text.encode([u.text for u in rows], contexts, batch_size=config.batch_size)
        for record, cls_row, mean_row in zip(records, cls, mean):
            record.text_cls, record.text_mean = cls_row, mean_row
        self.stages.add("text", time.perf_counter() - t0)

    def _add_media(self, row_range: range, records: list[ClipRecord], on_clips: Callable[[int], None]) -> None:
        """Take each row's prepared clip (in row order) and encode its frames in batches."""
        config, stages = self.config, self.stages
        batcher = None
        if "visual" in config.modalities:
            # Chunks of one forward pass: on a CPU, encoding starts as soon as a micro-batch
            # of frames is in instead of waiting for a whole --batch-size.
            chunk = self.encoders.visual.pass_size(config.batch_size)
            batcher = FrameBatcher(self.encoders.visual, chunk, config.frames, stages)
        in_workers = self.prefetch.uses_workers
        for row, record in zip(row_range, records):
            t0 = time.perf_counter()
            clip = self.prefetch.next()
            if in_workers:  # in-process preparation is already counted by its own stages
                stages.add("wait for workers", time.perf_counter() - t0)
            if clip.row != row:
                raise RuntimeError(f"prepared clip {clip.row} arrived for row {row}")  # a bug, not user error
            for name, seconds in clip.seconds.items():
                stages.add(f"{name} (workers)" if in_workers else name, seconds)
            record.truncated = clip.truncated
            record.failures = list(clip.failures)
            if "audio" in config.modalities and clip.mel is not None:
                record.mel = clip.mel
            if batcher is not None and clip.frames is not None and len(clip.frames):
                batcher.add(record, clip.frames)
            on_clips(1)
        if batcher is not None:
            batcher.flush()


class FrameBatcher:
    """Collects frames across clips and runs the image encoder on fixed-size chunks taken
    in row order, so the batches (and the numbers) never depend on timing. Each clip's
    record gets its `visual` array when its frames are added; the rows fill in as the
    chunks are encoded, all of them by `flush`."""

    def __init__(self, encoder, batch_size: int, max_frames: int, stages: Stages):
        self.encoder = encoder
        self.batch_size = batch_size
        self.max_frames = max_frames
        self.stages = stages
        self.frames: list[np.ndarray] = []
        self.slots: list[tuple[ClipRecord, int]] = []

    def add(self, record: ClipRecord, frames: np.ndarray) -> None:
        count = min(len(frames), self.max_frames)
        record.visual = np.zeros((count, self.encoder.dim), dtype=np.float32)
        for f in range(count):
            self.frames.append(frames[f])
            self.slots.append((record, f))
        while len(self.frames) >= self.batch_size:
            self._run(self.batch_size)

    def flush(self) -> None:
        while self.frames:
            self._run(min(self.batch_size, len(self.frames)))

    def _run(self, count: int) -> None:
        t0 = time.perf_counter()
        batch = np.stack(self.frames[:count])
        features = self.encoder.encode(batch, batch_size=count)
        for (record, f), vector in zip(self.slots[:count], features):
            record.visual[f] = vector
        del self.frames[:count], self.slots[:count]
        self.stages.add("visual", time.perf_counter() - t0)
