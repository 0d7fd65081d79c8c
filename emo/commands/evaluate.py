"""Score a trained run on a cached split: MELD's metrics, fusion weights, modality importance.

Prints the scores as percent and writes them into the run directory, named by the cache
and split they scored so nothing earlier is replaced: eval-CACHE-DIGEST-SPLIT.json
(fractions in [0, 1], for programs), .md (percent, for people) and
-confusion-HEAD.png. Reported: weighted F1 (MELD's headline), accuracy, macro F1 (over
the classes present in the split), loss, per-class precision/recall/F1, the confusion
matrix, the ensemble's learned weights, and modality importance: the drop in weighted F1
when each modality is hidden at eval time (with a warning when the model never saw a
hidden modality in training). The cache defaults to the one the run was trained from; a
cache made with different encoders is refused.
Example: emo eval --run runs/base --split test
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from emo.commands.output import make_console, percent
from emo.units import points


def command(
    run: Path = typer.Option(..., "--run", help="Run directory written by emo fit.", show_default=False),
    split: str = typer.Option(
        "test", "--split", help="Cached split to score: train, dev or test. (default: test)", show_default=False
    ),
    cache: Optional[Path] = typer.Option(
        None, "--cache", help="Feature cache to score on. (default: the one the run was trained on)"
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda. (default: auto)", show_default=False),
) -> None:
    from emo.fuse.evaluate import run_eval  # torch loads only once the options are parsed

    report = run_eval(run, split=split, cache=cache, device=device)
    print_report(report, make_console())
    print_warnings(report, make_console(stderr=True))


def print_report(report: dict[str, Any], console) -> None:
    """The report as tables, numbers in percent with their metric's name, then where it was written."""
    from rich.table import Table

    head = report["headline"]
    console.print(
        f"{head['head']} on {report['split']}: weighted F1 {percent(head['weighted_f1'])}, "
        f"accuracy {percent(head['accuracy'])}, macro F1 {percent(head['macro_f1'])} "
        f"({report['rows']} rows).",
        highlight=False,
    )
    summary = Table(title=f"emo eval: {report['split']} ({report['rows']} rows; percent)")
    for column in ("head", "weighted F1", "accuracy", "macro F1", "loss"):
        summary.add_column(column, justify="right")
    for name, m in report["metrics"].items():
        summary.add_row(
            name, percent(m["weighted_f1"]), percent(m["accuracy"]), percent(m["macro_f1"]), f"{m['loss']:.4f}"
        )
    console.print(summary)
    for name, m in report["metrics"].items():
        per_class = Table(title=f"{name}: per class (percent); confusion counts, rows true, columns predicted")
        for column in ("class", "precision", "recall", "F1", "n", *[label[:4] for label in m["labels"]]):
            per_class.add_column(column, justify="right")
        for label, row in zip(m["labels"], m["confusion"]):
            c = m["per_class"][label]
            per_class.add_row(
                label,
                percent(c["precision"], 1),
                percent(c["recall"], 1),
                percent(c["f1"], 1),
                str(c["support"]),
                *map(str, row),
            )
        console.print(per_class)
        console.print(
            f"{name} macro F1 averages the classes present in {report['split']}: "
            f"{', '.join(m['macro_f1_classes']) or 'none'}.",
            highlight=False,
        )
    if report.get("features"):
        console.print(f"Feature sets: {report['features']}.", highlight=False, soft_wrap=True)
    weights = ", ".join(f"{k} {percent(v)}" for k, v in report["fusion_weights"].items())
    console.print(f"Fusion weights: {weights}.", highlight=False)
    importance = Table(title=f"modality importance: {head['head']} weighted F1 with the modality hidden at eval time")
    for column in ("hidden modality", "weighted F1 without it", "drop", "rows missing it anyway"):
        importance.add_column(column, justify="right")
    for k, imp in report["modality_importance"].items():
        importance.add_row(k, percent(imp["weighted_f1_without"]), points(imp["drop"]), str(report["missing"][k]))
    console.print(importance)
    files = report.get("files")
    if files:
        pictures = ", ".join(v for k, v in files.items() if k.startswith("confusion_"))
        console.print(
            f"Report written to {files['json']} (fractions in [0, 1]), {files['markdown']} (percent) and {pictures}.",
            highlight=False,
            soft_wrap=True,  # paths stay whole, for copying and for grep in a log
        )
        if "predictions_csv" in files:
            console.print(
                f"Predictions for each of the {report['rows']} utterances: {files['predictions_csv']} and "
                f"{files['predictions_jsonl']}.",
                highlight=False,
                soft_wrap=True,
            )


def print_warnings(report: dict[str, Any], console) -> None:
    """Each warning of the report, on stderr, so it is seen even when stdout goes to a file."""
    for warning in report.get("warnings", []):
        console.print(f"Warning: {warning}", style="yellow", highlight=False, soft_wrap=True)
