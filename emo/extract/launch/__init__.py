"""Where an extraction runs: in this process, or as tasks of a cluster's scheduler.

The work is always the same. With `--num-shards N` it is N tasks, task i being the
`--shard-index i` run of `run_extract` (`emo.extract.pipeline.plan`: disjoint shards whose union is
one single-process run; a task skips the shards already finished). A launcher decides
only where the tasks run and how their progress comes back, through `emo.progress`
events like everything else in the library:

- `local` (`emo.extract.launch.local`): the one task this process's config names, in this
  process - `emo extract` as it always was;
- `slurm` (`emo.extract.launch.slurm`): one SLURM job array submitted through submitit,
  watched through the cache on disk and `squeue`.

Launchers are a registry (`emo.extract.launch.registry`): another backend (Ray, Kubernetes)
is one module with the `Launcher` methods, its options and its words, registered with
`@register_launcher`. `orchestrate.run_launch` is the one way a launch runs, whatever the
launcher; `plan_launch` is shared by all that run tasks elsewhere: it reads the cache to
find which tasks still have work, so re-running the same command submits only those.
"""

from __future__ import annotations

from emo.extract.launch.base import (  # noqa: F401  (the package's public names)
    Launch,
    Launcher,
    LaunchPlan,
    SplitPlan,
    Submitted,
    TaskFunction,
    TaskOutcome,
    plan_launch,
    tasks_with_work,
)
from emo.extract.launch.registry import LauncherOption, launchers, make_launcher, register_launcher  # noqa: F401
