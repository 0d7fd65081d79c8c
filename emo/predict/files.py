"""What `emo predict --out DIR` writes: predictions.csv, predictions.jsonl, a timeline per
input with several segments (emotion probabilities over time, with the transcript), and
problems.json when an input was skipped or degraded.

DIR is one artifact: it is built in a hidden folder beside it and renamed into place
whole (`emo.atomic.atomic_folder`), so a failed or interrupted command (a full disk,
Ctrl-C) leaves DIR as it was, and `--overwrite` replaces every earlier prediction file at
once (no timeline of an earlier input survives beside new predictions). A DIR that holds
anything but prediction files is never replaced."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from emo import atomic
from emo.errors import UsageError
from emo.labels import EMOTIONS, SENTIMENTS

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
COLOURS = {
    "neutral": "#9e9e9e",
    "joy": "#f4b400",
    "surprise": "#ab47bc",
    "anger": "#db4437",
    "sadness": "#4285f4",
    "disgust": "#0f9d58",
    "fear": "#3f3f3f",
}
FILES = ("predictions.csv", "predictions.jsonl", "problems.json")
TIMELINE_SUFFIX = "-timeline.png"


def is_prediction_file(name: str) -> bool:
    """A file `emo predict` writes (or an earlier one's temporary of it)."""
    name = atomic.final_name(name)
    return name in FILES or name.startswith("predictions.") or name.endswith(TIMELINE_SUFFIX)


def check_out(out: Path, overwrite: bool = False) -> None:
    """Refuse, before any model loads, an --out that is a file, holds other files than
    predictions, or holds predictions while `overwrite` is off."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a folder for the predictions.")
    if not out.is_dir():
        return
    names = sorted(p.name for p in out.iterdir())
    other = [name for name in names if not is_prediction_file(name)]
    if other:
        raise UsageError(
            f"--out {out} holds other files than predictions ({', '.join(other[:3])}); choose a new or empty folder."
        )
    if names and not overwrite:
        raise UsageError(f"{out} already holds predictions; choose another --out or pass --overwrite to replace them.")


def write_outputs(result, out: Path, overwrite: bool = False) -> dict[str, Path]:
    """Write the result's files as folder `out` (replacing earlier predictions there only
    with `overwrite`); returns kind -> path. A full disk is one sentence (`DiskFullError`)."""
    out = Path(out)
    check_out(out, overwrite)
    with atomic.disk_full_as_error(out), atomic.atomic_folder(out) as building:
        files = _write_files(result, building)
    return {kind: out / path.name for kind, path in files.items()}


def _write_files(result, out: Path) -> dict[str, Path]:
    from emo.fuse.predictions import write_predictions

    rows = [s.to_row() for s in result.segments]
    paths = write_predictions(rows, out / "predictions.csv", out / "predictions.jsonl", header=_columns(result.heads))
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
        path = out / f"{name}{TIMELINE_SUFFIX}"
        atomic.write_with(path, lambda tmp, s=segments, f=file: plot_timeline(s, f, tmp))
        files[f"timeline:{file}"] = path
    if result.problems:
        files["problems"] = atomic.write_json(out / "problems.json", [vars(p) for p in result.problems], indent=2)
    return files


def _columns(heads) -> list[str]:
    """The CSV columns of a prediction of a run with `heads` (the header of an empty table)."""
    from emo.fuse.predictions import flat_row
    from emo.predict.api import SegmentPrediction

    sentiment = "sentiment" in heads
    template = SegmentPrediction(
        file="",
        segment=0,
        start=0.0,
        end=0.0,
        transcript="",
        emotion="",
        modalities=[],
        probabilities=dict.fromkeys(EMOTIONS, 0.0) if "emotion" in heads else {},
        sentiment="" if sentiment else None,
        sentiment_probabilities=dict.fromkeys(SENTIMENTS, 0.0) if sentiment else None,
    )
    return list(flat_row(template.to_row()))


def plot_timeline(segments, title: str, path: Path) -> None:
    """Stacked emotion probabilities per segment over time, the transcript under each segment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = max(s.end for s in segments)
    fig, (ax, words) = plt.subplots(
        2, 1, figsize=(max(10.0, min(40.0, end / 6)), 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    for s in segments:
        bottom = 0.0
        for emotion in EMOTIONS:
            p = float(s.probabilities.get(emotion, 0.0))
            ax.bar(
                s.start,
                p,
                width=s.end - s.start,
                bottom=bottom,
                align="edge",
                color=COLOURS[emotion],
                edgecolor="white",
                linewidth=0.3,
            )
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
        words.text(
            s.start,
            0.95 - 0.5 * (i % 2),
            f"{s.emotion}\n{text}",
            fontsize=6,
            va="top",
            ha="left",
            color=COLOURS.get(s.emotion, "black"),
        )
    words.set_xlabel("time (s)")
    ax.set_xlim(0, end)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
