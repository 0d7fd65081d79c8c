"""How commands talk to people: one console, and progress events rendered two ways.

On a terminal, progress is a rich bar per task. When stdout/stderr is a file or a batch
log (SLURM, nohup, `| tee`), rich would cut tables to 80 columns and draw nothing until a
task ends, so there we print complete tables (a wide console) and one plain line per task
at a steady interval (`done/total`, rate, ETA), so a log shows life.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from emo.progress import Event, Message, TaskAdvanced, TaskFinished, TaskStarted
from emo.units import count, count_units, index_ranges, percent  # noqa: F401  (re-exported: commands import them from here)

LOG_WIDTH = 200  # columns for tables written to a file: wide enough that nothing is cut
LOG_INTERVAL_S = 30.0  # seconds between plain progress lines in a log


def make_console(stderr: bool = False, **options: Any):
    """A rich Console that never truncates tables when it is not writing to a terminal.

    `options` go to rich's Console as they are (e.g. `highlight=False`).
    """
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr, **options)

    class LogConsole(Console):
        """A sentence stays one line in a log (soft wrap: grep finds it whole), but a box (a
        panel, a table) is laid out at the log's width and wraps inside its frame: with soft
        wrap on, rich would cut a panel's text at the frame instead."""

        def print(self, *objects: Any, **kwargs: Any) -> None:
            if "soft_wrap" not in kwargs and any(not isinstance(item, str) for item in objects):
                kwargs["soft_wrap"] = False
            super().print(*objects, **kwargs)

    return LogConsole(stderr=stderr, **{"width": LOG_WIDTH, "soft_wrap": True, **options})


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressView:
    """Renders library progress events: rich bars on a terminal, plain lines in a log.

    Use as a context manager and pass the instance itself as the library's
    `progress=` callback.
    """

    def __init__(self, console=None, interval_s: float = LOG_INTERVAL_S, clock=time.monotonic):
        self.console = console or make_console(stderr=True)
        self.live = self.console.is_terminal
        self.interval_s = interval_s
        self.clock = clock
        self._bars = None
        self._ids: dict[str, Any] = {}
        self._tasks: dict[str, dict[str, Any]] = {}

    # context manager -------------------------------------------------------------------
    def __enter__(self) -> "ProgressView":
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bars = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._bars.start()
        return self

    def __exit__(self, *exc) -> bool:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None
        return False

    # the callback ----------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        if isinstance(event, Message):
            style = "yellow" if event.level == "warning" else None
            self.console.print(event.text, style=style, highlight=False)
        elif isinstance(event, TaskStarted):
            self._start(event)
        elif isinstance(event, TaskAdvanced):
            self._advance(event)
        elif isinstance(event, TaskFinished):
            self._finish(event)

    def _start(self, event: TaskStarted) -> None:
        now = self.clock()
        self._tasks[event.task] = dict(
            description=event.description, total=event.total, unit=event.unit, started=now, last=now, completed=0
        )
        if self._bars is not None:
            self._ids[event.task] = self._bars.add_task(
                event.description, total=event.total, unit=event.unit, detail=""
            )
        else:
            total = count_units(event.total, event.unit) if event.total is not None else event.unit
            self.console.print(f"{event.description}: started ({total}).", highlight=False)

    def _advance(self, event: TaskAdvanced) -> None:
        state = self._tasks.get(event.task)
        if state is None:
            return
        state["completed"] = event.completed
        if self._bars is not None:
            self._bars.update(self._ids[event.task], completed=event.completed, detail=event.detail)
            return
        now = self.clock()
        if now - state["last"] >= self.interval_s:
            state["last"] = now
            self.console.print(self._line(state, now, event.detail), highlight=False)

    def _finish(self, event: TaskFinished) -> None:
        state = self._tasks.pop(event.task, None)
        if state is None:
            return
        if self._bars is not None:
            task_id = self._ids.pop(event.task)
            total = state["total"]
            self._bars.update(
                task_id, completed=total if total is not None else state["completed"], detail=event.detail
            )
            return
        now = self.clock()
        elapsed = now - state["started"]
        detail = f"; {event.detail}" if event.detail else ""
        self.console.print(
            f"{state['description']}: done, {count_units(state['completed'], state['unit'])} in {_duration(elapsed)}{detail}.",
            highlight=False,
        )

    @staticmethod
    def _line(state: dict[str, Any], now: float, detail: str) -> str:
        elapsed = now - state["started"]
        done, total = state["completed"], state["total"]
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if (total is not None and rate > 0) else None
        of_total = f"/{total}" if total is not None else ""
        extra = f", {detail}" if detail else ""
        return (
            f"{state['description']}: {done}{of_total} {state['unit']}, {rate:.2f} {state['unit']}/s, "
            f"elapsed {_duration(elapsed)}, ETA {_duration(eta)}{extra}"
        )
