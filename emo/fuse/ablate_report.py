"""An ablation's report: per-seed rows, mean ± std per cell, as CSV, Markdown, JSON and a chart.

    results.csv      one row per (cell, seed): cell, seed, dev/test weighted F1 and accuracy
                     as fractions, plus the cell's modalities, fusion and grid options
    summary.csv      one row per cell: mean and sample std over seeds (fractions), and with
                     several seeds the cell's seed ensemble (`*_ensemble`: the mean of its
                     seeds' probabilities, scored once)
    results.md       the same table for people, in percent; ★ marks the seed report's design
    results.json     the per-cell rows (fractions)
    results.png      bars of test (else dev) weighted F1 with std error bars

Files only; the terminal table is drawn by `emo.commands.ablate` from the same rows.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from emo import atomic
from emo.fuse.ablate_grid import Cell, Job, is_seed_design
from emo.fuse.config import FitConfig

REPORT_STEM = "results"
METRIC_COLUMNS = (("dev_wf1", "dev wF1"), ("dev_acc", "dev acc"), ("test_wf1", "test wF1"), ("test_acc", "test acc"))
# a cell's seed ensemble, shown beside mean ± std (the tables show weighted F1; the files all four)
ENSEMBLE_COLUMNS = (("dev_wf1", "dev wF1 ens"), ("test_wf1", "test wF1 ens"))
ENSEMBLE_FIELDS = tuple(f"{m}_ensemble" for m, _ in METRIC_COLUMNS)
SEED_COLUMNS = (
    "dev_weighted_f1",
    "test_weighted_f1",
    "dev_accuracy",
    "test_accuracy",
    "dev_macro_f1",
    "test_macro_f1",
    "best_epoch",
)
_BASE_KEYS = {
    "cell",
    "label",
    "modalities",
    "fusion",
    "seeds",
    "seed_design",
    *(f"{m}_{s}" for m, _ in METRIC_COLUMNS for s in ("mean", "std")),
    *ENSEMBLE_FIELDS,
}


def _head(base: FitConfig) -> str:
    return "emotion" if base.task in ("emotion", "both") else "sentiment"


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value, NaN for none)."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def option_keys(rows: list[dict[str, Any]]) -> list[str]:
    """The grid-axis columns present in `rows` (beyond modalities and fusion)."""
    return sorted({k for r in rows for k in r} - _BASE_KEYS)


def aggregate(
    cells: list[Cell],
    jobs: list[Job],
    done: dict[int, dict[str, Any]],
    base: FitConfig,
    ensembles: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per cell: mean and sample std over seeds of dev/test accuracy and weighted F1;
    with `ensembles` ({cell key: {split: scores per head}}, `emo.fuse.ensemble.ensemble_scores`)
    also each cell's seed ensemble (NaN for a cell with fewer than two finished seeds)."""
    head = _head(base)
    rows = []
    for cell in cells:
        results = [done[i] for i, job in enumerate(jobs) if job.cell == cell and i in done]
        row: dict[str, Any] = {
            "cell": cell.key,
            "label": cell.label,
            "modalities": "+".join(cell.modalities),
            "fusion": cell.fusion,
            **dict(cell.options),
            "seeds": len(results),
            "seed_design": is_seed_design(cell, base),
        }
        for split in ("dev", "test"):
            for metric, name in (("weighted_f1", "wf1"), ("accuracy", "acc")):
                values = [r[split][head][metric] for r in results if r.get(split)]
                row[f"{split}_{name}_mean"], row[f"{split}_{name}_std"] = mean_std(values)
        if ensembles is not None:
            for split in ("dev", "test"):
                scores = ensembles.get(cell.key, {}).get(split, {}).get(head, {})
                for metric, name in (("weighted_f1", "wf1"), ("accuracy", "acc")):
                    row[f"{split}_{name}_ensemble"] = scores.get(metric, math.nan)
        rows.append(row)
    return rows


def per_seed_rows(jobs: list[Job], done: dict[int, dict[str, Any]], base: FitConfig) -> list[dict[str, Any]]:
    """One row per finished (cell, seed), metrics as fractions (NaN where a split was not scored)."""
    head = _head(base)
    rows = []
    for i, job in enumerate(jobs):
        result = done.get(i)
        if result is None:
            continue
        row: dict[str, Any] = {
            "cell": job.cell.key,
            "seed": job.seed,
            "modalities": "+".join(job.cell.modalities),
            "fusion": job.cell.fusion,
            **dict(job.cell.options),
        }
        for split in ("dev", "test"):
            scores = (result.get(split) or {}).get(head, {})
            for metric in ("weighted_f1", "accuracy", "macro_f1"):
                row[f"{split}_{metric}"] = scores.get(metric, math.nan)
        row["best_epoch"] = result.get("best_epoch")
        rows.append(row)
    return rows


def _csv_text(rows: list[dict[str, Any]], fields: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def has_ensembles(rows: list[dict[str, Any]]) -> bool:
    """Whether the rows carry seed-ensemble columns (an ablation with several seeds)."""
    return any(field in row for row in rows for field in ENSEMBLE_FIELDS)


def format_cell(mean: float, std: float, seeds: int = 2) -> str:
    """'58.62 ± 0.72' in percent ('58.62' for one seed: no spread to show), '-' for a split
    that was not scored."""
    if mean != mean:
        return "-"
    return f"{100 * mean:.2f}" if seeds < 2 else f"{100 * mean:.2f} ± {100 * std:.2f}"


def markdown_table(rows: list[dict[str, Any]], title: str) -> str:
    keys = option_keys(rows)
    lines = [
        f"# {title}",
        "",
        "Mean ± sample std over seeds, in percent (MELD's headline metric is weighted F1); "
        "results.csv has every seed as fractions.",
        "★ marks the seed report's design (text+audio+visual, ensemble fusion).",
        "",
    ]
    ensemble = has_ensembles(rows)
    if ensemble:
        lines.insert(-1, "ens: the cell's seed ensemble, the mean of its seeds' class probabilities scored once.")
    header = ["modalities", "fusion", *keys, "seeds", *[n for _, n in METRIC_COLUMNS]]
    header += [n for _, n in ENSEMBLE_COLUMNS] if ensemble else []
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        mark = " ★" if row["seed_design"] else ""
        cells = [row["modalities"] + mark, row["fusion"], *[str(row.get(k, "")) for k in keys], str(row["seeds"])]
        cells += [format_cell(row[f"{m}_mean"], row[f"{m}_std"], row["seeds"]) for m, _ in METRIC_COLUMNS]
        cells += [format_cell(row[f"{m}_ensemble"], 0.0, 1) for m, _ in ENSEMBLE_COLUMNS] if ensemble else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_reports(
    rows: list[dict[str, Any]], seed_rows: list[dict[str, Any]], out: Path, title: str = "emo ablate"
) -> dict[str, Path]:
    """results.csv (per seed), summary.csv, results.md, results.json and results.png."""
    out = Path(out)
    paths = {
        "csv": out / f"{REPORT_STEM}.csv",
        "summary_csv": out / "summary.csv",
        "markdown": out / f"{REPORT_STEM}.md",
        "json": out / f"{REPORT_STEM}.json",
        "chart": out / f"{REPORT_STEM}.png",
    }
    keys = option_keys(rows)
    seed_fields = ["cell", "seed", *SEED_COLUMNS, "modalities", "fusion", *keys]
    atomic.write_text(paths["csv"], _csv_text(seed_rows, seed_fields))
    summary_fields = ["cell", "modalities", "fusion", *keys, "seeds", "seed_design"] + [
        f"{m}_{s}" for m, _ in METRIC_COLUMNS for s in ("mean", "std")
    ]
    summary_fields += list(ENSEMBLE_FIELDS) if has_ensembles(rows) else []
    atomic.write_text(paths["summary_csv"], _csv_text(rows, summary_fields))
    atomic.write_text(paths["markdown"], markdown_table(rows, title))
    atomic.write_json(paths["json"], rows)
    atomic.write_with(paths["chart"], lambda tmp: plot_bars(rows, tmp, title))
    return paths


def plot_bars(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Horizontal bars of test (or dev) weighted F1 with std error bars; the seed design in red."""
    from emo.fuse.plots import pyplot

    plt = pyplot()
    finite = lambda value: value if value == value else 0.0  # noqa: E731  (NaN: split not scored)
    metric = "test_wf1" if any(r["test_wf1_mean"] == r["test_wf1_mean"] for r in rows) else "dev_wf1"
    labels = [("★ " if r["seed_design"] else "") + r["label"] for r in rows]
    means = [100 * finite(r[f"{metric}_mean"]) for r in rows]
    stds = [100 * finite(r[f"{metric}_std"]) for r in rows]
    colors = ["#c0392b" if r["seed_design"] else "#4a7fb5" for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6))
    ypos = list(range(len(rows)))[::-1]
    ax.barh(ypos, means, xerr=stds, color=colors, capsize=3)
    ax.set_yticks(ypos)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel(f"{metric.replace('_wf1', '')} weighted F1 (%), mean ± std over seeds")
    ax.set_title(title, fontsize=9)
    for y, m in zip(ypos, means):
        ax.text(m + 0.3, y, f"{m:.1f}", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
