"""What `emo predict --out DIR` writes: predictions.csv, predictions.jsonl, a timeline per
input with several segments (emotion probabilities over time, with the transcript:
`emo.predict.timeline`), report.html (all of it on one self-contained page:
`emo.predict.report`) and problems.json when an input was skipped or degraded.

DIR is one artifact: it is built in a hidden folder beside it and renamed into place
whole (`emo.atomic.atomic_folder`), so a failed or interrupted command (a full disk,
Ctrl-C) leaves DIR as it was, and `--overwrite` replaces every earlier prediction file at
once (no timeline of an earlier input survives beside new predictions). A DIR that holds
anything but prediction files is never replaced."""

from __future__ import annotations

import re
from pathlib import Path

from emo import atomic
from emo.errors import UsageError
from emo.labels import EMOTIONS, SENTIMENTS
from emo.predict.timeline import plot_timeline

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
FILES = ("predictions.csv", "predictions.jsonl", "problems.json", "report.html")
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
        files = _write_files(result, building, out)
    return {kind: out / path.name for kind, path in files.items()}


def _write_files(result, out: Path, final: Path) -> dict[str, Path]:
    from emo.fuse.predictions import write_predictions
    from emo.predict.report import render_report

    rows = [s.to_row() for s in result.segments]
    paths = write_predictions(rows, out / "predictions.csv", out / "predictions.jsonl", header=_columns(result.heads))
    files: dict[str, Path] = {"csv": paths["csv"], "jsonl": paths["jsonl"]}
    by_file: dict[str, list] = {}
    for s in result.segments:
        by_file.setdefault(s.file, []).append(s)
    used: set[str] = set()
    pictures: dict[str, bytes] = {}
    for file, segments in by_file.items():
        if len(segments) < 2:
            continue
        name = _UNSAFE.sub("_", Path(file).stem).strip("._") or "input"
        while name in used:
            name += "_"
        used.add(name)
        path = out / f"{name}{TIMELINE_SUFFIX}"
        duration = result.durations.get(file)
        atomic.write_with(path, lambda tmp, s=segments, f=file, d=duration: plot_timeline(s, f, tmp, d))
        files[f"timeline:{file}"] = path
        pictures[file] = path.read_bytes()
    if result.problems:
        files["problems"] = atomic.write_json(out / "problems.json", [vars(p) for p in result.problems], indent=2)
    files["report"] = atomic.write_text(out / "report.html", render_report(result, final, pictures))
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
