"""The files of an `emo eval` report: their names, the Markdown, and writing them whole.

A report is named by what it scored - the cache's folder name, the short fingerprint
digest and the split, `eval-<cache>-<digest8>-<split>` - so scoring one run on another
cache or split adds a report beside the earlier ones instead of replacing them. Scoring
the same run on the same cache and split again replaces its own report (same question,
same answer). Two different caches that share a folder name and fingerprint (say
`/data1/cache` and `/data2/cache`) get `-2`, `-3`, ... so neither hides the other.

Numbers: the JSON keeps fractions in [0, 1] (for programs); the Markdown, like the
terminal, shows percent with the metric's name (for people). The files are written under
temporary names and renamed into place together (`emo.atomic.atomic_paths`), the JSON
last, so a failed write (a full disk) leaves the folder as it was, and a report whose JSON
exists is complete.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from emo import atomic
from emo.units import percent, points

DEFINITIONS: dict[str, str] = {
    "numbers": "Metrics in this JSON are fractions in [0, 1]; the Markdown report and the terminal show "
    "them as percent.",
    "weighted_f1": "Mean of the per-class F1 scores weighted by each class's support in the evaluated labels "
    "(MELD's headline metric).",
    "macro_f1": "Unweighted mean of the per-class F1 scores over the classes present in the evaluated labels "
    "(listed in macro_f1_classes); a class absent from the split is left out, not counted as 0.",
    "accuracy": "Share of rows whose predicted class is the true class.",
    "modality_importance": "For each modality, the drop in the main head's weighted F1 when that modality is "
    "hidden at eval time (masked as missing for every row, as for a clip that lacks it; the model is not "
    "retrained): drop = weighted F1 with every modality - weighted F1 without it.",
}

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def cache_label(cache: Path | str) -> str:
    """The cache's folder name, made safe for a file name ('cache' when it has none)."""
    name = Path(cache).resolve().name
    return _UNSAFE.sub("_", name).strip("._") or "cache"


def report_stem(run_dir: Path, cache: Path | str, digest: str, split: str) -> str:
    """`eval-<cache>-<digest8>-<split>`, numbered when another cache already holds that name."""
    base = f"eval-{cache_label(cache)}-{digest[:8]}-{_UNSAFE.sub('_', split)}"
    wanted = str(Path(cache).resolve())
    number = 1
    while True:
        stem = base if number == 1 else f"{base}-{number}"
        if _recorded_cache(run_dir / f"{stem}.json") in (None, wanted):
            return stem
        number += 1


def _recorded_cache(report_json: Path) -> str | None:
    """The cache an existing report scored; None when there is no report; '' when unreadable."""
    if not report_json.exists():
        return None
    try:
        return str(json.loads(report_json.read_text(encoding="utf-8")).get("cache", ""))
    except (OSError, ValueError, AttributeError):
        return ""  # not ours to replace: pick another name


def write_report(
    report: dict[str, Any], run_dir: Path, predictions: list[dict[str, Any]] | None = None
) -> dict[str, Path]:
    """Write the report's JSON, Markdown and one confusion-matrix PNG per head into `run_dir`,
    `<stem>-layers.png` when the head learned layer weights for a layers set, and with
    `predictions` (one row per utterance) `<stem>-predictions.csv` and `.jsonl`.

    Sets `report["files"]` (kind -> path) before writing, so the JSON lists its siblings.
    """
    from emo.fuse.plots import plot_confusion, plot_layer_weights
    from emo.fuse.predictions import write_predictions

    stem = report_stem(run_dir, report["cache"], report["fingerprint_digest"], report["split"])
    paths = {"json": run_dir / f"{stem}.json", "markdown": run_dir / f"{stem}.md"}
    for head in report["metrics"]:
        paths[f"confusion_{head}"] = run_dir / f"{stem}-confusion-{head}.png"
    learned = {name: mix for name, mix in (report.get("layer_mix") or {}).items() if mix.get("weights")}
    if learned:
        paths["layer_weights"] = run_dir / f"{stem}-layers.png"
    if predictions is not None:
        paths["predictions_csv"] = run_dir / f"{stem}-predictions.csv"
        paths["predictions_jsonl"] = run_dir / f"{stem}-predictions.jsonl"
    report["files"] = {kind: str(path) for kind, path in paths.items()}
    order = [kind for kind in paths if kind != "json"] + ["json"]  # the JSON lands last
    with atomic.atomic_paths({kind: paths[kind] for kind in order}) as temp:
        if predictions is not None:
            write_predictions(predictions, temp["predictions_csv"], temp["predictions_jsonl"])
        for head, metrics in report["metrics"].items():
            title = f"{head} on {report['split']}: weighted F1 {percent(metrics['weighted_f1'])}"
            atomic.write_with(
                temp[f"confusion_{head}"],
                lambda tmp: plot_confusion(metrics["confusion"], metrics["labels"], tmp, title),
            )
        if learned:
            atomic.write_with(temp["layer_weights"], lambda tmp: plot_layer_weights(learned, tmp))
        atomic.write_text(temp["markdown"], markdown_report(report))
        atomic.write_json(temp["json"], report, indent=2)
    return paths


def markdown_report(report: dict[str, Any]) -> str:
    """The report for people: percent with each metric's name, and what each number means."""
    head = report["headline"]
    main = report["metrics"][head["head"]]
    json_name = Path(report.get("files", {}).get("json", "the JSON report")).name
    lines = [
        f"# emo eval: {report['run']} on {report['split']}",
        "",
        f"Cache `{report['cache']}` (fingerprint `{report['fingerprint_digest']}`), {report['rows']} rows, "
        f"modalities {', '.join(report['modalities'])}, {report['fusion']} fusion, {_checkpoints(report)}.",
        "",
        f"**{head['head']} weighted F1 {percent(head['weighted_f1'])}**, accuracy {percent(head['accuracy'])}, "
        f"macro F1 {percent(head['macro_f1'])} (over the {len(main['macro_f1_classes'])} classes present: "
        f"{', '.join(main['macro_f1_classes']) or 'none'}).",
    ]
    lines += ensemble_markdown(report.get("ensemble"))
    for warning in report.get("warnings", []):
        lines += ["", f"> **Warning:** {warning}"]
    lines += [
        "",
        "## What the numbers mean",
        "",
        f"- Scores here are percent; `{json_name}` keeps the same numbers as fractions in [0, 1].",
        f"- Weighted F1: {DEFINITIONS['weighted_f1']}",
        "- Macro F1: unweighted mean of the per-class F1 over the classes present in this split's labels; a "
        "class absent from the split is left out, not counted as 0.",
        f"- Accuracy: {DEFINITIONS['accuracy']}",
        f"- Modality importance: the drop in {head['head']} weighted F1 when that modality is hidden at eval time "
        "(masked as missing for every row; the model is not retrained), in percentage points.",
        "",
        "## Scores (percent; loss is cross-entropy)",
        "",
        "| head | weighted F1 | accuracy | macro F1 | loss |",
        "|---|---|---|---|---|",
    ]
    for name, m in report["metrics"].items():
        lines.append(
            f"| {name} | {percent(m['weighted_f1'])} | {percent(m['accuracy'])} | {percent(m['macro_f1'])} "
            f"| {m['loss']:.4f} |"
        )
    for name, m in report["metrics"].items():
        lines += [
            "",
            f"## {name}: per class (percent)",
            "",
            "| class | precision | recall | F1 | support |",
            "|---|---|---|---|---|",
        ]
        for label, c in m["per_class"].items():
            lines.append(
                f"| {label} | {percent(c['precision'])} | {percent(c['recall'])} | {percent(c['f1'])} | {c['support']} |"
            )
        lines += ["", f"## {name}: confusion matrix (rows true, columns predicted; counts)", ""]
        lines.append("| true \\ predicted | " + " | ".join(m["labels"]) + " |")
        lines.append("|---" * (len(m["labels"]) + 1) + "|")
        for label, row in zip(m["labels"], m["confusion"]):
            lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "## Fusion weights (share of each head in the ensemble)", ""]
    lines += [f"- {k}: {percent(v)}" for k, v in report["fusion_weights"].items()]
    lines += layer_mix_markdown(report.get("layer_mix") or {})
    if not report["modality_importance"]:
        return "\n".join(lines + ["", "## Modality importance", "", importance_note(report)]) + "\n"
    lines += [
        "",
        f"## Modality importance (drop in {head['head']} weighted F1 when the modality is hidden at eval time)",
        "",
        "| modality | weighted F1 without it | drop | rows missing it anyway |",
        "|---|---|---|---|",
    ]
    for name, imp in report["modality_importance"].items():
        lines.append(
            f"| {name} | {percent(imp['weighted_f1_without'])} | {points(imp['drop'])} | {report['missing'][name]} |"
        )
    return "\n".join(lines) + "\n"


def importance_note(report: dict[str, Any]) -> str:
    """What a report without modality importance says instead (a single-modality run)."""
    used = " and ".join(report.get("modalities") or []) or "one modality"
    return f"Modality importance: not measured, since the run uses {used} only (hiding it would leave no input)."


def layer_mix_markdown(mixes: dict[str, Any]) -> list[str]:
    """Which layers the head used, per layers set: every learned weight (no layer left out)
    and gamma, or the fixed choice of a mix that learns none."""
    lines: list[str] = []
    for name, mix in mixes.items():
        norm = ", each layer layer-normalised first" if mix.get("layer_norm") else ""
        lines += ["", f"## Layer mix of {name} ({mix['mode']}{norm})", "", f"The head uses {mix['uses']}."]
        if mix.get("weights"):
            lines += [f"Gamma (the mix's learned scale): {mix['gamma']:.4f}.", ""]
            lines += ["| hidden state | weight |", "|---|---|"]
            lines += [f"| {i} | {percent(w)} |" for i, w in zip(mix["layers"], mix["weights"])]
    return lines


def _checkpoints(report: dict[str, Any]) -> str:
    epochs = report["checkpoint_epoch"]
    if not isinstance(epochs, list):
        return f"checkpoint from epoch {epochs}"
    return f"the mean probabilities of {len(epochs)} runs (checkpoints from epochs {', '.join(map(str, epochs))})"


def ensemble_markdown(ensemble: dict[str, Any] | None) -> list[str]:
    """An ensemble's members, each scored alone on the same rows, and its gain over their mean."""
    if not ensemble:
        return []
    lines = ["", f"## Ensemble members ({ensemble['head']}, each alone on the same rows)", ""]
    lines += ["| member | run | seed | weighted F1 | accuracy | macro F1 |", "|---|---|---|---|---|---|"]
    for m in ensemble["members"]:
        lines.append(
            f"| {m['name']} | {m['run']} | {m['seed']} | {percent(m['weighted_f1'])} | {percent(m['accuracy'])} "
            f"| {percent(m['macro_f1'])} |"
        )
    mean, gain = ensemble["members_mean"], ensemble["gain"]
    lines += [
        f"| members' mean | | | {percent(mean['weighted_f1'])} | {percent(mean['accuracy'])} "
        f"| {percent(mean['macro_f1'])} |",
        "",
        f"The ensemble gains {points(gain['weighted_f1'])} of weighted F1 over its members' mean "
        f"({points(gain['accuracy'])} of accuracy).",
    ]
    return lines
