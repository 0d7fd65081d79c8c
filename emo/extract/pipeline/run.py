"""`run_extract`: every clip of a split through the frozen encoders into the feature cache.

This module only orchestrates a run; each job it hands out has its own module:
- `emo.extract.pipeline.plan`: which rows form which shard and which shards this process owns
  (`--num-shards/--shard-index`: disjoint shards whose union is one single-process run);
- `emo.extract.pipeline.workers`: the spawned decoding processes and the window of clips they
  prepare ahead of the encoders;
- `emo.extract.pipeline.shard`: one shard through the encoders, deterministically;
- `emo.extract.encoders.registry`: the encoders the config selects, their sets and identities
  (`emo.extract.pipeline.plan.held_sets`: a finished cache recognised without loading a model);
- `emo.cache`: everything on disk (`CacheWriter.write_clips`).

A shard is the unit of atomic writing and of resume: finished shards are skipped (their
keys are checked against this run's plan), an interrupted shard is redone from scratch.
When every shard this process owns is finished and the fingerprint matches, the encoders
are not even loaded: a re-run over a finished cache takes a second or two. A broken clip
is recorded (reason and the modalities it cost), its row is kept with presence flags
False, and extraction moves on. Nothing is written to disk before the first shard is
ready, so a run that fails early leaves no cache folder behind.

The library prints nothing: progress goes to the `progress` callback as `emo.progress`
events (one task per split, counted in clips), and the returned `ExtractSummary` is what
`emo extract` renders as tables.
"""

from __future__ import annotations

import time
from pathlib import Path

from emo.errors import CacheError, DataError, UsageError
from emo.extract.config import ExtractConfig
from emo.extract.pipeline.plan import (
    adopt_cache_shard_size,
    check_finished_shards,
    clip_jobs,
    held_sets,
    my_shards,
    shard_ranges,
)
from emo.extract.pipeline.prepare import media_needs
from emo.extract.pipeline.shard import ShardRunner
from emo.extract.pipeline.summary import ExtractSummary, SplitSummary, Stages, row_unit
from emo.extract.pipeline.workers import Prefetcher, WorkerPool
from emo.progress import Message, ProgressCallback, TaskAdvanced, TaskFinished, TaskStarted, emit
from emo.units import count


def run_extract(config: ExtractConfig, progress: ProgressCallback | None = None) -> ExtractSummary:
    """Extract `config.split` (or all splits) into `config.cache`; resumable and shardable.

    Into an existing cache, only the feature sets this run names are written (the row
    table once); other sets' files are never opened for writing.
    """
    from emo.cache import CacheWriter
    from emo.device import resolve_device, seed_everything

    from emo.extract.encoders.registry import planned_specs, run_encoders

    config.validate()
    run_encoders(config)  # what each encoder accepts (--audio-layers, --crop) is checked before any work
    started = time.perf_counter()
    config, note = adopt_cache_shard_size(config)
    if note:
        emit(progress, Message(note))
    splits = load_splits(config)
    needs_clips = bool({"audio", "visual"} & set(config.modalities))

    seed_everything(config.seed)  # after the CSVs are read: a bad CSV is reported without loading torch
    device = resolve_device(config.device)
    damaged = _announce_damage(config, progress)
    finished = _already_extracted(config, splits, device, started, progress, damaged)
    if finished is not None:
        _report_repairs(config, damaged, progress)
        return finished
    stages = Stages()
    previous_threads = _set_encoder_threads(config, needs_clips)
    pool = None
    encoders = []
    held = None
    summaries: dict[str, SplitSummary] = {}
    try:
        writer = CacheWriter(
            config.cache,
            fmt=config.format,
            config=config.with_preset_resolved(),
            overwrite=config.overwrite,
            defer_create=True,
        )
        for spec in planned_specs(config, device) or []:  # None: only loading can tell
            writer.check_set(spec)  # a same-named set made differently: refused before any model loads
        if needs_clips and config.workers > 0:
            # Started first so the workers' imports and warm-up overlap with loading the encoders.
            from emo.extract.encoders.registry import run_encoders

            pool = WorkerPool(config.workers, media_needs(config, run_encoders(config)).mel)
        encoders = _load_encoders(config, device, stages, progress)
        # Before anything is written: another run writing these sets with other settings, or
        # the same shards, is refused here, naming it (emo.cache.locks).
        held = writer.lock([e.spec for e in encoders], config.splits, config.num_shards, config.shard_index)
        for encoder in encoders:
            writer.add_set(encoder.spec)  # refuses a same-named set made differently, before any work
        if pool is not None:
            # Spawned workers import PyAV and librosa and compile librosa's numba kernels
            # while the encoders load; waiting here keeps that one-off cost out of the
            # per-clip stages, and "worker start-up" is what loading did not hide.
            t0 = time.perf_counter()
            pool.wait_until_warm()
            stages.add("worker start-up", time.perf_counter() - t0)
        for split in splits:
            summaries[split.name] = _extract_split(config, split, writer, encoders, pool, stages, progress, damaged)
    finally:
        if pool is not None:
            pool.shutdown()
        if held is not None:
            held.release()
        close_encoders(encoders)
        _restore_threads(previous_threads)
    _report_repairs(config, damaged, progress)
    return _summary(
        config, {e.spec.name: writer.set_digests[e.spec.name] for e in encoders}, summaries, stages, started
    )


def _announce_damage(config: ExtractConfig, progress: ProgressCallback | None) -> list:
    """The cache's damaged metadata (`emo.cache.metadata`), said before the run repairs it."""
    from emo.cache.metadata import metadata_damage

    damaged = metadata_damage(Path(config.cache)) if Path(config.cache).is_dir() else []
    if damaged:
        listed = "; ".join(f"{d.file} {d.problem}" for d in damaged)
        emit(
            progress,
            Message(
                f"{config.cache} has damaged metadata: {listed}; this run rewrites what it extracts, "
                "keeping every finished shard that matches its sidecar."
            ),
        )
    return damaged


def _repairs(damaged: list, split: str, sets) -> bool:
    """Whether this run rewrites some of the damage: cache.json, the split's plan or a set of its own."""
    return any(d.file == "cache.json" or d.file == f"{split}/split.json" or d.set_name in sets for d in damaged)


def _report_repairs(config: ExtractConfig, before: list, progress: ProgressCallback | None) -> None:
    """Which damaged metadata the run rewrote, and what is still damaged (another run's sets)."""
    from emo.cache.metadata import metadata_damage

    if not before:
        return
    left = {d.file: d for d in metadata_damage(Path(config.cache))}
    repaired = [d.file for d in before if d.file not in left]
    if repaired:
        emit(progress, Message(f"Repaired {', '.join(repaired)} in {config.cache}."))
    for damage in left.values():
        emit(progress, Message(f"Still damaged: {damage.line}."))


def close_encoders(encoders) -> None:
    """Release native resources (MediaPipe's landmarker) now, not in a destructor at exit."""
    for encoder in encoders:
        encoder.close()


def _summary(config, digests: dict[str, str], summaries, stages, started, loaded: bool = True) -> ExtractSummary:
    from emo.cache import fingerprint_digest

    return ExtractSummary(
        cache=Path(config.cache),
        fingerprint={"sets": dict(digests)},
        digest=fingerprint_digest({"sets": dict(digests)}),
        splits=summaries,
        stage_seconds=dict(stages.seconds) if stages is not None else {},
        wall_seconds=time.perf_counter() - started,
        encoders_loaded=loaded,
        sets=list(digests),
        unit=row_unit(config.modalities),
    )


def load_splits(config: ExtractConfig) -> list:
    """The splits' annotations, or one sentence naming the option to fix.

    A data folder or CSV that is not there is a usage error (exit 2): the path came from
    the command line. A CSV that is there but malformed is a data error (exit 1).
    """
    from emo.data.meld import CLIP_DIRS, csv_name, load_split

    root = Path(config.data_root)
    if not root.exists():
        raise UsageError(f"Data folder {root} does not exist; pass --data-root with the folder holding the MELD CSVs.")
    if not root.is_dir():
        raise UsageError(f"--data-root {root} is a file; pass the folder holding the MELD CSVs.")
    for name in config.splits:
        if not (root / csv_name(name)).is_file() and not (root / name / csv_name(name)).is_file():
            raise UsageError(
                f"No {csv_name(name)} in {root} or {root / name}; pass --data-root with the folder holding the MELD "
                "CSVs, or choose another --split."
            )
    splits = [load_split(root, name) for name in config.splits]
    if {"audio", "visual"} & set(config.modalities):
        for split in splits:
            if split.clip_dir is None:
                raise DataError(
                    f"Split '{split.name}' has no clip folder ({CLIP_DIRS[split.name]}/) in {root}; "
                    "extract text only with --modalities text, or add the videos."
                )
    return splits


def _load_encoders(config: ExtractConfig, device, stages: Stages, progress: ProgressCallback | None):
    from emo.extract.encoders.registry import load_set_encoders, run_encoders

    names = [entry.describe(config) for entry in run_encoders(config) if entry.loads_model]
    if names:
        emit(progress, Message(f"Loading the encoders ({', '.join(names)}) on {device}."))
    t0 = time.perf_counter()
    encoders = load_set_encoders(config, device)
    stages.add("load encoders", time.perf_counter() - t0)
    return encoders


def _extract_split(config, split, writer, encoders, pool, stages, progress, damaged=()) -> SplitSummary:
    """Every pending shard of one split this process owns, then the split's plan."""
    rows = split.utterances
    ranges = shard_ranges(len(rows), config.shard_size)
    mine = my_shards(len(ranges), config.num_shards, config.shard_index)
    summary = SplitSummary(split=split.name, rows=len(rows), shards=len(ranges), assigned=len(mine))
    summary.unlabeled_videos = len(split.unlabeled_videos())
    check_finished_shards(config, _cache_info(writer.root), split.name, rows, ranges)
    pending = {
        k: [e for e in encoders if not writer.part_done(split.name, k, e.spec.name)]
        for k in mine
        if not writer.shard_done(split.name, k)
    }
    summary.skipped = len(mine) - len(pending)
    if pending:
        _write_shards(config, split, ranges, pending, writer, encoders, pool, stages, summary, progress)
    elif _repairs(list(damaged), split.name, writer.sets):  # damaged metadata: say what is kept, not "all is well"
        emit(
            progress,
            Message(
                f"{split.name}: keeping all {count(len(mine), 'shard')} this process owns (each matches "
                "its sidecar and this run's fingerprint)."
            ),
        )
    else:
        emit(
            progress,
            Message(f"{split.name}: all {count(len(mine), 'shard')} this process owns are already in the cache."),
        )
    summary.complete = _finalize(config, writer, split, len(ranges), summary.unlabeled_videos)
    return summary


def _write_shards(config, split, ranges, pending, writer, encoders, pool, stages, summary, progress) -> None:
    from emo.extract.encoders.base import Needs

    media_shards = [k for k, sets in pending.items() if any(e.needs != Needs.TEXT for e in sets)]
    prefetch = None
    if media_shards:
        workers = max(config.workers, 1)
        frames_per_batch = max(1, -(-config.batch_size // config.frames))
        window = max(4 * workers, frames_per_batch + 2 * workers)
        jobs = clip_jobs(config, split, ranges, media_shards, media_needs(config, encoders))
        prefetch = Prefetcher(jobs, pool, window)
    runner = ShardRunner(config, encoders, prefetch, stages)
    task = f"extract:{split.name}"
    total = sum(len(ranges[k]) for k in pending)
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        emit(progress, TaskAdvanced(task, completed=done))

    unit = row_unit(config.modalities)  # clips, or utterances when only the CSV's text is read
    emit(progress, TaskStarted(task, description=f"extract {split.name}", total=total, unit=unit))
    try:
        for k, sets in pending.items():
            records, stats = runner.run(split, ranges[k], advance, sets)
            t0 = time.perf_counter()
            writer.write_clips(split.name, k, records, [e.spec.name for e in sets], stats)
            stages.add("write", time.perf_counter() - t0)
            summary.add_shard(records)
    except BaseException:
        if prefetch is not None:
            prefetch.cancel()
        raise
    emit(progress, TaskFinished(task, detail=count(len(pending), "shard") + " written"))


def _finalize(config: ExtractConfig, writer, split, n_shards: int, unlabeled: int) -> bool:
    """Record the split's plan in the cache; True when every shard of the split (row table
    and this run's sets) is there."""
    manifest = writer.finalize(
        split.name,
        total_rows=len(split.utterances),
        ignored_videos=unlabeled,
        expected_shards=n_shards,
        extra={"shard_size": config.shard_size, "frames": config.frames, "audio_views": config.audio_views},
    )
    if not manifest.get("splits", {}).get(split.name, {}).get("complete", False):
        return False
    sets = manifest.get("sets", {})
    return all(sets.get(name, {}).get("splits", {}).get(split.name, {}).get("complete", False) for name in writer.sets)


def _cache_info(root: Path):
    """The cache at `root` as it is now, or None when there is none yet."""
    from emo.cache import open_cache

    if not (Path(root) / "cache.json").is_file():
        return None
    return open_cache(root)


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


def _already_extracted(config, splits, device, started, progress, damaged=()) -> ExtractSummary | None:
    """The summary of a run with nothing left to do, or None when there is work (or doubt).

    Every shard this process owns being in the cache (row table and every set this run
    names) is decided from the sidecars, and each set is checked to be this run's from the
    encoders' identities, computed from their weight files (`emo.extract.pipeline.plan.held_sets`),
    so a finished cache is recognised without building a model - the tens of seconds that
    loading the encoders costs on a CPU. When that cannot be decided, the normal path loads
    the encoders and decides.
    """
    if config.overwrite or not Path(config.cache).is_dir():
        return None
    from emo.cache import CacheWriter, open_cache

    try:
        info = open_cache(config.cache)
    except CacheError:
        return None  # not a cache (yet), or an old one: the normal path says what is wrong
    specs = held_sets(config, info, device)
    if specs is None:
        return None
    writer = CacheWriter(config.cache, fmt=config.format, config=config.with_preset_resolved())
    for spec in specs:
        writer.add_set(spec)
    plans = []
    for split in splits:
        ranges = shard_ranges(len(split.utterances), config.shard_size)
        mine = my_shards(len(ranges), config.num_shards, config.shard_index)
        check_finished_shards(config, info, split.name, split.utterances, ranges)
        if any(not writer.shard_done(split.name, k) for k in mine):
            return None
        plans.append((split, ranges, mine))
    summaries: dict[str, SplitSummary] = {}
    for split, ranges, mine in plans:
        summary = SplitSummary(split=split.name, rows=len(split.utterances), shards=len(ranges), assigned=len(mine))
        summary.skipped = len(mine)
        summary.unlabeled_videos = len(split.unlabeled_videos())
        summary.complete = _finalize(config, writer, split, len(ranges), summary.unlabeled_videos)
        summaries[split.name] = summary
    shards = sum(s.assigned for s in summaries.values())
    names = ", ".join(writer.sets)
    repairing = any(_repairs(list(damaged), split.name, writer.sets) for split, _, _ in plans)
    what = "only damaged metadata to rewrite" if repairing else "nothing to do"
    emit(
        progress,
        Message(
            f"{what}: {count(shards, 'shard')} of {names} already extracted in {config.cache} "
            "(fingerprints match; encoders not loaded)."
        ),
    )
    return _summary(config, dict(writer.set_digests), summaries, None, started, loaded=False)
