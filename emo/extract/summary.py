"""What one `run_extract` did, as plain data: per split and for the whole run.

The library returns this and prints nothing; `emo extract` (emo/commands/extract.py)
renders it as tables, and tests and the demo read its numbers directly.
"""

from __future__ import annotations

import collections
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


@dataclass
class ExtractSummary:
    cache: Path
    fingerprint: dict[str, Any]
    digest: str
    splits: dict[str, SplitSummary]
    stage_seconds: dict[str, float]  # worker stages are summed over processes (CPU time, not wall)
    wall_seconds: float
    encoders_loaded: bool = True  # False when a finished cache was recognised without loading them

    @property
    def rows_written(self) -> int:
        return sum(s.rows_written for s in self.splits.values())

    @property
    def clips_per_second(self) -> float:
        return self.rows_written / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def failures_by_reason(self) -> dict[str, int]:
        return dict(sum((collections.Counter(s.failures_by_reason) for s in self.splits.values()), collections.Counter()))

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
