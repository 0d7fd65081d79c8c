"""The timeline of one input: each segment's emotion probabilities over time, and its words.

Made to be read at any length (a 294 s input once came out 4400x715 px with 8 px text,
joy in yellow on white, neutral and fear in two greys alike, the top panel without times
and the axis stopping at the last segment):
- Colours are the Okabe-Ito palette, told apart with the common colour-vision
  deficiencies; its yellow is left out (unreadable on white) and neutral is the one grey.
- The width is fixed (`WIDTH_IN` at `DPI`); long media wraps into rows of `ROW_S` seconds
  (whole minutes, more of them per row only past `MAX_ROWS` rows, so no image passes
  matplotlib's size limit), and the height grows with the rows. Every row is on one scale,
  and the last one ends where the media ends, not at the last segment.
- Each row is a probability panel and a words panel, both with time labels; no text is
  smaller than `FONT_PT` points at `DPI`.

`timeline_figure` builds the matplotlib figure (tests read its axes and texts);
`plot_timeline` writes it as PNG.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from emo.labels import EMOTIONS

# Okabe & Ito (2008), "Color Universal Design"; neutral is a grey none of the others resembles.
COLOURS = {
    "neutral": "#BBBBBB",
    "joy": "#E69F00",
    "surprise": "#CC79A7",
    "anger": "#D55E00",
    "sadness": "#0072B2",
    "disgust": "#009E73",
    "fear": "#56B4E9",
}
UNKNOWN_COLOUR = "#DDDDDD"
DPI = 100
WIDTH_IN = 12.0  # 1200 px at DPI, whatever the media's length
FONT_PT = 10  # the smallest text
ROW_S = 60.0  # seconds per row of long media
MAX_ROWS = 40  # past this, rows hold several minutes each
LANES = 2  # words panel: segments alternate between lanes, so a text may run over its neighbour
# Layout in inches.
LEFT, RIGHT, TOP, BOTTOM = 1.0, 0.3, 1.0, 0.35
BARS_H, TICKS_H, WORDS_H, ROW_GAP = 1.3, 0.35, 1.15, 0.55
CHAR_IN = 0.6 * FONT_PT / 72  # a generous average character width at FONT_PT
INSET_IN = 0.04  # words start this far right of their segment's start


def colour(emotion: str) -> str:
    return COLOURS.get(emotion, UNKNOWN_COLOUR)


def row_layout(duration: float) -> tuple[float, int]:
    """(seconds per row, rows) for media of `duration` seconds: one row as long as the media
    up to `ROW_S`, else rows of whole minutes, no more than `MAX_ROWS` of them."""
    duration = max(float(duration), 1e-3)
    if duration <= ROW_S:
        return duration, 1
    span = ROW_S * math.ceil(duration / (ROW_S * MAX_ROWS))
    return span, math.ceil(duration / span - 1e-9)


def clock(seconds: float, long: bool) -> str:
    """Seconds as m:ss for long media, as seconds with one decimal otherwise."""
    if not long:
        return f"{seconds:g}"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}:{rest:02d}"


def _tick_step(span: float) -> float:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600):
        if span / step <= 12:
            return float(step)
    return 1200.0


def luminance(hex_colour: str) -> float:
    """WCAG 2 relative luminance of '#RRGGBB' (0 black, 1 white)."""
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two '#RRGGBB' colours (1 to 21; 4.5 is the bar for text)."""
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def _ink(background: str) -> str:
    """Black or white text, whichever contrasts more with `background`."""
    return "#000000" if contrast("#000000", background) >= contrast("#FFFFFF", background) else "#FFFFFF"


def timeline_figure(segments, title: str, duration: float | None = None):
    """The figure for `segments` (SegmentPrediction-like, in time order) of an input of
    `duration` seconds (None: to the last segment's end). Its axes carry gids
    "probabilities-K" and "words-K" for row K."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    segments = sorted(segments, key=lambda s: s.start)
    end = max([duration or 0.0] + [s.end for s in segments])
    span, rows = row_layout(end)
    long = end > ROW_S
    row_h = BARS_H + TICKS_H + WORDS_H + ROW_GAP
    height = TOP + rows * row_h + BOTTOM
    fig = Figure(figsize=(WIDTH_IN, height), dpi=DPI)
    plot_w = WIDTH_IN - LEFT - RIGHT
    step = _tick_step(span)
    fig.text(
        LEFT / WIDTH_IN,
        1 - 0.3 / height,
        f"{Path(title).name}: emotion probabilities per segment, {clock(end, True)} of media",
        fontsize=FONT_PT + 3,
        va="center",
    )
    handles = [Patch(color=colour(e), label=e) for e in EMOTIONS]
    fig.legend(
        handles=handles,
        ncol=len(EMOTIONS),
        loc="center left",
        bbox_to_anchor=(LEFT / WIDTH_IN, 1 - 0.72 / height),
        fontsize=FONT_PT,
        frameon=False,
        handlelength=1.4,
        columnspacing=1.2,
    )
    formatter = FuncFormatter(lambda x, _: clock(x, long))
    for row in range(rows):
        first, last = row * span, min((row + 1) * span, end)
        width = plot_w * (last - first) / span
        top = TOP + row * row_h
        bars = fig.add_axes(
            (LEFT / WIDTH_IN, 1 - (top + BARS_H) / height, width / WIDTH_IN, BARS_H / height),
            gid=f"probabilities-{row}",
        )
        words = fig.add_axes(
            (LEFT / WIDTH_IN, 1 - (top + BARS_H + TICKS_H + WORDS_H) / height, width / WIDTH_IN, WORDS_H / height),
            gid=f"words-{row}",
        )
        shown = [s for s in segments if s.end > first and s.start < last]
        _bars(bars, shown)
        _words(words, [s for s in shown if _label_row(s, span) == row], first, last, width)
        for ax in (bars, words):
            ax.set_xlim(first, last)
            ax.xaxis.set_major_locator(MultipleLocator(step))
            ax.xaxis.set_major_formatter(formatter)
            ax.tick_params(labelsize=FONT_PT)
        bars.set_ylim(0, 1)
        bars.set_yticks([0, 0.5, 1])
        bars.set_ylabel("probability", fontsize=FONT_PT)
        words.set_ylim(0, LANES)
        words.set_yticks([])
        words.set_ylabel("words", fontsize=FONT_PT)
    unit = "m:ss" if long else "seconds"
    words.set_xlabel(f"time ({unit}); the media ends at {clock(end, long)}", fontsize=FONT_PT)
    return fig


def _bars(ax, segments) -> None:
    """Stacked probabilities, one bar per segment as wide as the segment."""
    starts = [s.start for s in segments]
    widths = [s.end - s.start for s in segments]
    bottoms = [0.0] * len(segments)
    for emotion in EMOTIONS:
        heights = [float(s.probabilities.get(emotion, 0.0)) for s in segments]
        ax.bar(
            starts,
            heights,
            width=widths,
            bottom=bottoms,
            align="edge",
            color=colour(emotion),
            edgecolor="white",
            linewidth=0.6,
        )
        bottoms = [b + h for b, h in zip(bottoms, heights)]


def _label_row(segment, span: float) -> int:
    """The row whose words panel names `segment`: the one holding its middle, so a segment
    that starts in the last instant of a row is named at the start of the next, not lost."""
    return int((segment.start + segment.end) / 2 // span)


def _words(ax, segments, first: float, last: float, width_in: float) -> None:
    """Each segment's top emotion (on its colour) and its words, in alternating lanes; a
    text runs until the next segment of its lane starts and is cut with '…' beyond that."""
    inches_per_s = width_in / max(last - first, 1e-9)
    for i, s in enumerate(segments):
        lane = i % LANES
        following = max(segments[i + LANES].start, first) if i + LANES < len(segments) else last
        start = max(s.start, first) + INSET_IN / inches_per_s  # clear of the frame and the bar's edge
        chars = int((following - start) * inches_per_s / CHAR_IN) - 1
        if chars < 3:
            continue
        y = LANES - lane - 0.08
        p = s.probabilities.get(s.emotion)
        label = s.emotion or "?"
        if p is not None and s.emotion and len(f"{label} {p:.0%}") <= chars:  # the share only where it fits whole
            label = f"{label} {p:.0%}"
        ax.text(
            start,
            y,
            _cut(label, chars),
            fontsize=FONT_PT,
            va="top",
            ha="left",
            color=_ink(colour(s.emotion)),
            bbox={"facecolor": colour(s.emotion), "edgecolor": "none", "pad": 1.5},
        )
        lines = textwrap.wrap(s.transcript or "(no words)", max(chars, 1))
        if len(lines) > 2:
            lines = [lines[0], _cut(" ".join(lines[1:]), chars)]
        ax.text(start, y - 0.36, "\n".join(lines), fontsize=FONT_PT, va="top", ha="left", color="#000000")


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: max(chars - 1, 0)].rstrip() + "…"


def plot_timeline(segments, title: str, path: Path, duration: float | None = None) -> None:
    """Write the timeline of `segments` as a PNG at `path`."""
    timeline_figure(segments, title, duration).savefig(path, dpi=DPI, format="png")
