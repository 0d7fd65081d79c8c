"""Issue 6, requirement 2: `emo extract` killed with SIGKILL at many different points
resumes, every time, to a cache equal array for array (and byte for byte) to one made
without interruption; a temporary file is never taken for a shard.

The pipeline has no test hook, so each kill is timed by watching the cache folder of a real
`python -m emo extract` child process (polled every millisecond): the moment cache.json
appears, a sidecar appears, a shard's temporary appears, the split plan appears, or half a
shard's time after a sidecar. All scenarios run at once in separate caches, so the whole
matrix costs about one interpreter start-up. Then the same folders also get hand-made
states a kill can leave behind (a dead writer's temporary, data without a sidecar, a
half-written sidecar) that timing alone may not hit.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from emo.errors import CacheError
from extract_fixtures import assert_same_split, tiny_bert, tiny_clip  # noqa: F401  (session fixtures)
from reliability_fixtures import BROKEN_SYNTH, child_env, default_ctrl_c, emo_argv, extract_args, extract_config

pytestmark = pytest.mark.slow

SHARD_SIZE = 2
TRAIN_ROWS = 12
SHARDS = TRAIN_ROWS // SHARD_SIZE


def sidecars(split_dir: Path) -> list[Path]:
    if not split_dir.is_dir():
        return []
    return sorted(p for p in split_dir.glob("shard-*.json"))


def temporaries(cache: Path) -> list[Path]:
    if not cache.is_dir():
        return []
    return [p for p in cache.rglob(".*") if ".tmp-" in p.name]


@dataclass
class Scenario:
    name: str
    fmt: str = "h5"
    workers: int = 0
    # Returns True when the watcher should kill, given the cache folder and the times at which
    # each sidecar index was first seen.
    trigger: object = None
    reliable: bool = True  # the trigger leaves time to kill (vs. a best-effort narrow window)
    sig: int = signal.SIGKILL
    group: bool = False  # signal the whole process group, as a terminal's Ctrl-C does
    # filled in by the run
    killed: bool = False
    returncode: int | None = None
    seen: dict[int, float] = field(default_factory=dict)
    after_kill: dict = field(default_factory=dict)
    stderr: str = ""


def _sidecar_seen(index: int, delay_fraction: float = 0.0):
    def trigger(cache: Path, seen: dict[int, float]) -> bool:
        if index not in seen:
            return False
        if delay_fraction == 0.0:
            return True
        previous = seen.get(index - 1, seen[index] - 0.2)
        return time.monotonic() >= seen[index] + delay_fraction * max(seen[index] - previous, 0.01)

    return trigger


def _exists(relative: str):
    return lambda cache, seen: (cache / relative).exists()


def _temporary_shard(cache: Path, seen) -> bool:
    return any(p.name.startswith(".shard-") for p in temporaries(cache))


SCENARIOS = [
    # Encoders loaded, cache created, first shard being computed.
    Scenario("before the first shard", trigger=_exists("cache.json")),
    # The instant a shard is finished: between shards.
    Scenario("between shards", trigger=_sidecar_seen(0)),
    # Half a shard's time after shard 2 finished: in the middle of shard 3 (text encoded,
    # clips being decoded by a worker process, frames encoded).
    Scenario("during a shard", workers=1, trigger=_sidecar_seen(2, 0.5)),
    # The last shard is finished; the split plan and manifest are about to be written.
    Scenario("after the last shard, before the manifest", trigger=_sidecar_seen(SHARDS - 1)),
    # While a shard's data sits under its temporary name (HDF5: a short window).
    Scenario("while a shard is being written (h5)", trigger=_temporary_shard, reliable=False),
    # split.json is written right before manifest.json.
    Scenario("while writing the manifest", trigger=_exists("train/split.json"), reliable=False),
    # Ctrl-C in the middle of a shard with worker processes: a terminal sends SIGINT to the
    # whole foreground process group, workers included; the run stops cleanly, no worker
    # prints a traceback.
    Scenario("Ctrl-C during a shard", workers=2, trigger=_sidecar_seen(1, 0.5), sig=signal.SIGINT, group=True),
    # SIGTERM to the command alone (`kill`, `scancel`, a job's time limit): it unwinds like
    # Ctrl-C, so its writer locks and temporaries go with it.
    Scenario("SIGTERM during a shard", workers=2, trigger=_sidecar_seen(1, 0.5), sig=signal.SIGTERM),
]


def _run_and_kill(scenario: Scenario, argv: list[str], cache: Path) -> Scenario:
    log = tempfile.TemporaryFile()  # a file, not a pipe: a chatty child can never block on it
    process = subprocess.Popen(
        argv, env=child_env(), stdout=subprocess.DEVNULL, stderr=log, start_new_session=True, preexec_fn=default_ctrl_c
    )
    deadline = time.monotonic() + 300
    split_dir = cache / "train"
    try:
        while time.monotonic() < deadline and process.poll() is None:
            now = time.monotonic()
            for path in sidecars(split_dir):
                scenario.seen.setdefault(int(path.stem.split("-")[1]), now)
            if scenario.trigger(cache, scenario.seen):
                # SIGKILL: no cleanup, no finally blocks run. The child leads its own session,
                # so its process group id is its pid.
                (os.killpg if scenario.group else os.kill)(process.pid, scenario.sig)
                scenario.killed = True
                break
            time.sleep(0.001)
    finally:
        if process.poll() is None and not scenario.killed:
            os.kill(process.pid, signal.SIGKILL)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:  # a Ctrl-C that does not stop the run is a failure below
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
        try:  # a decoding worker of the killed run (same session) must not linger
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        log.seek(0)
        scenario.stderr = log.read().decode(errors="replace")
        log.close()
    scenario.returncode = process.returncode
    scenario.after_kill = {
        "sidecars": [p.name for p in sidecars(split_dir)],
        "data": sorted(p.name for p in split_dir.glob("shard-*.*") if p.suffix != ".json")
        if split_dir.is_dir()
        else [],
        "temporaries": sorted(p.name for p in temporaries(cache)),
        "manifest": (cache / "manifest.json").exists(),
        "plan": (split_dir / "split.json").exists(),
    }
    return scenario


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from emo.data.synth import SynthConfig, generate

    config = dict(
        BROKEN_SYNTH,
        train_clips=TRAIN_ROWS,
        dev_clips=2,
        test_clips=2,
        broken_fraction=0.25,
        broken_kinds=("truncated", "no_audio", "too_long"),
        unlabeled_videos=1,
    )
    return generate(tmp_path_factory.mktemp("interrupt") / "meld", SynthConfig(**config)).out_dir


# One encoder thread in every run, in-process or not: torch's float rounding depends on the
# thread count (by default the cores the decoding workers leave free), and these runs with
# different --workers are compared byte for byte.
ONE_THREAD = ("--set", "threads=1")


def _run(config):
    from emo.extract.pipeline.run import run_extract

    return run_extract(config)


@pytest.fixture(scope="module")
def reference(dataset, tiny_bert, tiny_clip, tmp_path_factory):  # noqa: F811
    from emo.cache import load_split, open_cache

    cache = tmp_path_factory.mktemp("reference") / "cache"
    config = dataclasses.replace(extract_config(dataset, cache, tiny_bert, tiny_clip, shard_size=SHARD_SIZE), threads=1)
    _run(config)
    info = open_cache(cache).splits["train"]
    assert len(info.shards) == SHARDS and info.complete
    return config, load_split(cache, "train"), {s.index: s.sha256 for s in info.shards}


@pytest.fixture(scope="module")
def killed(dataset, tiny_bert, tiny_clip, tmp_path_factory):  # noqa: F811
    """Every scenario's child process, killed at its point (all running at once)."""
    root = tmp_path_factory.mktemp("killed")
    jobs = []
    for i, scenario in enumerate(SCENARIOS):
        scenario = dataclasses.replace(scenario)
        cache = root / f"cache-{i}"
        argv = emo_argv(
            *extract_args(
                dataset,
                cache,
                tiny_bert,
                tiny_clip,
                *ONE_THREAD,
                shard_size=SHARD_SIZE,
                workers=scenario.workers,
                fmt=scenario.fmt,
            )
        )
        jobs.append((scenario, argv, cache))
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        done = list(pool.map(lambda job: _run_and_kill(*job), jobs))
    return {s.name: (s, cache) for s, (_, _, cache) in zip(done, jobs)}


def test_kills_land_at_five_or_more_distinct_points(killed):
    hit = [name for name, (s, _) in killed.items() if s.killed and s.returncode == -signal.SIGKILL]
    hit += [name for name, (s, _) in killed.items() if s.killed and s.sig in (signal.SIGINT, signal.SIGTERM)]
    for name, (scenario, _) in killed.items():
        if scenario.reliable:
            assert name in hit, (name, scenario.returncode, scenario.stderr[-2000:])
    assert len(hit) >= 5, hit
    # The points are really different: the sidecar counts at the kill differ.
    assert len({len(killed[name][0].after_kill["sidecars"]) for name in hit}) >= 4, {
        name: killed[name][0].after_kill for name in hit
    }


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc; Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's reaper may be slow, or absent in a container)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to find the workers")
def test_decoding_workers_die_with_a_killed_parent(dataset, tiny_bert, tiny_clip, tmp_path):  # noqa: F811
    """SIGKILL (or the OOM killer) runs nothing in `emo extract`, yet its decoding workers
    must not keep running as orphans: none of them is alive 10 s later."""
    cache = tmp_path / "cache"
    argv = emo_argv(*extract_args(dataset, cache, tiny_bert, tiny_clip, shard_size=SHARD_SIZE, workers=2))
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        argv, env=child_env(), stdout=subprocess.DEVNULL, stderr=log, start_new_session=True, preexec_fn=default_ctrl_c
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            workers = _children(process.pid)
            if len(workers) >= 2 and sidecars(cache / "train"):  # mid-run: workers up, a shard done
                break
            time.sleep(0.01)
        log.seek(0)
        assert process.poll() is None and len(workers) >= 2, (workers, log.read().decode(errors="replace")[-2000:])
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_running(pid) for pid in workers):
            time.sleep(0.1)
        assert not [pid for pid in workers if _running(pid)], "orphaned workers outlived their run"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever is left, so the test leaks nothing
        log.close()


def test_ctrl_c_stops_cleanly_in_one_sentence(killed):
    scenario, _ = killed["Ctrl-C during a shard"]
    assert scenario.killed
    assert scenario.returncode == 130, (scenario.returncode, scenario.stderr[-2000:])
    assert "Traceback" not in scenario.stderr, scenario.stderr[-3000:]
    assert "emo: interrupted" in scenario.stderr, repr(scenario.stderr[-3000:])


def test_sigterm_stops_cleanly_and_leaves_no_lock_or_temporary(killed):
    scenario, cache = killed["SIGTERM during a shard"]
    assert scenario.killed
    assert scenario.returncode == 143, (scenario.returncode, scenario.stderr[-2000:])
    assert "Traceback" not in scenario.stderr, scenario.stderr[-3000:]
    assert "emo: terminated" in scenario.stderr, repr(scenario.stderr[-3000:])
    assert scenario.after_kill["temporaries"] == []
    assert not list(cache.rglob("*.lock")), "the writer locks were released"


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_rerun_after_sigkill_completes_to_the_uninterrupted_cache(name, killed, reference):
    from emo.cache import load_split, open_cache, verify_cache

    scenario, cache = killed[name]
    config, want, want_sha = reference
    if not cache.exists():  # killed before even creating the cache: nothing to resume, still must work
        assert scenario.killed
    # What the kill left is never taken for a finished shard.
    if (cache / "cache.json").exists():
        info = open_cache(cache).splits.get("train")
        listed = sorted(s.index for s in info.shards) if info else []
        finished = sorted(int(n.split("-")[1].split(".")[0]) for n in scenario.after_kill["sidecars"])
        assert listed == finished, scenario.after_kill
        for index in listed:  # whatever is listed is already the reference's bytes
            assert info.shards[listed.index(index)].sha256 == want_sha[index] or scenario.fmt == "zarr"
        if info is not None and not scenario.after_kill["plan"]:
            # Killed before the split was finalized: never offered to a trainer as complete.
            assert not info.complete, scenario.after_kill
            with pytest.raises(CacheError, match="incomplete"):
                load_split(cache, "train")

    resumed = _run(dataclasses.replace(config, cache=cache, format=scenario.fmt))
    summary = resumed.splits["train"]
    assert summary.complete
    assert summary.skipped == len(scenario.after_kill["sidecars"]), (scenario.after_kill, summary)
    assert summary.skipped + summary.written == SHARDS, "every unfinished shard redone, no finished one"
    assert_same_split(want, load_split(cache, "train"))
    info = open_cache(cache).splits["train"]
    if scenario.fmt == "h5":  # bit-identical files, not just equal arrays
        assert {s.index: s.sha256 for s in info.shards} == want_sha
    assert temporaries(cache) == [], "a killed writer's temporaries are cleaned up on resume"
    assert verify_cache(cache) == []
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["splits"]["train"]["rows"] == TRAIN_ROWS and manifest["splits"]["train"]["complete"]
    assert (cache / "config.toml").is_file(), "the resolved config is saved next to the cache"


def test_hand_made_leftovers_of_a_kill_are_never_trusted(reference, tmp_path):
    """The states a SIGKILL can leave inside a shard write, made deliberately: a dead
    process's temporary, a shard whose data was renamed but whose sidecar was not written,
    a sidecar cut short, and a stale manifest claiming more than there is."""
    from emo.cache import load_split, open_cache, verify_cache

    config, want, want_sha = reference
    cache = tmp_path / "cache"
    shutil.copytree(config.cache, cache)
    split_dir = cache / "train"
    (split_dir / "shard-00001.json").unlink()  # data in place, sidecar never written
    sidecar = (split_dir / "shard-00003.json").read_text()
    (split_dir / "shard-00003.json").write_text(sidecar[: len(sidecar) // 2])  # cut short
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that is certainly not running any more
    from emo import atomic

    host = atomic.this_host()
    ghost = split_dir / f".shard-00004.h5.tmp-{host}-{dead.pid}"
    shutil.copy(split_dir / "shard-00004.h5", ghost)
    (split_dir / "shard-00004.json").unlink()
    (split_dir / "shard-00004.h5").unlink()  # killed before the rename: only the temporary exists
    manifest = json.loads((cache / "manifest.json").read_text())  # stale, claims everything is done

    info = open_cache(cache).splits["train"]
    assert sorted(s.index for s in info.shards) == [0, 2, 5] and not info.complete
    assert manifest["splits"]["train"]["complete"], "the stale manifest is not what readers trust"
    with pytest.raises(Exception, match="incomplete"):
        load_split(cache, "train")
    assert any("shard-00001" in p for p in verify_cache(cache))

    resumed = _run(dataclasses.replace(config, cache=cache))
    assert resumed.splits["train"].skipped == 3 and resumed.splits["train"].written == 3
    assert_same_split(want, load_split(cache, "train"))
    assert {s.index: s.sha256 for s in open_cache(cache).splits["train"].shards} == want_sha
    assert not ghost.exists() and temporaries(cache) == []
    assert verify_cache(cache) == []
