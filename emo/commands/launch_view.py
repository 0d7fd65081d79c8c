"""What `emo extract --launcher NAME` adds to the command: the launchers' own options, and
a launch's events shown (`emo.extract.launch.orchestrate` does the launching).

One progress display for the whole launch (for a job array: tasks running, pending and
failed, finished shards per split) on stderr, and the launcher's own "Submitted ..."
sentence on stdout, where the end-of-run tables follow (`emo.commands.extract`).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, List, Optional

import typer

from emo.commands.output import ProgressView, make_console


def with_launcher_options(command: Callable) -> Callable:
    """Add every registered launcher's options (`--slurm-time`, ...) to `command`, which takes
    them as `**launcher_values`. Typer reads options from the signature, so the launchers'
    declared options (data, in each launcher's module) become real, typed, documented ones."""
    from emo.extract.launch.registry import launcher_options

    signature = inspect.signature(command, eval_str=True)
    params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    taken = {p.name for p in params}
    for option in launcher_options():
        if option.param in taken:
            raise TypeError(f"launcher option {option.flag} clashes with an option emo extract already has")
        kind = List[str] if option.pairs else Optional[option.type]
        default = typer.Option(None, option.flag, help=option.help, show_default=False)
        params.append(inspect.Parameter(option.param, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind))
    command.__signature__ = signature.replace(parameters=params)
    return command


class LaunchView:
    """A launch's events: the launcher's "Submitted ..." on stdout, progress on stderr."""

    def __init__(self, console) -> None:
        self.console = console
        self.progress = ProgressView(make_console(stderr=True))

    def __enter__(self) -> "LaunchView":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        return self.progress.__exit__(*exc)

    def __call__(self, event: Any) -> None:
        from emo.extract.launch.base import Submitted

        if isinstance(event, Submitted):
            self.console.print(event.text, highlight=False)
        else:
            self.progress(event)
