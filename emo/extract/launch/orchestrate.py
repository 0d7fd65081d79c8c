"""`emo extract --launcher NAME` as one library call: check, plan, submit, follow, add up.

The same steps for every launcher, so a launcher only says where tasks run and how to
watch them. A launcher that runs here (`local`) runs the extraction in this process with
the caller's progress callback. One that runs tasks elsewhere gets the tasks that still
own a missing shard (so re-running the same command resubmits only those), records the
launch in its folder of the cache (`emo.cache.launches`: later commands name the job),
says so through a `Submitted` event in its own words, is followed to its end unless
`wait=False`, and its tasks' summaries are added up. Failures come back in the report as
one sentence for the command to end with, after it has shown what did finish.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from emo.errors import EmoError
from emo.extract.config import ExtractConfig
from emo.extract.launch.base import Launch, Launcher, LaunchPlan, Submitted, TaskFunction
from emo.progress import ProgressCallback, emit
from emo.units import count


@dataclass
class LaunchReport:
    """How a launch ended (or stands, when not followed)."""

    launcher: str
    remote: bool
    cache: Path
    plan: LaunchPlan | None = None
    launch: Launch | None = None
    title: str = ""  # the launcher's name for the launch ("SLURM job 12")
    summary: Any = None  # the `ExtractSummary`: this process's run, or the tasks' added up
    status: Any = None  # the cache's `CacheStatus` once a remote launch ended
    waited: bool = True
    error: str | None = None  # the sentence to end with: a task failed or the cache is incomplete

    @property
    def nothing_to_do(self) -> bool:
        return self.remote and self.plan is not None and self.launch is None

    @property
    def shards(self) -> int:
        return sum(s.shards for s in self.plan.splits.values()) if self.plan else 0

    def raise_for_failure(self) -> None:
        if self.error:
            raise EmoError(self.error)


def run_launch(
    config: ExtractConfig,
    launcher: Launcher,
    task: TaskFunction,
    wait: bool = True,
    progress: ProgressCallback | None = None,
) -> LaunchReport:
    """Run `config`'s extraction through `launcher`; remote tasks run `task` (see `TaskFunction`)."""
    launcher.check()
    report = LaunchReport(launcher.name, launcher.remote, Path(config.cache))
    if not launcher.remote:
        from emo.extract.pipeline.run import run_extract

        launch = launcher.submit(config, launcher.plan(config), partial(run_extract, progress=progress))
        report.launch, report.summary = launch, launch.results[0] if launch.results else None
        return report

    config.validate()
    report.plan = plan = launcher.plan(config)
    if not plan.tasks:
        return report
    report.launch = launch = launcher.submit(config, plan, task)
    report.title = launcher.title(launch)
    if launcher.state_dir:
        _record(launch, plan, report.title, Path(config.cache) / launcher.state_dir)
    emit(progress, Submitted(launcher.submitted(launch, plan)))
    if not wait:
        report.waited = False
        return report
    report.launch = launch = launcher.wait(launch, plan, progress)
    _add_up(report)
    return report


def _record(launch: Launch, plan: LaunchPlan, title: str, folder: Path) -> None:
    from emo.cache.launches import launcher_folder, write_launch

    launcher_folder(folder.parent, folder.name, launch.launcher)
    write_launch(
        folder,
        {
            "launcher": launch.launcher,
            "title": title,
            "job_id": launch.job_id,
            "num_shards": plan.num_tasks,
            "expected_shards": plan.expected_shards,
            "tasks": {
                str(i): {"id": launch.task_ids.get(i, str(i)), "log": str(launch.logs.get(i, ""))} for i in launch.tasks
            },
            "python": sys.executable,
        },
    )


def _add_up(report: LaunchReport) -> None:
    """The tasks' summaries added up, the cache's state, and the sentence to end with."""
    from emo.cache import cache_status
    from emo.extract.pipeline.summary import combine

    launch, plan, title = report.launch, report.plan, report.title
    report.status = status = cache_status(launch.cache, plan.expected_shards)
    report.summary = combine(launch.results, launch.cache, launch.wall_seconds)
    if report.summary is not None:
        for name, split in report.summary.splits.items():
            split.complete = bool(status.splits.get(name) and status.splits[name].complete)
    if launch.failed:
        first = launch.failed[0]
        more = f" and {count(len(launch.failed) - 1, 'more task')}" if len(launch.failed) > 1 else ""
        missing = sum(len(s.missing) + len(s.in_progress) + len(s.stale) for s in status.splits.values())
        why = f"{first.reason}; " if first.reason else ""
        left = f"{count(missing, 'shard')} missing" if missing else "the cache incomplete"
        report.error = (
            f"task {first.index} of {title} ended {first.state}{more} ({why}log: {first.log}), leaving {left}; "
            "fix what its log says if it failed, then re-run the same command to submit only the tasks with work left."
        )
    elif not status.complete:
        report.error = (
            f"{title} ended but {launch.cache} is incomplete; "
            f"see `emo cache status {launch.cache}` and re-run the same command."
        )
