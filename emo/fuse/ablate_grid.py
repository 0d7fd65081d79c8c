"""An ablation grid as data: which cells, which seeds, which fit config each one trains.

A grid is modality subsets x fusion modes x any `FitConfig` axes x seeds. Every (cell,
seed) becomes a complete `FitConfig`, so a cell is nothing but an `emo fit` run with those
options: the trainer cannot tell them apart. `features.audio=mel,whisper-base` is an axis
over one modality's feature sets: each value replaces that modality's part of the fit's
`features` (cells whose subset lacks the modality do not vary with it). `ablate.toml` ([ablate] + [fit]) saved beside
the results re-creates the grid with `emo ablate --config`.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emo import atomic
from emo.config import build_config, config_to_dict, read_toml, toml_text
from emo.errors import ConfigError
from emo.fuse.config import FitConfig
from emo.fuse.feature_sets import format_features, full_name, parse_features
from emo.labels import MODALITIES

ALL_SUBSETS = "all-subsets"
RESULT_DIR = "cells"
CONFIG_NAME = "ablate.toml"
REPORT_STEM = "results"
SEED_DESIGN = (("text", "audio", "visual"), "ensemble")
# Keys a grid axis may not vary: they say where things are, not what is trained.
NOT_AXES = frozenset({"cache", "out", "overwrite", "seed", "device", "threads", "train_split", "dev_split"})
FEATURE_AXIS = "features."  # features.<modality>=set,set+set: an axis over one modality's feature sets


@dataclass
class AblateConfig:
    cache: Path | None = None  # feature cache written by `emo extract`
    out: Path | None = None  # ablation directory: cells/, results.{md,csv,png,json}, ablate.toml
    # all-subsets (every non-empty subset of the cache's modalities), or subsets joined by '+': text,text+audio
    modalities: tuple[str, ...] = (ALL_SUBSETS,)
    fusion: tuple[str, ...] = ("ensemble",)  # any fusion heads of emo.fuse.heads: early, late, ensemble, ...
    seeds: int = 3  # replicates per cell: seeds fit.seed, fit.seed+1, ...
    grid: tuple[str, ...] = ()  # more axes over any fit option: "class_weights=none,meld" (repeatable)
    test_split: str = "test"  # scored with each member's best-on-dev weights; "" skips it
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
        from emo.fuse.heads import head_names

        names = head_names()
        if not self.fusion or any(f not in names for f in self.fusion):
            allowed = f"{', '.join(names[:-1])} and/or {names[-1]}"
            raise ConfigError(f"fusion must list {allowed}; got {', '.join(self.fusion) or 'nothing'}.")
        modality_subsets(self.modalities)
        parse_axes(self.grid)


def modality_subsets(spec: tuple[str, ...], held: tuple[str, ...] = MODALITIES) -> list[tuple[str, ...]]:
    """'all-subsets' -> the non-empty subsets of the modalities the cache holds (`held`; all
    three: the 7 singles, pairs and the triple); else each 'a+b', as asked (a cache without
    one of its modalities is refused when its sets are chosen)."""
    out: list[tuple[str, ...]] = []
    held = tuple(m for m in MODALITIES if m in held) or MODALITIES
    for item in spec:
        if item in (ALL_SUBSETS, "all_subsets"):
            for size in range(1, len(held) + 1):
                out.extend(itertools.combinations(held, size))
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
        if key == "features":
            raise ConfigError("Vary feature sets one modality at a time, as in --grid features.audio=mel,whisper-base.")
        if key.startswith(FEATURE_AXIS):
            modality = key[len(FEATURE_AXIS) :]
            if modality not in MODALITIES:
                choices = ", ".join(f"{FEATURE_AXIS}{m}" for m in MODALITIES)
                raise ConfigError(f"Grid axis '{key}' names no modality; use one of {choices}.")
            for value in values.split(","):
                if value.strip():
                    parse_features(f"{modality}={value.strip()}")  # syntax; the names are checked against the cache
        elif key not in known or key in NOT_AXES:
            allowed = sorted(known - NOT_AXES - {"modalities", "fusion", "features"})
            allowed += [f"{FEATURE_AXIS}{m}" for m in MODALITIES]
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
        parts = ["+".join(self.modalities), self.fusion] + [f"{_short_key(k)}={_slug(v)}" for k, v in self.options]
        return "__".join(parts)

    @property
    def label(self) -> str:
        extra = "".join(f", {_short_key(k)}={v}" for k, v in self.options)
        return f"{'+'.join(self.modalities)} / {self.fusion}{extra}"


def _short_key(key: str) -> str:
    """`features.audio` reads as `audio` in a cell's name (`audio=whisper-base`)."""
    return key[len(FEATURE_AXIS) :] if key.startswith(FEATURE_AXIS) else key


def with_features(features: str, choices: dict[str, str]) -> str:
    """`features` with some modalities' sets replaced:
    ("text=a", {"audio": "mel+w"}) -> "text=text/a,audio=audio/mel+audio/w"."""
    selection = parse_features(features)
    for modality, value in choices.items():
        selection.update(parse_features(f"{modality}={value}"))
    return format_features(selection)


def _slug(value: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in value)


@dataclass
class Job:
    cell: Cell
    seed: int
    config: FitConfig

    @property
    def run_dir(self) -> Path:
        """The cell's run folder, relative to the ablation folder (the same files as `emo fit`)."""
        return Path(RESULT_DIR) / self.cell.key / f"seed-{self.seed}"


def plan_grid(
    ablate: AblateConfig, base: FitConfig, held: tuple[str, ...] = MODALITIES
) -> tuple[list[Cell], list[Job]]:
    """Every cell and every (cell, seed) fit config, in a stable order; `held`: the modalities
    the cache holds, which 'all-subsets' ranges over."""
    axes = parse_axes(ablate.grid)
    cells: list[Cell] = []
    jobs: list[Job] = []
    combos = list(itertools.product(*[[(k, v) for v in values] for k, values in axes])) if axes else [()]
    for subset in modality_subsets(ablate.modalities, held):
        for fusion in ablate.fusion:
            for combo in combos:
                # a feature-set axis of a modality the subset lacks does not make another cell
                combo = tuple((k, v) for k, v in combo if not k.startswith(FEATURE_AXIS) or _short_key(k) in subset)
                cell = Cell(subset, fusion, combo)
                if cell in cells:
                    continue
                cells.append(cell)
                choices = {_short_key(k): v for k, v in combo if k.startswith(FEATURE_AXIS)}
                for i in range(ablate.seeds):
                    values = config_to_dict(base)
                    values.update(modalities=list(subset), fusion=fusion, seed=base.seed + i, out=None)
                    values.update({k: v for k, v in combo if not k.startswith(FEATURE_AXIS)})
                    if choices:
                        values["features"] = with_features(base.features, choices)
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
        if key.startswith(FEATURE_AXIS):  # the base's (resolved) sets for that modality
            modality = _short_key(key)
            chosen = [full_name(modality, n) for n in value.split("+")]
            if chosen != parse_features(base.features).get(modality):
                return False
            continue
        resolved = build_config(FitConfig, None, {key: value})
        if getattr(resolved, key) != getattr(base, key):
            return False
    return True


def resolve_configs(toml_path: Path | None, overrides: dict[str, Any] | None = None) -> tuple[AblateConfig, FitConfig]:
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
    varied = [key for key, _ in parse_axes(ablate.grid) if key in fit_over]
    if varied:  # the axis would silently win over the value given for every cell
        raise ConfigError(
            f"--grid varies {varied[0]}, so setting it for every cell too (--set {varied[0]} or its own option) "
            "would be ignored; give one."
        )
    base = build_config(FitConfig, None, {**(fit_toml or {}), **fit_over})
    if ablate.cache is None and base.cache is not None:
        ablate.cache = base.cache
    base.cache, base.out = ablate.cache, None
    return ablate, base


def save_resolved(ablate: AblateConfig, base: FitConfig, path: Path) -> Path:
    """One TOML with [ablate] and [fit]: `emo ablate --config` on it re-runs the grid."""
    buffer = io.StringIO()
    for section, config in (("ablate", ablate), ("fit", base)):
        buffer.write(toml_text(config, section) + "\n")
    return atomic.write_text(path, buffer.getvalue())
