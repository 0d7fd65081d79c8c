"""`emo ablate` against the same cells run as separate `emo fit` + `emo eval` processes.

The grid: the 7 non-empty modality subsets x N seeds, ensemble fusion, on a synthetic
cache with MELD's real shapes (9,989 train / 1,109 dev / 2,610 test clips; 768-d text,
16 x 512 frames, ~3.6 s of 100 frame/s x 40-band mel), written through emo.cache.
Both sides run the same trainer with the same configs and seeds, so they produce the
same metrics (printed side by side as a check); what differs is only what `emo ablate`
saves: one interpreter start, one import of torch, and one read + checksum verification
of each split, instead of one per fit (and one more per `emo eval` for the test score).

    .venv/bin/python bench/ablate.py --epochs 1          # MELD size, 1-epoch fits (minutes)
    .venv/bin/python bench/ablate.py --small             # a quick look
    .venv/bin/python bench/ablate.py                     # MELD size, the design's 15 epochs (long)

Both sides run in this one run, --repeats times interleaved (ablate, sequential, ablate,
...), so the ratio is the median of per-round ratios with its spread; no ratio is printed
when other work takes over half the cores (bench/_timing.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import Timing, add_arguments

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # synthetic_features: the learnable test/bench cache

MELD_SIZES = {"train": 9989, "dev": 1109, "test": 2610}
SMALL_SIZES = {"train": 1200, "dev": 300, "test": 300}
SUBSETS = ["text", "audio", "visual", "text+audio", "text+visual", "audio+visual", "text+audio+visual"]


def write_cache(root: Path, sizes: dict[str, int]) -> float:
    from synthetic_features import make_synthetic_split, write_synthetic_cache

    started = time.perf_counter()
    splits = [
        make_synthetic_split(
            n, split, seed=i, text_dim=768, visual_dim=512, frames=16, mean_mel_frames=360, max_mel_frames=1000
        )
        for i, (split, n) in enumerate(sizes.items())
    ]
    write_synthetic_cache(root, splits, shard_rows=1024)
    return time.perf_counter() - started


def emo(*args: str) -> None:
    """One `emo` command as a user runs it: its own process, output to a log."""
    subprocess.run(
        [sys.executable, "-m", "emo", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def run_ablate(cache: Path, out: Path, epochs: int, seeds: int, device: str) -> tuple[float, dict[str, list[float]]]:
    started = time.perf_counter()
    emo(
        "ablate",
        "--cache",
        str(cache),
        "--out",
        str(out),
        "--modalities",
        "all-subsets",
        "--fusion",
        "ensemble",
        "--seeds",
        str(seeds),
        "--epochs",
        str(epochs),
        "--device",
        device,
    )
    seconds = time.perf_counter() - started
    scores: dict[str, list[float]] = {}
    for result in sorted((out / "cells").rglob("result.json")):
        record = json.loads(result.read_text())
        scores.setdefault("+".join(record["modalities"]), []).append(record["test"]["emotion"]["weighted_f1"])
    return seconds, scores


def run_sequential(
    cache: Path, out: Path, epochs: int, seeds: int, device: str
) -> tuple[float, dict[str, list[float]]]:
    started = time.perf_counter()
    scores: dict[str, list[float]] = {}
    for subset in SUBSETS:
        for seed in range(seeds):
            run = out / f"{subset}-seed{seed}"
            emo(
                "fit",
                "--cache",
                str(cache),
                "--out",
                str(run),
                "--modalities",
                subset.replace("+", ","),
                "--fusion",
                "ensemble",
                "--epochs",
                str(epochs),
                "--seed",
                str(seed),
                "--device",
                device,
            )
            emo("eval", "--run", str(run), "--split", "test", "--device", device)
            report = sorted(run.glob("eval*test*.json"))[-1]
            scores.setdefault(subset, []).append(json.loads(report.read_text())["headline"]["weighted_f1"])
    return time.perf_counter() - started, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="1,200/300/300 clips and 2 epochs: a quick look")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per fit (default 15, or 2 with --small)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=None, help="reuse (or keep) the synthetic cache here")
    parser.add_argument("--device", default="cpu", help="device of every fit (cpu, cuda, auto)")
    add_arguments(parser, repeats=3)
    args = parser.parse_args()
    epochs = args.epochs or (2 if args.small else 15)
    sizes = SMALL_SIZES if args.small else MELD_SIZES
    work = Path(tempfile.mkdtemp(prefix="emo-bench-ablate-"))
    cache = args.cache or work / "cache"
    try:
        if not (cache / "manifest.json").is_file():
            print(
                f"wrote a synthetic cache of {sizes} clips (real shapes) in {write_cache(cache, sizes):.0f} s: {cache}"
            )
        fits = len(SUBSETS) * args.seeds
        print(
            f"grid: {len(SUBSETS)} modality subsets x {args.seeds} seeds = {fits} fits, ensemble fusion, {epochs} "
            f"epoch(s) each, device {args.device}; splits {sizes}; {args.repeats} interleaved round(s)"
        )
        timing = Timing(args.allow_load)
        scores: dict[str, dict[str, list[float]]] = {}

        def side(name: str, run):
            def timed() -> float:
                out = work / f"{name}-{len(timing.loads)}"
                seconds, scores[name] = run(cache, out, epochs, args.seeds, args.device)
                shutil.rmtree(out, ignore_errors=True)
                return seconds

            return timed

        seconds = timing.interleave(
            {"ablate": side("ablate", run_ablate), "sequential": side("sequential", run_sequential)}, args.repeats
        )
        print("  " + timing.figure("emo ablate (one process, each split loaded once)", seconds["ablate"], "s", 1))
        print(
            "  " + timing.figure(f"sequential emo fit + emo eval ({2 * fits} processes)", seconds["sequential"], "s", 1)
        )
        print("  " + timing.ratio("sequential / ablate", seconds["sequential"], seconds["ablate"], "(target >= 3x)"))
        print("\nsame trainer, same seeds -> same test weighted F1 (mean over seeds, %; last round):")
        print(f"{'cell':<20} {'ablate':>8} {'fit+eval':>9}")
        for subset in SUBSETS:
            a, s = scores["ablate"].get(subset, []), scores["sequential"].get(subset, [])
            mean = lambda v: 100 * sum(v) / len(v) if v else float("nan")  # noqa: E731
            print(f"{subset:<20} {mean(a):8.2f} {mean(s):9.2f}")
        status = timing.finish()
    finally:
        if args.cache is None:
            shutil.rmtree(work, ignore_errors=True)
    raise SystemExit(status)


if __name__ == "__main__":
    main()
