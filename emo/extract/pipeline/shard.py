"""One shard through the encoders: the shard's rows in, one `ClipRecord` per row out.

A shard is the unit the cache writes atomically and a resumed run redoes, so nothing in
its numbers may depend on timing or on which other shards run: texts are batched within
the shard, frames are cut into fixed chunks (one forward pass each) taken in row order,
and augmented audio views are seeded per clip (`emo.extract.pipeline.prepare`). Resumed and
sharded runs therefore give bit-identical caches. How the records become columns on disk
is the cache's business (`emo.cache.clips`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from emo.cache.clips import ClipRecord
from emo.extract.config import ExtractConfig
from emo.extract.encoders.base import Needs, SetEncoder
from emo.extract.pipeline.summary import Stages
from emo.extract.pipeline.workers import Prefetcher


@dataclass
class ShardRunner:
    """What stays the same for every shard of a run: the config, the loaded set encoders,
    the clip prefetcher (None when no set needs the media) and the stage clock."""

    config: ExtractConfig
    encoders: list[SetEncoder]
    prefetch: Prefetcher | None
    stages: Stages

    def run(
        self, split, row_range: range, on_clips: Callable[[int], None], sets: list[SetEncoder] | None = None
    ) -> tuple[list[ClipRecord], dict]:
        """The records of the rows in `row_range` with the features of `sets` (default:
        every encoder) and the shard's stats; `on_clips(n)` is called as clips are done."""
        started = time.perf_counter()
        sets = self.encoders if sets is None else sets
        rows = [split.utterances[i] for i in row_range]
        records = [
            ClipRecord(
                dialogue_id=u.dialogue_id,
                utterance_id=u.utterance_id,
                emotion=u.emotion_index,
                sentiment=u.sentiment_index,
                speaker=u.speaker,
                text=u.text,
                clip=u.clip_name,
            )
            for u in rows
        ]
        for encoder in sets:
            if encoder.needs == Needs.TEXT:
                self._encode_texts(encoder, split, rows, records)
        media = [e for e in sets if e.needs != Needs.TEXT]
        if media and self.prefetch is not None:
            self._add_media(media, row_range, records, on_clips)
        else:
            on_clips(len(records))
        return records, {"extract_s": round(time.perf_counter() - started, 4)}

    def _encode_texts(self, encoder: SetEncoder, split, rows, records: list[ClipRecord]) -> None:
        t0 = time.perf_counter()
        config, text = self.config, encoder.model
        contexts = None
        if config.context > 0:
            contexts = [text.context_string(split.context(u, config.context)) for u in rows]
        cls, mean = text.encode([u.text for u in rows], contexts, batch_size=config.batch_size)
        for record, cls_row, mean_row in zip(records, cls, mean):
            record.features[encoder.spec.name] = {"cls": cls_row, "mean": mean_row}
        self.stages.add("text", time.perf_counter() - t0)

    def _add_media(
        self, media: list[SetEncoder], row_range: range, records: list[ClipRecord], on_clips: Callable[[int], None]
    ) -> None:
        """Take each row's prepared clip (in row order) and run every media set's encoder on it."""
        config, stages = self.config, self.stages
        batchers = {}
        for encoder in media:
            if encoder.needs in (Needs.FRAMES, Needs.FACE_CROPS):
                # Chunks of one forward pass: on a CPU, encoding starts as soon as a micro-batch
                # of frames is in instead of waiting for a whole --batch-size.
                chunk = encoder.model.pass_size(config.batch_size)
                batchers[encoder.spec.name] = FrameBatcher(encoder, chunk, config.frames, stages)
        waves: dict[str, list[tuple[ClipRecord, np.ndarray]]] = {
            e.spec.name: [] for e in media if e.needs == Needs.WAVEFORM
        }
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
            for encoder in media:
                self._encode_clip(encoder, clip, record, batchers, waves)
            on_clips(1)
        for batcher in batchers.values():
            batcher.flush()
        for encoder in media:
            if encoder.needs == Needs.WAVEFORM and waves[encoder.spec.name]:
                t0 = time.perf_counter()
                pending = waves[encoder.spec.name]
                vectors = encoder.model.encode([w for _, w in pending])
                for (record, _), vector in zip(pending, vectors):
                    record.features[encoder.spec.name] = vector
                stages.add(encoder.spec.name, time.perf_counter() - t0)

    def _encode_clip(self, encoder: SetEncoder, clip, record: ClipRecord, batchers, waves) -> None:
        name, needs = encoder.spec.name, encoder.needs
        if needs == Needs.MEL:
            if clip.mel is not None:
                record.features[name] = clip.mel
        elif needs == Needs.WAVEFORM:
            if clip.waveform is not None:
                waves[name].append((record, clip.waveform))
        elif needs == Needs.FRAMES:
            if clip.frames is not None and len(clip.frames):
                batchers[name].add(record, clip.frames)
        elif needs == Needs.FACES:
            if clip.face_frames is not None and len(clip.face_frames):
                t0 = time.perf_counter()
                values, mask = encoder.model.encode(clip.face_frames[: self.config.frames])
                record.features[name] = (values, mask)
                self.stages.add(name, time.perf_counter() - t0)
        elif needs == Needs.FACE_CROPS and clip.face_frames is not None and len(clip.face_frames):
            t0 = time.perf_counter()
            frames = clip.face_frames[: self.config.frames]
            from emo.extract.encoders.face_sets import crop_faces

            crops = crop_faces(frames, encoder.faces.boxes(frames))
            mask = np.array([c is not None for c in crops], dtype=bool)
            prep = encoder.model.prep
            ready = [prep.geometric(c[None])[0] for c in crops if c is not None]
            self.stages.add(f"{name} faces", time.perf_counter() - t0)
            if ready:
                batchers[name].add(record, np.stack(ready), mask)


class FrameBatcher:
    """Collects frames across clips and runs the image encoder on fixed-size chunks taken
    in row order, so the batches (and the numbers) never depend on timing. Each clip's
    record gets its frames array when its frames are added; the rows fill in as the chunks
    are encoded, all of them by `flush`. With a mask (face crops), the encoded frames go
    to the mask's True slots and the others stay zero and masked."""

    def __init__(self, encoder: SetEncoder, batch_size: int, max_frames: int, stages: Stages):
        self.encoder = encoder.model
        self.name = encoder.spec.name
        self.batch_size = batch_size
        self.max_frames = max_frames
        self.stages = stages
        self.frames: list[np.ndarray] = []
        self.slots: list[tuple[np.ndarray, int]] = []

    def add(self, record: ClipRecord, frames: np.ndarray, mask: np.ndarray | None = None) -> None:
        slots = list(range(min(len(frames), self.max_frames))) if mask is None else list(np.nonzero(mask)[0])
        width = len(slots) if mask is None else min(len(mask), self.max_frames)
        values = np.zeros((width, self.encoder.dim), dtype=np.float32)
        valid = np.zeros(width, dtype=bool)
        record.features[self.name] = (values, valid)
        for frame, slot in zip(frames, slots):
            if slot >= width:
                break
            valid[slot] = True
            self.frames.append(frame)
            self.slots.append((values, int(slot)))
        while len(self.frames) >= self.batch_size:
            self._run(self.batch_size)

    def flush(self) -> None:
        while self.frames:
            self._run(min(self.batch_size, len(self.frames)))

    def _run(self, count: int) -> None:
        t0 = time.perf_counter()
        batch = np.stack(self.frames[:count])
        features = self.encoder.encode(batch, batch_size=count)
        for (values, slot), vector in zip(self.slots[:count], features):
            values[slot] = vector
        del self.frames[:count], self.slots[:count]
        self.stages.add("visual", time.perf_counter() - t0)
