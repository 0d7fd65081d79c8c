"""`emo ablate`: grids run end to end from a real cache, resume cell by cell, and every
cell is exactly an `emo fit` run (same trainer, same run folder, identical metrics)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from emo.errors import ConfigError, UsageError
from emo.fuse.ablate import run_ablate
from emo.fuse.ablate_grid import AblateConfig, modality_subsets, parse_axes, resolve_configs
from synthetic_features import make_synthetic_split, write_synthetic_cache

SMALL = dict(text_dim=32, visual_dim=24, frames=4, mean_mel_frames=24, max_mel_frames=64)


@pytest.fixture(scope="module")
def small_splits():
    return [
        make_synthetic_split(192, "train", seed=0, **SMALL),
        make_synthetic_split(64, "dev", seed=1, **SMALL),
        make_synthetic_split(64, "test", seed=2, **SMALL),
    ]


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory, small_splits) -> Path:
    """A real HDF5 cache written through emo.cache.CacheWriter, learnable features."""
    root = tmp_path_factory.mktemp("ablate") / "cache"
    write_synthetic_cache(root, small_splits, shard_rows=100)
    return root


def _grid(cache: Path, out: Path, **extra):
    values = dict(cache=cache, out=out, seeds=2, epochs=4, lr=1e-3, fusion="early,ensemble")
    values.update(extra)
    return resolve_configs(None, values)


def test_all_subsets_and_axes_parse():
    assert len(modality_subsets(("all-subsets",))) == 7
    assert modality_subsets(("text", "audio+text")) == [("text",), ("text", "audio")]
    config = AblateConfig(grid=("class_weights=none", "meld", "lr=0.001", "0.0001"))
    assert parse_axes(config.grid) == [("class_weights", ["none", "meld"]), ("lr", ["0.001", "0.0001"])]
    with pytest.raises(ConfigError):
        modality_subsets(("text+smell",))
    with pytest.raises(ConfigError):
        parse_axes(("no_such_option=1,2",))
    with pytest.raises(ConfigError):
        resolve_configs(None, {"not_a_key": "1"})


def test_small_grid_end_to_end(small_cache, small_splits, tmp_path):
    out = tmp_path / "ablate"
    ablate, base = _grid(small_cache, out, fusion="ensemble", grid=["class_weights=none,meld"])
    result = run_ablate(ablate, base)
    # 7 subsets x 2 class-weight schemes, each over 2 seeds
    assert len(result.rows) == 14 and result.trained == 28 and result.skipped == 0
    assert all(row["seeds"] == 2 for row in result.rows)
    keys = {(r["modalities"], r["fusion"], r["class_weights"]) for r in result.rows}
    for subset in modality_subsets(("all-subsets",)):
        for fusion in ("ensemble",):
            for weights in ("none", "meld"):
                assert ("+".join(subset), fusion, weights) in keys
    marked = [r for r in result.rows if r["seed_design"]]
    assert [(m["modalities"], m["fusion"], m["class_weights"]) for m in marked] == [
        ("text+audio+visual", "ensemble", "none")
    ]
    for row in result.rows:
        for name in ("dev_wf1", "dev_acc", "test_wf1", "test_acc"):
            assert 0.0 <= row[f"{name}_mean"] <= 1.0 and row[f"{name}_std"] >= 0.0
    # learnable: the trimodal heads beat always-neutral by a clear margin on test
    test_labels = small_splits[2].emotion
    majority = np.mean(test_labels == 0)
    from sklearn.metrics import f1_score

    majority_wf1 = f1_score(test_labels, np.zeros_like(test_labels), average="weighted")
    best = max(r["test_wf1_mean"] for r in result.rows if r["modalities"] == "text+audio+visual")
    assert best > majority_wf1 + 0.15 and majority < 1.0

    with open(result.paths["csv"], newline="") as handle:
        per_seed = list(csv.DictReader(handle))
    assert len(per_seed) == 28  # one row per cell and seed
    for column in ("cell", "seed", "dev_weighted_f1", "test_weighted_f1", "dev_accuracy", "test_accuracy"):
        assert column in per_seed[0]
    assert all(0.0 <= float(r["test_weighted_f1"]) <= 1.0 for r in per_seed)  # fractions
    assert {r["seed"] for r in per_seed} == {"0", "1"}
    with open(result.paths["summary_csv"], newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 14
    markdown = result.paths["markdown"].read_text()
    assert markdown.count("\n| ") == 15 and "★" in markdown
    assert result.paths["chart"].stat().st_size > 5000
    cell = out / "cells" / "text+audio+visual__ensemble__class_weights=meld" / "seed-1"
    for name in ("model.pt", "config.toml", "metrics.jsonl", "summary.json", "curves.png", "result.json"):
        assert (cell / name).is_file(), name  # the same run folder as emo fit
    # the saved config re-creates the grid exactly
    again, again_base = resolve_configs(out / "ablate.toml")
    assert again.grid == ablate.grid and again_base.epochs == 4 and again_base.lr == 1e-3
    assert again.modalities == ("all-subsets",) and again.fusion == ("ensemble",)


def test_resume_skips_finished_cells(small_cache, tmp_path):
    out = tmp_path / "ablate"
    ablate, base = _grid(small_cache, out, modalities="text,audio+visual", epochs=1)
    first = run_ablate(ablate, base)
    assert first.trained == 8
    files = sorted((out / "cells").rglob("result.json"))
    assert len(files) == 8
    kept = {p: p.stat().st_mtime_ns for p in files}
    removed = out / "cells" / "audio+visual__ensemble" / "seed-1" / "result.json"
    removed.unlink()  # as if the run had been interrupted before this fit finished

    ablate, base = _grid(small_cache, out, modalities="text,audio+visual", epochs=1)
    second = run_ablate(ablate, base)
    assert (second.trained, second.skipped) == (1, 7)
    assert removed.is_file()
    for path, mtime in kept.items():
        if path != removed:
            assert path.stat().st_mtime_ns == mtime, f"{path} was retrained"
    assert len(second.rows) == 4 and all(r["seeds"] == 2 for r in second.rows)

    # a grid that changes what a saved cell means is refused, not silently mixed in
    ablate, base = _grid(small_cache, out, modalities="text,audio+visual", epochs=2)
    with pytest.raises(UsageError, match="different fit options"):
        run_ablate(ablate, base)


def test_ablate_cell_equals_emo_fit(small_cache, tmp_path):
    """One trainer: a grid cell and `emo fit` with the same config and seed give the same
    metrics, epoch by epoch, and the same best checkpoint."""
    import torch

    from emo.fuse.config import FitConfig
    from emo.fuse.train import run_fit

    out = tmp_path / "grid"
    options = dict(epochs=3, lr=1e-3, seed=5, modality_dropout=0.2, spec_augment=True, class_weights="balanced")
    ablate, base = resolve_configs(
        None,
        dict(
            cache=small_cache,
            out=out,
            seeds=1,
            modalities="text+audio+visual",
            fusion="ensemble",
            device="cpu",
            **options,
        ),
    )
    grid = run_ablate(ablate, base)
    cell_dir = out / "cells" / "text+audio+visual__ensemble" / "seed-5"
    fit = run_fit(FitConfig(cache=small_cache, out=tmp_path / "fit", device="cpu", **options))

    cell_history = [json.loads(line) for line in (cell_dir / "metrics.jsonl").read_text().splitlines()]
    fit_history = [json.loads(line) for line in (tmp_path / "fit" / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]  # noqa: E731
    assert strip(cell_history) == strip(fit_history)
    result = json.loads((cell_dir / "result.json").read_text())
    assert result["dev"] == fit.best_dev and result["best_epoch"] == fit.best_epoch
    assert grid.seed_rows[0]["dev_weighted_f1"] == fit.best_dev["emotion"]["weighted_f1"]
    ours = torch.load(cell_dir / "model.pt", weights_only=True)["state_dict"]
    theirs = torch.load(tmp_path / "fit" / "model.pt", weights_only=True)["state_dict"]
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def spy_everywhere(monkeypatch, name: str, key=lambda *args, **kwargs: None) -> list:
    """Count calls of function `name` wherever an `emo.fuse` module holds it (it is imported
    by name into several), recording `key(*args)` per call."""
    import sys

    calls: list = []
    for module in [m for n, m in sys.modules.items() if n.startswith("emo.fuse")]:
        real = getattr(module, name, None)
        if callable(real) and getattr(real, "__module__", "").startswith("emo."):

            def counted(*args, _real=real, **kwargs):
                calls.append(key(*args, **kwargs))
                return _real(*args, **kwargs)

            monkeypatch.setattr(module, name, counted)
    return calls


def test_each_fit_validates_chooses_and_checks_once(small_cache, tmp_path, monkeypatch):
    """One fact, computed once: `emo fit` and every `emo ablate` cell validate their config
    once, choose their feature sets once, and compose and check each split once (a fit
    validated twice and checked its train split three times; a cell chose its sets twice)."""
    import emo.fuse.ablate  # noqa: F401 - every module that imports these by name is loaded first
    import emo.fuse.feature_cache  # noqa: F401
    import emo.fuse.train
    from emo.fuse.config import FitConfig

    validated: list = []
    real_validate = FitConfig.validate
    monkeypatch.setattr(FitConfig, "validate", lambda self: (validated.append(self.seed), real_validate(self))[1])
    chosen = spy_everywhere(monkeypatch, "resolve_features")
    composed = spy_everywhere(monkeypatch, "compose", lambda split, *a, **k: split.split)
    checked = spy_everywhere(monkeypatch, "check_compatible", lambda split, *a, **k: split.split)

    emo.fuse.train.run_fit(FitConfig(cache=small_cache, out=tmp_path / "fit", device="cpu", epochs=1))
    assert (len(validated), len(chosen)) == (1, 1)
    assert sorted(composed) == sorted(checked) == ["dev", "train"]

    ablate, base = resolve_configs(
        None,
        dict(
            cache=small_cache,
            out=tmp_path / "grid",
            seeds=2,
            epochs=1,
            modalities="text,text+audio",
            fusion="late",
            device="cpu",
        ),
    )
    validated.clear(), chosen.clear(), composed.clear(), checked.clear()
    run_ablate(ablate, base)
    fits = 4  # 2 cells x 2 seeds: the base config once, then each fit's config once (when it is built)
    assert len(validated) == 1 + fits and len(chosen) == 1 + fits  # (+1: the base config's, for the report)
    # each fit composes its splits once; then each cell's seed ensemble reads every seed's checkpoint on dev and test
    ensembles = ["dev", "test"] * fits
    assert sorted(composed) == sorted(checked) == sorted(["train", "dev", "test"] * fits + ensembles)


def test_interrupted_cell_leaves_nothing_and_resumes(small_cache, tmp_path, monkeypatch):
    """A fit that dies mid-cell removes its partial run folder; finished cells stay, and a
    re-run trains only the missing one."""
    import emo.fuse.train as train

    out = tmp_path / "grid"
    values = dict(cache=small_cache, out=out, seeds=1, modalities="text,audio", fusion="late", epochs=1)
    calls = {"n": 0}
    original = train.Trainer.train_epoch

    def dies_on_second_fit(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(train.Trainer, "train_epoch", dies_on_second_fit)
    ablate, base = resolve_configs(None, values)
    with pytest.raises(KeyboardInterrupt):
        run_ablate(ablate, base)
    assert (out / "cells" / "text__late" / "seed-0" / "result.json").is_file()
    assert not (out / "cells" / "audio__late" / "seed-0").exists()
    monkeypatch.setattr(train.Trainer, "train_epoch", original)
    ablate, base = resolve_configs(None, values)
    again = run_ablate(ablate, base)
    assert (again.trained, again.skipped) == (1, 1)


def test_cli_runs_a_grid_and_reports_bad_keys(small_cache, tmp_path):
    from typer.testing import CliRunner

    from emo.cli import app

    out = tmp_path / "cli"
    runner = CliRunner()
    args = [
        "ablate",
        "--cache",
        str(small_cache),
        "--out",
        str(out),
        "--modalities",
        "text,text+audio",
        "--fusion",
        "late",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--grid",
        "class_weights=none,balanced",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 4
    assert "test wF1" in result.output and "±" in result.output  # the mean ± std table, in percent
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 fits trained, 4 reused" in again.output.replace("\n", " ")

    from emo.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["ablate", "--cache", str(small_cache), "--out", str(out), "--set", "bogus=1"])
    assert exit_info.value.code == 2
