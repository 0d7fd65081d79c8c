"""A real number on real data: text-only emotion recognition on MELD's official splits.

Reads the real MELD annotation CSVs in place (../shared/data/meld; no videos needed),
extracts text features for train/dev/test with the offline encoder (all-MiniLM-L6-v2,
frozen, 384-d; `emo extract --preset offline --modalities text`), with and without
dialogue context, then trains text-only heads and scores the real test split:

- emo's own heads (the seed design's early/late heads on text alone), as one `emo ablate`
  grid over cls/mean pooling and learning rate, seeds averaged;
- a multinomial logistic regression (scikit-learn) on standardised features, C chosen
  on dev - the classic frozen-feature probe.

Every choice is made on dev; test is reported for all rows and the dev-selected one is
marked. Published MELD test weighted F1 for comparison: MELD paper text-CNN 55.12,
bcLSTM (text, contextual) 56.44; RoBERTa utterance-only (fine-tuned) 62.02.

    .venv/bin/python bench/meld_text.py                 # full run, a few minutes per context
    .venv/bin/python bench/meld_text.py --contexts 0 --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PUBLISHED = (
    ("MELD paper: text-CNN (utterance)", 55.12),
    ("MELD paper: bcLSTM text (contextual)", 56.44),
    ("conv-emotion: RoBERTa utterance-only (fine-tuned)", 62.02),
)


def complete_cache(cache: Path) -> bool:
    """A finished cache from an earlier run is reused as is (extraction is the slow part)."""
    from emo.cache import open_cache

    try:
        info = open_cache(cache)
    except Exception:
        return False
    splits = getattr(info, "splits", {}) or {}
    return all(name in splits and getattr(splits[name], "complete", False) for name in ("train", "dev", "test"))


def extract(data: Path, cache: Path, context: int, max_length: int) -> float:
    from rich.console import Console

    from emo.extract.config import ExtractConfig
    from emo.extract.pipeline import run_extract

    started = time.perf_counter()
    config = ExtractConfig(
        data_root=data,
        cache=cache,
        split="all",
        modalities=("text",),
        preset="offline",
        context=context,
        text_max_length=max_length,
        device="auto",
        workers=0,
        batch_size=64,
    )
    run_extract(config, console=Console(stderr=True))
    return time.perf_counter() - started


def logistic_probe(cache: Path, feature: str) -> dict:
    """Multinomial logistic regression on standardised frozen features; C picked on dev."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.preprocessing import StandardScaler

    from emo.cache import load_split

    splits = {s: load_split(cache, s, modalities=("text",)) for s in ("train", "dev", "test")}
    x = {s: np.asarray(getattr(f, f"text_{feature}"), dtype=np.float32) for s, f in splits.items()}
    y = {s: f.emotion for s, f in splits.items()}
    scaler = StandardScaler().fit(x["train"])
    x = {s: scaler.transform(v) for s, v in x.items()}
    best = None
    for c in (0.01, 0.03, 0.1, 0.3, 1.0):
        for weighting in (None, "balanced"):
            model = LogisticRegression(C=c, max_iter=3000, class_weight=weighting)
            model.fit(x["train"], y["train"])
            dev = f1_score(y["dev"], model.predict(x["dev"]), average="weighted")
            if best is None or dev > best[0]:
                best = (dev, c, weighting, model)
    dev, c, weighting, model = best
    pred = model.predict(x["test"])
    return {
        "head": f"logistic regression ({feature}, C={c}, class_weight={weighting or 'none'})",
        "dev_wf1": dev,
        "test_acc": float(accuracy_score(y["test"], pred)),
        "test_wf1": float(f1_score(y["test"], pred, average="weighted")),
    }


def fusion_heads(cache: Path, out: Path, epochs: int, seeds: int) -> list[dict]:
    """emo's text-only heads as one ablation grid (emo fit's trainer, the cache loaded once)."""
    from emo.fuse.ablate import run_ablate
    from emo.fuse.ablate_grid import resolve_configs

    ablate, base = resolve_configs(
        None,
        dict(
            cache=cache,
            out=out,
            modalities="text",
            fusion="early,late",
            seeds=seeds,
            grid=["text_feature=cls,mean", "lr=0.0001,0.001"],
            epochs=epochs,
        ),
    )
    result = run_ablate(ablate, base)
    rows = []
    for row in result.rows:
        rows.append(
            {
                "head": f"emo {row['fusion']} head ({row['text_feature']}, lr={row['lr']}, {row['seeds']} seeds)",
                "dev_wf1": row["dev_wf1_mean"],
                "test_acc": row["test_acc_mean"],
                "test_wf1": row["test_wf1_mean"],
                "test_wf1_std": row["test_wf1_std"],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "meld")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "meld_text")
    parser.add_argument("--contexts", default="0,2", help="dialogue context sizes to extract, e.g. 0,2")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 epochs, 1 seed (a smoke run)")
    args = parser.parse_args()
    if not (args.data / "train_sent_emo.csv").is_file():
        print(f"skipped: the real MELD CSVs are not at {args.data} (expected ../shared/data/meld).")
        return
    if args.quick:
        args.epochs, args.seeds = 3, 1
    from rich.console import Console

    console = Console(width=140)
    console.print(
        "Encoder: all-MiniLM-L6-v2 (frozen, pip-shipped, 384-d), emo extract --preset offline --modalities text; "
        "MELD's real CSVs; every choice made on dev, test reported."
    )
    contexts = [int(c) for c in args.contexts.split(",") if c.strip()]
    caches = {}
    for context in contexts:  # all extraction first: it is the slow part, and resumable
        caches[context] = args.work / f"cache-context{context}"
        max_length = 128  # all-MiniLM-L6-v2 was trained on 128-token inputs; context is cut from the left
        if complete_cache(caches[context]):
            console.print(f"context {context}: reusing the finished cache {caches[context]}.")
            continue
        seconds = extract(args.data, caches[context], context, max_length)
        console.print(f"context {context}: features for train/dev/test ready in {seconds:.0f} s ({caches[context]}).")
    results = []
    for context in contexts:
        cache = caches[context]
        t0 = time.perf_counter()
        out = args.work / f"ablate-context{context}-e{args.epochs}-s{args.seeds}"
        rows = fusion_heads(cache, out, args.epochs, args.seeds)
        console.print(f"context {context}: emo heads trained in {time.perf_counter() - t0:.0f} s.")
        for feature in ("cls", "mean"):
            t0 = time.perf_counter()
            rows.append(logistic_probe(cache, feature))
            console.print(f"context {context}: logistic probe on {feature} in {time.perf_counter() - t0:.0f} s.")
        for row in rows:
            row["context"] = context
        results.extend(rows)
        _print(results, console)

    best = _print(results, console)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "results.json").write_text(json.dumps({"rows": results, "selected": best}, indent=1), encoding="utf-8")


def _print(results: list[dict], console) -> dict:
    from rich.table import Table

    best = max(results, key=lambda r: r["dev_wf1"])
    table = Table(title="MELD test, text only (7-class): accuracy and weighted F1, %")
    for name in ("context", "head", "dev wF1", "test acc", "test wF1"):
        table.add_column(name, justify="left" if name == "head" else "right")
    for row in results:
        std = f" ± {100 * row['test_wf1_std']:.2f}" if row.get("test_wf1_std") else ""
        table.add_row(
            str(row["context"]),
            ("★ " if row is best else "") + row["head"],
            f"{100 * row['dev_wf1']:.2f}",
            f"{100 * row['test_acc']:.2f}",
            f"{100 * row['test_wf1']:.2f}{std}",
        )
    for name, value in PUBLISHED:
        table.add_row("", f"published: {name}", "", "", f"{value:.2f}")
    console.print(table)
    console.print(
        f"★ = selected on dev: {best['head']} with context {best['context']}: "
        f"test accuracy {100 * best['test_acc']:.2f}, weighted F1 {100 * best['test_wf1']:.2f}."
    )
    return best


if __name__ == "__main__":
    main()
