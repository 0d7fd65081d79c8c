"""`--launcher local` (the default): the task this process's config names, run right here.

This is `emo extract` as it always was: `--shard-index i` of `--num-shards N` (by default
the one task of one), in this process, its progress going to this process's callback.
"""

from __future__ import annotations

import time

from emo.extract.config import ExtractConfig
from emo.extract.launch.base import Launch, LaunchPlan, TaskFunction, TaskOutcome
from emo.extract.launch.registry import register_launcher
from emo.progress import ProgressCallback


@register_launcher
class LocalLauncher:
    name = "local"
    help = "run here"
    remote = False
    state_dir = None
    options = ()

    def check(self) -> None:
        """Always usable."""

    def plan(self, config: ExtractConfig) -> LaunchPlan:
        # The task itself skips finished shards and reports "nothing to do"; reading the
        # cache here as well would only repeat that.
        return LaunchPlan(num_tasks=config.num_shards, splits={}, tasks=[config.shard_index], trusted=False)

    def submit(self, config: ExtractConfig, plan: LaunchPlan, task: TaskFunction) -> Launch:
        """Run the task now, in this process; its exceptions are the caller's."""
        started = time.perf_counter()
        result = task(config)
        index = config.shard_index
        return Launch(
            launcher=self.name,
            job_id=f"local-{index}",
            cache=config.cache,
            tasks=[index],
            logs={},
            outcomes={index: TaskOutcome(index, "COMPLETED")},
            results=[result],
            wall_seconds=time.perf_counter() - started,
        )

    def wait(self, launch: Launch, plan: LaunchPlan, progress: ProgressCallback | None) -> Launch:
        return launch  # finished when `submit` returned

    def title(self, launch: Launch) -> str:
        return f"the extraction of --shard-index {launch.tasks[0]}"

    def submitted(self, launch: Launch, plan: LaunchPlan) -> str:
        return ""  # nothing was handed over: it ran here
