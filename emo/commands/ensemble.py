"""Average several finished runs (seeds of one fit) into one self-contained ensemble folder.

Checks that every RUN is a finished run and that all were trained on the same cache
fingerprint and feature sets for the same task and modalities (else one sentence, nothing
written), then writes --out as one folder: ensemble.json (the members record), ensemble.toml
(re-run with --config) and members/member-N/ with each run's checkpoint and config, copied,
so the runs may be deleted afterwards. The folder is built beside --out and renamed into
place whole; --overwrite replaces an earlier ensemble there only once the new one is
complete. Score it with emo eval --run DIR (the mean of the members' class probabilities,
reported like one run, plus each member's score), predict with emo predict DIR INPUT.
Example: emo ensemble runs/seed-0 runs/seed-1 runs/seed-2 --out runs/ensemble
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from emo.commands.output import make_console, percent
from emo.units import count


def command(
    runs: Optional[List[Path]] = typer.Argument(
        None, metavar="RUN...", help="Finished run folders to average (two or more).", show_default=False
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Ensemble folder to write (e.g. runs/ensemble-NAME)."),
    config: Optional[Path] = typer.Option(
        None, "--config", help="TOML with runs, out ([ensemble] or top level); arguments and --set override it."
    ),
    set_: Optional[List[str]] = typer.Option(
        None,
        "--set",
        help="Override a config key: --set key=value (repeatable); a key that its own option also sets is refused.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an ensemble already in --out."),
) -> None:
    from emo.config import build_config, merge_overrides
    from emo.fuse.ensemble_folder import EnsembleConfig, build_ensemble

    named = dict(runs=[str(r) for r in runs] if runs else None, out=out, overwrite=overwrite or None)
    resolved = build_config(EnsembleConfig, config, merge_overrides(set_, named), section="ensemble")
    result = build_ensemble(resolved)
    console = make_console()
    for member in result.members:
        console.print(
            f"  {member['name']} <- {member['source']} (seed {member['seed']}, epoch {member['checkpoint_epoch']}, "
            f"dev weighted F1 {percent(member['dev_weighted_f1'])})",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"Ensemble of {count(len(result.members), 'run')} written to {result.out} "
        f"({result.size_bytes / 2**20:.1f} MiB). Score it with `emo eval --run {result.out} --split test`; "
        f"predict with `emo predict {result.out} INPUT --out DIR`.",
        highlight=False,
        soft_wrap=True,
    )
