"""`run_ablate`: a grid of fusion heads from one cache, trained as model banks, resumable.

A grid is modality subsets x fusion modes x any FitConfig axes x seeds. The cache is
loaded once; cells that may share a bank (same epochs, batch size, heads, ...) train
together in `emo.fuse.bank_train.train_bank`, each member replaying `emo fit`'s recipe
for its own config. Every finished member writes one JSON file atomically under
`cells/<cell>/seed-<s>.json`, so an interrupted grid loses at most the bank in flight and
a re-run trains only what is missing. The report aggregates seeds (mean and sample std)
into a rich table, Markdown, CSV and a bar chart, and marks the seed report's design
(text+audio+visual, ensemble, default options).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emo.config import build_config, config_to_dict, read_toml, save_config
from emo.errors import CacheError, ConfigError, UsageError
from emo.fuse.config import FitConfig
from emo.labels import MODALITIES

ALL_SUBSETS = "all-subsets"
RESULT_DIR = "cells"
CONFIG_NAME = "ablate.toml"
REPORT_STEM = "results"
SEED_DESIGN = (("text", "audio", "visual"), "ensemble")
# Keys a grid axis may not vary: they say where things are, not what is trained.
NOT_AXES = frozenset({"cache", "out", "overwrite", "seed", "device", "threads", "train_split", "dev_split"})


@dataclass
class AblateConfig:
    cache: Path | None = None  # feature cache written by `emo extract`
    out: Path | None = None  # ablation directory: cells/, results.{md,csv,png,json}, ablate.toml
    modalities: tuple[str, ...] = (ALL_SUBSETS,)  # all-subsets, or subsets joined by '+': text,text+audio
    fusion: tuple[str, ...] = ("ensemble",)  # any of early, late, ensemble
    seeds: int = 3  # replicates per cell: seeds fit.seed, fit.seed+1, ...
    grid: tuple[str, ...] = ()  # more axes over any fit option: "class_weights=none,meld" (repeatable)
    test_split: str = "test"  # scored with each member's best-on-dev weights; "" skips it
    max_bank: int = 0  # members per bank (0 = every cell of a group at once); smaller = finer resume
    audio_mode: str = "auto"  # auto | loop | grouped | matmul: how a bank runs its members' mel CNNs
    save_models: bool = False  # also save every member as an `emo fit` checkpoint (cells/<cell>/seed-<s>/model.pt)
    overwrite: bool = False  # retrain cells whose saved results were made with a different config

    def __post_init__(self) -> None:
        for name in ("modalities", "fusion", "grid"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            setattr(self, name, tuple(value))
        # "a=1,2" arrives split at commas from a command line or TOML string; a piece
        # without '=' continues the previous axis.
        merged: list[str] = []
        for piece in self.grid:
            if "=" in piece or not merged:
                merged.append(piece)
            else:
                merged[-1] = merged[-1] + "," + piece
        self.grid = tuple(merged)

    def validate(self) -> None:
        if self.seeds < 1:
            raise ConfigError(f"seeds must be at least 1; got {self.seeds}.")
        if self.max_bank < 0:
            raise ConfigError(f"max_bank must not be negative; got {self.max_bank}.")
        if self.audio_mode not in ("auto", "loop", "grouped", "matmul"):
            raise ConfigError(f"audio_mode must be auto, loop, grouped or matmul; got {self.audio_mode!r}.")
        bad = [f for f in self.fusion if f not in ("early", "late", "ensemble")]
        if bad or not self.fusion:
            raise ConfigError(f"fusion must list early, late and/or ensemble; got {', '.join(self.fusion) or 'nothing'}.")
        modality_subsets(self.modalities)
        parse_axes(self.grid)


def modality_subsets(spec: tuple[str, ...]) -> list[tuple[str, ...]]:
    """'all-subsets' -> the 7 non-empty subsets (singles, pairs, all three); else each 'a+b'."""
    out: list[tuple[str, ...]] = []
    for item in spec:
        if item in (ALL_SUBSETS, "all_subsets"):
            for size in range(1, len(MODALITIES) + 1):
                out.extend(itertools.combinations(MODALITIES, size))
            continue
        names = [m.strip() for m in item.replace(" ", "+").split("+") if m.strip()]
        unknown = [m for m in names if m not in MODALITIES]
        if unknown or not names:
            raise ConfigError(
                f"Modality subset '{item}' is not valid; use {ALL_SUBSETS} or subsets of "
                f"{', '.join(MODALITIES)} joined by '+', e.g. text,text+audio."
            )
        out.append(tuple(m for m in MODALITIES if m in names))
    unique: list[tuple[str, ...]] = []
    for subset in out:
        if subset not in unique:
            unique.append(subset)
    if not unique:
        raise ConfigError(f"No modality subsets given; use {ALL_SUBSETS} or e.g. text,text+audio.")
    return unique


def parse_axes(grid: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """'key=v1,v2' strings -> [(key, [v1, v2])], checked against FitConfig."""
    known = {f.name for f in dataclasses.fields(FitConfig)}
    axes: list[tuple[str, list[str]]] = []
    for item in grid:
        if "=" not in item:
            raise ConfigError(f"Grid axis '{item}' must look like key=value1,value2 (a FitConfig key).")
        key, values = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key in ("modalities", "fusion"):
            raise ConfigError(f"Give {key} with --{key}, not as a --grid axis.")
        if key not in known or key in NOT_AXES:
            allowed = sorted(known - NOT_AXES - {"modalities", "fusion"})
            raise ConfigError(f"'{key}' cannot be a grid axis; use one of: {', '.join(allowed)}.")
        if key in [k for k, _ in axes]:
            raise ConfigError(f"Grid axis '{key}' is given twice.")
        parts = [v.strip() for v in values.split(",") if v.strip()]
        if not parts:
            raise ConfigError(f"Grid axis '{key}' has no values.")
        axes.append((key, parts))
    return axes


@dataclass(frozen=True)
class Cell:
    """One row of the report: a modality subset, a fusion mode and grid-axis values."""

    modalities: tuple[str, ...]
    fusion: str
    options: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        """Stable folder name; the same cell always gets the same key."""
        parts = ["+".join(self.modalities), self.fusion] + [f"{k}={_slug(v)}" for k, v in self.options]
        return "__".join(parts)

    @property
    def label(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.options)
        return f"{'+'.join(self.modalities)} / {self.fusion}{extra}"


def _slug(value: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in value)


@dataclass
class Job:
    cell: Cell
    seed: int
    config: FitConfig

    @property
    def path(self) -> Path:
        return Path(RESULT_DIR) / self.cell.key / f"seed-{self.seed}.json"


def plan_grid(ablate: AblateConfig, base: FitConfig) -> tuple[list[Cell], list[Job]]:
    """Every cell and every (cell, seed) fit config, in a stable order."""
    axes = parse_axes(ablate.grid)
    cells: list[Cell] = []
    jobs: list[Job] = []
    combos = list(itertools.product(*[[(k, v) for v in values] for k, values in axes])) if axes else [()]
    for subset in modality_subsets(ablate.modalities):
        for fusion in ablate.fusion:
            for combo in combos:
                cell = Cell(subset, fusion, tuple(combo))
                cells.append(cell)
                for i in range(ablate.seeds):
                    values = config_to_dict(base)
                    values.update(modalities=list(subset), fusion=fusion, seed=base.seed + i, out=None)
                    values.update(dict(combo))
                    values = {k: v for k, v in values.items() if v is not None}
                    config = build_config(FitConfig, None, values)
                    jobs.append(Job(cell, base.seed + i, config))
    return cells, jobs


def is_seed_design(cell: Cell, base: FitConfig) -> bool:
    """The seed report's trimodal ensemble: all three modalities, ensemble fusion, and every
    grid axis at the base fit config's value (the design's defaults unless overridden)."""
    if (cell.modalities, cell.fusion) != SEED_DESIGN:
        return False
    for key, value in cell.options:
        resolved = build_config(FitConfig, None, {key: value})
        if getattr(resolved, key) != getattr(base, key):
            return False
    return True


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of a resolved fit config that change results (not where they are written)."""
    return {k: v for k, v in config.items() if k not in ("cache", "out", "overwrite", "device", "threads")}


def load_done(out: Path, job: Job, digest: str, overwrite: bool) -> dict[str, Any] | None:
    """A finished job's result if it exists and was made the same way; None to (re)train."""
    path = out / job.path
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a foreign or damaged file: retrain and replace it
    if result.get("fingerprint_digest") != digest:
        if overwrite:
            return None
        raise CacheError(
            f"{out} holds results trained on a different cache (fingerprint {result.get('fingerprint_digest')} vs "
            f"{digest}); use another --out or pass --overwrite."
        )
    if _comparable(result.get("fit_config", {})) != _comparable(config_to_dict(job.config)):
        if overwrite:
            return None
        raise UsageError(
            f"{path} was trained with different fit options than this grid asks for; "
            f"use another --out or pass --overwrite to retrain it."
        )
    return result


@dataclass
class AblateResult:
    out: Path
    rows: list[dict[str, Any]]
    paths: dict[str, Path]
    trained: int
    skipped: int
    seconds: float
    load_seconds: float = 0.0
    train_seconds: float = 0.0
    banks: list[dict[str, Any]] = field(default_factory=list)


def resolve_configs(
    toml_path: Path | None, overrides: dict[str, Any] | None = None
) -> tuple[AblateConfig, FitConfig]:
    """AblateConfig from `[ablate]` (or top level) and the base FitConfig from `[fit]`.

    Overrides go to whichever of the two dataclasses knows the key, so `--set epochs=5`
    and `--set seeds=2` both work; an unknown key is one clear sentence.
    """
    ablate_keys = {f.name for f in dataclasses.fields(AblateConfig)}
    fit_keys = {f.name for f in dataclasses.fields(FitConfig)}
    ablate_over: dict[str, Any] = {}
    fit_over: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        key = key.replace("-", "_")
        if key in ablate_keys:
            ablate_over[key] = value
        elif key in fit_keys:
            fit_over[key] = value
        else:
            raise ConfigError(
                f"Unknown config key '{key}'; ablate keys are {', '.join(sorted(ablate_keys))}, "
                f"and any emo fit key sets the grid's base fit config."
            )
    data = read_toml(Path(toml_path)) if toml_path is not None else {}
    ablate_toml = fit_toml = None
    if data:
        fit_section = data.get("fit") if isinstance(data.get("fit"), dict) else None
        ablate_section = data.get("ablate") if isinstance(data.get("ablate"), dict) else None
        top = {k: v for k, v in data.items() if not isinstance(v, dict)}
        unknown = [k for k in top if k.replace("-", "_") not in ablate_keys]
        if unknown:
            raise ConfigError(f"Unknown config key '{unknown[0]}' in {toml_path}; put fit options under [fit].")
        ablate_toml = {**top, **(ablate_section or {})}
        fit_toml = fit_section or {}
    ablate = build_config(AblateConfig, None, {**(ablate_toml or {}), **ablate_over})
    base = build_config(FitConfig, None, {**(fit_toml or {}), **fit_over})
    if ablate.cache is None and base.cache is not None:
        ablate.cache = base.cache
    base.cache, base.out = ablate.cache, None
    return ablate, base


def save_resolved(ablate: AblateConfig, base: FitConfig, path: Path) -> Path:
    """One TOML with [ablate] and [fit]: `emo ablate --config` on it re-runs the grid."""
    buffer = io.StringIO()
    for section, config in (("ablate", ablate), ("fit", base)):
        tmp = path.with_name(f".{path.name}.{section}.tmp")
        save_config(config, tmp, section=section)
        buffer.write(tmp.read_text(encoding="utf-8") + "\n")
        tmp.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
    return path


def run_ablate(ablate: AblateConfig, base: FitConfig, console=None) -> AblateResult:
    """Train every missing (cell, seed) of the grid and write the report."""
    from emo import cache as cache_api
    from emo.fuse.bank import group_key

    ablate.validate()
    base.validate()
    if ablate.cache is None:
        raise UsageError("No cache given; pass --cache DIR (a folder written by emo extract).")
    if ablate.out is None:
        raise UsageError("No output directory given; pass --out runs/ablate-NAME.")
    cache_dir, out = Path(ablate.cache), Path(ablate.out)
    if not cache_dir.exists():
        raise UsageError(f"Cache {cache_dir} does not exist; run emo extract first (or emo demo for a synthetic one).")
    started = time.perf_counter()
    info = cache_api.open_cache(cache_dir)
    digest = cache_api.fingerprint_digest(info.fingerprint)
    cells, jobs = plan_grid(ablate, base)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(ablate, base, out / CONFIG_NAME)

    done: dict[int, dict[str, Any]] = {}
    for i, job in enumerate(jobs):
        result = load_done(out, job, digest, ablate.overwrite)
        if result is not None:
            done[i] = result
    pending = [i for i in range(len(jobs)) if i not in done]
    _say(console, f"Ablation grid: {len(cells)} cells x {ablate.seeds} seeds = {len(jobs)} fits; "
         f"{len(done)} already finished in {out}, {len(pending)} to train.")

    load_seconds = train_seconds = 0.0
    banks: list[dict[str, Any]] = []
    if pending:
        needed = tuple(m for m in MODALITIES if any(m in jobs[i].config.modalities for i in pending))
        t0 = time.perf_counter()
        splits = {}
        for split in (base.train_split, base.dev_split) + ((ablate.test_split,) if ablate.test_split else ()):
            splits[split] = cache_api.load_split(cache_dir, split, modalities=needed, verify=True)
        load_seconds = time.perf_counter() - t0
        _say(console, f"Loaded {', '.join(f'{k} ({len(v)})' for k, v in splits.items())} from {cache_dir} "
             f"once in {load_seconds:.1f} s.")
        groups: dict[tuple, list[int]] = {}
        for i in pending:
            groups.setdefault(group_key(jobs[i].config), []).append(i)
        chunks: list[list[int]] = []
        for members in groups.values():
            size = ablate.max_bank or len(members)
            chunks.extend(members[s : s + size] for s in range(0, len(members), size))
        t1 = time.perf_counter()
        for number, chunk in enumerate(chunks, 1):
            bank_stats = _train_chunk(
                [jobs[i] for i in chunk], splits, base, ablate, out, digest, info.fingerprint, console,
                f"bank {number}/{len(chunks)}",
            )
            banks.append(bank_stats)
            for i in chunk:
                done[i] = json.loads((out / jobs[i].path).read_text(encoding="utf-8"))
        train_seconds = time.perf_counter() - t1

    rows = aggregate(cells, jobs, done, base)
    paths = write_reports(rows, out, title=f"emo ablate: {cache_dir}")
    result = AblateResult(
        out=out,
        rows=rows,
        paths=paths,
        trained=len(pending),
        skipped=len(jobs) - len(pending),
        seconds=time.perf_counter() - started,
        load_seconds=load_seconds,
        train_seconds=train_seconds,
        banks=banks,
    )
    if console is not None:
        print_table(rows, console, title=f"emo ablate ({len(jobs)} fits; mean ± std over seeds)")
        _say(console, "Artifacts: " + ", ".join(str(p) for p in paths.values()) + f", per-seed results in {out / RESULT_DIR}.")
    return result


def _say(console, message: str) -> None:
    if console is not None:
        console.print(message)


def _train_chunk(jobs, splits, base, ablate, out, digest, fingerprint, console, name) -> dict[str, Any]:
    from emo.fuse.bank_train import train_bank

    configs = [job.config for job in jobs]
    for config in configs:
        config.cache = ablate.cache
    progress_bar = task = None
    if console is not None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        progress_bar = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("epoch {task.completed}/{task.total}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        )
        task = progress_bar.add_task(f"{name}: {len(jobs)} models in one batched step", total=configs[0].epochs)
        progress_bar.start()

    def progress(info: dict[str, Any]) -> None:
        if progress_bar is not None:
            progress_bar.update(
                task, completed=info["epoch"],
                description=f"{name}: {info['members']} models, {info['epoch_seconds']:.1f} s/epoch, "
                f"best dev wF1 {info['best_dev']:.3f}",
            )

    started = time.perf_counter()
    try:
        results = train_bank(
            configs,
            splits[base.train_split],
            splits[base.dev_split],
            splits.get(ablate.test_split) if ablate.test_split else None,
            progress=progress,
            audio_mode=ablate.audio_mode,
            keep_models=ablate.save_models,
        )
    finally:
        if progress_bar is not None:
            progress_bar.stop()
    seconds = time.perf_counter() - started
    for job, result in zip(jobs, results):
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
            "dev": result.dev,
            "test": result.test,
            "fusion_weights": result.fusion_weights,
            "history": result.history,
            "bank_members": len(jobs),
            "bank_seconds": round(seconds, 3),
        }
        if ablate.save_models and result.model is not None:
            from emo.fuse.checkpoint import CHECKPOINT_NAME, save_checkpoint

            run_dir = out / RESULT_DIR / job.cell.key / f"seed-{job.seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            fit_dict = config_to_dict(job.config)
            fit_dict["out"] = str(run_dir)
            save_checkpoint(run_dir / CHECKPOINT_NAME, result.model, fit_dict, fingerprint, digest,
                            result.best_epoch, result.dev)
            record["checkpoint"] = str(run_dir / CHECKPOINT_NAME)
        _write_json_atomic(out / job.path, record)
    return {"members": len(jobs), "seconds": seconds}


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def aggregate(cells: list[Cell], jobs: list[Job], done: dict[int, dict[str, Any]], base: FitConfig) -> list[dict[str, Any]]:
    """One row per cell: mean and sample std over seeds of dev/test accuracy and weighted F1."""
    rows = []
    for cell in cells:
        results = [done[i] for i, job in enumerate(jobs) if job.cell == cell and i in done]
        head = "emotion" if base.task in ("emotion", "both") else "sentiment"
        row: dict[str, Any] = {
            "cell": cell.key,
            "label": cell.label,
            "modalities": "+".join(cell.modalities),
            "fusion": cell.fusion,
            **{k: v for k, v in cell.options},
            "seeds": len(results),
            "seed_design": is_seed_design(cell, base),
        }
        for split in ("dev", "test"):
            for metric, name in (("weighted_f1", "wf1"), ("accuracy", "acc")):
                values = [r[split][head][metric] for r in results if r.get(split)]
                mean, std = _mean_std(values)
                row[f"{split}_{name}_mean"], row[f"{split}_{name}_std"] = mean, std
        rows.append(row)
    return rows


def _fmt(mean: float, std: float) -> str:
    if mean != mean:  # NaN: split not scored
        return "-"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


METRIC_COLUMNS = (("dev_wf1", "dev wF1"), ("dev_acc", "dev acc"), ("test_wf1", "test wF1"), ("test_acc", "test acc"))


def write_reports(rows: list[dict[str, Any]], out: Path, title: str = "emo ablate") -> dict[str, Path]:
    """results.csv, results.md, results.png and results.json next to the cells."""
    paths = {
        "csv": out / f"{REPORT_STEM}.csv",
        "markdown": out / f"{REPORT_STEM}.md",
        "chart": out / f"{REPORT_STEM}.png",
        "json": out / f"{REPORT_STEM}.json",
    }
    option_keys = sorted({k for r in rows for k in r} - _BASE_KEYS)
    fields = ["cell", "modalities", "fusion", *option_keys, "seeds", "seed_design"] + [
        f"{m}_{s}" for m, _ in METRIC_COLUMNS for s in ("mean", "std")
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    _atomic_text(paths["csv"], buffer.getvalue())

    lines = [f"# {title}", "", "Mean ± sample std over seeds, in percent (MELD's headline metric is weighted F1).",
             "★ marks the seed report's design (text+audio+visual, ensemble fusion).", ""]
    header = ["modalities", "fusion", *option_keys, "seeds", *[n for _, n in METRIC_COLUMNS]]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        mark = " ★" if row["seed_design"] else ""
        cells = [row["modalities"] + mark, row["fusion"], *[str(row.get(k, "")) for k in option_keys], str(row["seeds"])]
        cells += [_fmt(row[f"{m}_mean"], row[f"{m}_std"]) for m, _ in METRIC_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    _atomic_text(paths["markdown"], "\n".join(lines) + "\n")
    _atomic_text(paths["json"], json.dumps(rows, indent=1) + "\n")
    plot_bars(rows, paths["chart"], title)
    return paths


_BASE_KEYS = {
    "cell", "label", "modalities", "fusion", "seeds", "seed_design",
    *(f"{m}_{s}" for m, _ in METRIC_COLUMNS for s in ("mean", "std")),
}


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def plot_bars(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Horizontal bars of test (or dev) weighted F1 with std error bars; the seed design in red."""
    from emo.fuse.plots import _pyplot

    plt = _pyplot()
    metric = "test_wf1" if any(r["test_wf1_mean"] == r["test_wf1_mean"] for r in rows) else "dev_wf1"
    labels = [("★ " if r["seed_design"] else "") + r["label"] for r in rows]
    means = [100 * (r[f"{metric}_mean"] if r[f"{metric}_mean"] == r[f"{metric}_mean"] else 0.0) for r in rows]
    stds = [100 * (r[f"{metric}_std"] if r[f"{metric}_std"] == r[f"{metric}_std"] else 0.0) for r in rows]
    colors = ["#c0392b" if r["seed_design"] else "#4a7fb5" for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6))
    ypos = list(range(len(rows)))[::-1]
    ax.barh(ypos, means, xerr=stds, color=colors, capsize=3)
    ax.set_yticks(ypos)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel(f"{metric.replace('_wf1', '')} weighted F1 (%), mean ± std over seeds")
    ax.set_title(title, fontsize=9)
    for y, m in zip(ypos, means):
        ax.text(m + 0.3, y, f"{m:.1f}", va="center", fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def print_table(rows: list[dict[str, Any]], console, title: str = "emo ablate") -> None:
    from rich.table import Table

    option_keys = sorted({k for r in rows for k in r} - _BASE_KEYS)
    table = Table(title=title)
    for name in ("", "modalities", "fusion", *option_keys, "seeds", *[n for _, n in METRIC_COLUMNS]):
        table.add_column(name, justify="right" if name in {n for _, n in METRIC_COLUMNS} else "left")
    for row in rows:
        table.add_row(
            "★" if row["seed_design"] else "",
            row["modalities"],
            row["fusion"],
            *[str(row.get(k, "")) for k in option_keys],
            str(row["seeds"]),
            *[_fmt(row[f"{m}_mean"], row[f"{m}_std"]) for m, _ in METRIC_COLUMNS],
            style="bold red" if row["seed_design"] else None,
        )
    console.print(table)
