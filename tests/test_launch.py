"""Launching extraction elsewhere, without a cluster: `emo cache status` (finished, in
progress, stale and missing shards), the launcher's "which shards are missing -> which
tasks to submit", and the usage errors of `--launcher slurm` (tests/test_slurm.py runs
the real thing against a SLURM cluster)."""

from __future__ import annotations

import json
import os
import subprocess


from emo import atomic, cli
from emo.cache import cache_status
from emo.extract.launch import plan_launch, tasks_with_work
from emo.extract.launch.slurm import time_minutes
from extract_fixtures import tiny_bert, tiny_config  # noqa: F401  (session fixture)
from reliability_fixtures import assert_clean_error, child_env, emo_argv, Result, synthetic_feature_cache


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    status = cli.run(cli.app, argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# ------------------------------------------------------------------ which tasks to submit


def test_tasks_with_work_are_the_owners_of_missing_shards():
    # 7 train shards and 2 dev shards over 3 tasks: task i owns shards k with k % 3 == i.
    shards = {"train": 7, "dev": 2}
    assert tasks_with_work(shards, {}, 3) == [0, 1, 2]
    assert tasks_with_work(shards, {"train": range(7), "dev": [0, 1]}, 3) == []
    assert tasks_with_work(shards, {"train": [0, 1, 2, 3, 5, 6], "dev": [0, 1]}, 3) == [1]  # train 4 -> task 1
    assert tasks_with_work(shards, {"train": range(7), "dev": [1]}, 3) == [0]  # dev 0 -> task 0
    assert tasks_with_work(shards, {"train": [0, 3, 6], "dev": [0, 1]}, 3) == [1, 2]
    assert tasks_with_work({"train": 2}, {}, 5) == [0, 1]  # more tasks than shards: the rest have nothing


def test_plan_launch_submits_only_tasks_whose_shards_are_missing(synth_root, tiny_bert, tmp_path):  # noqa: F811
    from emo.extract.pipeline.run import run_extract

    cache = tmp_path / "cache"
    config = tiny_config(synth_root, cache, tiny_bert, None, modalities=("text",), shard_size=4)
    fresh = plan_launch(config, 4)
    assert fresh.tasks == [0, 1, 2, 3] and fresh.expected_shards == {"train": 6} and not fresh.trusted

    run_extract(config)
    assert plan_launch(config, 4).tasks == []  # a finished cache: nothing to submit
    for path in (cache / "train").glob("shard-00005.*"):
        path.unlink()
    plan = plan_launch(config, 4)
    assert plan.trusted and plan.splits["train"].finished == [0, 1, 2, 3, 4]
    assert plan.tasks == [1] and plan.shards_of(1) == {"train": [1, 5]}
    assert plan_launch(config, 3).tasks == [2]

    config.overwrite = True  # every shard is redone, so every task has work
    assert plan_launch(config, 4).tasks == [0, 1, 2, 3]
    config.overwrite = False
    config.context = 1  # another recipe: the cache's shards are not this run's, each task decides
    assert plan_launch(config, 4).tasks == [0, 1, 2, 3]


# ------------------------------------------------------------------------- cache status


def test_cache_status_tells_finished_in_progress_stale_and_missing(tmp_path, capsys):
    cache = synthetic_feature_cache(tmp_path / "cache", splits=("train",), sizes=(160,), shard_rows=32)
    split = cache / "train"
    assert cache_status(cache).splits["train"].finished == [0, 1, 2, 3, 4]
    assert cache_status(cache).complete

    for path in split.glob("shard-00001.*"):  # shard 1 is being rewritten by a live process
        path.unlink()
    (split / f".shard-00001.h5.tmp-{atomic.this_host()}-{os.getpid()}").write_bytes(b"partial")
    for path in split.glob("shard-00002.*"):  # shard 2 was being written by a process that died
        path.unlink()
    dead = _dead_pid()
    (split / f".shard-00002.h5.tmp-{atomic.this_host()}-{dead}").write_bytes(b"partial")
    for path in split.glob("shard-00003.*"):  # shard 3: nothing at all
        path.unlink()
    (split / "shard-00004.json").unlink()  # shard 4: data without its sidecar is not finished

    status = cache_status(cache)
    train = status.splits["train"]
    assert (train.shards, train.finished, train.in_progress, train.stale, train.missing) == (5, [0], [1], [2], [3, 4])
    assert not train.complete and not status.complete and train.rows == 32

    code, out, _ = run(["cache", "status", str(cache)], capsys)
    assert code == 0
    assert "train in progress: shards 1" in out and "train missing: shards 3-4" in out and "stale" in out
    code, out, _ = run(["cache", "status", str(cache), "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["splits"]["train"]["missing"] == [3, 4] and data["complete"] is False


def test_cache_status_before_any_shard_uses_the_launch_record(tmp_path, capsys):
    cache = tmp_path / "cache"
    (cache / "slurm").mkdir(parents=True)  # a launcher submitted, no task has written yet
    status = cache_status(cache, {"train": 3, "dev": 1})
    assert not status.started and status.splits["train"].missing == [0, 1, 2] and not status.complete

    record = {
        "launcher": "slurm",
        "job_id": "42",
        "num_shards": 2,
        "expected_shards": {"train": 3},
        "tasks": {"0": {"id": "42_0", "log": "x"}, "1": {"id": "42_1", "log": "y"}},
    }
    (cache / "slurm" / "launch.json").write_text(json.dumps(record), encoding="utf-8")
    code, out, _ = run(["cache", "status", str(cache)], capsys)
    assert code == 0 and "SLURM job 42" in out and "train missing: shards 0-2" in out
    assert "no task has written a shard yet" in out


def test_a_cache_folder_holding_launcher_logs_is_still_writable(tmp_path):
    """The per-task logs live in CACHE/slurm/ before the first shard; the writer must not
    take that folder for someone else's data."""
    cache = tmp_path / "cache"
    (cache / "slurm").mkdir(parents=True)
    (cache / "slurm" / "1_0_0_log.out").write_text("log", encoding="utf-8")
    synthetic_feature_cache(cache, splits=("train",), sizes=(40,), shard_rows=32)
    assert cache_status(cache).complete and (cache / "slurm" / "1_0_0_log.out").is_file()


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


# ----------------------------------------------------------------------- usage errors


def test_slurm_time_limits_in_slurm_forms():
    assert [time_minutes(t) for t in ("90", "1:30:00", "2-00:00:00", "2-12", "10:30", "0:0:1")] == [
        90,
        90,
        2880,
        3600,
        11,
        1,
    ]


def _emo(*args: str, env: dict | None = None) -> Result:
    done = subprocess.run(emo_argv(*args), capture_output=True, text=True, env=env or child_env(), timeout=120)
    return Result(tuple(args), done.returncode, done.stdout, done.stderr)


def test_launcher_usage_errors_are_one_sentence(synth_root, tmp_path):
    base = ["extract", "--split", "train", "--data-root", str(synth_root), "--cache", str(tmp_path / "c")]
    bare = tmp_path / "bin"
    bare.mkdir()
    no_slurm = child_env(PATH=str(bare))
    assert_clean_error(_emo(*base, "--launcher", "slurm", env=no_slurm), 2, mentions=("sbatch not found",))
    assert_clean_error(_emo(*base, "--launcher", "ray"), 2, mentions=("launcher",))
    assert_clean_error(_emo(*base, "--no-wait"), 2, mentions=("--launcher slurm",))
    assert_clean_error(_emo(*base, "--slurm-partition", "gpu"), 2, mentions=("--launcher slurm",))
    assert_clean_error(
        _emo(*base, "--launcher", "slurm", "--shard-index", "1", "--num-shards", "2"), 2, mentions=("--shard-index",)
    )
    assert_clean_error(
        _emo(*base, "--launcher", "slurm", "--slurm-arg", "account", env=no_slurm), 2, mentions=("key=value",)
    )
    assert_clean_error(
        _emo(*base, "--launcher", "slurm", "--slurm-time", "soon", env=no_slurm), 2, mentions=("--slurm-time",)
    )
    assert not (tmp_path / "c").exists()  # nothing submitted, nothing written


def test_cache_status_of_a_missing_folder_is_a_usage_error(tmp_path):
    assert_clean_error(_emo("cache", "status", str(tmp_path / "nope")), 2, mentions=("does not exist",))
