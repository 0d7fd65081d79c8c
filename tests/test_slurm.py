"""`emo extract --launcher slurm` against a real SLURM cluster (ci/slurm/start.sh starts a
single-node one; .ci/run does that before the tests). Skipped with a reason where `sbatch`
is absent or no node takes jobs.

Every run goes through the real CLI in a child process with its output in a file, as a
user's terminal-less log would hold it; the array tasks are real SLURM jobs running
submitit with this interpreter (the venv's python). Small: the session's synthetic split
(24 train clips), text + audio on a tiny BERT, 4 clips per shard, 3 tasks.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from emo.cache import load_split
from extract_fixtures import assert_same_split, tiny_bert, tiny_config  # noqa: F401  (session fixture)
from reliability_fixtures import Result, child_env, emo_argv


def _cluster_up() -> str | None:
    """None when jobs can run here, else why not."""
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        return "sbatch is absent (no SLURM here; ci/slurm/start.sh starts a one-node cluster)"
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        states = []
    if not any(s.rstrip("*~#") in ("idle", "mix", "alloc", "comp") for s in states):
        return f"the SLURM cluster is not up (sinfo node states: {states or 'none'}); run ci/slurm/start.sh"
    return None


pytestmark = [pytest.mark.slurm, pytest.mark.skipif(_cluster_up() is not None, reason=str(_cluster_up()))]

TASKS = "3"
TIMEOUT_S = 240


def extract_argv(root: Path, cache: Path, model: Path, *extra: str, split: str = "train") -> list[str]:
    # --set threads=1 and --workers 0 on both sides: bit-identity needs the same thread counts.
    return [
        "extract",
        "--split",
        split,
        "--data-root",
        str(root),
        "--cache",
        str(cache),
        "--modalities",
        "text,audio",
        "--text-model",
        str(model),
        "--shard-size",
        "4",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--max-duration",
        "2",
        "--set",
        "threads=1",
        "--num-shards",
        TASKS,
        "--launcher",
        "slurm",
        *extra,
    ]


def emo(*args: str, timeout: float = TIMEOUT_S) -> Result:
    """`emo ARGS` with stdout and stderr captured (no terminal), as in a batch log."""
    done = subprocess.run(emo_argv(*args), capture_output=True, text=True, env=child_env(), timeout=timeout)
    return Result(tuple(args), done.returncode, done.stdout, done.stderr)


def job_id(text: str) -> str:
    match = re.search(r"Submitted SLURM job (\d+)", text)
    assert match, text
    return match.group(1)


def queue(job: str) -> dict[str, str]:
    out = subprocess.run(
        ["squeue", "-h", "-r", "-t", "all", "-j", job, "-o", "%i|%T"], capture_output=True, text=True
    ).stdout
    return dict(line.split("|", 1) for line in out.split())


def wait_for(predicate, timeout: float = TIMEOUT_S, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def reference(synth_root, tiny_bert, tmp_path_factory):  # noqa: F811
    """The same extraction in one process (the in-process run_extract)."""
    from emo.extract.pipeline.run import run_extract

    cache = tmp_path_factory.mktemp("slurm-ref") / "cache"
    config = tiny_config(
        synth_root, cache, tiny_bert, None, modalities=("text", "audio"), split="all", shard_size=4, max_duration=2.0
    )
    run_extract(config)
    return cache


def test_array_of_three_tasks_equals_a_single_process_run(synth_root, tiny_bert, reference, tmp_path):  # noqa: F811
    cache = tmp_path / "cache"
    started = time.monotonic()
    result = emo(*extract_argv(synth_root, cache, tiny_bert))
    assert result.returncode == 0, result.describe()
    assert "Submitted SLURM job" in result.stdout and "3 tasks (--shard-index 0-2 of --num-shards 3)" in result.stdout
    # One display for the whole array, as plain lines (no terminal), then the usual summary.
    assert re.search(r"SLURM job \d+: done, 3 tasks in .*all completed", result.stderr), result.describe()
    assert "train shards: done, 6 shards" in result.stderr and "Time per stage" in result.stdout
    assert f"{cache} is complete (train: 6 shards)" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    logs = sorted((cache / "slurm").glob("*_log.out"))
    assert len(logs) == 3 and all("Loading the encoders" in p.read_text() for p in logs)
    assert_same_split(load_split(reference, "train"), load_split(cache, "train"))

    again = emo(*extract_argv(synth_root, cache, tiny_bert))
    assert again.returncode == 0 and "nothing to do: all 6 shards are already in" in again.stdout, again.describe()
    print(f"3-task array: {time.monotonic() - started:.1f} s")


def test_a_cancelled_task_is_reported_and_a_rerun_completes_the_cache(
    synth_root,
    tiny_bert,
    reference,
    tmp_path,  # noqa: F811
):
    cache = tmp_path / "cache"
    log = tmp_path / "extract.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            emo_argv(*extract_argv(synth_root, cache, tiny_bert)), stdout=out, stderr=subprocess.STDOUT, env=child_env()
        )
    try:
        wait_for(lambda: "Submitted SLURM job" in log.read_text(), what="the submission")
        job = job_id(log.read_text())
        wait_for(lambda: queue(job).get(f"{job}_1") == "RUNNING", what=f"task {job}_1 to run")
        subprocess.run(["scancel", f"{job}_1"], check=True)
        assert process.wait(timeout=TIMEOUT_S) == 1
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    task_log = cache / "slurm" / f"{job}_1_0_log.out"
    assert task_log.is_file()
    assert f"task 1 (--shard-index 1) of SLURM job {job} ended CANCELLED" in text and str(task_log) in text, text
    error = [line for line in text.splitlines() if line.startswith("emo: error:")]
    assert len(error) == 1 and "CANCELLED" in error[0] and str(task_log) in error[0], text
    assert "re-run the same command" in error[0] and "Traceback" not in text

    status = emo("cache", "status", str(cache))
    assert status.returncode == 0 and "train missing: shards 1, 4" in status.stdout, status.describe()

    rerun = emo(*extract_argv(synth_root, cache, tiny_bert))
    assert rerun.returncode == 0, rerun.describe()
    assert "1 task (--shard-index 1 of --num-shards 3)" in rerun.stdout, rerun.describe()
    assert_same_split(load_split(reference, "train"), load_split(cache, "train"))


def test_no_wait_then_status_shows_progress_and_fit_waits_for_the_whole_cache(
    synth_root,
    tiny_bert,
    reference,
    tmp_path,  # noqa: F811
):
    cache = tmp_path / "cache"
    started = time.monotonic()
    submitted = emo(*extract_argv(synth_root, cache, tiny_bert, "--no-wait", split="all"))
    assert submitted.returncode == 0, submitted.describe()
    assert time.monotonic() - started < 30
    assert f"emo cache status {cache}" in submitted.stdout
    job = job_id(submitted.stdout)

    status = emo("cache", "status", str(cache))
    assert status.returncode == 0 and f"SLURM job {job}" in status.stdout, status.describe()
    assert "train" in status.stdout and "dev" in status.stdout and "missing" in status.stdout
    refused = emo(
        "fit",
        "--cache",
        str(cache),
        "--out",
        str(tmp_path / "run"),
        "--modalities",
        "text,audio",
        "--epochs",
        "1",
        "--device",
        "cpu",
    )
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.describe()
    # Defect 9 of issue 18: the running array is named and followed, never raced by a second extract.
    assert re.search(r"is incomplete", refused.stderr), refused.describe()
    assert f"SLURM job {job}" in refused.stderr and f"emo cache status {cache}" in refused.stderr, refused.describe()
    assert "--num-shards" not in refused.stderr and "not an emo feature cache" not in refused.stderr, refused.describe()

    active = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING")
    wait_for(lambda: queue(job) and not any(s in active for s in queue(job).values()), what=f"job {job}")
    assert set(queue(job).values()) == {"COMPLETED"}, queue(job)
    done = emo("cache", "status", str(cache), "--json")
    assert done.returncode == 0 and '"complete": true' in done.stdout, done.describe()
    for split in ("train", "dev", "test"):
        assert_same_split(load_split(reference, split), load_split(cache, split))
    fitted = emo(
        "fit",
        "--cache",
        str(cache),
        "--out",
        str(tmp_path / "run"),
        "--modalities",
        "text,audio",
        "--epochs",
        "1",
        "--device",
        "cpu",
    )
    assert fitted.returncode == 0, fitted.describe()


def test_the_plain_sbatch_template_is_accepted_by_a_cpu_cluster(repo_root):
    """configs/extract-array.sbatch asks for nothing a CPU-only cluster lacks (GPU lines are
    opt-in): sbatch --test-only validates it against this cluster without running it. CPUs
    and memory are scaled down on the command line to this 2-core test node's size; every
    other directive is the template's own."""
    done = subprocess.run(
        [
            "sbatch",
            "--test-only",
            "--cpus-per-task=1",
            "--mem=512M",
            str(repo_root / "configs" / "extract-array.sbatch"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=repo_root,
    )
    assert done.returncode == 0, done.stderr
    assert "to start at" in (done.stdout + done.stderr)
