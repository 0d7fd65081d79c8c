"""List every encoder `emo extract` can run: its modality, the name that selects it
(--text-model, --visual-model, --audio-model NAME), kind, dim, licence, whether it loads
on this machine without a network, and what it cost per clip on the README's bench.

Nothing is loaded: the check is whether its packages or files are installed. Plugins
(EMO_PLUGINS=module or an `emo.encoders` entry point) are listed with the built-ins.
Example: emo encoders
         emo encoders --json
"""

from __future__ import annotations

import json

import typer

from emo.commands.output import make_console


def command(
    as_json: bool = typer.Option(False, "--json", help="Print the encoders as JSON instead of a table."),
) -> None:
    from emo.extract.encoders.registry import catalogue

    rows = catalogue()
    if as_json:
        typer.echo(json.dumps([row.to_dict() for row in rows], indent=1))
        return
    from rich.markup import escape
    from rich.table import Table

    console = make_console()
    table = Table()
    for column in ("modality", "name", "kind", "dim", "licence", "offline here", "ms/clip", "what it is"):
        table.add_column(column, justify="right" if column in ("dim", "ms/clip") else "left")
    for row in rows:
        if row.family:  # whether a given id loads offline depends on the id
            offline = row.note if row.offline else "no"
        else:
            offline = "yes" if row.offline else f"no: {row.note}"
        cells = (
            row.modality,
            f"<{row.name}>" if row.family else row.name,
            f"{row.kind} or layers" if row.layers_option else row.kind,
            str(row.dim) if row.dim else "the model's",
            row.licence,
            offline,
            f"{row.ms_per_clip:g}" if row.ms_per_clip is not None else "-",
            row.summary,
        )
        table.add_row(*(escape(cell) for cell in cells))
    console.print(table)
    console.print(
        "<name>: any id or path the named encoders above do not claim. --crop faces runs any frames encoder on the "
        "most prominent face (set <name>-faces). 'or layers': --text-layers / --audio-layers all (or 6,8,12) "
        "writes a layers set, one pooled vector per hidden state (L x dim). ms/clip: bench/encoders.py on a 2-core CPU (README, "
        '"Feature sets and encoders").',
        style="dim",
        highlight=False,
    )
