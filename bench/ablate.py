"""`emo ablate` (model banks) against the same cells fitted one after another.

The grid of issue 5: the 7 non-empty modality subsets x 3 seeds, ensemble fusion, on a
MELD-sized synthetic cache with the real shapes (9,989 train / 1,109 dev / 2,610 test
clips; 768-d text, 16 x 512 frames, ~3.6 s of 100 frame/s x 40-band mel), written
through emo.cache.CacheWriter. Both sides train the same 21 heads with the same
FitConfig and score dev every epoch and test at the end, in this one process:

- bank: `run_ablate` - the cache loaded once, all 21 heads in one batched step;
- sequential: per cell `run_fit` (loads the cache, as `emo fit` does) then `run_eval`
  on test (as `emo eval` does) - in-process calls, so no interpreter start-up is counted
  against the sequential side.

    .venv/bin/python bench/ablate.py                 # full size, 15 epochs (long on 2 cores)
    .venv/bin/python bench/ablate.py --epochs 1      # full size, 1-epoch fits on both sides (minutes)
    .venv/bin/python bench/ablate.py --small         # a quick look

Reduced epochs change the end-to-end ratio (each sequential fit pays its cache load and
test evaluation once, however many epochs it trains), so the output also gives the
per-epoch ratio (train + dev scoring, summed over the 21 sequential fits, against the
bank's epochs) and the 15-epoch totals extrapolated from the measured fixed and
per-epoch parts of each side.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MELD_SIZES = {"train": 9989, "dev": 1109, "test": 2610}
SMALL_SIZES = {"train": 1200, "dev": 300, "test": 300}


def write_cache(root: Path, sizes: dict[str, int]) -> float:
    from emo.fuse.synthetic import make_synthetic_split, write_synthetic_cache

    started = time.perf_counter()
    splits = [
        make_synthetic_split(n, split, seed=i, text_dim=768, visual_dim=512, frames=16, mean_mel_frames=360,
                             max_mel_frames=1000)
        for i, (split, n) in enumerate(sizes.items())
    ]
    write_synthetic_cache(root, splits, shard_rows=1024)
    return time.perf_counter() - started


def run_bank(cache: Path, out: Path, epochs: int, seeds: int, threads: int, audio_mode: str, precision: str):
    """`run_ablate` end to end; returns its wall time, result and the banks' epoch seconds."""
    import emo.fuse.ablate as ablate_module
    import emo.fuse.bank_train as bank_train

    ablate, base = ablate_module.resolve_configs(
        None, dict(cache=cache, out=out, modalities="all-subsets", fusion="ensemble", seeds=seeds, epochs=epochs,
                   device="cpu", threads=threads, audio_mode=audio_mode, precision=precision),
    )
    epoch_seconds: list[float] = []
    train_bank = bank_train.train_bank

    def timed_train_bank(*args, progress=None, **kwargs):
        def record(info):
            epoch_seconds.append(info["epoch_seconds"])
            if progress is not None:
                progress(info)

        return train_bank(*args, progress=record, **kwargs)

    bank_train.train_bank = timed_train_bank  # listen to the per-epoch progress, change nothing
    try:
        started = time.perf_counter()
        result = ablate_module.run_ablate(ablate, base, console=None)
        return time.perf_counter() - started, result, sum(epoch_seconds)
    finally:
        bank_train.train_bank = train_bank


def run_sequential(cache: Path, out: Path, epochs: int, seeds: int, threads: int, precision: str):
    """The same cells as `emo fit` + `emo eval` calls, one after another."""
    from emo.fuse.ablate import plan_grid, resolve_configs
    from emo.fuse.evaluate import run_eval
    from emo.fuse.train import run_fit

    ablate, base = resolve_configs(
        None, dict(cache=cache, out=out, modalities="all-subsets", fusion="ensemble", seeds=seeds, epochs=epochs,
                   device="cpu", threads=threads, precision=precision),
    )
    _, jobs = plan_grid(ablate, base)
    per_cell: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    epoch_seconds = 0.0
    started = time.perf_counter()
    for job in jobs:
        t0 = time.perf_counter()
        config = job.config
        config.cache, config.out, config.overwrite = cache, out / f"{job.cell.key}-seed{job.seed}", True
        fit = run_fit(config)
        epoch_seconds += sum(row["epoch_seconds"] for row in fit.history)
        report = run_eval(config.out, split="test", device="cpu", write=False)
        per_cell.setdefault(job.cell.key, []).append(report["headline"]["weighted_f1"])
        seconds[f"{job.cell.key}-seed{job.seed}"] = time.perf_counter() - t0
    return time.perf_counter() - started, per_cell, seconds, epoch_seconds


GPU_NOTE = """\
What batching buys on a GPU (reasoned, not measured - this machine has no GPU):
one seed-design step is ~2 GFLOP of mel-CNN work forward and backward (batch 32 x
~360 frames) plus ~0.2 GFLOP of matmuls, spread over ~100 small kernels forward and
backward plus the optimizer's. An H100 does those FLOPs in well under a millisecond,
so a single model is bound by kernel launches and Python (~5-10 us each), roughly
1 ms/step whatever its size, at a few percent of the GPU. A bank issues about the same
number of launches for all G members (grouped Conv1d with groups=G, batched matmuls,
one fused AdamW call per lr group), so each extra member is nearly free until G x 2
GFLOP per step approaches the GPU's throughput (G of the order of tens). For this
21-model grid that means close to G-fold (~10-20x) over sequential fits, versus the
CPU, where the mel-CNN is compute-bound and batching cannot remove its FLOPs.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="1,200/300/300 clips and 2 epochs: a quick look")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per fit (default 15, or 2 with --small)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--cache", type=Path, default=None, help="reuse (or keep) the synthetic cache here")
    parser.add_argument("--audio-mode", default="auto", help="how the bank runs its mel CNNs: auto|loop|grouped|matmul")
    parser.add_argument("--precision", default="fp32", help="fp32|bf16, applied to BOTH sides")
    args = parser.parse_args()
    epochs = args.epochs or (2 if args.small else 15)
    sizes = SMALL_SIZES if args.small else MELD_SIZES
    import os

    import torch

    work = Path(tempfile.mkdtemp(prefix="emo-bench-ablate-"))
    cache = args.cache or work / "cache"
    try:
        if not (cache / "manifest.json").is_file():
            seconds = write_cache(cache, sizes)
            print(f"wrote a synthetic cache of {sizes} clips (real shapes) in {seconds:.0f} s: {cache}")
        print(f"grid: 7 modality subsets x {args.seeds} seeds, ensemble fusion, {epochs} epoch(s) each, "
              f"{args.precision} on both sides; splits {sizes}; torch {torch.__version__}, "
              f"{args.threads or torch.get_num_threads()} CPU thread(s) on both sides; load average at start {os.getloadavg()[0]:.2f}")
        if epochs < 15:
            print(f"NOTE: {epochs} epoch(s) per fit instead of the design's 15, on both sides; the per-epoch ratio "
                  "below is the one that carries over to full-length fits.")
        bank_s, bank, bank_epochs = run_bank(cache, work / "bank", epochs, args.seeds, args.threads, args.audio_mode,
                                             args.precision)
        print(f"emo ablate (banks, audio_mode={args.audio_mode}): {bank_s:.1f} s  (cache load once "
              f"{bank.load_seconds:.1f} s, {bank_epochs:.1f} s in epochs, {len(bank.banks)} bank(s): "
              f"{', '.join(str(b['members']) for b in bank.banks)} members)")
        seq_s, seq_cells, seq_runs, seq_epochs = run_sequential(cache, work / "seq", epochs, args.seeds, args.threads,
                                                                args.precision)
        audio = sum(s for k, s in seq_runs.items() if "audio" in k.split("__")[0])
        print(f"sequential run_fit+run_eval, in-process: {seq_s:.1f} s  ({seq_epochs:.1f} s in epochs; "
              f"{audio:.1f} s in the 12 fits with audio, {seq_s - audio:.1f} s in the 9 without)")
        print(f"ratio (sequential / bank), end to end at {epochs} epoch(s), measured in this run: {seq_s / bank_s:.2f}x")
        print(f"ratio per epoch (train + dev scoring), measured in this run: {seq_epochs / bank_epochs:.2f}x")
        if epochs < 15:
            seq_15 = seq_s + (15 - epochs) * seq_epochs / epochs
            bank_15 = bank_s + (15 - epochs) * bank_epochs / epochs
            print(f"extrapolated to 15 epochs (fixed part + 15 x measured epoch): sequential {seq_15:.0f} s, "
                  f"bank {bank_15:.0f} s, ratio {seq_15 / bank_15:.2f}x")
        print(f"load average at end {os.getloadavg()[0]:.2f} (2 cores shared with other work)")
        print("\ncell                         bank test wF1      sequential test wF1")
        for row in bank.rows:
            values = [v for v in seq_cells.get(row["cell"], []) if v is not None]
            seq_mean = sum(values) / len(values) if values else float("nan")
            print(f"{row['modalities']:<28} {100 * row['test_wf1_mean']:6.2f} ± {100 * row['test_wf1_std']:5.2f}"
                  f"      {100 * seq_mean:6.2f}")
        print()
        print(GPU_NOTE)
    finally:
        if args.cache is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
