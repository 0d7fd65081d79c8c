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
