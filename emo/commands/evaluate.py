"""Score a trained run on a cached split: MELD's metrics, fusion weights, modality importance.

Prints the scores as percent and writes them into the run directory, named by the cache
and split they scored so nothing earlier is replaced: eval-CACHE-DIGEST-SPLIT.json
(fractions in [0, 1], for programs), .md (percent, for people) and
-confusion-HEAD.png. Reported: weighted F1 (MELD's headline), accuracy, macro F1 (over
the classes present in the split), loss, per-class precision/recall/F1, the confusion
matrix, the ensemble's learned weights, and modality importance: the drop in weighted F1
when each modality is hidden at eval time (with a warning when the model never saw a
hidden modality in training). The cache defaults to the one the run was trained from; a
cache made with different encoders is refused. Several --run (or an ensemble folder from emo
ensemble) are scored as one model, the mean of their class probabilities, with one line per
member and the ensemble's gain over their mean (several --run need --out for the report).
Example: emo eval --run runs/base --split test
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from emo.commands.output import make_console, percent
from emo.units import points


def command(
    run: List[Path] = typer.Option(
        ...,
        "--run",
        help="Run directory written by emo fit, or an ensemble folder written by emo ensemble; repeat it to score "
        "several runs as one ensemble (the mean of their probabilities).",
        show_default=False,
    ),
    split: str = typer.Option(
        "test", "--split", help="Cached split to score: train, dev or test. (default: test)", show_default=False
    ),
    cache: Optional[Path] = typer.Option(
        None, "--cache", help="Feature cache to score on. (default: the one the run was trained on)"
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda. (default: auto)", show_default=False),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Folder for the report. (default: the run's folder; needed with several --run)"
    ),
) -> None:
    from emo.fuse.eval_request import check_eval

    check_eval(run, split, cache, device)  # usage errors are answered here, before torch loads
    from emo.fuse.evaluate import run_eval

    report = run_eval(run, split=split, cache=cache, device=device, out=out)
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
    print_ensemble(report, console)
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
    print_layer_mix(report.get("layer_mix") or {}, console)
    print_importance(report, console)
    files = report.get("files")
    if files:
        pictures = ", ".join(v for k, v in files.items() if k.startswith("confusion_") or k == "layer_weights")
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


def print_importance(report: dict[str, Any], console) -> None:
    """The modality-importance table, or the line saying why a single-modality run has none."""
    from rich.table import Table

    from emo.fuse.eval_report import importance_note

    if not report["modality_importance"]:
        console.print(importance_note(report), highlight=False, soft_wrap=True)
        return
    head = report["headline"]["head"]
    importance = Table(title=f"modality importance: {head} weighted F1 with the modality hidden at eval time")
    for column in ("hidden modality", "weighted F1 without it", "drop", "rows missing it anyway"):
        importance.add_column(column, justify="right")
    for k, imp in report["modality_importance"].items():
        importance.add_row(k, percent(imp["weighted_f1_without"]), points(imp["drop"]), str(report["missing"][k]))
    console.print(importance)


def print_layer_mix(mixes: dict[str, Any], console) -> None:
    """Per layers set, which layers the head used: every learned weight and gamma in a table,
    or one line naming a fixed mix's choice."""
    from rich.table import Table

    for name, mix in mixes.items():
        norm = ", layer-normalised" if mix.get("layer_norm") else ""
        line = f"Layer mix of {name} ({mix['mode']}{norm}): {mix['uses']}"
        if not mix.get("weights"):
            console.print(line + ".", highlight=False, soft_wrap=True)
            continue
        share = percent(1 / len(mix["weights"]))
        console.print(f"{line}; gamma {mix['gamma']:.4f}; equal share {share}.", highlight=False, soft_wrap=True)
        table = Table()
        for column in ("hidden state", "learned weight"):
            table.add_column(column, justify="right")
        for index, weight in zip(mix["layers"], mix["weights"]):
            table.add_row(str(index), percent(weight))
        console.print(table)


def print_ensemble(report: dict[str, Any], console) -> None:
    """One line per member of an ensemble, scored alone, and the ensemble's gain over their mean."""
    ensemble = report.get("ensemble")
    if not ensemble:
        return
    for m in ensemble["members"]:
        console.print(
            f"  {m['name']} ({'' if m['run'] == m['name'] else m['run'] + ', '}seed {m['seed']}): "
            f"weighted F1 {percent(m['weighted_f1'])}, "
            f"accuracy {percent(m['accuracy'])}.",
            highlight=False,
            soft_wrap=True,
        )
    mean, gain = ensemble["members_mean"], ensemble["gain"]
    console.print(
        f"Ensemble of {len(ensemble['members'])}: {points(gain['weighted_f1'])} of weighted F1 over the members' mean "
        f"({percent(mean['weighted_f1'])}), {points(gain['accuracy'])} of accuracy.",
        highlight=False,
    )


def print_warnings(report: dict[str, Any], console) -> None:
    """Each warning of the report, on stderr, so it is seen even when stdout goes to a file."""
    for warning in report.get("warnings", []):
        console.print(f"Warning: {warning}", style="yellow", highlight=False, soft_wrap=True)
