"""`run_extract`: every clip of a split through the frozen encoders into the feature cache.

How the work is cut:
- Rows are the split's utterances sorted by (dialogue, utterance); shard k holds rows
  [k*shard_size, (k+1)*shard_size). This process runs shard k iff k % num_shards ==
  shard_index, so N processes (a SLURM array, several GPUs or machines on one filesystem)
  write disjoint shards whose union is exactly one single-process run.
- A shard is the unit of atomic writing and of resume: finished shards are skipped (their
  keys are checked against this run's plan), an interrupted shard is redone from scratch.
  When every shard this process owns is finished and the cache's fingerprint matches
  (checked by hashing weight files, `emo.extract.identity`), the encoders are not even
  loaded: a re-run over a finished cache takes a second or two.
- Nothing in a shard's numbers depends on timing or on which other shards run: texts are
  batched within the shard, frames are cut into fixed chunks (one forward pass each) in row order,
  and augmented audio views are seeded per clip. Resumed and sharded runs therefore give
  bit-identical caches.

How the time is spent: decoding, frame resizing and mel spectrograms run in `workers`
spawned processes, a bounded window of clips ahead of the main process, which meanwhile
runs the batched text and image forward passes (inference mode, fp16 on GPU). A broken
clip is recorded (reason and the modalities it cost), its row is kept with presence flags
False, and extraction moves on.
"""

from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emo.errors import CacheError, DataError
from emo.extract.config import ExtractConfig
from emo.extract.mel import MelParams
from emo.extract.prepare import ClipJob, PreparedClip, prepare_clip, warm_up, worker_init

FINGERPRINT_VERSION = 1  # bump when extraction changes the numbers in a way no parameter names


@dataclass
class SplitSummary:
    split: str
    rows: int  # annotated utterances in the split
    shards: int  # shards the split is cut into
    assigned: int  # shards this process is responsible for
    written: int = 0
    skipped: int = 0  # already finished in the cache (resume)
    rows_written: int = 0
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    failures_by_modality: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    unlabeled_videos: int = 0
    complete: bool = False  # every shard of the split is in the cache now


@dataclass
class ExtractSummary:
    cache: Path
    fingerprint: dict[str, Any]
    digest: str
    splits: dict[str, SplitSummary]
    stage_seconds: dict[str, float]
    wall_seconds: float

    @property
    def rows_written(self) -> int:
        return sum(s.rows_written for s in self.splits.values())

    @property
    def clips_per_second(self) -> float:
        return self.rows_written / self.wall_seconds if self.wall_seconds > 0 else 0.0


# --- planning ----------------------------------------------------------------------------


def shard_ranges(n_rows: int, shard_size: int) -> list[range]:
    return [range(start, min(start + shard_size, n_rows)) for start in range(0, n_rows, shard_size)]


def my_shards(n_shards: int, num_shards: int, shard_index: int) -> list[int]:
    return [k for k in range(n_shards) if k % num_shards == shard_index]


def mel_params(config: ExtractConfig) -> MelParams:
    return MelParams(
        sample_rate=config.sample_rate,
        n_mels=config.n_mels,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        win_length=config.win_length,
        fmin=config.fmin,
        fmax=config.fmax,
    )


def build_fingerprint(config: ExtractConfig, encoders) -> dict[str, Any]:
    """Everything that changes a cached number: encoders (by weight hash), preprocessing,
    the emo version and this module's own version. Paths and run-time knobs (workers,
    batch size, device beyond precision, sharding) are deliberately left out."""
    from emo import __version__
    from emo.cache import SCHEMA_VERSION

    fingerprint: dict[str, Any] = {
        "extract_version": FINGERPRINT_VERSION,
        "emo_version": __version__,
        "cache_schema": SCHEMA_VERSION,
        "modalities": list(config.ordered_modalities),
        "max_duration": float(config.max_duration),
    }
    fingerprint.update(encoders.fingerprint())
    if "visual" in config.modalities:
        fingerprint["frames"] = {
            "count": int(config.frames),
            "sampling": "centres of equal time slices",
            "resize": config.frame_resize,
        }
    if "audio" in config.modalities:
        fingerprint["audio"] = {**mel_params(config).describe(), "views": 1 + int(config.audio_views), "seed": config.seed}
    return fingerprint


# --- the run -----------------------------------------------------------------------------


class _Done:
    """A finished 'future' for in-process preparation (workers=0)."""

    def __init__(self, job: ClipJob):
        self._job = job

    def result(self) -> PreparedClip:
        return prepare_clip(self._job)

    def cancel(self) -> bool:
        return True


class _Prefetcher:
    """Hands out prepared clips in job order while keeping `window` jobs in flight."""

    def __init__(self, jobs, executor, window: int):
        self._jobs = iter(jobs)
        self._executor = executor
        self._window = max(1, window)
        self._pending: collections.deque = collections.deque()
        self._fill()

    def _fill(self) -> None:
        while len(self._pending) < self._window:
            job = next(self._jobs, None)
            if job is None:
                return
            if self._executor is None:
                self._pending.append(_Done(job))
            else:
                self._pending.append(self._executor.submit(prepare_clip, job))

    @property
    def uses_workers(self) -> bool:
        return self._executor is not None

    def next(self) -> PreparedClip:
        future = self._pending.popleft()
        self._fill()
        return future.result()

    def cancel(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()


class _Stages:
    """Seconds per stage; worker stages are summed over processes (CPU time, not wall)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds


def _clip_name(utterance) -> str:
    return Path(utterance.clip_name).stem


def run_extract(config: ExtractConfig, console=None) -> ExtractSummary:
    """Extract `config.split` (or all splits) into `config.cache`; resumable and shardable."""
    from rich.console import Console

    from emo.cache import CacheWriter, fingerprint_digest
    from emo.data.meld import load_split
    from emo.device import resolve_device, seed_everything
    from emo.extract.encoders import load_encoders

    config.validate()
    console = console or Console(stderr=True)
    started = time.perf_counter()

    needs_clips = bool({"audio", "visual"} & set(config.modalities))
    splits = [load_split(config.data_root, name) for name in config.splits]
    for split in splits:
        if needs_clips and split.clip_dir is None:
            from emo.data.meld import CLIP_DIRS

            raise DataError(
                f"Split '{split.name}' has no clip folder ({CLIP_DIRS[split.name]}/) in {config.data_root}; "
                "extract text only with --modalities text, or add the videos."
            )

    seed_everything(config.seed)  # after the CSVs are read: a bad CSV is reported without loading torch
    device = resolve_device(config.device)
    finished = _already_extracted(config, splits, device, console, started)
    if finished is not None:
        return finished
    stages = _Stages()
    previous_threads = _set_encoder_threads(config, needs_clips)
    executor = None
    if needs_clips and config.workers > 0:
        # Started first so the workers' imports and warm-up overlap with loading the encoders.
        executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=config.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=worker_init,
        )
        warming = [executor.submit(warm_up, mel_params(config)) for _ in range(config.workers)]
    summaries: dict[str, SplitSummary] = {}
    try:
        t0 = time.perf_counter()
        encoders = load_encoders(config, device)
        stages.add("load encoders", time.perf_counter() - t0)
        if executor is not None:
            # Spawned workers import PyAV and librosa and compile librosa's numba kernels
            # while the encoders load; waiting here keeps that one-off cost out of the
            # per-clip stages, and "worker start-up" is what loading did not hide.
            t0 = time.perf_counter()
            concurrent.futures.wait(warming)
            stages.add("worker start-up", time.perf_counter() - t0)
        fingerprint = build_fingerprint(config, encoders)
        writer = CacheWriter(config.cache, fingerprint, fmt=config.format, config=config, overwrite=config.overwrite)
        for split in splits:
            rows = split.utterances
            ranges = shard_ranges(len(rows), config.shard_size)
            mine = my_shards(len(ranges), config.num_shards, config.shard_index)
            summary = SplitSummary(split=split.name, rows=len(rows), shards=len(ranges), assigned=len(mine))
            summary.unlabeled_videos = len(split.unlabeled_videos())
            summaries[split.name] = summary
            _check_finished_shards(config, writer, split.name, rows, ranges, mine)
            pending = [k for k in mine if not writer.shard_done(split.name, k)]
            summary.skipped = len(mine) - len(pending)
            _extract_split(config, split, rows, ranges, pending, encoders, writer, executor, stages, summary, console)
            manifest = writer.finalize(
                split.name,
                total_rows=len(rows),
                ignored_videos=summary.unlabeled_videos,
                expected_shards=len(ranges),
                extra={"shard_size": config.shard_size, "frames": config.frames, "audio_views": config.audio_views},
            )
            split_state = manifest.get("splits", {}).get(split.name, {}) if isinstance(manifest, dict) else {}
            summary.complete = bool(split_state.get("complete", False))
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        _restore_threads(previous_threads)

    result = ExtractSummary(
        cache=Path(config.cache),
        fingerprint=fingerprint,
        digest=fingerprint_digest(writer.fingerprint),
        splits=summaries,
        stage_seconds=dict(stages.seconds),
        wall_seconds=time.perf_counter() - started,
    )
    print_summary(result, console)
    return result


def _set_encoder_threads(config: ExtractConfig, needs_clips: bool) -> int:
    """Give the encoders the cores the decoding workers leave free. On a small CPU box the
    encoders and the workers otherwise fight over the same cores (bench, 2 cores: 2 workers
    with 1 encoder thread extract 20 % faster than with 2)."""
    import os

    import torch

    threads = config.threads
    if threads == 0:
        busy = config.workers if needs_clips else 0
        threads = max(1, (os.cpu_count() or 1) - busy)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    return previous


def _restore_threads(threads: int) -> None:
    """The caller's own thread count back (demo and tests go on in this process)."""
    import torch

    torch.set_num_threads(threads)


def _already_extracted(config, splits, device, console, started) -> ExtractSummary | None:
    """The summary of a run with nothing left to do, or None when there is work (or doubt).

    Every shard this process owns being in the cache is decided from the sidecars, and the
    cache's fingerprint is checked against this run's by hashing the encoders' weight files
    (`emo.extract.identity`), so a finished cache is recognised without building a model -
    the tens of seconds that loading the encoders costs on a CPU. When the fingerprint
    cannot be decided that way, the normal path loads the encoders and decides.
    """
    if config.overwrite or not Path(config.cache).is_dir():
        return None
    from emo.cache import CacheWriter, fingerprint_digest, open_cache
    from emo.extract.identity import cache_matches_without_models

    try:
        info = open_cache(config.cache)
    except CacheError:
        return None  # not a cache (yet): the normal path creates it or says what is wrong
    if info.format != config.format or not cache_matches_without_models(config, device, info.fingerprint):
        return None
    writer = CacheWriter(config.cache, info.fingerprint, fmt=config.format, config=config)
    plans = []
    for split in splits:
        ranges = shard_ranges(len(split.utterances), config.shard_size)
        mine = my_shards(len(ranges), config.num_shards, config.shard_index)
        _check_finished_shards(config, writer, split.name, split.utterances, ranges, mine)
        if any(not writer.shard_done(split.name, k) for k in mine):
            return None
        plans.append((split, ranges, mine))
    summaries: dict[str, SplitSummary] = {}
    for split, ranges, mine in plans:
        summary = SplitSummary(split=split.name, rows=len(split.utterances), shards=len(ranges), assigned=len(mine))
        summary.skipped = len(mine)
        summary.unlabeled_videos = len(split.unlabeled_videos())
        manifest = writer.finalize(
            split.name,
            total_rows=len(split.utterances),
            ignored_videos=summary.unlabeled_videos,
            expected_shards=len(ranges),
            extra={"shard_size": config.shard_size, "frames": config.frames, "audio_views": config.audio_views},
        )
        split_state = manifest.get("splits", {}).get(split.name, {}) if isinstance(manifest, dict) else {}
        summary.complete = bool(split_state.get("complete", False))
        summaries[split.name] = summary
    shards = sum(s.assigned for s in summaries.values())
    console.print(
        f"nothing to do: {shards} shard{'s' if shards != 1 else ''} already extracted in {config.cache} "
        f"(fingerprint {info.digest} matches; encoders not loaded)."
    )
    return ExtractSummary(
        cache=Path(config.cache),
        fingerprint=info.fingerprint,
        digest=fingerprint_digest(writer.fingerprint),
        splits=summaries,
        stage_seconds={},
        wall_seconds=time.perf_counter() - started,
    )


def _check_finished_shards(config, writer, split_name, rows, ranges, mine) -> None:
    """A finished shard must hold exactly the rows this run would put there; a changed
    --shard-size or a changed CSV would otherwise mix two plans in one split."""
    if config.overwrite:
        return
    from emo.cache import open_cache

    info = open_cache(writer.root).splits.get(split_name)
    if info is None:
        return
    for shard in info.shards:
        if shard.index >= len(ranges):
            raise CacheError(
                f"Split '{split_name}' in {writer.root} has shard {shard.index} but this run plans only "
                f"{len(ranges)} shards (was --shard-size or the CSV changed?); pass --overwrite or use another --cache."
            )
        r = ranges[shard.index]
        first, last = rows[r.start].key, rows[r.stop - 1].key
        if shard.rows != len(r) or tuple(shard.first_key or ()) != first or tuple(shard.last_key or ()) != last:
            raise CacheError(
                f"Shard {shard.index} of split '{split_name}' in {writer.root} holds different rows than this run "
                f"plans (was --shard-size {config.shard_size} or the CSV changed?); pass --overwrite or use another --cache."
            )


def _progress(console):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class ClipsPerSecond(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("-- clips/s" if speed is None else f"{speed:.1f} clips/s")

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        ClipsPerSecond(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _extract_split(config, split, rows, ranges, pending, encoders, writer, executor, stages, summary, console) -> None:
    if not pending:
        console.print(f"{split.name}: all {len(ranges)} shards this process owns are already in the cache.")
        return
    want_video = "visual" in config.modalities
    want_audio = "audio" in config.modalities
    mel = mel_params(config) if want_audio else None
    prep = encoders.visual.prep if want_video else None

    def jobs():
        for k in pending:
            for i in ranges[k]:
                u = rows[i]
                yield ClipJob(
                    row=i,
                    key=_clip_name(u),
                    path=str(split.clip_path(u)),
                    video=want_video,
                    audio=want_audio,
                    frames=config.frames,
                    sample_rate=config.sample_rate,
                    max_duration=config.max_duration,
                    frame_prep=prep,
                    ffmpeg_resize=config.frame_resize == "ffmpeg",
                    mel=mel,
                    audio_views=config.audio_views,
                    seed=config.seed,
                )

    prefetch = None
    if want_video or want_audio:
        frames_per_batch = max(1, -(-config.batch_size // config.frames))
        window = max(4 * max(config.workers, 1), frames_per_batch + 2 * max(config.workers, 1))
        prefetch = _Prefetcher(jobs(), executor, window)

    total = sum(len(ranges[k]) for k in pending)
    try:
        with _progress(console) as progress:
            task = progress.add_task(f"extract {split.name}", total=total)
            for k in pending:
                shard_rows = [rows[i] for i in ranges[k]]
                arrays, failures, stats = _extract_shard(
                    config, split, ranges[k], shard_rows, encoders, prefetch, stages, summary, progress, task
                )
                t0 = time.perf_counter()
                writer.write_shard(split.name, k, arrays, failures, stats)
                stages.add("write", time.perf_counter() - t0)
                summary.written += 1
                summary.rows_written += len(shard_rows)
    except BaseException:
        if prefetch is not None:
            prefetch.cancel()
        raise


def _extract_shard(config, split, row_range, shard_rows, encoders, prefetch, stages, summary, progress, task):
    n = len(shard_rows)
    arrays: dict[str, Any] = {
        "dialogue_id": np.array([u.dialogue_id for u in shard_rows], dtype=np.int32),
        "utterance_id": np.array([u.utterance_id for u in shard_rows], dtype=np.int32),
        "emotion": np.array([u.emotion_index for u in shard_rows], dtype=np.int64),
        "sentiment": np.array([u.sentiment_index for u in shard_rows], dtype=np.int64),
        "speaker": [u.speaker for u in shard_rows],
        "has_text": np.zeros(n, dtype=bool),
        "has_audio": np.zeros(n, dtype=bool),
        "has_visual": np.zeros(n, dtype=bool),
        "truncated": np.zeros(n, dtype=bool),
    }
    failure_text = [""] * n
    failures: list[dict[str, Any]] = []
    shard_started = time.perf_counter()

    if "text" in config.modalities:
        t0 = time.perf_counter()
        texts = [u.text for u in shard_rows]
        contexts = None
        if config.context > 0:
            contexts = [encoders.text.context_string(split.context(u, config.context)) for u in shard_rows]
        cls, mean = encoders.text.encode(texts, contexts, batch_size=config.batch_size)
        arrays["text_cls"] = cls.astype(np.float16)
        arrays["text_mean"] = mean.astype(np.float16)
        arrays["has_text"][:] = True
        stages.add("text", time.perf_counter() - t0)
        if prefetch is None:
            progress.advance(task, n)

    if prefetch is not None:
        want_video = "visual" in config.modalities
        want_audio = "audio" in config.modalities
        views = 1 + config.audio_views
        if want_video:
            visual = np.zeros((n, config.frames, encoders.visual.dim), dtype=np.float16)
            visual_mask = np.zeros((n, config.frames), dtype=bool)
            # Chunks of one forward pass: on a CPU, encoding starts as soon as a micro-batch
            # of frames is in instead of waiting for a whole --batch-size.
            chunk = encoders.visual.pass_size(config.batch_size)
            batcher = _FrameBatcher(encoders.visual, chunk, visual, visual_mask, stages)
        mel_chunks: list[np.ndarray] = []
        mel_index = np.zeros((n, views, 2), dtype=np.int64)
        offset = 0
        in_workers = prefetch.uses_workers
        for j in range(n):
            t0 = time.perf_counter()
            clip = prefetch.next()
            if in_workers:  # in-process preparation is already counted by its own stages
                stages.add("wait for workers", time.perf_counter() - t0)
            if clip.row != row_range[j]:
                raise RuntimeError(f"prepared clip {clip.row} arrived for row {row_range[j]}")  # a bug, not user error
            for name, seconds in clip.seconds.items():
                stages.add(f"{name} (workers)" if in_workers else name, seconds)
            arrays["truncated"][j] = clip.truncated
            if clip.truncated:
                summary.truncated += 1
            u = shard_rows[j]
            for failure in clip.failures:
                modality = "+".join(failure.modalities)
                failures.append(
                    {
                        "dialogue_id": u.dialogue_id,
                        "utterance_id": u.utterance_id,
                        "clip": u.clip_name,
                        "reason": failure.reason,
                        "modality": modality,
                        "message": failure.message,
                    }
                )
                summary.failures_by_reason[failure.reason] = summary.failures_by_reason.get(failure.reason, 0) + 1
                summary.failures_by_modality[modality] = summary.failures_by_modality.get(modality, 0) + 1
            failure_text[j] = ",".join(f.reason for f in clip.failures)
            if want_audio:
                for v in range(views):
                    mel_index[j, v, 0] = offset
                if clip.mel is not None:
                    arrays["has_audio"][j] = True
                    for v, spectrogram in enumerate(clip.mel):
                        mel_index[j, v] = (offset, spectrogram.shape[0])
                        mel_chunks.append(spectrogram)
                        offset += spectrogram.shape[0]
            if want_video and clip.frames is not None and len(clip.frames):
                arrays["has_visual"][j] = True
                batcher.add(j, clip.frames)
            progress.advance(task, 1)
        if want_video:
            batcher.flush()
            arrays["visual"] = visual
            arrays["visual_mask"] = visual_mask
        if want_audio:
            arrays["mel"] = (
                np.concatenate(mel_chunks).astype(np.float16)
                if mel_chunks
                else np.zeros((0, config.n_mels), dtype=np.float16)
            )
            arrays["mel_index"] = mel_index
    arrays["failure"] = failure_text
    stats = {"shard_s": round(time.perf_counter() - shard_started, 4)}
    return arrays, failures, stats


class _FrameBatcher:
    """Collects frames across clips and runs the image encoder on fixed-size chunks taken
    in row order, so the batches (and the numbers) never depend on timing."""

    def __init__(self, encoder, batch_size: int, out: np.ndarray, mask: np.ndarray, stages: _Stages):
        self.encoder = encoder
        self.batch_size = batch_size
        self.out = out
        self.mask = mask
        self.stages = stages
        self.frames: list[np.ndarray] = []
        self.slots: list[tuple[int, int]] = []

    def add(self, row: int, frames: np.ndarray) -> None:
        count = min(len(frames), self.out.shape[1])
        for f in range(count):
            self.frames.append(frames[f])
            self.slots.append((row, f))
        while len(self.frames) >= self.batch_size:
            self._run(self.batch_size)

    def flush(self) -> None:
        while self.frames:
            self._run(min(self.batch_size, len(self.frames)))

    def _run(self, count: int) -> None:
        t0 = time.perf_counter()
        batch = np.stack(self.frames[:count])
        features = self.encoder.encode(batch, batch_size=count)
        for (row, f), vector in zip(self.slots[:count], features):
            self.out[row, f] = vector
            self.mask[row, f] = True
        del self.frames[:count], self.slots[:count]
        self.stages.add("visual", time.perf_counter() - t0)


# --- the end-of-run table ----------------------------------------------------------------


def print_summary(summary: ExtractSummary, console) -> None:
    from rich.table import Table

    table = Table(
        title=f"emo extract -> {summary.cache} (fingerprint {summary.digest})",
        caption="failed: clips with a failure; cut: longer than --max-duration; unlabeled: videos with no CSV row",
    )
    for column in ("split", "rows", "shards", "mine", "written", "skipped", "failed", "cut", "unlabeled"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for s in summary.splits.values():
        failed = sum(s.failures_by_reason.values())
        table.add_row(
            s.split + ("" if s.complete else " (incomplete)"),
            str(s.rows),
            str(s.shards),
            str(s.assigned),
            str(s.written),
            str(s.skipped),
            str(failed),
            str(s.truncated),
            str(s.unlabeled_videos),
        )
    console.print(table)

    reasons: dict[str, int] = collections.Counter()
    modalities: dict[str, int] = collections.Counter()
    for s in summary.splits.values():
        reasons.update(s.failures_by_reason)
        modalities.update(s.failures_by_modality)
    if reasons:
        failures = Table(title="failures this run")
        failures.add_column("reason")
        failures.add_column("clips", justify="right")
        for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
            failures.add_row(reason, str(count))
        failures.add_section()
        for modality, count in sorted(modalities.items(), key=lambda kv: -kv[1]):
            failures.add_row(f"lost {modality}", str(count))
        console.print(failures)

    stages = Table(title=f"time per stage ({summary.rows_written} clips in {summary.wall_seconds:.1f} s, "
                   f"{summary.clips_per_second:.2f} clips/s)")
    stages.add_column("stage")
    stages.add_column("seconds", justify="right")
    for name, seconds in sorted(summary.stage_seconds.items(), key=lambda kv: -kv[1]):
        stages.add_row(name, f"{seconds:.2f}")
    console.print(stages)
