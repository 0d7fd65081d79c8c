"""`emo extract --launcher NAME`: hand the extraction to a launcher, follow it, print the end.

The launchers (`emo.extract.launch`) plan, submit and watch; this module only chooses what
each task runs and shows what comes back: one progress display for the whole array
(tasks running, pending and failed; finished shards per split), each failed task with its
log, then the usual end-of-run tables summed over the tasks.
"""

from __future__ import annotations

import sys

from emo.commands.output import ProgressView, count, index_ranges, make_console
from emo.errors import EmoError


def run_array_task(config):
    """What one task of a remote launch runs, on its node: the `--shard-index` extraction,
    shown as in a batch log (its output is the task's log file). A user's error ends in
    one `emo: error:` line and the CLI's exit status, not a traceback; the summary is
    written as JSON beside the task's log so the launch can add the tasks' summaries up."""
    from emo.commands.extract import extract_and_report
    from emo.extract.launch.slurm import write_task_summary

    try:
        summary = extract_and_report(config)
        write_task_summary(summary)
        return None  # the summary travels as JSON (above), not through submitit's pickle
    except EmoError as error:
        print(f"emo: error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(error.exit_code) from None


def launch_and_report(config, launcher_name: str, options: dict, wait: bool = True, console=None):
    """Run `config` through the launcher `launcher_name`; returns the `Launch`."""
    from emo.commands.extract import extract_and_report
    from emo.extract.launch import get_launcher

    launcher = get_launcher(launcher_name, **options)
    launcher.check()
    if not launcher.remote:  # runs here and shows itself, as `emo extract` always did
        return launcher.submit(config, launcher.plan(config), extract_and_report)

    config.validate()
    console = console or make_console(highlight=False)
    plan = launcher.plan(config)
    if not plan.tasks:
        shards = sum(s.shards for s in plan.splits.values())
        console.print(f"nothing to do: all {count(shards, 'shard')} are already in {config.cache}.", highlight=False)
        return None
    launch = launcher.submit(config, plan, run_array_task)
    tasks = index_ranges(launch.tasks, sep=",")
    console.print(
        f"Submitted SLURM job {launch.job_id}: {count(len(launch.tasks), 'task')} (--shard-index {tasks} of "
        f"--num-shards {plan.num_tasks}); logs in {launch.cache / 'slurm'}/.",
        highlight=False,
    )
    if not wait:
        console.print(f"Follow it with: emo cache status {config.cache}", highlight=False)
        return launch
    with ProgressView(make_console(stderr=True)) as view:
        launch = launcher.wait(launch, plan, view)
    _report(launch, plan, console)
    return launch


def _report(launch, plan, console) -> None:
    from emo.cache import cache_status
    from emo.commands.extract import print_summary
    from emo.extract.summary import combine

    status = cache_status(launch.cache, plan.expected_shards)
    summary = combine(launch.results, launch.cache, launch.wall_seconds)
    if summary is not None:
        for name, split in summary.splits.items():
            split.complete = bool(status.splits.get(name) and status.splits[name].complete)
        print_summary(summary, console)
    for outcome in launch.failed:
        console.print(f"task {outcome.index} {outcome.state}: {outcome.log}", highlight=False)
    if launch.failed:
        first = launch.failed[0]
        more = f" and {count(len(launch.failed) - 1, 'more task')}" if len(launch.failed) > 1 else ""
        missing = sum(len(s.missing) + len(s.in_progress) + len(s.stale) for s in status.splits.values())
        why = f"{first.reason}; " if first.reason else ""
        left = f"{count(missing, 'shard')} missing" if missing else "the cache incomplete"
        raise EmoError(
            f"task {first.index} of SLURM job {launch.job_id} ended {first.state}{more} ({why}log: {first.log}), "
            f"leaving {left}; fix what its log says if it failed, then re-run the same command to submit only the "
            "tasks with work left."
        )
    if not status.complete:
        raise EmoError(
            f"SLURM job {launch.job_id} ended but {launch.cache} is incomplete; "
            f"see `emo cache status {launch.cache}` and re-run the same command."
        )
    console.print(f"{launch.cache} is complete ({_splits(status)}).", highlight=False)


def _splits(status) -> str:
    return ", ".join(f"{name}: {count(len(s.finished), 'shard')}" for name, s in status.splits.items())
