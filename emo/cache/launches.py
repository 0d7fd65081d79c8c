"""Launcher folders inside a cache, and the record of the last launch into it.

A launcher that runs tasks elsewhere (`emo extract --launcher slurm`) keeps its job files,
per-task logs and task summaries in a folder of the cache (`CACHE/slurm/`), so they sit on
the filesystem the tasks share. Such a folder is never a split: it carries a mark file,
so the cache tells it from data whatever the launcher is called (a new launcher needs no
change here). Caches written before the mark have an unmarked `slurm/`, still recognised.

The launch record (`launch.json` in the launcher's folder: launcher, title, job id, tasks,
logs, expected shards) lets a later command name the job - "SLURM job 12 was launched into
it" - without asking a scheduler it may not know.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emo import atomic

MARK = ".emo-launcher"  # inside a launcher's folder; holds the launcher's name
LEGACY_DIRS = ("slurm",)  # launcher folders of caches from before the mark
RECORD = "launch.json"


def is_launcher_dir(path: Path) -> bool:
    """Whether `path`, a folder of a cache, is a launcher's (never a split)."""
    path = Path(path)
    return path.name in LEGACY_DIRS or (path / MARK).is_file()


def launcher_folder(root: Path | str, name: str, launcher: str) -> Path:
    """`root/name`, created and marked as launcher `launcher`'s folder; a folder of that name
    holding cache data is refused in one sentence."""
    from emo.errors import UsageError

    folder = Path(root) / name
    if folder.is_dir() and not is_launcher_dir(folder) and any(folder.iterdir()):
        raise UsageError(f"{folder} already holds other files, so launcher '{launcher}' cannot keep its files there.")
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / MARK).is_file():
        atomic.write_text(folder / MARK, launcher + "\n")
    return folder


def write_launch(folder: Path, record: dict[str, Any]) -> None:
    atomic.write_json(Path(folder) / RECORD, record)


def read_launch(folder: Path) -> dict[str, Any] | None:
    """The launch recorded in a launcher's folder, or None (none, or not readable)."""
    try:
        record = json.loads((Path(folder) / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("job_id") in (None, ""):
        return None
    record.setdefault("title", launch_title(record, Path(folder).name))
    record["folder"] = str(folder)
    return record


def last_launch(root: Path | str) -> dict[str, Any] | None:
    """The most recent launch into the cache at `root` (its record, with `title` and `folder`)."""
    root = Path(root)
    try:
        folders = [p for p in root.iterdir() if p.is_dir() and is_launcher_dir(p)]
    except OSError:
        return None
    dated = []
    for folder in folders:
        record = read_launch(folder)
        if record is not None:
            try:
                dated.append(((folder / RECORD).stat().st_mtime, folder.name, record))
            except OSError:
                continue
    return max(dated, key=lambda d: d[:2])[2] if dated else None


def launch_title(record: dict[str, Any], folder_name: str = "") -> str:
    """How a person names the launch: the launcher's own words ("SLURM job 12"), or for records
    from before titles, the launcher's name in capitals and the job id."""
    if record.get("title"):
        return str(record["title"])
    return f"{str(record.get('launcher') or folder_name).upper()} job {record.get('job_id')}"
