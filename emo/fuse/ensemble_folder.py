"""`emo ensemble`: several finished runs written as ONE self-contained ensemble folder.

    DIR/ensemble.json         the members record (written last: a folder that has it is finished)
    DIR/ensemble.toml         the resolved `EnsembleConfig` (`emo ensemble --config` repeats it)
    DIR/members/member-N/     each run's model.pt, config.toml and summary.json, copied

Only what scoring and prediction read is copied (a checkpoint is a few MiB), so the member
runs may be moved or deleted afterwards and `emo eval --run DIR` / `emo predict DIR` still
work; like a run, the folder is built beside DIR and renamed into place whole
(`emo.atomic.atomic_folder`), so DIR is always a finished ensemble or absent, and
`--overwrite` keeps the old one until the new one is complete. The members are checked to
be finished and compatible (`emo.fuse.ensemble.open_members`) before anything is written.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emo import atomic
from emo.config import save_config
from emo.errors import UsageError
from emo.fuse.checkpoint import CHECKPOINT_NAME, require_run
from emo.fuse.ensemble import ENSEMBLE_CONFIG, ENSEMBLE_RECORD, FORMAT, MEMBERS_FOLDER, is_ensemble, open_members
from emo.fuse.feature_sets import format_features, selection_of
from emo.fuse.run_folder import CONFIG_NAME, SUMMARY_NAME, holds_run, require_finished
from emo.progress import Message, ProgressCallback, emit

MEMBER_FILES = (CHECKPOINT_NAME, CONFIG_NAME, SUMMARY_NAME)


@dataclass
class EnsembleConfig:
    """`emo ensemble`'s settings: the runs to average and the folder to write."""

    runs: tuple[str, ...] = ()  # finished run folders (emo fit, or an emo ablate cell's seed-S)
    out: Path | None = None
    overwrite: bool = False

    def validate(self) -> None:
        if len(self.runs) < 2:
            raise UsageError(
                f"An ensemble needs at least two runs, got {len(self.runs)}; pass the run folders to average, "
                "such as the seeds of one emo fit command."
            )
        if self.out is None:
            raise UsageError("No output folder given; pass --out runs/ensemble-NAME.")


@dataclass
class EnsembleResult:
    out: Path
    members: list[dict[str, Any]] = field(default_factory=list)  # as in ensemble.json
    size_bytes: int = 0


def is_ensemble_file(name: str) -> bool:
    """A file an ensemble folder holds: its own, its eval reports, or a temporary of one."""
    name = atomic.final_name(name)
    return name in (ENSEMBLE_RECORD, ENSEMBLE_CONFIG, MEMBERS_FOLDER) or name.startswith("eval-")


def check_destination(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, an --out that is a file, lies inside a run (which would then
    hold a stranger's folder), holds an ensemble (without `overwrite`) or holds anything
    else: it is replaced whole."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a folder for the ensemble.")
    run = next((parent for parent in out.resolve().parents if holds_run(parent)), None)
    if run is not None:
        raise UsageError(f"--out {out} lies inside run {run}; choose a folder outside the runs.")
    others = sorted(p.name for p in out.iterdir() if not is_ensemble_file(p.name)) if out.is_dir() else []
    if others:
        raise UsageError(
            f"{out} holds other files than an ensemble ({', '.join(others[:3])}); choose a new or empty folder "
            "for --out."
        )
    if is_ensemble(out) and not overwrite:
        raise UsageError(f"{out} already holds an ensemble; choose another --out or pass --overwrite.")


def build_ensemble(config: EnsembleConfig, progress: ProgressCallback | None = None) -> EnsembleResult:
    """Check the runs, then write the ensemble folder whole (see the module's docstring)."""
    config.validate()
    out = Path(config.out)
    check_destination(out, config.overwrite)
    for run in map(Path, config.runs):  # every path answered before any checkpoint is read
        if run.is_file():
            raise UsageError(f"Run {run} is a file; pass the run's folder (the one emo fit wrote).")
        if not is_ensemble(run):  # an ensemble given as a member is open_members' to refuse
            require_finished(run)
            require_run(run)
    ensemble = open_members(list(config.runs), "cpu")  # every run finished and compatible, or one sentence
    first = ensemble.first.payload
    resolved = EnsembleConfig(tuple(str(Path(r).resolve()) for r in config.runs), out.resolve(), False)
    from emo.fuse.scoring import primary_head  # torch: only once the request is known to be valid

    main = primary_head(tuple(ensemble.first.model.config.heads))
    members = []
    for index, member in enumerate(ensemble.members, start=1):
        fit = member.payload["fit_config"]
        members.append(
            {
                "name": f"member-{index}",
                "source": str(member.run_dir.resolve()),
                "seed": fit.get("seed"),
                "checkpoint_epoch": member.payload["epoch"],
                "dev": member.payload.get("dev_metrics", {}),
                "dev_weighted_f1": member.payload.get("dev_metrics", {}).get(main, {}).get("weighted_f1"),
                "fingerprint_digest": member.payload["fingerprint_digest"],
            }
        )
    selection = selection_of(first.get("fingerprint"))
    record = {
        "format": FORMAT,
        "members": members,
        "fingerprint_digest": first["fingerprint_digest"],
        "features": format_features(selection) if selection else "",
        "task": first["fit_config"].get("task", "emotion"),
        "modalities": list(ensemble.first.model.config.modalities),
        "cache": first.get("cache_path") or first["fit_config"].get("cache"),
        "averaging": "mean of the members' class probabilities",
    }
    emit(progress, Message(f"Copying {len(members)} members' checkpoints into {out}."))
    with atomic.disk_full_as_error(out), atomic.atomic_folder(out) as building:
        for member, entry in zip(ensemble.members, members):
            folder = building / MEMBERS_FOLDER / entry["name"]
            folder.mkdir(parents=True)
            for name in MEMBER_FILES:
                shutil.copyfile(member.run_dir / name, folder / name)
        save_config(resolved, building / ENSEMBLE_CONFIG, section="ensemble")
        atomic.write_json(building / ENSEMBLE_RECORD, record, indent=2)  # last: the folder is finished
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return EnsembleResult(out, members, size)
