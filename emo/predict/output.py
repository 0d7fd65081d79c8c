"""What `emo predict --out DIR` writes: predictions.csv, predictions.jsonl, a timeline per
input with several segments (emotion probabilities over time, with the transcript), and
problems.json when an input was skipped or degraded. Every file is written atomically."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from emo import atomic
from emo.labels import EMOTIONS

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
COLOURS = {"neutral": "#9e9e9e", "joy": "#f4b400", "surprise": "#ab47bc", "anger": "#db4437", "sadness": "#4285f4",
           "disgust": "#0f9d58", "fear": "#3f3f3f"}  # fmt: skip


def write_outputs(result, out: Path) -> dict[str, Path]:
    """Write the result's files into `out` (created); returns kind -> path."""
    from emo.fuse.predictions import write_predictions

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [s.to_row() for s in result.segments]
    paths = write_predictions(rows, out / "predictions.csv", out / "predictions.jsonl")
    files: dict[str, Path] = {"csv": paths["csv"], "jsonl": paths["jsonl"]}
    by_file: dict[str, list] = {}
    for s in result.segments:
        by_file.setdefault(s.file, []).append(s)
    used: set[str] = set()
    for file, segments in by_file.items():
        if len(segments) < 2:
            continue
        name = _UNSAFE.sub("_", Path(file).stem).strip("._") or "input"
        while name in used:
            name += "_"
        used.add(name)
        path = out / f"{name}-timeline.png"
        atomic.write_with(path, lambda tmp, s=segments, f=file: plot_timeline(s, f, tmp))
        files[f"timeline:{file}"] = path
    problems = out / "problems.json"
    if result.problems:
        atomic.write_json(problems, [vars(p) for p in result.problems], indent=2)
        files["problems"] = problems
    else:
        problems.unlink(missing_ok=True)  # from an earlier run into the same folder
    return files


def plot_timeline(segments, title: str, path: Path) -> None:
    """Stacked emotion probabilities per segment over time, the transcript under each segment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = max(s.end for s in segments)
    fig, (ax, words) = plt.subplots(2, 1, figsize=(max(10.0, min(40.0, end / 6)), 6.5), sharex=True,
                                    gridspec_kw={"height_ratios": [3, 2]})  # fmt: skip
    for s in segments:
        bottom = 0.0
        for emotion in EMOTIONS:
            p = float(s.probabilities.get(emotion, 0.0))
            ax.bar(s.start, p, width=s.end - s.start, bottom=bottom, align="edge", color=COLOURS[emotion],
                   edgecolor="white", linewidth=0.3)  # fmt: skip
            bottom += p
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.set_title(f"{Path(title).name}: emotion probabilities per segment")
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLOURS[e]) for e in EMOTIONS]
    ax.legend(handles, EMOTIONS, ncol=7, loc="upper center", bbox_to_anchor=(0.5, -0.02), fontsize=8, frameon=False)
    words.set_ylim(0, 1)
    words.set_yticks([])
    for i, s in enumerate(segments):
        text = "\n".join(textwrap.wrap(s.transcript or "(no words)", 18)[:6])
        words.text(s.start, 0.95 - 0.5 * (i % 2), f"{s.emotion}\n{text}", fontsize=6, va="top", ha="left",
                   color=COLOURS.get(s.emotion, "black"))  # fmt: skip
    words.set_xlabel("time (s)")
    ax.set_xlim(0, end)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
