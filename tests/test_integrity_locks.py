"""Issue 18, writer locks: two `emo extract` runs that would write one feature set with
different settings (or the same shards twice) never both run - the second is refused in one
sentence naming the holder - while the tasks of one SLURM-style array (same settings,
disjoint `--shard-index`) write one set side by side. A dead holder's lock is taken over,
by exactly one of several takers. Real `emo extract` child processes; the lock module's own
races with real processes (multiprocessing, spawned).
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import time
from pathlib import Path

import pytest

from emo.atomic import this_host
from emo.cache import locks
from emo.errors import CacheError

SET = "audio/mel"


# -- processes for the lock module's races (module level: spawned children import them) -----


def _try_lock(root: str, digest: str, scope: tuple, barrier, results, done) -> None:
    barrier.wait()
    try:
        held = locks.acquire(Path(root), {SET: digest}, locks.Scope(*scope))
    except CacheError as error:
        results.put(("refused", os.getpid(), str(error)))
        return
    results.put(("won", os.getpid(), ""))
    done.wait(120)  # hold it until every other taker has tried
    held.release()


def _die_holding(root: str, digest: str, scope: tuple) -> None:
    locks.acquire(Path(root), {SET: digest}, locks.Scope(*scope))
    os._exit(0)  # no release, no cleanup: a killed writer


def _die_holding_the_mutex(root: str) -> None:
    folder = locks.lock_folder(Path(root), SET)
    folder.mkdir(parents=True, exist_ok=True)
    locks._create(folder / locks._MUTEX, {"host": this_host(), "pid": os.getpid(), "nonce": "dead"})
    os._exit(0)


def _run(target, *args) -> None:
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    process.join(60)
    assert process.exitcode == 0


def race(root: Path, takers: list[tuple[str, tuple]]) -> list[tuple[str, int, str]]:
    """Start one process per (digest, scope) at the same instant; each tries to take the
    set's lock and keeps it until all have tried. Returns (outcome, pid, message) each."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results, done = ctx.Barrier(len(takers)), ctx.Queue(), ctx.Event()
    processes = [ctx.Process(target=_try_lock, args=(str(root), d, s, barrier, results, done)) for d, s in takers]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=120) for _ in processes]
    finally:
        done.set()
        for process in processes:
            process.join(60)
    assert all(p.exitcode == 0 for p in processes)
    return outcomes


WHOLE = (("train",), 1, 0)


# -- the lock module -------------------------------------------------------------------------


def test_scopes_overlap_when_some_shard_is_in_both():
    scope = locks.Scope
    assert scope(("train",)).overlaps(scope(("train", "dev")))
    assert not scope(("train",)).overlaps(scope(("dev",)))
    assert not scope(("train",), 3, 0).overlaps(scope(("train",), 3, 1))  # tasks of one array
    assert scope(("train",), 3, 1).overlaps(scope(("train",), 3, 1))  # one task twice
    assert scope(("train",), 2, 0).overlaps(scope(("train",), 4, 2))  # shard 2: 2 % 2 == 0 and 2 % 4 == 2
    assert not scope(("train",), 2, 0).overlaps(scope(("train",), 4, 1))
    assert scope(("train",), 1, 0).overlaps(scope(("train",), 8, 5))  # a whole-split run meets every task


def test_of_concurrent_takers_with_different_settings_exactly_one_wins(tmp_path):
    outcomes = race(tmp_path / "c", [(f"digest-{i}", WHOLE) for i in range(6)])
    winners = [pid for outcome, pid, _ in outcomes if outcome == "won"]
    assert len(winners) == 1, outcomes
    for outcome, _, message in outcomes:
        if outcome == "refused":
            assert f"process {winners[0]} on {this_host()} since " in message, message
            assert "other settings" in message and f"emo cache status {tmp_path / 'c'}" in message
    assert not (tmp_path / "c" / locks.LOCKS_DIR).exists(), "released locks leave nothing behind"


def test_a_dead_holders_lock_and_a_dead_mutex_are_taken_over_by_exactly_one(tmp_path):
    root = tmp_path / "c"
    _run(_die_holding, str(root), "old-settings", WHOLE)
    _run(_die_holding_the_mutex, str(root))
    dead = locks.holders(root)
    assert len(dead) == 1 and not dead[0]["live"] and dead[0]["digest"] == "old-settings"
    outcomes = race(root, [(f"digest-{i}", WHOLE) for i in range(5)])
    assert [o for o, _, _ in outcomes].count("won") == 1, outcomes
    assert locks.holders(root) == [] and not (root / locks.LOCKS_DIR).exists()


def test_tasks_of_one_array_share_the_lock_and_a_second_whole_split_writer_is_refused(tmp_path):
    outcomes = race(tmp_path / "array", [("same", (("train", "dev"), 3, i)) for i in range(3)])
    assert [o for o, _, _ in outcomes] == ["won"] * 3, outcomes
    outcomes = race(tmp_path / "twice", [("same", WHOLE)] * 3)
    assert [o for o, _, _ in outcomes].count("won") == 1, outcomes
    refused = [m for o, _, m in outcomes if o == "refused"]
    assert all("is already being written by process" in m and "(train, every shard)" in m for m in refused), refused


def test_a_refusal_releases_what_was_taken_and_a_lost_lock_stops_the_writer(tmp_path):
    root = tmp_path / "c"
    first = locks.acquire(root, {SET: "a", None: "rows"}, locks.Scope(("train",)))
    with pytest.raises(CacheError, match="The row table .* is already being written"):
        locks.acquire(root, {"text/other": "b", None: "rows"}, locks.Scope(("train",)))
    assert sorted(h["what"] for h in locks.holders(root)) == ["audio/mel", "rows"], "text/other was given back"
    first.check()
    next(iter(first.paths.values())).unlink()  # another process took it over while this one was frozen
    with pytest.raises(CacheError, match="taken over by another process .* stopped before writing more"):
        first.check()
    first.release()
    assert not root.exists(), "a cache folder made only for the locks goes with them"


def test_another_machines_lock_lives_while_refreshed(tmp_path):
    root = tmp_path / "c"
    folder = locks.lock_folder(root, SET)
    folder.mkdir(parents=True)
    theirs = folder / "node7-4242-abc123.lock"
    scope = {"splits": ["train"], "num_shards": 1, "shard_index": 0}
    started = "2026-01-01T00:00:00+00:00"
    locks._create(
        theirs, {"what": SET, "host": "node7", "pid": 4242, "started": started, "digest": "theirs", "scope": scope}
    )
    with pytest.raises(CacheError, match=r"process 4242 on node7 since 2026-01-01T00:00:00\+00:00 \(train, every"):
        locks.acquire(root, {SET: "mine"}, locks.Scope(("train",)))
    old = time.time() - locks.STALE_S - 5  # its heartbeat stopped: the machine or the process died
    os.utime(theirs, (old, old))
    with locks.acquire(root, {SET: "mine"}, locks.Scope(("train",))):
        assert not theirs.exists() and [h["digest"] for h in locks.holders(root)] == ["mine"]


def test_lock_files_are_invisible_to_everything_that_lists_a_cache(tmp_path):
    """A held lock shows in `emo cache status`; verify, info, load and a new writer ignore it."""
    import json
    import sys

    import numpy as np

    from emo.cache import CacheWriter, SetSpec, cache_status, load_split, open_cache, verify_cache

    root = tmp_path / "c"
    spec = SetSpec(SET, "vector", 4, "toy", {"toy": 1})
    writer = CacheWriter(root, defer_create=True)
    with writer.lock([spec], ["train"]) as held:
        assert writer._held is held
        assert not (root / "cache.json").exists() and cache_status(root).locks  # nothing written yet
        writer.add_set(spec)
        rows = {
            "dialogue_id": np.arange(3, dtype=np.int32),
            "utterance_id": np.zeros(3, np.int32),
            "emotion": np.zeros(3, np.int64),
            "sentiment": np.zeros(3, np.int64),
            "speaker": ["a"] * 3,
            "text": ["x"] * 3,
        }
        writer.write_set(
            "train",
            SET,
            0,
            {"values": np.ones((3, 4), np.float16), "present": np.ones(3, bool), "truncated": np.zeros(3, bool)},
        )
        writer.write_rows("train", 0, rows)
        writer.finalize("train", total_rows=3, expected_shards=1)
        assert verify_cache(root) == [] and open_cache(root).splits["train"].complete
        assert len(load_split(root, "train")) == 3
        status = cache_status(root)
        assert status.complete and {h["what"] for h in status.locks} == {SET, "rows"}
        assert all(h["pid"] == os.getpid() and h["live"] for h in status.locks)
        shown = subprocess.run(
            [sys.executable, "-m", "emo", "cache", "status", str(root)], capture_output=True, text=True, timeout=120
        )
        assert f"writer lock audio/mel: process {os.getpid()} on {this_host()} since" in shown.stdout, shown
        assert json.loads(json.dumps(status.to_dict()))["locks"]
    assert cache_status(root).locks == [] and not (root / locks.LOCKS_DIR).exists()
    CacheWriter(root)  # reopening for writing sees no stranger in the folder


# -- real `emo extract` runs -----------------------------------------------------------------


def extract_argv(data_root: Path, cache: Path, *extra: str) -> list[str]:
    from reliability_fixtures import emo_argv

    return emo_argv(
        "extract",
        "--split",
        "all",
        "--data-root",
        data_root,
        "--cache",
        cache,
        "--modalities",
        "audio",
        "--workers",
        "0",
        "--shard-size",
        "4",
        "--max-duration",
        "3",
        "--audio-views",
        "2",
        "--device",
        "cpu",
        *extra,
    )


def run_together(*argvs: list[str], cache: Path) -> tuple[list[subprocess.CompletedProcess], int]:
    """Start the commands at once; returns their results and the most holders of the mel
    set's lock seen at one time (polled every 20 ms: proof that they really overlapped)."""
    from reliability_fixtures import child_env

    processes = [
        subprocess.Popen(argv, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for argv in argvs
    ]
    most = 0
    while any(p.poll() is None for p in processes):
        most = max(most, sum(1 for h in locks.holders(cache) if h.get("what") == SET and h["live"]))
        time.sleep(0.02)
    outputs = [p.communicate(timeout=300) for p in processes]
    return [
        subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, (out, err) in zip(processes, outputs)
    ], most


def emo_ok(*args) -> subprocess.CompletedProcess:
    from reliability_fixtures import child_env, emo_argv

    done = subprocess.run(emo_argv(*args), env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, (done.stdout, done.stderr)
    return done


@pytest.mark.parametrize("second", [("--set", "n_mels=64"), ()], ids=["other-settings", "same-settings"])
def test_two_runs_racing_for_one_set_one_wins_the_other_is_told_who_holds_it(synth_root, tmp_path, second):
    cache = tmp_path / "cache"
    results, _ = run_together(extract_argv(synth_root, cache), extract_argv(synth_root, cache, *second), cache=cache)
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 1], [(r.returncode, r.stderr[-800:]) for r in results]
    winner, loser = sorted(results, key=lambda r: r.returncode)
    assert "Traceback" not in winner.stderr + loser.stderr
    errors = [line for line in loser.stderr.splitlines() if line.startswith("emo: error:")]
    assert len(errors) == 1 and errors[0] == loser.stderr.strip().splitlines()[-1], loser.stderr
    what = "is being written with other settings by process" if second else "is already being written by process"
    assert f"Feature set audio/mel in {cache} {what}" in errors[0], errors[0]
    assert f"on {this_host()} since " in errors[0] and f"see `emo cache status {cache}`" in errors[0]
    assert emo_ok("cache", "verify", cache).returncode == 0
    assert locks.holders(cache) == []


def test_a_dead_runs_stale_lock_is_taken_over(synth_root, tmp_path):
    cache = tmp_path / "cache"
    _run(_die_holding, str(cache), "a-run-that-was-killed", (("train", "dev", "test"), 1, 0))
    assert [h["live"] for h in locks.holders(cache)] == [False]
    emo_ok(*extract_argv(synth_root, cache)[3:])
    assert locks.holders(cache) == [] and emo_ok("cache", "verify", cache)


def test_tasks_with_disjoint_shard_indices_write_one_set_at_once(synth_root, tmp_path):
    from emo.cache import cache_status

    cache = tmp_path / "cache"
    argvs = [extract_argv(synth_root, cache, "--num-shards", "2", "--shard-index", str(i)) for i in range(2)]
    results, most = run_together(*argvs, cache=cache)
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-800:] for r in results]
    assert most == 2, "both tasks held the set's lock at the same time"
    assert cache_status(cache).complete and emo_ok("cache", "verify", cache)
