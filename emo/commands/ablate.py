"""Train a grid of fusion heads (modality subsets x fusion modes x fit options x seeds) from one cache.

Each split is loaded once; then every cell and seed runs emo fit's own trainer in this
process and writes emo fit's run folder (cells/CELL/seed-S/: model.pt, config.toml,
metrics.jsonl, curves.png, summary.json, result.json). Finished cells are skipped on a
re-run. Writes to --out: results.csv (one row per cell and seed, fractions), summary.csv
and results.md (mean ± std per cell; with several seeds also each cell's seed ensemble, the
mean of its seeds' probabilities), results.png (bar chart), results.json and
ablate.toml (the resolved grid and base fit config; re-run with --config).
The row marked ★ is the seed report's design (text+audio+visual, ensemble).
Any emo fit option sets the base config (--set epochs=5) or becomes an axis (--grid);
--grid features.audio=mel,whisper-base compares one modality's cached feature sets.
Example: emo ablate --cache cache/meld --out runs/ablate-subsets --modalities all-subsets
--fusion early,late,ensemble --seeds 3 --grid class_weights=none,meld
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from emo.commands.output import ProgressView, make_console
from emo.fuse.heads import fusion_help


def command(
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache written by emo extract."),
    out: Optional[Path] = typer.Option(None, "--out", help="Ablation directory to write (e.g. runs/ablate-NAME)."),
    modalities: Optional[str] = typer.Option(
        None,
        help="all-subsets (every non-empty subset of the modalities the cache holds: 7 for a full cache) or subsets like text,text+audio,text+audio+visual. (default: all-subsets)",
    ),
    fusion: Optional[str] = typer.Option(
        None, help=f"Fusion heads to compare, comma-separated: {fusion_help('and/or')}. (default: ensemble)"
    ),
    seeds: Optional[int] = typer.Option(None, help="Seeds per cell; mean ± std is reported. (default: 3)"),
    grid: Optional[List[str]] = typer.Option(
        None,
        "--grid",
        help="Extra axis over any fit option, e.g. class_weights=none,meld, context_model=none,gru or features.audio=mel,whisper-base (repeatable).",
    ),
    epochs: Optional[int] = typer.Option(None, help="Training epochs of every cell. (default: 15)"),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda. (default: auto)"),
    config: Optional[Path] = typer.Option(
        None,
        "--config",
        help="TOML with [ablate] (grid) and [fit] (base fit options) sections; options and --set override it.",
    ),
    set_: Optional[List[str]] = typer.Option(
        None,
        "--set",
        help="Override an ablate or fit key: --set key=value (repeatable); a key that its own option also sets, or that --grid varies, is refused.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Retrain cells saved with different options."),
) -> None:
    from emo.fuse.openmp_wait import spin_between_kernels

    spin_between_kernels()  # before torch loads (emo.fuse.openmp_wait)
    from emo.config import merge_overrides
    from emo.fuse.ablate import resolve_configs, run_ablate
    from emo.fuse.ablate_report import has_ensembles

    named = dict(
        cache=cache,
        out=out,
        modalities=modalities,
        fusion=fusion,
        seeds=seeds,
        grid=list(grid) if grid else None,
        epochs=epochs,
        device=device,
        overwrite=overwrite or None,
    )
    overrides = merge_overrides(set_, named)
    ablate, base = resolve_configs(config, overrides)
    console = make_console()
    with ProgressView(console) as view:
        result = run_ablate(ablate, base, progress=view)
    print_table(
        console,
        result.rows,
        title=f"emo ablate ({len(result.seed_rows)} fits; mean ± std over seeds, ens = seed ensemble, %)"
        if has_ensembles(result.rows)
        else f"emo ablate ({len(result.seed_rows)} fits; mean ± std over seeds, %)",
    )
    console.print(
        f"{result.trained} fits trained, {result.skipped} reused, in {result.seconds:.1f} s "
        f"({result.load_seconds:.1f} s loading the cache once). Reports: "
        + ", ".join(str(p) for p in result.paths.values())
        + f"; every fit's run folder is under {result.out / 'cells'}.",
        highlight=False,
    )


def print_table(console, rows: list, title: str) -> None:
    """The per-cell mean ± std table; ★ (and bold) marks the seed report's design."""
    from rich.table import Table

    from emo.fuse.ablate_report import ENSEMBLE_COLUMNS, METRIC_COLUMNS, format_cell, has_ensembles, option_keys

    keys = option_keys(rows)
    ensemble = ENSEMBLE_COLUMNS if has_ensembles(rows) else ()
    numbers = {n for _, n in METRIC_COLUMNS + ensemble}
    table = Table(title=title)
    for name in ("", "modalities", "fusion", *keys, "seeds", *[n for _, n in METRIC_COLUMNS + ensemble]):
        table.add_column(name, justify="right" if name in numbers else "left")
    for row in rows:
        table.add_row(
            "★" if row["seed_design"] else "",
            row["modalities"],
            row["fusion"],
            *[str(row.get(k, "")) for k in keys],
            str(row["seeds"]),
            *[format_cell(row[f"{m}_mean"], row[f"{m}_std"], row["seeds"]) for m, _ in METRIC_COLUMNS],
            *[format_cell(row[f"{m}_ensemble"], 0.0, 1) for m, _ in ensemble],
            style="bold red" if row["seed_design"] else None,
        )
    console.print(table)
