"""What one `run_extract` did, as plain data: per split and for the whole run.

The library returns this and prints nothing; `emo extract` (emo/commands/extract.py)
renders it as tables, and tests and the demo read its numbers directly.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from emo.cache.clips import ClipRecord


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

    def add_shard(self, clips: Sequence[ClipRecord]) -> None:
        """Count a shard this run wrote: its rows, cut clips and failures."""
        self.written += 1
        self.rows_written += len(clips)
        for clip in clips:
            self.truncated += int(bool(clip.truncated))
            for failure in clip.failures:
                modality = "+".join(failure.modalities)
                self.failures_by_reason[failure.reason] = self.failures_by_reason.get(failure.reason, 0) + 1
                self.failures_by_modality[modality] = self.failures_by_modality.get(modality, 0) + 1


def row_unit(modalities: Sequence[str]) -> str:
    """What an extraction's rows are called when it counts them: clips when it decodes media,
    utterances when it reads only the CSV's text (a text-only cache has rows, not clips)."""
    return "clips" if {"audio", "visual"} & set(modalities) else "utterances"


@dataclass
class ExtractSummary:
    cache: Path
    fingerprint: dict[str, Any]
    digest: str
    splits: dict[str, SplitSummary]
    stage_seconds: dict[str, float]  # worker stages are summed over processes (CPU time, not wall)
    wall_seconds: float
    encoders_loaded: bool = True  # False when a finished cache was recognised without loading them
    sets: list[str] = field(default_factory=list)  # the feature sets this run wrote or found finished
    unit: str = "clips"  # what a row is called in messages (`row_unit`): clips, or utterances for text alone

    @property
    def rows_written(self) -> int:
        return sum(s.rows_written for s in self.splits.values())

    @property
    def clips_per_second(self) -> float:
        return self.rows_written / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def failures_by_reason(self) -> dict[str, int]:
        return dict(
            sum((collections.Counter(s.failures_by_reason) for s in self.splits.values()), collections.Counter())
        )

    @property
    def failures_by_modality(self) -> dict[str, int]:
        return dict(
            sum((collections.Counter(s.failures_by_modality) for s in self.splits.values()), collections.Counter())
        )


class Stages:
    """Seconds per stage of a run, for the end-of-run table."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds


def summary_to_dict(summary: ExtractSummary) -> dict[str, Any]:
    """Plain JSON-able data (a SLURM task hands its summary back as a JSON file, never a pickle)."""
    data = dataclasses.asdict(summary)
    data["cache"] = str(summary.cache)
    return data


def summary_from_dict(data: dict[str, Any]) -> ExtractSummary:
    splits = {name: SplitSummary(**part) for name, part in data["splits"].items()}
    return ExtractSummary(**{**data, "cache": Path(data["cache"]), "splits": splits})


def combine(summaries: Sequence[ExtractSummary], cache: Path, wall_seconds: float) -> ExtractSummary | None:
    """One summary for the tasks of a launch (each ran some shards of every split): counts
    and stage seconds add up, the wall time is the launch's. None when no task reported."""
    if not summaries:
        return None
    splits: dict[str, SplitSummary] = {}
    stages: dict[str, float] = collections.defaultdict(float)
    for summary in summaries:
        for name, part in summary.splits.items():
            total = splits.setdefault(name, SplitSummary(split=name, rows=part.rows, shards=part.shards, assigned=0))
            total.unlabeled_videos = part.unlabeled_videos
            total.complete = total.complete or part.complete
            for key in ("assigned", "written", "skipped", "rows_written", "truncated"):
                setattr(total, key, getattr(total, key) + getattr(part, key))
            for mine, theirs in (
                (total.failures_by_reason, part.failures_by_reason),
                (total.failures_by_modality, part.failures_by_modality),
            ):
                for key, n in theirs.items():
                    mine[key] = mine.get(key, 0) + n
        for stage, seconds in summary.stage_seconds.items():
            stages[stage] += seconds
    first = summaries[0]
    return ExtractSummary(
        cache=Path(cache),
        fingerprint=first.fingerprint,
        digest=first.digest,
        splits=splits,
        stage_seconds=dict(stages),
        wall_seconds=wall_seconds,
        encoders_loaded=any(s.encoders_loaded for s in summaries),
        sets=list(first.sets),
        unit=first.unit,
    )
