"""Run folders are whole or absent: a killed, interrupted, diverged or disk-starved `emo fit`
leaves nothing that `emo eval`, `emo predict` or `emo ablate` could take for a run, and
`--overwrite` keeps the old run until the new one is complete; numeric options are checked
for being real numbers in range before any work. Real `emo` processes on a small synthetic
cache; full disks are real (a tiny tmpfs, see disk_fixtures)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from disk_fixtures import small_disk
from reliability_fixtures import default_ctrl_c, emo
from synthetic_features import make_synthetic_split, write_synthetic_cache

ROOT = Path(__file__).resolve().parents[1]
SHAPES = dict(text_dim=16, visual_dim=8, frames=2, mean_mel_frames=20, max_mel_frames=40)
FIT = ["--device", "cpu", "--set", "max_mel_frames=40", "--set", "threads=1"]
SENTENCE = re.compile(r"^emo: error: [^\n]+\.\n$")  # one line, one sentence


def start(*args) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "emo", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
        preexec_fn=default_ctrl_c,
    )


def interrupt(child: subprocess.Popen) -> str:
    """Ctrl-C, pressed again every 10 s while the child runs on (as a person would, should
    the first land where Python has to ignore it); returns its stderr."""
    for _ in range(6):
        child.send_signal(signal.SIGINT)
        try:
            return child.communicate(timeout=10)[1]
        except subprocess.TimeoutExpired:
            continue
    raise AssertionError("emo fit did not stop on Ctrl-C")


def one_sentence(done: subprocess.CompletedProcess, code: int, words: str) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    assert SENTENCE.match(done.stderr), done.stderr
    assert words in done.stderr, done.stderr


def leftovers(out: Path) -> list[str]:
    """Hidden siblings a run folder's build or swap left beside `out`."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def wait_for_training(out: Path, epochs: int = 1, limit: float = 120.0) -> None:
    """Until the fit building `out` has written `epochs` metrics lines (it is mid-training);
    `out` itself counts only when it did not exist before (a fit that writes in place)."""
    deadline = time.monotonic() + limit
    in_place = [] if out.exists() else [out]
    while time.monotonic() < deadline:
        for folder in [*in_place, *out.parent.glob(f".{out.name}.tmp-*")]:
            metrics = folder / "metrics.jsonl"
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= epochs:
                return
        time.sleep(0.05)
    raise AssertionError(f"no fit into {out} got to epoch {epochs}")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("integrity")
    write_synthetic_cache(
        root / "cache",
        [
            make_synthetic_split(60, "train", seed=1, **SHAPES),
            make_synthetic_split(30, "dev", seed=2, **SHAPES),
            make_synthetic_split(30, "test", seed=3, **SHAPES),
        ],
        shard_rows=128,
    )
    return root / "cache"


@pytest.fixture(scope="module")
def finished(cache, tmp_path_factory) -> Path:
    """A finished run, trained in this process (copied by tests that change it)."""
    from emo.fuse.config import FitConfig
    from emo.fuse.train import run_fit

    out = tmp_path_factory.mktemp("finished") / "run"
    run_fit(FitConfig(cache=cache, out=out, epochs=2, device="cpu", max_mel_frames=40, threads=1))
    return out


# --- defect 3: a run folder is whole or absent -------------------------------------------------


def test_killed_fit_leaves_no_run_and_the_next_fit_clears_its_leftovers(cache, tmp_path):
    out = tmp_path / "run"
    child = start("fit", "--cache", cache, "--out", out, "--epochs", 500, *FIT)
    try:
        wait_for_training(out)
        child.send_signal(signal.SIGKILL)  # no cleanup runs at all
    finally:
        child.wait(timeout=60)
    assert not out.exists(), "a killed fit left a folder named like a run"
    assert leftovers(out), "the killed fit's work should be a hidden temporary folder"
    one_sentence(emo("eval", "--run", out), 2, "does not exist")
    done = emo("fit", "--cache", cache, "--out", out, "--epochs", 1, *FIT)
    assert done.returncode == 0, done.stderr
    assert (out / "summary.json").is_file() and (out / "model.pt").is_file()
    assert leftovers(out) == [], "a later fit removes what a killed one left"


def test_overwrite_keeps_the_old_run_until_the_new_one_is_complete(cache, finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "eval-old-report.json").write_text("{}")  # part of the old run: replaced with it
    before = (out / "model.pt").read_bytes()
    child = start("fit", "--cache", cache, "--out", out, "--epochs", 500, "--overwrite", *FIT)
    try:
        wait_for_training(out)
        err = interrupt(child)  # Ctrl-C in the middle of the new run
    finally:
        child.kill()
    assert child.returncode == 130, err
    assert "Traceback" not in err
    assert (out / "model.pt").read_bytes() == before and (out / "summary.json").is_file()
    assert leftovers(out) == []
    done = emo("fit", "--cache", cache, "--out", out, "--epochs", 1, "--overwrite", *FIT)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "summary.json").read_text())["best_epoch"] == 1
    assert not (out / "eval-old-report.json").exists(), "the old run is replaced as a whole"
    assert leftovers(out) == []


def test_a_swap_without_renameat2_killed_between_its_renames_loses_nothing(tmp_path, monkeypatch):
    """Where the filesystem cannot exchange two names in one step (NFS), the old folder is
    renamed aside for an instant; a process killed in that instant leaves it aside, and the
    next swap puts it back instead of deleting it."""
    from emo import atomic

    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # as on a filesystem without it
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("old")
    with atomic.atomic_folder(out) as building:
        (building / "summary.json").write_text("new")
    assert (out / "summary.json").read_text() == "new" and leftovers(out) == []
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that is certainly not running any more
    suffix = f"tmp-{atomic.this_host()}-{dead.pid}"
    out.rename(tmp_path / f".run.old.{suffix}")  # killed right after moving the old run aside ...
    (tmp_path / f".run.{suffix}").mkdir()  # ... with the new one still in its temporary folder
    atomic.sweep_folder_leftovers(out)
    assert (out / "summary.json").read_text() == "new" and leftovers(out) == []


def unfinished_copy(finished: Path, where: Path) -> Path:
    """What a fit killed before this change left: every file but summary.json."""
    shutil.copytree(finished, where)
    (where / "summary.json").unlink()
    return where


def test_unfinished_run_is_refused_by_eval_and_predict(cache, finished, tmp_path):
    run = unfinished_copy(finished, tmp_path / "half")
    one_sentence(emo("eval", "--run", run), 1, f"{run} is not a finished run")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not read: the run is refused first")
    one_sentence(emo("predict", run, clip, "--out", tmp_path / "predictions"), 1, f"{run} is not a finished run")
    assert not (tmp_path / "predictions").exists()
    one_sentence(emo("fit", "--cache", cache, "--out", run, *FIT), 2, "already holds an unfinished run")


def test_ablate_retrains_a_cell_left_unfinished_and_keeps_finished_ones(cache, tmp_path):
    from emo.fuse.ablate import resolve_configs, run_ablate

    options = dict(
        cache=cache,
        out=tmp_path / "grid",
        modalities="text,text+audio",
        seeds=1,
        epochs=1,
        device="cpu",
        max_mel_frames=40,
        threads=1,
        test_split="",
    )
    first = run_ablate(*resolve_configs(None, options))
    cells = sorted(p.parent for p in (tmp_path / "grid" / "cells").rglob("result.json"))
    assert first.trained == 2 and len(cells) == 2
    kept = (cells[1] / "model.pt").read_bytes()
    (cells[0] / "summary.json").unlink()  # a cell of an older layout, killed between its files
    again = run_ablate(*resolve_configs(None, options))
    assert (again.trained, again.skipped) == (1, 1)
    assert (cells[0] / "summary.json").is_file() and (cells[1] / "model.pt").read_bytes() == kept
    assert not [p for p in cells[0].parent.iterdir() if p.name.startswith(".")]


def test_fit_never_replaces_a_folder_that_holds_other_files(cache, tmp_path):
    """--overwrite replaces a run folder whole, so a folder with files of the user's is refused,
    even when it also holds a run's config.toml (say, a folder of configs)."""
    out = tmp_path / "configs"
    out.mkdir()
    (out / "config.toml").write_text("[fit]\n")
    (out / "mine.txt").write_text("keep me")
    done = emo("fit", "--cache", cache, "--out", out, "--overwrite", "--epochs", 1, *FIT)
    one_sentence(done, 2, "holds other files than a run (mine.txt)")
    assert sorted(p.name for p in out.iterdir()) == ["config.toml", "mine.txt"]


# --- defect 1b: a full disk is one sentence and leaves nothing -------------------------------


def test_fit_on_a_full_disk(cache, tmp_path):
    with small_disk(tmp_path, kib=256) as disk:  # config and metrics fit, the checkpoint does not
        print("small disk:", disk.method)
        out = disk.path / "run"
        args = ("fit", "--cache", cache, "--out", out, "--epochs", 2, *FIT)
        done = emo(*args, preexec=disk.preexec)
        one_sentence(done, 1, f"Disk full while writing {out}; free space and run the same command again.")
        assert "inline_container" not in done.stderr
        assert sorted(p.name for p in disk.path.iterdir()) == [], "nothing of the failed fit is left"
        disk.grow()
        done = emo(*args, preexec=disk.preexec)
        assert done.returncode == 0, done.stderr
        assert (out / "summary.json").is_file() and leftovers(out) == []


def test_eval_on_a_full_disk(finished, tmp_path):
    size = sum(p.stat().st_size for p in finished.iterdir()) // 1024
    with small_disk(tmp_path, kib=size + 64) as disk:
        print("small disk:", disk.method)
        run = disk.path / "run"
        shutil.copytree(finished, run)
        before = sorted(p.name for p in run.iterdir())
        disk.fill()
        done = emo("eval", "--run", run, "--split", "test", "--device", "cpu", preexec=disk.preexec)
        one_sentence(done, 1, f"Disk full while writing {run}; free space and run the same command again.")
        assert sorted(p.name for p in run.iterdir()) == before, "no report file and no temporary is left"
        disk.grow()
        done = emo("eval", "--run", run, "--split", "test", "--device", "cpu", preexec=disk.preexec)
        assert done.returncode == 0, done.stderr
        assert len(list(run.glob("eval-*.json"))) == 1 and not list(run.glob(".*"))


# --- defect 5: numbers that are not numbers, and a fit that diverges ----------------------------


@pytest.mark.parametrize(
    ("option", "words"),
    [
        (("--lr", "inf"), "Config key 'lr' must be a finite number, got inf."),
        (("--lr", "nan"), "Config key 'lr' must be a finite number, got nan."),
        (("--lr", "-1"), "lr must be positive; got -1.0."),
        (("--epochs", "0"), "epochs must be at least 1; got 0."),
        (("--set", "weight_decay=-1"), "weight_decay must not be negative"),
        (("--modality-dropout", "1"), "modality_dropout must be at least 0 and below 1"),
    ],
)
def test_fit_refuses_numbers_out_of_range(cache, tmp_path, option, words):
    out = tmp_path / "run"
    one_sentence(emo("fit", "--cache", cache, "--out", out, *option, *FIT), 2, words)
    assert not out.exists() and not leftovers(out)


def test_fit_that_diverges_stops_in_one_sentence_and_leaves_nothing(cache, tmp_path):
    out = tmp_path / "run"
    done = emo("fit", "--cache", cache, "--out", out, "--lr", "1e30", "--epochs", 3, *FIT)
    one_sentence(done, 1, "Training diverged at epoch 1 (loss is nan); lower --lr (now 1e+30)")
    assert not out.exists() and not leftovers(out)


@pytest.mark.parametrize(
    ("verb", "key", "value"),
    [
        ("fit", "lr", "nan"),
        ("fit", "weight_decay", "inf"),
        ("extract", "max_duration", "inf"),
        ("extract", "fmax", "nan"),
        ("synth", "text_cue", "nan"),
        ("demo", "lr", "inf"),
    ],
)
def test_every_config_refuses_non_finite_numbers(verb, key, value, tmp_path):
    """From TOML (which has inf and nan literals), and from the Python API."""
    from emo.config import build_config
    from emo.data.synth import SynthConfig
    from emo.errors import ConfigError
    from emo.extract.config import ExtractConfig
    from emo.fuse.config import FitConfig
    from emo.recipes.demo_config import DemoConfig, resolve_demo_config

    toml = tmp_path / "c.toml"
    toml.write_text(f"{key} = {value}\n")
    cls = {"fit": FitConfig, "extract": ExtractConfig, "synth": SynthConfig, "demo": DemoConfig}[verb]
    with pytest.raises(ConfigError, match=f"'{key}' must be a finite number, got {value}"):
        resolve_demo_config(toml) if verb == "demo" else build_config(cls, toml)
    with pytest.raises(ConfigError, match=f"'{key}' must be a finite number, got {value}"):
        cls(**{key: float(value)}).validate()
