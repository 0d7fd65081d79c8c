"""Side-by-side timing that stays honest on a shared machine, for the bench/ scripts.

A ratio of two timings taken one after the other measures the neighbours as much as the
code: a load average of 6 on 2 cores once showed a context head at 0.76x the time of the
plain head that an idle machine put at 1.59x. So every bench here

- runs its sides interleaved, A B A B ..., so slow and quiet spells fall on both sides;
- reports each ratio as the median of the per-round ratios with their spread (min-max);
- records the 1-minute load average before, after every round and at the end, next to the
  cores this bench itself kept busy until then (its own processes' CPU time over the wall time);
- refuses to print a figure at all ("not measured", and a non-zero exit) when other work
  was on the machine: the load average minus the cores this bench kept busy itself above
  half the core count at any of those moments (the bench's own processes raise the load
  average too: a pipeline of three processes on two cores passes the core count with
  nothing else running, so the load average alone cannot tell an idle machine from a
  busy one). A contended core's figure is not one to quote. `--allow-load` prints it
  anyway, marked as measured under load, for trying a bench out on a busy machine.

Only public tools: time, os.getloadavg, os.times and statistics.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

NOT_MEASURED_EXIT = 3  # a bench whose figures were refused exits with this


def add_arguments(parser: argparse.ArgumentParser, repeats: int) -> None:
    """--repeats and --allow-load, the same in every bench."""
    parser.add_argument("--repeats", type=int, default=repeats, help=f"interleaved rounds per side (default {repeats})")
    parser.add_argument(
        "--allow-load",
        action="store_true",
        help="print figures even when other work takes over half the cores (marked; not for quoting)",
    )


class Timing:
    """Interleaved rounds, load-average records, and the verdict on each printed figure."""

    def __init__(self, allow_load: bool = False, cores: int | None = None):
        self.allow_load = allow_load
        self.cores = cores or os.cpu_count() or 1
        self.refused: list[str] = []
        self._cpu, self._wall = _cpu_seconds(), time.perf_counter()
        # (when, 1-minute load average, cores this bench kept busy on average until then)
        self.loads: list[tuple[str, float, float]] = [("before", os.getloadavg()[0], 0.0)]

    def note_load(self, when: str) -> float:
        load = os.getloadavg()[0]
        self.loads.append((when, load, self.own_cores()))
        return load

    def own_cores(self) -> float:
        """Cores this bench's process and its finished children kept busy, on average so far."""
        wall = time.perf_counter() - self._wall
        return (_cpu_seconds() - self._cpu) / wall if wall > 0 else 0.0

    def interleave(
        self, sides: dict[str, Callable[[], float | None]], repeats: int, label: str = "round"
    ) -> dict[str, list[float]]:
        """Each side once per round, in the given order, for `repeats` rounds. A side returns
        its measurement (seconds per epoch, GFLOP/s, ...), or None to be timed as a whole."""
        results: dict[str, list[float]] = {name: [] for name in sides}
        for round_ in range(1, repeats + 1):
            for name, side in sides.items():
                started = time.perf_counter()
                value = side()
                results[name].append(time.perf_counter() - started if value is None else float(value))
            self.note_load(f"{label} {round_}")
        return results

    def busy(self) -> str | None:
        """Why figures cannot be trusted now, or None: the most other work recorded (the load
        average less this bench's own busy cores) against half the cores."""
        when, load, own = max(self.loads, key=lambda item: item[1] - item[2])
        if load - own > self.cores / 2:
            return (
                f"load average {load:.2f} ({when}), of which this bench's own {own:.2f} cores, leaves "
                f"{load - own:.2f} cores of other work, over half the {self.cores} cores"
            )
        return None

    def ratio(self, label: str, top: list[float], bottom: list[float], target: str = "", digits: int = 2) -> str:
        """`label: 1.07x (median of 3 interleaved rounds, spread 1.02-1.12x)`; pairs by round.
        More `digits` where a median near a target must not round onto it."""
        ratios = [a / b for a, b in zip(top, bottom) if b]
        if not ratios:
            return f"{label}: not measured (no rounds)"
        median = f"{statistics.median(ratios):.{digits}f}x"
        text = f"{median} (median of {len(ratios)} interleaved rounds, spread {spread(ratios, digits)})"
        return self._verdict(label, text, target)

    def figure(self, label: str, values: list[float], unit: str, digits: int = 2, target: str = "") -> str:
        """`label: 8.41 s/epoch (median of 3, spread 8.20-8.77)`: an absolute figure, same rules."""
        if not values:
            return f"{label}: not measured (no rounds)"
        median = f"{statistics.median(values):.{digits}f}"
        unit = unit if unit in ("", "x") else f" {unit}"
        text = f"{median}{unit} (median of {len(values)}, spread {spread(values, digits)})"
        return self._verdict(label, text, target)

    def _verdict(self, label: str, text: str, target: str) -> str:
        target = f"  {target}" if target else ""
        reason = self.busy()
        if reason is None:
            return f"{label}: {text}{target}"
        if self.allow_load:
            return f"{label}: {text}{target}  [--allow-load: {reason}; not a figure to quote]"
        self.refused.append(label)
        return f"{label}: not measured ({reason}; rerun on a quiet machine, or pass --allow-load)"

    def load_line(self) -> str:
        """The load averages recorded and the cores this bench itself kept busy."""
        self.note_load("end")
        highest = max(load for _, load, _ in self.loads)
        other = max(load - own for _, load, own in self.loads)
        return (
            f"load average (1 min): before {self.loads[0][1]:.2f}, highest {highest:.2f}, at the end "
            f"{self.loads[-1][1]:.2f}, on {self.cores} cores; this bench kept {self.loads[-1][2]:.2f} cores busy on "
            f"average, so other work came to at most {max(other, 0):.2f} cores"
        )

    def finish(self) -> int:
        """Print the load line and what was refused; the exit status for the bench."""
        print(self.load_line())
        if self.refused:
            print(
                f"{len(self.refused)} figure(s) not measured: other work took over half the cores "
                "(it shares this machine). Nothing above is a figure to quote."
            )
            return NOT_MEASURED_EXIT
        return 0


def spread(values: list[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def _cpu_seconds() -> float:
    """User + system CPU of this process and its finished children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system
