"""What keeping every layer of a text encoder costs on real MELD: disk, and a 15-epoch fit's time.

The targets (issue #20): every layer of MiniLM and mpnet for MELD's 13,708 utterances in at
most 1 GiB on disk, and a 15-epoch fit on a `layers` set at most 2x the time of one on the
last layer's vector set.

1. Extracts (or reuses) the encoder's `--text-layers last` and `--text-layers all` sets for
   all three splits into one text-only cache, with bench/meld_text.py's own extraction (the
   public `emo extract`), and prints each set's size on disk.
2. Runs `emo fit` (text only, early fusion, 15 epochs, lr 1e-3; `--layer-mix weighted`, the
   default, on the layers set) once per set and head per round, --repeats rounds
   interleaved (bench/_timing.py), and prints each side's training seconds per epoch, the
   ratio layers / last per head with its spread, and each side's best dev weighted F1.

    .venv/bin/python bench/layers_cost.py --encoder minilm --heads none,gru
    .venv/bin/python bench/layers_cost.py --encoder mpnet --work bench/out/meld_text   # meld_text's cache

Exit 2 without the MELD CSVs, 1 when a step fails, 3 when other work made the figures
untrustworthy (bench/_timing.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from _timing import Timing, add_arguments
from meld_text import extract, set_names

ROOT = Path(__file__).resolve().parent.parent


def fit(cache: Path, out: Path, features: str, head: str, epochs: int, device: str) -> dict:
    """One `emo fit` as a user runs it; its training seconds per epoch and best dev weighted F1."""
    command = [sys.executable, "-m", "emo", "fit", "--cache", str(cache), "--out", str(out), "--overwrite"]
    command += ["--modalities", "text", "--fusion", "early", "--features", f"text={features}"]
    command += ["--epochs", str(epochs), "--lr", "1e-3", "--device", device]
    command += ["--set", f"context_model={head}", "--set", "text_feature=mean"]
    if head != "none":
        command += ["--set", "context_direction=both"]  # the ★ row's head (bench/meld_text.py's gru-both)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"bench/layers_cost.py: `emo fit` on {features} failed (exit {done.returncode}).")
    epochs_run = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((out / "summary.json").read_text())
    return {
        "train_s_per_epoch": statistics.mean(row["train_seconds"] for row in epochs_run),
        "best_dev_wf1": summary["best_dev"]["emotion"]["weighted_f1"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "meld")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "layers_cost", help="its cache and fits")
    parser.add_argument("--encoder", default="minilm", choices=("minilm", "mpnet"))
    parser.add_argument("--heads", default="none,gru", help="comma list of context models: none, gru, transformer")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    add_arguments(parser, repeats=2)
    args = parser.parse_args()
    if not (args.data / "train_sent_emo.csv").is_file():
        print(f"bench/layers_cost.py: the MELD CSVs are not in {args.data}; pass --data.", file=sys.stderr)
        raise SystemExit(2)
    timing = Timing(args.allow_load)  # before extracting: its load is this bench's own
    cache = args.work / "cache"
    names = set_names(cache) if cache.is_dir() else {}
    for layers in ("last", "all"):
        if (args.encoder, layers) not in names:
            extract(args.data, cache, args.encoder, layers, workers=0)
    names = set_names(cache)
    sets = {layers: names[(args.encoder, layers)] for layers in ("last", "all")}
    import emo

    info = emo.open_cache(cache)  # the cache's own record of its shards' sizes
    print(f"\n{args.encoder} on MELD's 13,708 utterances, size on disk:")
    for name in sets.values():
        print(f"  text/{name}: {info.sets[f'text/{name}'].bytes / 2**20:.0f} MiB")

    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    runs: dict[tuple[str, str], list[dict]] = {(h, layers): [] for h in heads for layers in sets}

    def side(head: str, layers: str):
        out = args.work / "fits" / f"{head}-{layers}"
        return lambda: runs[(head, layers)].append(fit(cache, out, sets[layers], head, args.epochs, args.device))

    timing.interleave({f"{h} {layers}": side(h, layers) for h, layers in runs}, args.repeats, label="fit round")
    print(f"\n`emo fit` on the text alone, {args.epochs} epochs, {args.repeats} interleaved rounds:")
    for (head, layers), rows in runs.items():
        per_epoch = [r["train_s_per_epoch"] for r in rows]
        print(f"  {timing.figure(f'context_model={head:<11} {layers:<4} training', per_epoch, 's/epoch')}")
        print(f"      best dev weighted F1 {100 * rows[0]['best_dev_wf1']:.2f}")
    for head in heads:
        top = [r["train_s_per_epoch"] for r in runs[(head, "all")]]
        bottom = [r["train_s_per_epoch"] for r in runs[(head, "last")]]
        print("  " + timing.ratio(f"{head}: every layer / the last layer", top, bottom, "(target <= 2x)"))
    raise SystemExit(timing.finish())


if __name__ == "__main__":
    main()
