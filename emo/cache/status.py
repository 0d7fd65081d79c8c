"""Which shards of which split are finished, being written, or missing (`emo cache status`).

Decided from what is on disk only, so it answers while extraction processes (a SLURM
array, several machines on one filesystem) are still writing, and after they died:

- finished: the shard's data and a sidecar that matches it (what `emo cache info` counts);
- in progress: not finished, and a temporary of it exists (`.shard-NNNNN.*.tmp-HOST-PID`,
  see `emo.cache.layout`) whose writer is alive - or runs on another machine, where it
  cannot be asked;
- stale: not finished, and only temporaries of processes on this machine that are dead
  (the next run deletes them and redoes the shard);
- missing: every other shard up to the split's shard count.

It also lists the writer locks held now (`emo.cache.locks`): which process writes which set
since when, so a user whose run was refused sees who is in the way.

The shard count comes from the split's plan (`split.json`, written by each process once
its part is done) or, before any process got that far, from `expected`: a launcher that
planned the work knows it before anything is written. Without either, the count is the
highest shard seen so far, and the split's total is unknown.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from emo import atomic
from emo.cache import layout
from emo.cache.launches import is_launcher_dir, last_launch
from emo.cache.locks import holders
from emo.cache.manifest import list_sets, list_splits, read_cache_meta, scan_set_split, scan_split


@dataclass
class SplitStatus:
    name: str
    shards: int | None  # how many shards the split has; None while nobody has said
    finished: list[int] = field(default_factory=list)
    in_progress: list[int] = field(default_factory=list)
    stale: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    rows: int = 0  # rows in finished shards
    expected_rows: int | None = None
    complete: bool = False  # every shard is finished and the split's plan is recorded

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CacheStatus:
    root: Path
    started: bool  # cache.json exists: some process got as far as writing its first shard
    digest: str | None
    splits: dict[str, SplitStatus]
    locks: list[dict[str, Any]] = field(default_factory=list)  # writer locks held now (`emo.cache.locks.holders`)

    @property
    def complete(self) -> bool:
        return bool(self.splits) and all(s.complete for s in self.splits.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "started": self.started,
            "fingerprint_digest": self.digest,
            "complete": self.complete,
            "splits": {name: s.to_dict() for name, s in self.splits.items()},
            "locks": self.locks,
        }


def cache_status(root: str | Path, expected: Mapping[str, int] | None = None) -> CacheStatus:
    """The state of every shard of the cache at `root`.

    `expected` maps split names to their shard counts for splits that may have nothing on
    disk yet. A folder that holds nothing but launcher files (or nothing) is a cache not
    started yet; any other folder without `cache.json` is refused like `emo cache info`
    refuses it.
    """
    root = Path(root)
    expected = dict(expected or {})
    if not (root / layout.CACHE_FILE).is_file() and _not_started(root):
        splits = {name: _unstarted_split(name, count) for name, count in expected.items()}
        return CacheStatus(root=root, started=False, digest=None, splits=splits, locks=holders(root))
    meta = read_cache_meta(root)  # the one-sentence refusal for anything that is not a cache
    names = list_splits(root)
    names += [name for name in expected if name not in names]
    splits = {name: _split_status(root, name, meta, expected.get(name)) for name in names}
    digest = meta.get("fingerprint_digest")
    return CacheStatus(root=root, started=True, digest=digest, splits=splits, locks=holders(root))


def _not_started(root: Path) -> bool:
    if not root.is_dir():
        return False
    return all(child.name.startswith(".") or is_launcher_dir(child) for child in root.iterdir())


def _unstarted_split(name: str, count: int) -> SplitStatus:
    return SplitStatus(name=name, shards=count, missing=list(range(count)))


def _split_status(root: Path, name: str, meta: dict[str, Any], expected: int | None) -> SplitStatus:
    """A shard counts as finished when the row table's and every feature set's are."""
    scan = scan_split(root, name, meta)
    parts = [(root / name, scan)] + [
        (layout.set_dir(root, set_name) / name, scan_set_split(root, set_meta, name, meta))
        for set_name, set_meta in list_sets(root).items()
    ]
    finished_sets = [{int(s["shard_index"]) for s in part["shards"]} for _, part in parts]
    finished = sorted(set.intersection(*finished_sets))
    count = scan["expected_shards"] if scan["expected_shards"] is not None else expected
    live: set[int] = set()
    dead: set[int] = set()
    for folder, _ in parts:
        part_live, part_dead = _temporaries(folder)
        live |= part_live
        dead |= part_dead
    unfinished = {u["index"] for _, part in parts for u in part["unfinished_shards"]}
    seen = set(finished) | set(live) | set(dead) | unfinished | set.union(*finished_sets)
    top = int(count) if count is not None else (max(seen) + 1 if seen else 0)
    in_progress = sorted(k for k in live if k not in finished and k < top)
    stale = sorted(k for k in dead if k not in finished and k not in live and k < top)
    taken = set(finished) | set(in_progress) | set(stale)
    # rows of finished shards only: a shard whose row table is written but a set is not is missing
    return SplitStatus(
        name=name,
        shards=int(count) if count is not None else None,
        finished=finished,
        in_progress=in_progress,
        stale=stale,
        missing=[k for k in range(top) if k not in taken],
        rows=sum(int(s["rows"]) for s in scan["shards"] if int(s["shard_index"]) in set(finished)),
        expected_rows=scan["expected_rows"],
        complete=all(bool(part["complete"]) for _, part in parts),
    )


def _temporaries(split_dir: Path) -> tuple[set[int], set[int]]:
    """Shard indices with a temporary whose writer may be alive, and those whose writer on
    this machine is dead."""
    live: set[int] = set()
    dead: set[int] = set()
    if not split_dir.is_dir():
        return live, dead
    host = atomic.this_host()
    for child in split_dir.iterdir():
        parsed = layout.parse_temp_name(child.name)
        if parsed is None:
            continue
        index, writer_host, pid = parsed
        if writer_host == host and not atomic.pid_alive(pid):
            dead.add(index)
        else:
            live.add(index)
    return live, dead


def finish_advice(root: str | Path, split: str) -> str:
    """How to finish an incomplete `split`, worded so that it never races an extraction that
    is still writing it: a live writer, or a SLURM job launched into the cache (only its
    launcher can ask the queue whether it still runs), is named and waited for rather than
    met with "re-run emo extract" (a second writer beside the array)."""
    root = Path(root)
    folders = [root / split, *sorted((root / layout.SETS_DIR).glob(f"*/*/{split}"))]
    live = sorted(set().union(*(_temporaries(folder)[0] for folder in folders)))
    launch = last_launch(root)
    job = launch["title"] if launch else None  # e.g. "SLURM job 12"
    if live:
        shown = ", ".join(str(k) for k in live[:6]) + (f" and {len(live) - 6} more" if len(live) > 6 else "")
        return (
            f"{job or 'an emo extract'} is still writing it (shards {shown} in progress); "
            f"wait for it to end, follow it with `emo cache status {root}`, and run this command again"
        )
    if job:
        return (
            f"{job} was launched into it: while that runs, follow it with `emo cache status {root}` and "
            "run this command once it has ended; if it ended unfinished, run its emo extract command again "
            "(it redoes only the missing shards)"
        )
    return layout.finish_hint(split)
