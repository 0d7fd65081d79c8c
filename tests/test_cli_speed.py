"""Issue 21, item 2: every usage error of every verb is answered at once, not after torch loads.

`emo fit` without --out used to take 12 s to say so and `emo eval --split val` 7 s, because
torch, transformers or PyAV were imported before the options were checked. For every verb
`emo --help` lists (and every `emo cache` sub-command) this runs one representative usage
error through the real entry point in a subprocess and checks three things:

- it ends as a usage error: exit 2, one `emo: error:` sentence, no traceback;
- no heavy package was imported on the way (`python -X importtime` lists every import) -
  the cause of a slow refusal, and deterministic whatever the machine's load;
- it took at most 2 s of wall time (a refusal-path check, not a benchmark: the target is
  1 s, and on a loaded 2-core machine a case over 2 s is run once more before it fails).

A verb without a case of its own below (one added later) still gets the generic one, an
unknown option, so a new verb whose module imports torch at the top fails here.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from reliability_fixtures import Result, assert_clean_error, child_env, synthetic_feature_cache

LIMIT_S = 2.0
# Packages that take a second or more to import here (torch 1.2 s, transformers 0.6 s on top of
# it), or pull in ones that do; none is needed to refuse a command. PyAV and CTranslate2 (0.05 s
# each) are not on the list: `emo predict` checks --language against faster-whisper's codes.
HEAVY = (
    "torch",
    "torchvision",
    "torchaudio",
    "transformers",
    "open_clip",
    "timm",
    "matplotlib",
    "mediapipe",
    "opensmile",
    "cv2",
    "submitit",
)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A feature cache and a finished run (made in this process), a media file and a MELD CSV folder."""
    from emo.fuse.config import FitConfig
    from emo.fuse.train import run_fit

    root = tmp_path_factory.mktemp("cli-speed")
    w = {"root": root, "cache": synthetic_feature_cache(root / "cache"), "run": root / "run"}
    run_fit(FitConfig(cache=w["cache"], out=w["run"], epochs=1, device="cpu"))
    w["clip"] = root / "clip.mp4"
    w["clip"].write_bytes(b"\0" * 64)
    (root / "data").mkdir()
    return w


def cases(w: dict[str, Path]) -> dict[str, tuple[str, ...]]:
    """One usage error per verb (the slow ones of the issue, and each verb's likely typos),
    plus the other refusals the issue's newcomer waited for."""
    root, cache, run, clip = w["root"], str(w["cache"]), str(w["run"]), str(w["clip"])
    nothing = str(root / "nothing-here")
    return {
        "synth": ("synth", str(root / "s"), "--clips", "-3"),
        "extract": ("extract", "--split", "val", "--data-root", str(root / "data"), "--cache", str(root / "c")),
        "encoders": ("encoders", "--modality", "text"),
        "fit": ("fit", "--cache", cache),  # no --out: 12.6 s in the issue
        "eval": ("eval", "--run", run, "--split", "val"),  # 7 s in the issue
        "ablate": ("ablate", "--cache", cache, "--out", str(root / "a"), "--seeds", "0"),
        "ensemble": ("ensemble", run, run),  # no --out
        "predict": ("predict", run, clip, "--out", str(root / "p"), "--device", "tpu"),
        "demo": ("demo", "--out", str(root / "d"), "--set", "epochs=0"),
        "cache info": ("cache", "info", nothing),
        "cache verify": ("cache", "verify", nothing),
        "cache status": ("cache", "status", nothing),
        "cache rm": ("cache", "rm", nothing, "--set", "text/x"),
        "cache upgrade": ("cache", "upgrade", nothing),
        "fit: a run in the way": ("fit", "--cache", cache, "--out", run),
        "fit: no such cache": ("fit", "--cache", nothing, "--out", str(root / "r")),
        "fit: device typo": ("fit", "--cache", cache, "--out", str(root / "r"), "--device", "tpu"),
        "eval: no such run": ("eval", "--run", nothing),
        "eval: no such cache": ("eval", "--run", run, "--cache", nothing),
        "eval: a cache given as the run": ("eval", "--run", cache),
        "ablate: no --out": ("ablate", "--cache", cache),
        "predict: no such run": ("predict", nothing, clip, "--out", str(root / "p")),
    }


NAMED = list(cases({"root": Path("."), "cache": Path("."), "run": Path("."), "clip": Path(".")}))


def verbs() -> list[str]:
    """Every verb and `cache` sub-command the CLI has now."""
    import typer

    from emo.cli import app

    names = []
    for name, command in typer.main.get_command(app).commands.items():
        subs = getattr(command, "commands", None)
        names += [f"{name} {sub}" for sub in subs] if subs else [name]
    return names


def timed(argv: tuple[str, ...], cwd: Path) -> tuple[Result, float, list[str]]:
    """`python -X importtime -m emo ARGV`: the result (import lines removed), its wall time
    and the top-level packages it imported."""
    started = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "emo", *argv],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.perf_counter() - started
    lines = process.stderr.splitlines()
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in lines if line.startswith("import time:")}
    stderr = "\n".join(line for line in lines if not line.startswith("import time:"))
    return Result(argv, process.returncode, process.stdout, stderr), seconds, sorted(imported)


def case_names() -> list[str]:
    return NAMED + [verb for verb in verbs() if verb not in NAMED]


@pytest.mark.parametrize("name", case_names())
def test_a_usage_error_is_answered_before_any_heavy_import(world, name):
    argv = cases(world).get(name) or (*name.split(), "--no-such-option")  # a verb added later
    result, seconds, imported = timed(argv, world["root"])
    assert_clean_error(result, 2)
    heavy = [package for package in imported if package in HEAVY]
    assert not heavy, f"emo {' '.join(argv)} imported {heavy} before refusing\n{result.describe()}"
    if seconds > LIMIT_S:  # a loaded machine: one more try before calling it slow
        result, seconds, _ = timed(argv, world["root"])
    print(f"{name}: {seconds:.2f} s: {result.stderr.strip().splitlines()[-1]}")
    assert seconds <= LIMIT_S, f"emo {' '.join(argv)} took {seconds:.1f} s to refuse\n{result.describe()}"
