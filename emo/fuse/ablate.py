"""`run_ablate`: a grid of `emo fit` runs from one cache load, resumable cell by cell.

Each split the grid needs is read (and checksum-verified) **once** - with every feature
set any cell uses, each cell composing its own choice of them; then every (cell, seed)
runs the very same plan and trainer as `emo fit` (`emo.fuse.fit_plan.plan_fit`,
`emo.fuse.train.Trainer`) in this process and writes the same run folder as `emo fit`
under `cells/<cell>/seed-<s>/`, plus `result.json` (the cell's dev and test scores),
written last. A cell counts as finished
exactly when its result.json exists: a cell's folder is built beside its final name and
renamed into place whole (`emo.fuse.run_folder`), so an interrupted grid loses at most
the fit in flight (nothing of it is left) and a re-run trains only what is missing.
With several seeds, each cell is also reported as its seed ensemble: the mean of its seeds'
class probabilities on dev and test, averaged by `emo.fuse.ensemble` as `emo eval` averages.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emo import atomic
from emo.config import config_to_dict
from emo.errors import CacheError, UsageError
from emo.fuse.ablate_grid import (
    ALL_SUBSETS,
    CONFIG_NAME,
    AblateConfig,
    Job,
    plan_grid,
    resolve_configs,
    save_resolved,
)
from emo.fuse.ablate_report import aggregate, per_seed_rows, write_reports
from emo.fuse.checkpoint import plain
from emo.fuse.config import FitConfig, resolve_text_feature
from emo.fuse.feature_cache import cache_sets, fit_fingerprint, load_raw, resolved_features, select_for_fit
from emo.fuse.fit_request import and_list, modalities_of
from emo.fuse.run_folder import is_finished, run_folder
from emo.labels import MODALITIES
from emo.progress import Message, ProgressCallback, TaskAdvanced, TaskFinished, TaskStarted, emit

RESULT_NAME = "result.json"

__all__ = ["AblateConfig", "AblateResult", "resolve_configs", "run_ablate"]


@dataclass
class AblateResult:
    out: Path
    rows: list[dict[str, Any]]  # one per cell: mean and std over seeds (fractions)
    seed_rows: list[dict[str, Any]]  # one per (cell, seed), as in results.csv
    paths: dict[str, Path]
    trained: int
    skipped: int
    seconds: float
    load_seconds: float = 0.0
    train_seconds: float = 0.0


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of a resolved fit config that change results (not where they are written)."""
    return {k: v for k, v in config.items() if k not in ("cache", "out", "overwrite", "device", "threads")}


def load_done(out: Path, job: Job, digest: str, overwrite: bool) -> dict[str, Any] | None:
    """A finished job's result if it exists and was made the same way; None to (re)train."""
    path = out / job.run_dir / RESULT_NAME
    if not path.is_file() or not is_finished(path.parent):  # an older layout's half-written cell: retrain it
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a damaged file: retrain and replace it
    if result.get("fingerprint_digest") != digest:
        if overwrite:
            return None
        raise CacheError(
            f"{out} holds results trained on a different cache (fingerprint {result.get('fingerprint_digest')} vs "
            f"{digest}); use another --out or pass --overwrite."
        )
    # a key the saved config lacks was added to FitConfig later, with a default that does what
    # the older emo did (layer_mix, say), so the cell still answers this grid's question
    saved = {**config_to_dict(FitConfig()), **result.get("fit_config", {})}
    if _comparable(saved) != _comparable(config_to_dict(job.config)):
        if overwrite:
            return None
        raise UsageError(
            f"{path.parent} was trained with different fit options than this grid asks for; "
            f"use another --out or pass --overwrite to retrain it."
        )
    return result


def run_ablate(ablate: AblateConfig, base: FitConfig, progress: ProgressCallback | None = None) -> AblateResult:
    """Train every missing (cell, seed) of the grid with `emo fit`'s trainer and write the report."""
    from emo import cache as cache_api

    ablate.validate()
    base.validate()
    if ablate.cache is None:
        raise UsageError("No cache given; pass --cache DIR (a folder written by emo extract).")
    if ablate.out is None:
        raise UsageError("No output directory given; pass --out runs/ablate-NAME.")
    cache_dir, out = Path(ablate.cache), Path(ablate.out)
    if not cache_dir.exists():
        raise UsageError(f"Cache {cache_dir} does not exist; run emo extract first (or emo demo for a synthetic one).")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a folder for the ablation.")
    started = time.perf_counter()
    info = cache_api.open_cache(cache_dir)
    held = modalities_of([*cache_sets(info), *(info.damaged_sets or {})])  # what 'all-subsets' ranges over
    cells, jobs = plan_grid(ablate, base, held)
    if held and held != MODALITIES and {ALL_SUBSETS, "all_subsets"} & set(ablate.modalities):
        what = and_list(held)
        emit(progress, Message(f"Cache {cache_dir} holds {what} features only; all-subsets covers {what}."))
    # Each cell's feature sets and 'auto' text pooling are resolved against the cache up front,
    # so a wrong set name fails before any training and saved cells compare with what they
    # really used; a cell's digest covers exactly its own sets.
    selections, digests = [], []
    for job in jobs:
        selection = select_for_fit(info, job.config.features, job.config.modalities, cache_dir)
        fingerprint = fit_fingerprint(info, selection)
        job.config = job.config.copy_with(
            cache=cache_dir,
            out=out / job.run_dir,
            features=resolved_features(selection, job.config.features),
            text_feature=resolve_text_feature(job.config.text_feature, fingerprint),
        )
        selections.append(selection)
        digests.append(cache_api.fingerprint_digest(plain(fingerprint)))
    used = tuple(m for m in MODALITIES if any(m in job.config.modalities for job in jobs))
    base_selection = select_for_fit(info, base.features, used, cache_dir)
    base = base.copy_with(
        features=resolved_features(base_selection, base.features),
        text_feature=resolve_text_feature(base.text_feature, fit_fingerprint(info, base_selection)),
    )

    done = {i: r for i, job in enumerate(jobs) if (r := load_done(out, job, digests[i], ablate.overwrite)) is not None}
    pending = [i for i in range(len(jobs)) if i not in done]
    emit(
        progress,
        Message(
            f"Ablation grid: {len(cells)} cell{'s' * (len(cells) != 1)} x {ablate.seeds} seed{'s' * (ablate.seeds != 1)} "
            f"= {len(jobs)} fits; {len(done)} already finished in {out}, {len(pending)} to train."
        ),
    )
    load_seconds = train_seconds = 0.0
    # a cell's seed ensemble scores its seeds' checkpoints, so with several seeds every cell's sets are read
    loading = list(range(len(jobs))) if ablate.seeds > 1 else pending
    if loading:  # read (and verify) first: a cache that fails to load leaves no ablation folder
        splits, load_seconds = _load_once(
            cache_dir,
            ablate,
            base,
            [jobs[i] for i in loading],
            [selections[i] for i in loading],
            progress,
            bool(pending),
        )
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(ablate, base, out / CONFIG_NAME)
    if pending:
        t0 = time.perf_counter()
        emit(progress, TaskStarted("ablate", "ablate", len(pending), "fits"))
        for count, i in enumerate(pending):
            done[i] = _train_cell(jobs[i], selections[i], splits, ablate, base, digests[i], progress, count)
            emit(progress, TaskAdvanced("ablate", count + 1, f"{jobs[i].cell.label}, seed {jobs[i].seed} done"))
        emit(progress, TaskFinished("ablate"))
        train_seconds = time.perf_counter() - t0

    ensembles = _seed_ensembles(cells, jobs, done, splits, ablate, base, progress) if ablate.seeds > 1 else None
    rows = aggregate(cells, jobs, done, base, ensembles)
    seed_rows = per_seed_rows(jobs, done, base)
    paths = write_reports(rows, seed_rows, out, title=f"emo ablate: {cache_dir}")
    return AblateResult(
        out=out,
        rows=rows,
        seed_rows=seed_rows,
        paths=paths,
        trained=len(pending),
        skipped=len(jobs) - len(pending),
        seconds=time.perf_counter() - started,
        load_seconds=load_seconds,
        train_seconds=train_seconds,
    )


def _load_once(
    cache_dir: Path, ablate: AblateConfig, base: FitConfig, jobs: list[Job], selections, progress, train: bool = True
):
    """Every split the pending fits (and seed ensembles) need, read and verified once, with the
    union of their feature sets (or, for a cache without sets, of their modalities); each fit
    composes its own. `train`: whether any fit is left (seed ensembles read only dev and test)."""
    needed = tuple(m for m in MODALITIES if any(m in job.config.modalities for job in jobs))
    t0 = time.perf_counter()
    names = (
        ((base.train_split,) if train else ()) + (base.dev_split,) + ((ablate.test_split,) if ablate.test_split else ())
    )
    splits = {name: load_raw(cache_dir, name, selections, needed, verify=True) for name in names}
    seconds = time.perf_counter() - t0
    emit(
        progress,
        Message(
            f"Loaded {', '.join(f'{k} ({len(v)} rows)' for k, v in splits.items())} from {cache_dir} once "
            f"in {seconds:.1f} s."
        ),
    )
    return splits, seconds


def _seed_ensembles(cells, jobs: list[Job], done, splits, ablate: AblateConfig, base: FitConfig, progress):
    """{cell key: {"dev"/"test": scores per head}} of each cell with several finished seeds:
    the mean of its seeds' class probabilities, scored as `emo eval` scores an ensemble."""
    from emo.device import resolve_device
    from emo.fuse.ensemble import ensemble_scores

    names = {"dev": base.dev_split, **({"test": ablate.test_split} if ablate.test_split else {})}
    device = resolve_device(base.device)
    out: dict[str, dict[str, Any]] = {}
    for cell in cells:
        runs = [Path(ablate.out) / job.run_dir for i, job in enumerate(jobs) if job.cell == cell and i in done]
        if len(runs) > 1:
            out[cell.key] = ensemble_scores(runs, {k: splits[v] for k, v in names.items()}, device)
    emit(progress, Message(f"Seed ensembles: the mean of each cell's seeds' probabilities, for {len(out)} cells."))
    return out


def _train_cell(
    job: Job, selection, splits, ablate: AblateConfig, base: FitConfig, digest: str, progress, count: int
) -> dict[str, Any]:
    """One (cell, seed): `emo fit`'s trainer into the cell's run folder, then result.json;
    `selection` is the cell's sets as chosen above (the fit does not choose them again)."""
    from emo.fuse.fit_plan import plan_fit
    from emo.fuse.train import Trainer  # torch loads only once the grid is known to be valid

    label = f"{job.cell.label}, seed {job.seed}"

    def forward(event) -> None:  # the fit's epochs show as detail of the grid's progress
        if isinstance(event, TaskAdvanced):
            emit(progress, TaskAdvanced("ablate", count, f"{label}: epoch {event.completed}/{job.config.epochs}"))

    with run_folder(job.config.out, overwrite=True) as run_dir:
        # job.config was validated when it was built (plan_grid) and resolved against the cache above
        plan = plan_fit(
            job.config,
            splits[base.train_split],
            splits[base.dev_split],
            splits.get(ablate.test_split) if ablate.test_split else None,
            selection=selection,
        )
        result = Trainer(plan, forward).run(run_dir)
        record = {
            "cell": job.cell.key,
            "label": job.cell.label,
            "modalities": list(job.cell.modalities),
            "fusion": job.cell.fusion,
            "options": dict(job.cell.options),
            "seed": job.seed,
            "fit_config": config_to_dict(job.config),
            "fingerprint_digest": digest,
            "best_epoch": result.best_epoch,
            "dev": result.best_dev,
            "test": result.test,
            "fusion_weights": result.history[result.best_epoch - 1]["fusion_weights"] if result.history else {},
            "fit_seconds": round(result.fit_seconds, 3),
        }
        atomic.write_json(run_dir / RESULT_NAME, record)
    return record
