"""The launcher interface and the plan every launcher shares: which tasks still have work.

Kept apart from the package's `__init__` so the implementations (`local`, `slurm`, a
plugin's) import the interface from here and the registry imports them, not the other way
round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Mapping, Protocol

from emo.extract.config import ExtractConfig
from emo.progress import ProgressCallback

# What a remote task runs, given the config of one `--shard-index`: a function importable
# by name on the machine that runs it, returning the task's `ExtractSummary`. The command
# passes its own, which shows the extraction in the task's log (the library never prints).
TaskFunction = Callable[[ExtractConfig], Any]


@dataclass(frozen=True)
class Submitted:
    """A progress event: a remote launcher took the tasks; `text` is its own sentence
    ("Submitted SLURM job 12: 3 tasks ..."), which a command shows with its results."""

    text: str


@dataclass
class SplitPlan:
    name: str
    rows: int
    shards: int
    finished: list[int] = field(default_factory=list)  # shards the cache already holds (trusted)


@dataclass
class LaunchPlan:
    """Which of the `num_tasks` tasks still have a shard to write."""

    num_tasks: int
    splits: dict[str, SplitPlan]
    tasks: list[int]
    trusted: bool  # the cache's fingerprint is certainly this run's, so its finished shards count

    @property
    def expected_shards(self) -> dict[str, int]:
        return {name: split.shards for name, split in self.splits.items()}

    def shards_of(self, task: int) -> dict[str, list[int]]:
        """The shards each split has for `task` (k with k % num_tasks == task)."""
        from emo.extract.pipeline.plan import my_shards

        return {name: my_shards(s.shards, self.num_tasks, task) for name, s in self.splits.items()}


@dataclass
class TaskOutcome:
    """How one task of a launch ended (or stands)."""

    index: int  # the task's --shard-index
    state: str  # the scheduler's word: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ...
    log: Path | None = None  # where its output went
    reason: str = ""  # the task's own last error line, when its log has one

    @property
    def failed(self) -> bool:
        return self.state not in ("PENDING", "RUNNING", "COMPLETED", "COMPLETING", "CONFIGURING")


@dataclass
class Launch:
    """What a launcher started: enough to watch it, print it, or find it again later."""

    launcher: str
    job_id: str
    cache: Path
    tasks: list[int]
    logs: dict[int, Path]  # task index -> its log file
    task_ids: dict[int, str] = field(default_factory=dict)  # task index -> the scheduler's id for it
    result_files: dict[int, Path] = field(default_factory=dict)  # task index -> where its return value lands
    outcomes: dict[int, TaskOutcome] = field(default_factory=dict)
    results: list[Any] = field(default_factory=list)  # what finished tasks returned (their summaries)
    wall_seconds: float = 0.0

    @property
    def failed(self) -> list[TaskOutcome]:
        return [o for o in self.outcomes.values() if o.failed]


class Launcher(Protocol):
    """Runs the tasks of an extraction somewhere and reports on them through events.

    The class attributes are what the registry reads (`emo.extract.launch.registry`); the
    instance is built from the options it declares, `cls(**{option.key: value})`.
    """

    name: ClassVar[str]
    help: ClassVar[str]  # its line in `--launcher`'s help
    remote: ClassVar[bool]  # tasks run elsewhere (their output goes to logs) rather than in this process
    state_dir: ClassVar[str | None]  # its folder in the cache (emo.cache.launches), or None
    options: ClassVar[tuple]  # its command-line options (`LauncherOption`s)

    def check(self) -> None:
        """Raise `emo.errors.UsageError` in one sentence when this launcher cannot work here
        (e.g. `sbatch` not on PATH), before anything is planned or submitted."""

    def plan(self, config: ExtractConfig) -> LaunchPlan:
        """The tasks to run for `config` (a remote launcher: `plan_launch`)."""

    def submit(self, config: ExtractConfig, plan: LaunchPlan, task: TaskFunction) -> Launch:
        """Start the plan's tasks (task i runs `task(config with shard_index=i)`)."""

    def wait(self, launch: Launch, plan: LaunchPlan, progress: ProgressCallback | None) -> Launch:
        """Follow the tasks until none is queued or running; fill `launch.outcomes` and
        `launch.results` (the finished tasks' summaries)."""

    def title(self, launch: Launch) -> str:
        """How a person names the launch, in the launcher's words: "SLURM job 12"."""

    def submitted(self, launch: Launch, plan: LaunchPlan) -> str:
        """The sentence that says the tasks were handed over, and where their logs are."""


def tasks_with_work(shards: Mapping[str, int], finished: Mapping[str, Iterable[int]], num_tasks: int) -> list[int]:
    """The tasks (of `num_tasks`) that own at least one shard not in `finished`.

    `shards` maps each split to its shard count; task i owns shard k iff k % num_tasks == i.
    """
    pending: set[int] = set()
    for split, count in shards.items():
        done = set(finished.get(split, ()))
        pending.update(k % num_tasks for k in range(count) if k not in done)
    return sorted(pending)


def plan_launch(config: ExtractConfig, num_tasks: int, device: str = "cpu") -> LaunchPlan:
    """Which of `num_tasks` tasks have work left in `config.cache`, from the CSVs and the
    cache on disk (no model is loaded).

    Finished shards count only when the cache's fingerprint is certainly this run's
    (`emo.extract.pipeline.plan.held_sets`, with `device` the one the tasks will use: "cpu" or "cuda");
    otherwise every task is submitted and each decides for itself - skipping what is done,
    or refusing a cache made differently in one sentence.
    """
    from emo.extract.pipeline.run import load_splits
    from emo.extract.pipeline.plan import adopt_cache_shard_size, shard_ranges

    config, _ = adopt_cache_shard_size(config)  # each task adopts it too, and says so
    splits = {}
    for split in load_splits(config):
        rows = len(split.utterances)
        splits[split.name] = SplitPlan(split.name, rows, len(shard_ranges(rows, config.shard_size)))
    trusted = False
    if not config.overwrite:
        trusted = _trust_finished(config, splits, device)
    finished = {name: s.finished for name, s in splits.items()}
    tasks = tasks_with_work({n: s.shards for n, s in splits.items()}, finished, num_tasks)
    if trusted and not tasks and not _complete(config, splits):
        tasks = [0]  # every shard is there but a split's plan is not: one task records it
    return LaunchPlan(num_tasks=num_tasks, splits=splits, tasks=tasks, trusted=trusted)


def _trust_finished(config: ExtractConfig, splits: dict[str, SplitPlan], device: str) -> bool:
    """Fill each split's finished shards when the cache is certainly this run's."""
    from emo.cache import cache_status, open_cache
    from emo.errors import CacheError
    from emo.extract.pipeline.plan import held_sets

    root = Path(config.cache)
    if not root.is_dir():
        return False
    try:
        status = cache_status(root, {name: s.shards for name, s in splits.items()})
        if not status.started:
            return False
        info = open_cache(root)
    except CacheError:
        return False  # not a cache: every task will say so
    if held_sets(config, info, device) is None:
        return False  # a set this run adds (or replaces), or doubt: every task decides for itself
    for name, split in splits.items():
        split.finished = [k for k in status.splits[name].finished if k < split.shards]
    return True


def _complete(config: ExtractConfig, splits: dict[str, SplitPlan]) -> bool:
    from emo.cache import cache_status

    status = cache_status(config.cache, {name: s.shards for name, s in splits.items()})
    return all(status.splits[name].complete for name in splits)
