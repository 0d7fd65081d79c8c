"""Helpers shared by tests/test_reliability_*.py (issue 6): the real `emo` entry point run
as a subprocess, the "one clear sentence" check, and small datasets and caches.

Everything user-facing is checked through `python -m emo ...` in a child process, exactly
as a user's shell runs it, so an uncaught exception (a traceback), a wrong exit code or a
chatty stderr cannot hide behind an in-process runner.
"""

from __future__ import annotations

import concurrent.futures
import csv
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Tiny synthetic-media settings: every broken kind once in train, clips well under a second
# or two, 64x48 frames. `too_long` / `audio_longer` last `long_duration` = 6 s, cut by
# max_duration = 2 at extraction.
BROKEN_SYNTH = dict(
    train_clips=16,
    dev_clips=6,
    test_clips=4,
    min_duration=0.5,
    max_duration=1.0,
    width=64,
    height=48,
    fps=8,
    sample_rate=16000,
    audio_channels=2,
    seed=11,
    broken_fraction=0.5,  # 8 of 16 train clips: one of each of the 8 kinds
    long_duration=6.0,
    unlabeled_videos=2,
)


def child_env(**extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "COLUMNS": "200",  # rich tables are not wrapped, so greps see whole lines
        "NO_COLOR": "1",
    }
    env.update(extra)
    return env


def default_ctrl_c() -> None:
    """A child's preexec_fn: SIGINT back to its default. A shell starts background jobs
    (`nohup ... &`, a CI runner's) with SIGINT ignored, and children inherit that, so a
    test's Ctrl-C would not reach the `emo` it starts; a terminal's always does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def emo_argv(*args: str) -> list[str]:
    """The real entry point (`emo` = `python -m emo`, console script emo.cli:main)."""
    return [sys.executable, "-m", "emo", *map(str, args)]


@dataclass
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"emo {' '.join(self.args)}\n-> exit {self.returncode}\n--- stderr (tail) ---\n{self.stderr[-3000:]}"
            f"\n--- stdout (tail) ---\n{self.stdout[-1500:]}"
        )


def emo(*args: str, cwd: Path | None = None, timeout: float = 240, preexec=None, **env: str) -> Result:
    """`emo ARGS` in a child process; `preexec` runs in the child first (e.g. a disk quota)."""
    process = subprocess.run(
        emo_argv(*args),
        cwd=cwd or REPO_ROOT,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec,
    )
    return Result(tuple(map(str, args)), process.returncode, process.stdout, process.stderr)


def emo_many(commands: list[tuple[str, ...]], parallel: int = 4, timeout: float = 240) -> list[Result]:
    """Run several independent `emo` commands at once (each is mostly interpreter start-up
    and imports, so overlapping them keeps the bad-input matrix fast on 2 cores)."""
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(lambda argv: emo(*argv, timeout=timeout), commands))


_SENTENCE_BREAK = re.compile(r"[.!?]\s+[A-Z]")


def error_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def assert_clean_error(result: Result, code: int | tuple[int, ...] = (1, 2), *, mentions: tuple[str, ...] = ()) -> str:
    """Non-zero exit with the expected code, no traceback, and stderr ending in exactly one
    `emo: error: <one sentence>` line. Returns the sentence."""
    codes = (code,) if isinstance(code, int) else code
    assert result.returncode in codes, result.describe()
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.describe()
    errors = [line for line in result.stderr.splitlines() if line.startswith("emo: error:")]
    assert len(errors) == 1, result.describe()
    assert error_line(result) == errors[0], "the error must be the last thing on stderr\n" + result.describe()
    sentence = errors[0][len("emo: error:") :].strip()
    assert sentence.endswith((".", "?", "!")), result.describe()
    body = sentence.replace("e.g. ", "eg ").replace("i.e. ", "ie ")
    assert not _SENTENCE_BREAK.search(body[:-1]), "more than one sentence:\n" + result.describe()
    for word in mentions:
        assert word.lower() in sentence.lower(), f"the sentence should mention {word!r}\n" + result.describe()
    return sentence


# ----------------------------------------------------------------------------- data


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\r\n").writerows([header, *rows])
    return path


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def synthetic_feature_cache(
    root: Path,
    splits=("train", "dev", "test"),
    fingerprint=None,
    fmt: str = "h5",
    shard_rows: int = 32,
    sizes=(96, 40, 40),
) -> Path:
    """A small learnable cache written through emo.cache (no media, no encoders)."""
    from synthetic_features import SYNTHETIC_FINGERPRINT, make_synthetic_split, write_synthetic_cache

    shapes = dict(text_dim=16, visual_dim=8, frames=2, mean_mel_frames=20, max_mel_frames=60)
    made = [
        make_synthetic_split(n, split, seed=i + 1, fingerprint=fingerprint or SYNTHETIC_FINGERPRINT, **shapes)
        for i, (split, n) in enumerate(zip(splits, sizes))
    ]
    write_synthetic_cache(root, made, fmt=fmt, shard_rows=shard_rows)
    return root


def extract_args(
    data_root: Path,
    cache: Path,
    tiny_bert: Path,
    tiny_clip,
    *extra: str,
    split: str = "train",
    shard_size: int = 4,
    workers: int = 0,
    fmt: str = "h5",
) -> list[str]:
    """`emo extract` on the tiny encoders (tests/extract_fixtures.py); see `extract_config`."""
    return [
        "extract",
        "--split",
        split,
        "--data-root",
        str(data_root),
        "--cache",
        str(cache),
        "--text-model",
        str(tiny_bert),
        "--visual-model",
        str(tiny_clip[0]),
        "--visual-pretrained",
        str(tiny_clip[1]),
        "--frames",
        "2",
        "--shard-size",
        str(shard_size),
        "--batch-size",
        "8",
        "--workers",
        str(workers),
        "--device",
        "cpu",
        "--max-duration",
        "2",
        "--format",
        fmt,
        *extra,
    ]


def extract_config(
    data_root: Path,
    cache: Path,
    tiny_bert: Path,
    tiny_clip,
    split: str = "train",
    shard_size: int = 4,
    workers: int = 0,
    fmt: str = "h5",
):
    """The ExtractConfig that `extract_args` with the same arguments resolves to."""
    from emo.extract.config import ExtractConfig

    return ExtractConfig(
        data_root=data_root,
        cache=cache,
        split=split,
        text_model=str(tiny_bert),
        visual_model=str(tiny_clip[0]),
        visual_pretrained=str(tiny_clip[1]),
        frames=2,
        shard_size=shard_size,
        batch_size=8,
        workers=workers,
        device="cpu",
        max_duration=2.0,
        format=fmt,
    )
