"""A synthetic dataset in the exact MELD release layout, for tests, the demo and benchmarks.

Why it looks like this:
- Same files as MELD.Raw: `{train,dev,test}_sent_emo.csv` (the 11 real columns, UTF-8,
  CRLF, both time formats) and `train_splits/`, `dev_splits_complete/`,
  `output_repeated_splits_test/` holding real h264 + AAC mp4 files written with PyAV - so
  everything downstream runs its real code paths on it, decoder included.
- The emotion is *partly* recoverable from each modality on its own: emotion words in the
  text, a pitch/rhythm pattern in the audio, a background colour in the frames. Each
  modality shows the true emotion's cue with probability `*_cue` and a different
  emotion's cue otherwise, independently per modality, and every cue is jittered - so no
  single modality is perfect, each is far above chance, and fusing them helps. That is
  what lets a test or a demo tell a working pipeline from a broken one.
- Labels follow MELD's train distribution (neutral-heavy), dialogues have Utterance_ID gaps
  and skipped Dialogue_IDs, like the real thing.
- Broken clips of every kind `emo.extract.media.decode` must survive can be mixed in, and the
  report says which clip is broken how (and which ClipError reason it should raise).
- Deterministic: every clip draws from its own seeded generator, so the same seed gives
  identical CSVs and identical decoded content whatever the order of writing.

Four modules, one job each: `emo.data.synth_config` holds the config and its limits,
`emo.data.synth_plan` decides the rows (ids, labels, cues, text, broken kinds) without
writing anything, `emo.data.synth_media` renders a row's mp4, and this module owns the
folder: claiming it, writing clips, then
the CSVs, then the ground-truth manifest, and reporting progress as `emo.progress`
events (it never prints).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emo.atomic import write_bytes, write_json
from emo.data.meld import CLIP_DIRS, SPLITS, csv_name
from emo.data.synth_config import BROKEN_KINDS, SynthConfig
from emo.data.synth_media import write_clip, write_row_clip, write_unlabeled_clip
from emo.data.synth_plan import (
    EXPECTED_REASON,
    MELD_TRAIN_COUNTS,
    SynthClip,
    csv_text,
    plan_split,
)
from emo.errors import UsageError
from emo.progress import ProgressCallback, TaskAdvanced, TaskFinished, TaskStarted, emit

__all__ = [
    "BROKEN_KINDS",
    "EXPECTED_REASON",
    "MANIFEST_NAME",
    "MELD_TRAIN_COUNTS",
    "SynthClip",
    "SynthConfig",
    "SynthReport",
    "csv_text",
    "generate",
    "plan_split",
    "write_clip",
]

MANIFEST_NAME = "synth_manifest.json"
PROGRESS_TASK = "synth"  # the task id of generate's progress events


@dataclass
class SynthReport:
    out_dir: Path
    config: SynthConfig
    csv_paths: dict[str, Path]
    clip_dirs: dict[str, Path]
    clips: list[SynthClip]
    unlabeled: list[Path] = field(default_factory=list)

    @property
    def broken(self) -> list[SynthClip]:
        return [c for c in self.clips if c.broken]

    @property
    def manifest(self) -> Path:
        return self.out_dir / MANIFEST_NAME

    def split_clips(self, split: str) -> list[SynthClip]:
        return [c for c in self.clips if c.split == split]

    def summary(self) -> dict[str, dict[str, int]]:
        """Per split: rows, good clips, broken clips by kind, unlabeled videos."""
        out: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            clips = self.split_clips(split)
            row = {"rows": len(clips), "good": sum(1 for c in clips if not c.broken)}
            for kind in BROKEN_KINDS:
                n = sum(1 for c in clips if c.broken == kind)
                if n:
                    row[kind] = n
            row["unlabeled"] = sum(1 for p in self.unlabeled if p.parent == self.clip_dirs[split])
            out[split] = row
        return out


def dataset_complete(out_dir: str | Path) -> bool:
    """True when `out_dir` holds a dataset `generate` finished (its manifest says so)."""
    import json

    try:
        return bool(json.loads((Path(out_dir) / MANIFEST_NAME).read_text(encoding="utf-8")).get("complete"))
    except (OSError, ValueError):
        return False


def _owned_files(out_dir: Path) -> list[Path]:
    """The files a synthetic dataset consists of, leftovers of an interrupted run included."""
    owned = [out_dir / csv_name(s) for s in SPLITS] + [out_dir / MANIFEST_NAME]
    for split in SPLITS:
        folder = out_dir / CLIP_DIRS[split]
        if folder.is_dir():
            owned += (
                sorted(folder.glob("*.mp4")) + sorted(folder.glob(".*.mp4.tmp-*")) + sorted(folder.glob("*.mp4.part"))
            )
    return [p for p in owned if p.exists()]


def _claim_folder(out_dir: Path, overwrite: bool) -> None:
    """Make `out_dir` ours and empty of any earlier dataset, or refuse in one sentence."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} exists and is not a folder.")
    existing = _owned_files(out_dir) if out_dir.is_dir() else []
    if existing and not overwrite:
        raise UsageError(f"{out_dir} already holds a dataset ({existing[0].name}); pass --force to replace it.")
    if existing and not (out_dir / MANIFEST_NAME).is_file():
        # --force deletes clips; never do that to a folder emo synth did not write (real MELD).
        raise UsageError(f"{out_dir} holds MELD files that emo synth did not write; choose another folder.")
    for path in existing:
        path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    # Claim the folder before writing any clip, so that after an interruption --force
    # knows these half-written files are ours to replace.
    write_json(out_dir / MANIFEST_NAME, {"complete": False})


def generate(
    out_dir: str | Path,
    config: SynthConfig | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> SynthReport:
    """Write a MELD-layout synthetic dataset into `out_dir` and say what was written.

    Refuses to write over an existing dataset unless `overwrite`, and always refuses a
    folder whose MELD files it did not write (no manifest). Overwriting first removes the
    CSVs, the manifest and the mp4 files in the three clip folders (nothing else), so no
    stale clip of an earlier, larger run survives. Progress goes to `progress` as events
    of the task "synth" (one unit per clip).
    """
    config = config or SynthConfig()
    config.validate()
    out_dir = Path(out_dir)
    _claim_folder(out_dir, overwrite)

    plans = []
    for split in SPLITS:
        clip_dir = out_dir / CLIP_DIRS[split]
        clips = plan_split(config, split, out_dir)
        last_dialogue = max((c.dialogue_id for c in clips), default=-1)
        # Unlabeled videos are named like clips of dialogues the CSV does not have.
        unlabeled = [clip_dir / f"dia{last_dialogue + 1 + k}_utt0.mp4" for k in range(config.unlabeled_videos)]
        plans.append((split, clip_dir, clips, unlabeled))

    for _, clip_dir, _, _ in plans:  # every split planned before any folder is made
        clip_dir.mkdir(exist_ok=True)
    total = sum(len(clips) + len(unlabeled) for _, _, clips, unlabeled in plans)
    emit(progress, TaskStarted(PROGRESS_TASK, f"synthetic clips in {out_dir}", total, unit="clips"))
    done = 0
    report = SynthReport(out_dir=out_dir, config=config, csv_paths={}, clip_dirs={}, clips=[], unlabeled=[])
    for split_index, (split, clip_dir, clips, unlabeled) in enumerate(plans):
        for row_index, clip in enumerate(clips):
            write_row_clip(clip, np.random.default_rng([config.seed, split_index, 2, row_index]), config)
            done += 1
            emit(progress, TaskAdvanced(PROGRESS_TASK, done))
        for k, path in enumerate(unlabeled):
            write_unlabeled_clip(path, np.random.default_rng([config.seed, split_index, 3, k]), config)
            report.unlabeled.append(path)
            done += 1
            emit(progress, TaskAdvanced(PROGRESS_TASK, done))
        # The CSV goes last: a folder with a CSV is a finished split.
        report.csv_paths[split] = write_bytes(out_dir / csv_name(split), csv_text(clips).encode("utf-8"))
        report.clip_dirs[split] = clip_dir
        report.clips.extend(clips)

    _write_manifest(report)
    emit(progress, TaskFinished(PROGRESS_TASK, f"{len(report.clips)} rows, {len(report.broken)} broken"))
    return report


def _write_manifest(report: SynthReport) -> None:
    """Per-clip ground truth (cues, broken kinds) next to the data, for benchmarks and demos."""
    payload = {
        "complete": True,
        "clips": [
            {
                "split": c.split,
                "clip": c.path.relative_to(report.out_dir).as_posix(),
                "emotion": c.emotion,
                "text_cue": c.text_cue,
                "audio_cue": c.audio_cue,
                "visual_cue": c.visual_cue,
                "duration": c.duration,
                "broken": c.broken,
                "expected_reason": c.expected_reason,
            }
            for c in report.clips
        ],
        "unlabeled": [p.relative_to(report.out_dir).as_posix() for p in report.unlabeled],
    }
    write_json(report.manifest, payload)
