"""`--launcher slurm`: the extraction as one SLURM job array, submitted through submitit.

Array element j runs task `plan.tasks[j]`: the `--shard-index` of that number out of
`--num-shards N` (on a first run the whole range, element i = task i; a re-run submits
only the tasks that still own a missing shard). submitit pickles the task function and
its config and runs them with this interpreter (`sys.executable`: a venv's python stays a
venv's python on the nodes), so the cluster needs the same install on a shared path.

Everything of a launch lives in the cache folder, on the filesystem the tasks share:
`CACHE/slurm/` holds submitit's job files, one log per task (`<job>_<task>_0_log.out`,
stdout and stderr together), each task's JSON summary and `launch.json`, the last launch
(`emo.cache.launches`), so a later `emo extract` refuses to submit a second array over a
running one and `emo cache status` can be read against it.

This module is the whole of the launcher: its options (`OPTIONS`, which `emo extract`
offers as `--slurm-time` and so on), its words ("Submitted SLURM job 12") and its folder.

Watching needs no accounting database: progress is the cache itself (finished shards per
split, `emo.cache.cache_status`) and the tasks' states come from `squeue --states=all`,
which keeps finished jobs for `MinJobAge` (300 s by default). A task that has left even
that is judged by its JSON summary file and its log.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from emo.errors import EmoError, UsageError
from emo.extract.config import ExtractConfig
from emo.extract.launch.base import Launch, LaunchPlan, TaskFunction, TaskOutcome, plan_launch
from emo.extract.launch.registry import LauncherOption, register_launcher
from emo.progress import Message, ProgressCallback, TaskAdvanced, TaskFinished, TaskStarted, emit
from emo.units import count, index_ranges

LAUNCHER_DIR = "slurm"  # inside the cache, marked as a launcher's folder (emo.cache.launches)
OPTIONS = (
    LauncherOption("--slurm-partition", "partition", "SLURM partition for the tasks."),
    LauncherOption("--slurm-time", "time", "Time limit per task, e.g. 90 or 4:00:00. (default: the partition's)"),
    LauncherOption("--slurm-mem", "mem", "Memory per task's node, e.g. 16G."),
    LauncherOption("--cpus-per-task", "cpus_per_task", "CPUs per SLURM task.", int),
    LauncherOption("--gpus-per-task", "gpus_per_task", "GPUs per SLURM task.", int),
    LauncherOption("--array-parallelism", "array_parallelism", "SLURM tasks running at once. (default: all)", int),
    LauncherOption(
        "--slurm-arg",
        "extra",
        "Any other sbatch option: --slurm-arg key=value (repeatable), e.g. account=lab.",
        pairs=True,
        example="account=lab",
    ),
)
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED", "STAGE_OUT")
_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


@dataclass
class SlurmOptions:
    partition: str | None = None
    time: str | None = None  # SLURM's own forms: minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]
    mem: str | None = None  # per node, e.g. 16G
    cpus_per_task: int | None = None
    gpus_per_task: int | None = None
    array_parallelism: int | None = None  # tasks running at once (the array's %N)
    extra: dict[str, str] = field(default_factory=dict)  # any other sbatch option, name -> value
    poll_s: float = 2.0  # seconds between looks at the queue and the cache while waiting

    def validate(self) -> None:
        if self.time is not None:
            time_minutes(self.time)
        for name in ("cpus_per_task", "gpus_per_task", "array_parallelism"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "gpus_per_task" else 1):
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} must be at least {0 if name == 'gpus_per_task' else 1}, got {value}.")


def time_minutes(text: str) -> int:
    """Minutes in a SLURM time limit (`90`, `1:30:00`, `2-00:00:00`, `2-12`), rounded up."""
    match = _TIME_RE.match(str(text).strip())
    if not match:
        raise UsageError(f"--slurm-time '{text}' is not a SLURM time limit; use minutes, HH:MM:SS or D-HH:MM:SS.")
    days, a, b, c = match.groups()
    parts = [int(a)] + [int(x) for x in (b, c) if x is not None]
    if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = (parts + [0, 0])[:3]
        total = int(days) * 1440 + hours * 60 + minutes + (seconds > 0)
    elif len(parts) == 1:  # minutes
        total = parts[0]
    elif len(parts) == 2:  # MM:SS
        total = parts[0] + (parts[1] > 0)
    else:  # HH:MM:SS
        total = parts[0] * 60 + parts[1] + (parts[2] > 0)
    return max(total, 1)


@register_launcher
class SlurmLauncher:
    name = "slurm"
    help = "a SLURM job array of --num-shards tasks"
    remote = True
    state_dir = LAUNCHER_DIR
    options = OPTIONS

    def __init__(self, **options) -> None:
        self.options = SlurmOptions(**options)

    # -- before submitting -------------------------------------------------------------

    def check(self) -> None:
        self.options.validate()
        for tool in ("sbatch", "squeue"):
            if shutil.which(tool) is None:
                raise UsageError(
                    f"{tool} not found; run this on a SLURM login node (or add SLURM's bin folder to PATH), "
                    "or use --launcher local."
                )
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise UsageError("submitit is not installed; install it with `pip install submitit`.") from None

    def plan(self, config: ExtractConfig) -> LaunchPlan:
        self._refuse_if_running(Path(config.cache))
        return plan_launch(config, config.num_shards, device=self._device(config))

    def _device(self, config: ExtractConfig) -> str:
        """The device the tasks will run on, as far as the request says."""
        if config.device.startswith("cuda") or (config.device == "auto" and (self.options.gpus_per_task or 0) > 0):
            return "cuda"
        return "cpu"

    def _refuse_if_running(self, cache: Path) -> None:
        from emo.cache.launches import read_launch

        record = read_launch(cache / LAUNCHER_DIR)
        if not record:
            return
        states = queue_states(str(record["job_id"]))
        active = [s for s in states.values() if s in ACTIVE]
        if active:
            job = record["job_id"]
            raise EmoError(
                f"SLURM job {job} is still extracting into {cache} ({count(len(active), 'task')} queued or running); "
                f"follow it with `emo cache status {cache}` or cancel it with `scancel {job}` before submitting again."
            )

    # -- submitting --------------------------------------------------------------------

    def submit(self, config: ExtractConfig, plan: LaunchPlan, task: TaskFunction) -> Launch:
        import submitit

        from emo.cache.launches import launcher_folder

        folder = launcher_folder(config.cache, LAUNCHER_DIR, self.name)
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
        executor.update_parameters(**self._parameters(len(plan.tasks)))
        configs = [dataclasses.replace(config, num_shards=plan.num_tasks, shard_index=i) for i in plan.tasks]
        started = time.perf_counter()
        try:
            jobs = executor.map_array(SummaryWritingTask(task), configs)
        except Exception as error:  # noqa: BLE001 - sbatch's refusal, in its own words
            message = " ".join(str(error).split())[-300:].rstrip(".")
            raise EmoError(f"sbatch refused the job array ({message}).") from None
        logs = {i: Path(job.paths.stdout) for i, job in zip(plan.tasks, jobs)}
        launch = Launch(
            launcher=self.name,
            job_id=str(jobs[0].job_id).split("_")[0],
            cache=Path(config.cache),
            tasks=list(plan.tasks),
            logs=logs,
            task_ids={i: str(job.job_id) for i, job in zip(plan.tasks, jobs)},
            result_files={i: result_path(Path(config.cache), str(job.job_id)) for i, job in zip(plan.tasks, jobs)},
            wall_seconds=time.perf_counter() - started,
        )
        return launch

    def title(self, launch: Launch) -> str:
        return f"SLURM job {launch.job_id}"

    def submitted(self, launch: Launch, plan: LaunchPlan) -> str:
        tasks = index_ranges(launch.tasks, sep=",")
        return (
            f"Submitted SLURM job {launch.job_id}: {count(len(launch.tasks), 'task')} (--shard-index {tasks} of "
            f"--num-shards {plan.num_tasks}); logs in {Path(launch.cache) / LAUNCHER_DIR}/."
        )

    def _parameters(self, n_tasks: int) -> dict:
        o = self.options
        params: dict = {
            "job_name": "emo-extract",
            "time": time_minutes(o.time) if o.time is not None else None,
            "stderr_to_stdout": True,
            "additional_parameters": dict(o.extra),
        }
        if o.time is not None:
            params["additional_parameters"].setdefault("time", o.time)  # SLURM's own words
        for key in ("partition", "mem", "cpus_per_task", "gpus_per_task"):
            if getattr(o, key) is not None:
                params[key] = getattr(o, key)
        params["array_parallelism"] = o.array_parallelism or max(n_tasks, 1)
        return params

    # -- watching ----------------------------------------------------------------------

    def wait(self, launch: Launch, plan: LaunchPlan, progress: ProgressCallback | None) -> Launch:
        from emo.cache import cache_status

        started = time.perf_counter()
        expected = plan.expected_shards
        emit(progress, TaskStarted("slurm:tasks", self.title(launch), total=len(launch.tasks), unit="tasks"))
        for name, shards in expected.items():
            emit(progress, TaskStarted(f"slurm:{name}", f"{name} shards", total=shards, unit="shards"))
        reported: set[int] = set()
        while True:
            outcomes = self._outcomes(launch)
            status = cache_status(launch.cache, expected)
            tally = {k: sum(1 for o in outcomes.values() if k(o)) for k in (_running, _pending, _failed, _ended)}
            detail = f"{tally[_running]} running, {tally[_pending]} pending, {tally[_failed]} failed"
            emit(progress, TaskAdvanced("slurm:tasks", completed=tally[_ended], detail=detail))
            for name in expected:
                split = status.splits.get(name)
                emit(progress, TaskAdvanced(f"slurm:{name}", completed=len(split.finished) if split else 0))
            for index, outcome in outcomes.items():
                if outcome.failed and index not in reported:
                    reported.add(index)
                    emit(progress, Message(describe_failure(launch, outcome), level="warning"))
            if tally[_ended] == len(outcomes):
                break
            time.sleep(self.options.poll_s)
        launch.outcomes = outcomes
        launch.results = [r for r in (_result(launch, i) for i in launch.tasks) if r is not None]
        launch.wall_seconds += time.perf_counter() - started
        failed = len(launch.failed)
        emit(progress, TaskFinished("slurm:tasks", detail=f"{failed} failed" if failed else "all completed"))
        for name in expected:
            split = status.splits.get(name)
            done = "complete" if split and split.complete else "incomplete"
            emit(progress, TaskFinished(f"slurm:{name}", detail=done))
        return launch

    def _outcomes(self, launch: Launch) -> dict[int, TaskOutcome]:
        states = queue_states(launch.job_id)
        outcomes = {}
        for index in launch.tasks:
            state = states.get(launch.task_ids[index]) or self._state_after_queue(launch, index)
            outcome = TaskOutcome(index, state, launch.logs.get(index))
            if outcome.failed:
                outcome.reason = last_error(outcome.log)
            outcomes[index] = outcome
        return outcomes

    @staticmethod
    def _state_after_queue(launch: Launch, index: int) -> str:
        """The end state of a task `squeue` no longer lists, from its result and log files."""
        result = launch.result_files[index]
        if result.is_file():
            return "COMPLETED" if _load_result(result) is not None else "FAILED"
        log = launch.logs.get(index)
        text = _tail(log) if log else ""
        if "CANCELLED" in text:
            return "CANCELLED"
        if "DUE TO TIME LIMIT" in text:
            return "TIMEOUT"
        return "PENDING" if not log or not log.exists() else "FAILED"


def _running(o: TaskOutcome) -> bool:
    return o.state in ("RUNNING", "COMPLETING", "CONFIGURING")


def _pending(o: TaskOutcome) -> bool:
    return o.state in ("PENDING", "REQUEUED", "SUSPENDED")


def _failed(o: TaskOutcome) -> bool:
    return o.failed


def _ended(o: TaskOutcome) -> bool:
    return o.state not in ACTIVE


def describe_failure(launch: Launch, outcome: TaskOutcome) -> str:
    """'task 1 of job 12 was CANCELLED (...); its log: CACHE/slurm/12_1_0_log.out'."""
    reason = f" ({outcome.reason})" if outcome.reason else ""
    return (
        f"task {outcome.index} (--shard-index {outcome.index}) of SLURM job {launch.job_id} ended "
        f"{outcome.state}{reason}; log: {outcome.log}"
    )


def queue_states(job_id: str) -> dict[str, str]:
    """{'12_0': 'RUNNING', ...} for every element of job `job_id` squeue still knows."""
    try:
        result = subprocess.run(
            # -h no header, -r one line per array element, -t all: also recently finished ones
            ["squeue", "-h", "-r", "-t", "all", "-j", str(job_id), "-o", "%i|%T"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    states = {}
    for line in result.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        if job and state:
            states[job] = state.strip()
    return states


def last_error(log: Path | None) -> str:
    """The task's own one-sentence error (`emo: error: ...`), or SLURM's note of its end."""
    text = _tail(log) if log else ""
    for line in reversed(text.splitlines()):
        if line.startswith("emo: error:"):
            return line[len("emo: error:") :].strip().rstrip(".")
        if "***" in line and "CANCELLED AT" in line:  # slurmstepd: *** JOB 12 ON node CANCELLED AT <time> ... ***
            when = line.split("CANCELLED AT", 1)[1].split("***")[0].strip()
            return f"at {when}" if "TIME LIMIT" not in when else "it reached its --slurm-time limit"
    return ""


def _tail(path: Path, size: int = 16384) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def result_path(cache: Path, task_id: str) -> Path:
    """Where array task `task_id` (`JOB_INDEX`) leaves its summary: JSON, never a pickle, so
    reading a launch's results cannot run code someone left in the cache folder."""
    return cache / LAUNCHER_DIR / f"{task_id}.summary.json"


@dataclass(frozen=True)
class SummaryWritingTask:
    """What an array element runs: the caller's task, then its summary written as JSON beside
    the task's log (SLURM tells the node its job and index), so the launch can add the tasks'
    summaries up without unpickling anything; submitit's own pickle of the result is None."""

    task: TaskFunction

    def __call__(self, config: ExtractConfig) -> None:
        summary = self.task(config)
        job, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        if summary is None or not job or index is None:
            return None
        from emo import atomic
        from emo.extract.pipeline.summary import summary_to_dict

        atomic.write_json(result_path(Path(summary.cache), f"{job}_{index}"), summary_to_dict(summary))
        return None


def _load_result(path: Path):
    from emo.extract.pipeline.summary import summary_from_dict

    try:
        return summary_from_dict(json.loads(path.read_text(encoding="utf-8")))
    except Exception:  # noqa: BLE001 - a half-written or foreign file is no result
        return None


def _result(launch: Launch, index: int):
    return _load_result(launch.result_files[index])
