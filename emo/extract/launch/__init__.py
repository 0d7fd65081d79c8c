"""Where an extraction runs: in this process, or as tasks of a cluster's scheduler.

The work is always the same. With `--num-shards N` it is N tasks, task i being the
`--shard-index i` run of `run_extract` (`emo.extract.plan`: disjoint shards whose union is
one single-process run; a task skips the shards already finished). A launcher decides
only where the tasks run and how their progress comes back, through `emo.progress`
events like everything else in the library:

- `local` (`emo.extract.launch.local`): the one task this process's config names, in this
  process - `emo extract` as it always was;
- `slurm` (`emo.extract.launch.slurm`): one SLURM job array submitted through submitit,
  watched through the cache on disk and `squeue`.

Another backend (Ray, Kubernetes) is one more module with the `Launcher` methods and a
name in `LAUNCHERS`. `plan_launch` is shared by all that run tasks elsewhere: it reads
the cache to find which tasks still have work, so re-running the same command submits
only those.
"""

from __future__ import annotations

from typing import Any

from emo.extract.launch.base import (  # noqa: F401  (the package's public names)
    LAUNCHERS,
    Launch,
    Launcher,
    LaunchPlan,
    SplitPlan,
    TaskFunction,
    TaskOutcome,
    plan_launch,
    tasks_with_work,
)


def get_launcher(name: str, **options: Any) -> Launcher:
    """The launcher called `name`, built with its own options (e.g. `SlurmOptions` fields)."""
    from emo.errors import UsageError

    if name == "local":
        from emo.extract.launch.local import LocalLauncher

        return LocalLauncher()
    if name == "slurm":
        from emo.extract.launch.slurm import SlurmLauncher, SlurmOptions

        return SlurmLauncher(SlurmOptions(**options))
    raise UsageError(f"Unknown launcher '{name}'; use one of {', '.join(LAUNCHERS)}.")
