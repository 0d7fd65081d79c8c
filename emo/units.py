"""How numbers are shown to people: one unit everywhere.

Files (JSON, CSV) keep metrics as fractions (0.5862), the form code and spreadsheets
compute with; everything a person reads (terminal tables, Markdown reports, progress
lines) shows percent with the metric's name beside it ("weighted F1 58.62 %"). Both the
commands and the library's Markdown writers use these helpers, so the two never differ.
"""

from __future__ import annotations


def percent(value: float | None, digits: int = 2) -> str:
    """A fraction as people read it: 0.5862 -> '58.62 %'; '-' for a missing value (None, NaN)."""
    if value is None or value != value:
        return "-"
    return f"{100 * value:.{digits}f} %"


def points(value: float | None, digits: int = 2) -> str:
    """A difference of fractions in percentage points: 0.0321 -> '+3.21 points'."""
    if value is None or value != value:
        return "-"
    return f"{100 * value:+.{digits}f} points"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 clip', '3 clips' (a plural other than noun + 's' can be given)."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"


def count_units(n: int, unit: str) -> str:
    """Like `count`, for a unit named in the plural (as progress events name theirs):
    (1, 'files') -> '1 file', (3, 'files') -> '3 files'."""
    singular = unit[:-1] if unit.endswith("s") and not unit.endswith("ss") else unit
    return count(n, singular, unit)


def index_ranges(indices, sep: str = ", ") -> str:
    """Shard or task indices as runs: [0, 1, 2, 5] -> '0-2, 5' (sep=',' gives sbatch's '0-2,5')."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return sep.join(f"{a}-{b}" if b > a else str(a) for a, b in runs)
