"""How a split's rows are cut into shards, which shards this process owns, the clip jobs, and
whether a cache already holds the sets a run would write.

Rows are the split's utterances sorted by (dialogue, utterance); shard k holds rows
[k*shard_size, (k+1)*shard_size). This process runs shard k iff k % num_shards ==
shard_index, so N processes (a SLURM array, several GPUs or machines on one filesystem)
write disjoint shards whose union is exactly one single-process run. The plan depends on
nothing but the CSV and the options, which is what lets a resumed run trust the shards an
earlier one finished - after checking that they hold the rows this plan puts there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from emo.errors import CacheError
from emo.extract.config import ExtractConfig
from emo.extract.pipeline.prepare import ClipJob, MediaNeeds, clip_job


def adopt_cache_shard_size(config: ExtractConfig) -> tuple[ExtractConfig, str | None]:
    """The config with the shard size of the cache it extracts into, and a sentence when
    that changed it: a set added to a cache must be cut into the row table's shards, so a
    user adding whisper-base to a cache made with --shard-size 64 need not remember it."""
    import dataclasses

    from emo.cache import open_cache

    if config.overwrite or not (Path(config.cache) / "cache.json").is_file():
        return config, None
    try:
        info = open_cache(config.cache)
    except CacheError:
        return config, None  # the run itself says what is wrong with it
    sizes = {split.extra.get("shard_size") for split in info.splits.values()} - {None}
    if len(sizes) != 1 or config.shard_size in sizes:
        return config, None
    size = int(sizes.pop())
    note = f"Using the cache's shard size {size} (not {config.shard_size}): new sets are cut like its row table."
    return dataclasses.replace(config, shard_size=size), note


def shard_ranges(n_rows: int, shard_size: int) -> list[range]:
    return [range(start, min(start + shard_size, n_rows)) for start in range(0, n_rows, shard_size)]


def my_shards(n_shards: int, num_shards: int, shard_index: int) -> list[int]:
    return [k for k in range(n_shards) if k % num_shards == shard_index]


def check_finished_shards(config: ExtractConfig, cache_info, split_name: str, rows, ranges: list[range]) -> None:
    """A finished shard must hold exactly the rows this run would put there; a changed
    --shard-size or a changed CSV would otherwise mix two plans in one split.

    `cache_info` is the cache's `emo.cache.CacheInfo`, or None when there is no cache yet.
    """
    if config.overwrite or cache_info is None:
        return
    info = cache_info.splits.get(split_name)
    if info is None:
        return
    for shard in info.shards:
        if shard.index >= len(ranges):
            raise CacheError(
                f"Split '{split_name}' in {cache_info.root} has shard {shard.index} but this run plans only "
                f"{len(ranges)} shards (was --shard-size or the CSV changed?); pass --overwrite or use another --cache."
            )
        r = ranges[shard.index]
        first, last = rows[r.start].key, rows[r.stop - 1].key
        if shard.rows != len(r) or tuple(shard.first_key or ()) != first or tuple(shard.last_key or ()) != last:
            raise CacheError(
                f"Shard {shard.index} of split '{split_name}' in {cache_info.root} holds different rows than this "
                f"run plans (was --shard-size {config.shard_size} or the CSV changed?); pass --overwrite or use "
                "another --cache."
            )
        labels, texts = annotation_digests([rows[i] for i in r])
        if (shard.rows_sha256 and shard.rows_sha256 != labels) or (shard.texts_sha256 and shard.texts_sha256 != texts):
            raise CacheError(
                f"The row table of split '{split_name}' in {cache_info.root} (shard {shard.index}) holds other "
                "annotations than these CSVs (labels, speakers or texts differ); extract into a new --cache."
            )


def annotation_digests(utterances) -> tuple[str, str | None]:
    """The digests the cache records for a row-table shard (labels, texts), computed from
    annotations."""
    from emo.cache.clips import ClipRecord, build_row_columns
    from emo.cache.digests import rows_sha256, texts_sha256

    columns = build_row_columns(
        [
            ClipRecord(
                u.dialogue_id, u.utterance_id, u.emotion_index, u.sentiment_index, speaker=u.speaker, text=u.text
            )
            for u in utterances
        ]
    )
    return rows_sha256(columns), texts_sha256(columns)


def clip_jobs(
    config: ExtractConfig, split, ranges: list[range], shards: Sequence[int], media: MediaNeeds
) -> Iterator[ClipJob]:
    """One worker job per row of `shards`, in row order (the order results are consumed)."""
    rows = split.utterances
    for k in shards:
        for i in ranges[k]:
            u = rows[i]
            yield clip_job(config, i, Path(u.clip_name).stem, str(split.clip_path(u)), media)


def held_sets(config: ExtractConfig, info, device) -> list | None:
    """The specs of this run's sets when the open cache `info` already holds every one of
    them made exactly as this run would make it (the same set digest, `emo.cache`'s own test
    of a set's identity), else None.

    Decided from the encoders' identities, which they compute from their files, so a
    finished cache is recognised without loading a model; None also when an encoder cannot
    tell without loading (its weights are not on this machine): loading then decides.
    `emo extract` (nothing to do) and the launchers (which tasks to submit) both ask here.
    """
    from emo.cache.digests import set_digest
    from emo.extract.encoders.registry import planned_specs

    if info.format != config.format:
        return None
    specs = planned_specs(config, device)
    if specs is None or any(s.name not in info.sets or info.sets[s.name].digest != set_digest(s) for s in specs):
        return None
    return [info.sets[s.name].spec for s in specs]
