"""A launcher in one file: what adding a launcher takes (README, "Adding a launcher").

`EMO_PLUGINS=tests/toy_launcher.py emo extract ... --launcher toy --num-shards 2` runs the
tasks that still own a missing shard one after another in this process, each as a
scheduler's node would (its output in its own log, `CACHE/toy/<job>-<task>.log`), and
`emo extract` follows, adds up and reports them as it does a SLURM array. Its option
`--toy-order` appears in `emo extract -h` from the declaration below.
"""

from __future__ import annotations

import dataclasses
import os
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from emo.cache.launches import launcher_folder
from emo.errors import UsageError
from emo.extract.launch import Launch, LaunchPlan, TaskOutcome, plan_launch
from emo.extract.launch.registry import LauncherOption, register_launcher
from emo.progress import TaskAdvanced, TaskFinished, TaskStarted, emit
from emo.units import count, index_ranges


@register_launcher
class ToyLauncher:
    name = "toy"
    help = "each task in turn in this process, logs in CACHE/toy/ (a test launcher)"
    remote = True
    state_dir = "toy"
    options = (LauncherOption("--toy-order", "order", "forward or reverse: the order the toy runs its tasks in."),)

    def __init__(self, order: str = "forward") -> None:
        self.order = order

    def check(self) -> None:
        if self.order not in ("forward", "reverse"):
            raise UsageError(f"--toy-order must be forward or reverse; got {self.order!r}.")

    def plan(self, config) -> LaunchPlan:
        return plan_launch(config, config.num_shards)

    def submit(self, config, plan: LaunchPlan, task) -> Launch:
        """Run every task now (a real scheduler would start them and return)."""
        folder = launcher_folder(config.cache, self.state_dir, self.name)
        job = str(os.getpid())
        launch = Launch(self.name, job, Path(config.cache), list(plan.tasks), logs={}, task_ids={})
        started = time.perf_counter()
        for index in sorted(plan.tasks, reverse=self.order == "reverse"):
            launch.logs[index] = log = folder / f"{job}-{index}.log"
            launch.task_ids[index] = f"{job}-{index}"
            with open(log, "w", encoding="utf-8") as out, redirect_stdout(out), redirect_stderr(out):
                try:
                    summary = task(dataclasses.replace(config, num_shards=plan.num_tasks, shard_index=index))
                    state = "COMPLETED"
                except SystemExit:  # the task said why in its log
                    summary, state = None, "FAILED"
            launch.outcomes[index] = TaskOutcome(index, state, log)
            if summary is not None:
                launch.results.append(summary)
        launch.wall_seconds = time.perf_counter() - started
        return launch

    def wait(self, launch: Launch, plan: LaunchPlan, progress) -> Launch:
        emit(progress, TaskStarted("toy", self.title(launch), total=len(launch.tasks), unit="tasks"))
        emit(progress, TaskAdvanced("toy", completed=len(launch.outcomes)))
        emit(progress, TaskFinished("toy", detail=f"{len(launch.failed)} failed" if launch.failed else "all completed"))
        return launch

    def title(self, launch: Launch) -> str:
        return f"toy launch {launch.job_id}"

    def submitted(self, launch: Launch, plan: LaunchPlan) -> str:
        return (
            f"Ran toy launch {launch.job_id}: {count(len(launch.tasks), 'task')} (--shard-index "
            f"{index_ranges(launch.tasks, sep=',')} of --num-shards {plan.num_tasks}); logs in "
            f"{Path(launch.cache) / self.state_dir}/."
        )
