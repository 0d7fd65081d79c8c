"""Progress events: how long-running library code reports life without printing.

Library code (extraction, training, ablation, the demo) never prints; it calls a
`ProgressCallback` with small event objects, and the command that called it decides how
to show them (a rich progress bar on a terminal, plain periodic lines in a log file, or
nothing at all in a test or a notebook). Events are plain dataclasses so they are easy to
record, assert on and serialise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Union


@dataclass(frozen=True)
class TaskStarted:
    """A countable piece of work begins: `total` units (clips, epochs, fits) under `task`."""

    task: str  # a stable id, e.g. "extract:train" or "fit"
    description: str  # what a person reads, e.g. "train: 9,989 clips"
    total: int | None
    unit: str = "items"  # plural noun for the units: clips, epochs, fits


@dataclass(frozen=True)
class TaskAdvanced:
    """`completed` units of `task` are done (an absolute count, not an increment)."""

    task: str
    completed: int
    detail: str = ""  # a short status, e.g. "dev wF1 54.2 %"
    info: dict[str, Any] = field(default_factory=dict)  # structured extras (an epoch's metrics row)


@dataclass(frozen=True)
class TaskFinished:
    task: str
    detail: str = ""


@dataclass(frozen=True)
class Message:
    """A sentence worth telling the user (a decision, a skipped step, where things went)."""

    text: str
    level: str = "info"  # info | warning


Event = Union[TaskStarted, TaskAdvanced, TaskFinished, Message]
ProgressCallback = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The callback to use when nobody is listening."""


def emit(callback: ProgressCallback | None, event: Event) -> None:
    """Send `event` to `callback` if there is one (library code need not check for None)."""
    if callback is not None:
        callback(event)
