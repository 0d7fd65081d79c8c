"""Score a trained run on a cached split: MELD's metrics, fusion weights, modality importance.

Prints and writes (into the run directory) eval_SPLIT.json, eval_SPLIT.md and
confusion_SPLIT_HEAD.png: weighted F1 (MELD's headline), accuracy, macro F1, loss,
per-class precision/recall/F1, the confusion matrix, the ensemble's learned weights and
the drop in weighted F1 when each modality is hidden. The cache defaults to the one the
run was trained from; a cache made with different encoders is refused.
Example: emo eval --run runs/base --split test
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def command(
    run: Path = typer.Option(..., "--run", help="Run directory written by emo fit."),
    split: str = typer.Option("test", "--split", help="Cached split to score (train, dev or test)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache; default: the one the run was trained on."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    from rich.console import Console

    from emo.fuse.evaluate import run_eval

    run_eval(run, split=split, cache=cache, console=Console(), device=device)
