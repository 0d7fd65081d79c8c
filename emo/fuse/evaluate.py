"""`run_eval`: score a trained run on a cached split and write its report.

The report answers what MELD papers are compared on (weighted F1 first, then accuracy,
macro F1, per-class scores, the confusion matrix) plus two things a fusion model owes its
user: how the ensemble weighted its heads, and how much each modality matters (the drop in
weighted F1 when that modality is hidden as if missing). The run's checkpoint records
the cache fingerprint, so scoring it on features made differently is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emo.cache.fingerprint import describe_difference, fingerprint_digest
from emo.device import resolve_device
from emo.errors import CacheError, UsageError
from emo.fuse.checkpoint import load_checkpoint, plain
from emo.fuse.data import TensorSplit
from emo.fuse.engine import predict, primary_head, score
from emo.fuse.train import load_features


def resolve_cache(payload: dict[str, Any], run_dir: Path, cache: Path | None) -> Path:
    """The cache to score on: the one given, else the one the run was trained from."""
    if cache is not None:
        chosen = Path(cache)
    else:
        recorded = payload.get("cache_path") or payload["fit_config"].get("cache")
        if not recorded:
            raise UsageError(f"Run {run_dir} does not record its cache; pass --cache DIR.")
        chosen = Path(recorded)
    if not chosen.exists():
        raise UsageError(f"Cache {chosen} does not exist; pass --cache DIR to score run {run_dir} on another copy.")
    return chosen


def require_matching_cache(payload: dict[str, Any], fingerprint: dict[str, Any], cache: Path, run_dir: Path) -> None:
    """One sentence when the cache was not made the way the run's training cache was."""
    digest = fingerprint_digest(plain(fingerprint))
    if digest != payload["fingerprint_digest"]:
        raise CacheError(
            f"Cache {cache} (fingerprint {digest}) was made with different encoders or preprocessing than run "
            f"{run_dir} was trained on (fingerprint {payload['fingerprint_digest']}): "
            f"{describe_difference(payload['fingerprint'], plain(fingerprint))}."
        )


def run_eval(
    run_dir: Path | str,
    split: str = "test",
    cache: Path | str | None = None,
    console=None,
    device: str = "auto",
    write: bool = True,
) -> dict[str, Any]:
    """Score `run_dir`'s checkpoint on `split`; writes eval_<split>.{json,md} and confusion PNGs."""
    from emo.cache import open_cache

    run_dir = Path(run_dir)
    torch_device = resolve_device(device)
    model, payload = load_checkpoint(run_dir, torch_device)
    cache_path = resolve_cache(payload, run_dir, Path(cache) if cache is not None else None)
    info = open_cache(cache_path)
    require_matching_cache(payload, info.fingerprint, cache_path, run_dir)
    fit = payload["fit_config"]
    modalities = model.config.modalities
    features = load_features(cache_path, split, modalities)
    require_matching_cache(payload, features.fingerprint, cache_path, run_dir)
    data = TensorSplit(
        features,
        modalities,
        torch_device,
        fit.get("text_feature", "cls"),
        int(fit.get("max_mel_frames", 1000)),
    )
    batch_size = int(fit.get("eval_batch_size", 256))
    precision = fit.get("precision", "fp32")
    report = evaluate_model(model, data, batch_size, precision)
    report.update(
        {
            "run": str(run_dir),
            "split": split,
            "cache": str(cache_path),
            "fingerprint_digest": payload["fingerprint_digest"],
            "checkpoint_epoch": payload["epoch"],
            "fusion": model.config.fusion,
        }
    )
    if write:
        write_report(report, run_dir)
    if console is not None:
        print_report(report, console)
    return report


def evaluate_model(model, data: TensorSplit, batch_size: int = 256, precision: str = "fp32") -> dict[str, Any]:
    """Every metric of the report for an in-memory model and split (no files touched)."""
    heads = model.config.heads
    main = primary_head(heads)
    scores = score(predict(model, data, batch_size, precision=precision), data, detailed=True)
    importance = {}
    for modality in model.config.modalities:
        hidden = score(predict(model, data, batch_size, hide=(modality,), precision=precision), data)[main]
        importance[modality] = {
            "weighted_f1_without": hidden["weighted_f1"],
            "drop": scores[main]["weighted_f1"] - hidden["weighted_f1"],
        }
    present = data.present.cpu()
    return {
        "rows": len(data),
        "modalities": list(model.config.modalities),
        "heads": list(heads),
        "headline": {
            "head": main,
            "weighted_f1": scores[main]["weighted_f1"],
            "accuracy": scores[main]["accuracy"],
            "macro_f1": scores[main]["macro_f1"],
            "loss": scores[main]["loss"],
        },
        "metrics": scores,
        "fusion_weights": model.fusion_weights(),
        "modality_importance": importance,
        "missing": {m: int((~present[:, i]).sum()) for i, m in enumerate(model.config.modalities)},
    }


def write_report(report: dict[str, Any], run_dir: Path) -> dict[str, Path]:
    from emo.fuse.plots import plot_confusion

    split = report["split"]
    paths = {"json": run_dir / f"eval_{split}.json", "markdown": run_dir / f"eval_{split}.md"}
    for head, metrics in report["metrics"].items():
        path = run_dir / f"confusion_{split}_{head}.png"
        plot_confusion(metrics["confusion"], metrics["labels"], path, f"{head} on {split} (weighted F1 {metrics['weighted_f1']:.3f})")
        paths[f"confusion_{head}"] = path
    report["files"] = {k: str(v) for k, v in paths.items()}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown_report(report), encoding="utf-8")
    return paths


def markdown_report(report: dict[str, Any]) -> str:
    head = report["headline"]
    lines = [
        f"# emo eval: {report['run']} on {report['split']}",
        "",
        f"Cache `{report['cache']}` (fingerprint `{report['fingerprint_digest']}`), {report['rows']} rows, "
        f"modalities {', '.join(report['modalities'])}, {report['fusion']} fusion, checkpoint from epoch "
        f"{report['checkpoint_epoch']}.",
        "",
        "| head | weighted F1 | accuracy | macro F1 | loss |",
        "|---|---|---|---|---|",
    ]
    for name, m in report["metrics"].items():
        lines.append(f"| {name} | {m['weighted_f1']:.4f} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['loss']:.4f} |")
    for name, m in report["metrics"].items():
        lines += ["", f"## {name}: per class", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for label, c in m["per_class"].items():
            lines.append(f"| {label} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | {c['support']} |")
        lines += ["", f"## {name}: confusion matrix (rows true, columns predicted)", ""]
        lines.append("| true \\ predicted | " + " | ".join(m["labels"]) + " |")
        lines.append("|---" * (len(m["labels"]) + 1) + "|")
        for label, row in zip(m["labels"], m["confusion"]):
            lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "## Fusion weights", ""]
    lines += [f"- {k}: {v:.4f}" for k, v in report["fusion_weights"].items()]
    lines += [
        "",
        f"## Modality importance (drop in {head['head']} weighted F1 when hidden)",
        "",
        "| modality | weighted F1 without | drop | rows missing it |",
        "|---|---|---|---|",
    ]
    for name, imp in report["modality_importance"].items():
        lines.append(f"| {name} | {imp['weighted_f1_without']:.4f} | {imp['drop']:+.4f} | {report['missing'][name]} |")
    return "\n".join(lines) + "\n"


def print_report(report: dict[str, Any], console) -> None:
    from rich.table import Table

    head = report["headline"]
    summary = Table(title=f"emo eval: {report['split']} ({report['rows']} rows)")
    for column in ("head", "weighted F1", "accuracy", "macro F1", "loss"):
        summary.add_column(column, justify="right")
    for name, m in report["metrics"].items():
        summary.add_row(name, f"{m['weighted_f1']:.4f}", f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}", f"{m['loss']:.4f}")
    console.print(summary)
    for name, m in report["metrics"].items():
        per_class = Table(title=f"{name}: per class and confusion (rows true, columns predicted)")
        for column in ("class", "P", "R", "F1", "n", *[label[:4] for label in m["labels"]]):
            per_class.add_column(column, justify="right")
        for label, row in zip(m["labels"], m["confusion"]):
            c = m["per_class"][label]
            per_class.add_row(
                label, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["support"]), *map(str, row)
            )
        console.print(per_class)
    extra = Table(title=f"fusion weights and modality importance ({head['head']} weighted F1)")
    extra.add_column("item")
    extra.add_column("value", justify="right")
    for k, v in report["fusion_weights"].items():
        extra.add_row(f"weight {k}", f"{v:.4f}")
    for k, imp in report["modality_importance"].items():
        extra.add_row(f"drop without {k}", f"{imp['drop']:+.4f}")
    console.print(extra)
    files = report.get("files")
    if files:
        console.print(f"Report written to {files['json']} and {files['markdown']}.")
