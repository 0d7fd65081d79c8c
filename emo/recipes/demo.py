"""The demo as a library function: synth -> extract -> fit -> eval -> ablate on SYNTHETIC data.

`run_demo(config, progress=...)` is what `emo demo` runs, and what a test or a notebook
calls to get the same thing without a terminal. It lives in `emo.recipes` because it
chains every pipeline package (see `emo/recipes/__init__.py`); it never prints: it
reports through `emo.progress` events (a `DemoStage` message opens each of the five
stages) and returns a `DemoResult`, which `emo.commands.demo` renders.

Reuse rules, so a re-run is cheap and never mixes generations:
- the dataset is rewritten only when the settings it depends on changed (or it is
  incomplete); the feature cache only when the dataset or the extraction settings
  changed; when either is rebuilt, the old cache and ablation cells are removed first,
  so an interrupted demo never pairs new data with old features;
- a complete cache is not re-extracted (the encoders are not even loaded), finished
  ablation cells are not retrained, and the fit (seconds) always runs;
- a cache the demo wrote another way (e.g. on another device) is rebuilt, not refused;
- the demo removes only folders it wrote itself (they hold its marker files).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emo import atomic
from emo.config import config_to_dict, save_config
from emo.errors import CacheError, ConfigError, UsageError
from emo.progress import Message, ProgressCallback, emit
from emo.recipes.demo_config import CONFIG_NAME, DemoConfig, resolve_demo_config

RESULT_NAME = "demo.json"  # the result in numbers (fractions), next to demo.toml
STAGES = 5
CLEAR_MARGIN = 0.05  # weighted F1 above the majority baseline that counts as clearly learning


@dataclass(frozen=True)
class DemoStage(Message):
    """A `Message` that opens one of the demo's stages; renderers may show it as a heading."""

    number: int = 0
    total: int = STAGES
    title: str = ""


@dataclass
class Baseline:
    """Always predicting train's most frequent class, scored on test: the floor to beat."""

    label: str
    weighted_f1: float
    accuracy: float


@dataclass
class AblationRow:
    """One modality subset of the ablation, over its seeds (fractions)."""

    modalities: str
    seeds: int
    test_weighted_f1: float
    test_weighted_f1_std: float
    dev_weighted_f1: float


@dataclass
class DemoResult:
    config: DemoConfig
    artifacts: dict[str, Path]  # what a person opens next, in reading order
    test_weighted_f1: float  # the fitted head on the test split (a fraction)
    test_accuracy: float
    best_epoch: int
    baseline: Baseline
    ablation: list[AblationRow]
    eval_report: dict[str, Any] = field(repr=False, default_factory=dict)  # emo eval's full report
    ablation_rows: list[dict[str, Any]] = field(repr=False, default_factory=list)  # emo ablate's rows
    reused: dict[str, bool] = field(default_factory=dict)  # dataset / features / ablation: reused as is?
    seconds: float = 0.0
    next_steps: list[str] = field(default_factory=list)  # commands to try next; all work offline

    @property
    def clearly_learns(self) -> bool:
        return self.test_weighted_f1 >= self.baseline.weighted_f1 + CLEAR_MARGIN

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary; scores stay fractions (people see percent, files keep numbers)."""
        return {
            "config": config_to_dict(self.config),
            "test_weighted_f1": self.test_weighted_f1,
            "test_accuracy": self.test_accuracy,
            "best_epoch": self.best_epoch,
            "baseline": vars(self.baseline),
            "ablation": [vars(row) for row in self.ablation],
            "reused": self.reused,
            "seconds": round(self.seconds, 1),
            "artifacts": {name: str(path) for name, path in self.artifacts.items()},
            "next_steps": self.next_steps,
        }


def run_demo(config: DemoConfig, progress: ProgressCallback | None = None) -> DemoResult:
    """Run the whole demo into `config.out` and say what it made; see the module docstring."""
    from emo.device import resolve_device

    config.validate()
    resolve_device(config.device)  # an unusable --device fails here, before any data is written
    out = config.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder; choose another --out.")
    data, cache, runs = out / "data", out / "cache", out / "runs"
    fit_dir, ablate_dir = runs / "fit", runs / "ablate"
    started = time.perf_counter()

    rebuild_data, rebuild_cache = _what_to_rebuild(config, data)
    if rebuild_cache:
        # Removed before anything is rebuilt, so an interrupted demo never pairs a new
        # dataset with features (or ablation cells) made from an old one.
        remove_own_folder(cache, marker="cache.json")
        remove_own_folder(ablate_dir, marker="ablate.toml")
    save_config(config, out / CONFIG_NAME, section="demo")
    reused: dict[str, bool] = {}
    stage = _Stages(progress, started)

    stage("Writing the synthetic dataset (MELD layout, real h264/AAC mp4 files)")
    reused["dataset"] = not rebuild_data
    if rebuild_data:
        from emo.data.synth import MANIFEST_NAME, generate

        generate(data, config.synth_config(), overwrite=(data / MANIFEST_NAME).is_file(), progress=progress)
        emit(
            progress,
            Message(f"{config.train_clips}/{config.dev_clips}/{config.test_clips} train/dev/test clips in {data}"),
        )
    else:
        emit(progress, Message(f"reusing the dataset already in {data}"))

    stage("Extracting features once with the offline encoders (MiniLM-L6 text, EfficientNet-Lite0 frames, log-mel)")
    reused["features"] = _extract(config, data, cache, ablate_dir, progress)

    stage(f"Training the fusion head (mel-CNN + early/late ensemble, {config.epochs} epochs)")
    from emo.fuse.train import run_fit

    fit = run_fit(config.fit_config(cache, fit_dir), progress=progress)
    if fit.checkpoint is None or not Path(fit.checkpoint).is_file():
        raise UsageError(f"The demo's fit did not write a checkpoint in {fit_dir}.")

    stage("Scoring the test split (MELD's metrics, confusion matrix, modality importance)")
    from emo.fuse.evaluate import run_eval

    report = run_eval(fit_dir, split="test", device=config.device)
    baseline = majority_baseline(cache)

    subsets = ", ".join(config.ablate_modalities)
    seeds = f"{config.ablate_seeds} seed{'s' * (config.ablate_seeds != 1)} each"
    stage(f"Ablation over modality subsets ({subsets}; {seeds})")
    from emo.fuse.ablate import run_ablate

    ablate, base = config.ablate_configs(cache, ablate_dir)
    ablation = run_ablate(ablate, base, progress=progress)
    reused["ablation"] = ablation.trained == 0

    result = DemoResult(
        config=config,
        artifacts=_artifacts(out, data, cache, fit_dir, report.get("files", {}), ablation.paths),
        test_weighted_f1=float(report["headline"]["weighted_f1"]),
        test_accuracy=float(report["metrics"][report["headline"]["head"]]["accuracy"]),
        best_epoch=fit.best_epoch,
        baseline=baseline,
        ablation=[_ablation_row(row) for row in ablation.rows],
        eval_report=report,
        ablation_rows=ablation.rows,
        reused=reused,
        next_steps=next_steps(config),
    )
    result.seconds = time.perf_counter() - started
    atomic.write_json(out / RESULT_NAME, result.to_dict())
    return result


def emo_command() -> str:
    """How the user can type `emo` right now: `emo` when the shell finds this installation's
    script on PATH, else its path (`.venv/bin/emo` after the quick start without activating
    the venv), so a printed hint works when pasted as it is."""
    import os
    import sys

    script = Path(sys.prefix) / "bin" / "emo"
    found = shutil.which("emo")
    if found and script.exists() and Path(found).resolve() == script.resolve():
        return "emo"
    if not script.exists():
        return "emo"
    try:
        return os.path.relpath(script) if script.resolve().is_relative_to(Path.cwd().resolve()) else str(script)
    except ValueError:
        return str(script)


def next_steps(config: DemoConfig) -> list[str]:
    """Commands worth trying after the demo. Every one works offline: the demo's own folders
    need nothing else, and extraction always names the pip-shipped encoders."""
    out, emo = config.out, emo_command()
    cache, fit_dir = out / "cache", out / "runs" / "fit"
    return [
        f"{emo} cache info {cache}",
        f"{emo} eval --run {fit_dir} --split dev",
        f"{emo} fit --cache {cache} --out {out / 'runs' / 'text-audio'} --modalities text,audio --lr {config.lr:g} "
        f"--epochs {config.epochs}",
        f"{emo} extract --split all --data-root MELD.Raw --cache cache/meld-offline --preset offline "
        f"(your MELD copy, no network needed), then {emo} fit --cache cache/meld-offline --out runs/meld",
    ]


def majority_baseline(cache: Path) -> Baseline:
    """Test metrics of always predicting train's most frequent class: the floor a model must beat."""
    import numpy as np

    from emo.cache import load_split
    from emo.fuse.metrics import majority_baseline as score
    from emo.labels import EMOTIONS

    train = load_split(cache, "train", modalities=())
    test = load_split(cache, "test", modalities=())
    metrics = score(train.emotion, test.emotion, EMOTIONS)
    label = EMOTIONS[int(np.bincount(train.emotion, minlength=len(EMOTIONS)).argmax())]
    return Baseline(label=label, weighted_f1=float(metrics["weighted_f1"]), accuracy=float(metrics["accuracy"]))


def remove_own_folder(folder: Path, marker: str) -> None:
    """Remove a folder an earlier demo wrote (it holds `marker`); refuse anything else."""
    if not folder.exists():
        return
    if not (folder / marker).is_file() and any(folder.iterdir()):
        raise UsageError(f"{folder} holds files the demo did not write; choose another --out.")
    shutil.rmtree(folder)


# --- the stages' details ----------------------------------------------------------------------


class _Stages:
    """Emits the DemoStage that opens each stage, numbered, with the time spent so far."""

    def __init__(self, progress: ProgressCallback | None, started: float):
        self.progress, self.started, self.number = progress, started, 0

    def __call__(self, title: str) -> None:
        self.number += 1
        elapsed = time.perf_counter() - self.started
        text = f"{self.number}/{STAGES} ({elapsed:.0f} s) {title}"
        emit(self.progress, DemoStage(text=text, number=self.number, total=STAGES, title=title))


def _what_to_rebuild(config: DemoConfig, data: Path) -> tuple[bool, bool]:
    """(rebuild the dataset, rebuild the feature cache), from the config of the last run in `out`."""
    from emo.data.synth import dataset_complete

    previous = _previous_config(config.out)
    rebuild_data = previous is None or previous.data_key() != config.data_key() or not dataset_complete(data)
    rebuild_cache = rebuild_data or previous is None or previous.cache_key() != config.cache_key()
    return rebuild_data, rebuild_cache


def _previous_config(out: Path) -> DemoConfig | None:
    """The config of the demo run already in `out`, if it left one that still reads."""
    path = out / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        return resolve_demo_config(path)
    except ConfigError:
        return None


def _extract(config: DemoConfig, data: Path, cache: Path, ablate_dir: Path, progress) -> bool:
    """Extract (or finish, or reuse) the demo's cache; True when nothing had to be extracted."""
    from emo.extract.pipeline.run import run_extract

    try:
        summary = run_extract(config.extract_config(data, cache), progress=progress)
    except CacheError as error:
        # The demo's own cache, made another way (e.g. on another device): rebuild it.
        emit(progress, Message(f"{error} Re-extracting the demo's cache.", level="warning"))
        remove_own_folder(ablate_dir, marker="ablate.toml")
        summary = run_extract(config.extract_config(data, cache, overwrite=True), progress=progress)
    return sum(split.written for split in summary.splits.values()) == 0  # extract said "nothing to do"


def _ablation_row(row: dict[str, Any]) -> AblationRow:
    return AblationRow(
        modalities=row["modalities"],
        seeds=int(row["seeds"]),
        test_weighted_f1=float(row["test_wf1_mean"]),
        test_weighted_f1_std=float(row["test_wf1_std"]),
        dev_weighted_f1=float(row["dev_wf1_mean"]),
    )


def _artifacts(
    out: Path, data: Path, cache: Path, fit_dir: Path, eval_files: dict[str, str], ablation_paths: dict[str, Path]
) -> dict[str, Path]:
    return {
        "demo config": out / CONFIG_NAME,
        "demo result (JSON)": out / RESULT_NAME,
        "synthetic dataset": data,
        "feature cache": cache,
        "checkpoint": fit_dir / "model.pt",
        "training curves": fit_dir / "curves.png",
        "test report": Path(eval_files["markdown"]),
        "test report (JSON)": Path(eval_files["json"]),
        "confusion matrix": Path(eval_files["confusion_emotion"]),
        "ablation table": ablation_paths["markdown"],
        "ablation chart": ablation_paths["chart"],
        "ablation CSV (mean ± std per subset)": ablation_paths["summary_csv"],
        "ablation CSV (per seed)": ablation_paths["csv"],
    }
