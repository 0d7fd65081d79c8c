"""Train a grid of fusion heads (modality subsets x fusion modes x fit options x seeds) from one cache.

The cache is loaded once and the grid's models train together as model banks (one batched
forward/backward for many heads), each replaying emo fit's recipe for its own config.
Finished cells are saved one file each, so a re-run skips them. Writes to --out:
results.md, results.csv, results.png (bar chart), results.json, ablate.toml (the resolved
grid and base fit config; re-run with --config) and cells/CELL/seed-S.json.
The row marked ★ is the seed report's design (text+audio+visual, ensemble).
Any emo fit option sets the base config (--set epochs=5) or becomes an axis (--grid).
Example: emo ablate --cache cache/meld --out runs/ablate-subsets --modalities all-subsets
--fusion early,late,ensemble --seeds 3 --grid class_weights=none,meld
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def command(
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache written by emo extract."),
    out: Optional[Path] = typer.Option(None, "--out", help="Ablation directory to write (e.g. runs/ablate-NAME)."),
    modalities: Optional[str] = typer.Option(
        None, help="all-subsets (the 7 non-empty subsets) or subsets like text,text+audio,text+audio+visual."
    ),
    fusion: Optional[str] = typer.Option(None, help="Fusion modes to compare: any of early,late,ensemble."),
    seeds: Optional[int] = typer.Option(None, help="Seeds per cell (default 3); mean ± std is reported."),
    grid: Optional[List[str]] = typer.Option(
        None, "--grid", help="Extra axis over any fit option, e.g. class_weights=none,meld (repeatable)."
    ),
    epochs: Optional[int] = typer.Option(None, help="Training epochs of every cell (default 15)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda."),
    config: Optional[Path] = typer.Option(
        None, "--config", help="TOML with [ablate] (grid) and [fit] (base fit options) sections."
    ),
    set_: Optional[List[str]] = typer.Option(
        None, "--set", help="Override an ablate or fit key: --set key=value (repeatable)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Retrain cells saved with different options."),
) -> None:
    from rich.console import Console

    from emo.config import parse_set_pairs
    from emo.fuse.ablate import resolve_configs, run_ablate

    overrides: dict = dict(parse_set_pairs(set_))
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
    overrides.update({k: v for k, v in named.items() if v is not None})
    ablate, base = resolve_configs(config, overrides)
    console = Console()
    result = run_ablate(ablate, base, console=console)
    console.print(
        f"{result.trained} fits trained, {result.skipped} reused, in {result.seconds:.1f} s "
        f"({result.load_seconds:.1f} s loading the cache once); report in {result.paths['markdown']}."
    )
