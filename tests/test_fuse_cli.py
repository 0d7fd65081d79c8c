"""End to end through a real HDF5 cache: `emo fit` then `emo eval` via the CLI functions."""

from __future__ import annotations

import emo.fuse  # noqa: F401, I001 - first: sets OpenMP's passive wait policy before torch loads
import json
import re

import pytest
import torch
import typer
from typer.testing import CliRunner

from emo.commands import evaluate, fit
from emo.errors import CacheError, UsageError
from emo.fuse.evaluate import run_eval
from synthetic_features import SYNTHETIC_FINGERPRINT, make_synthetic_split, write_synthetic_cache

SHAPES = dict(text_dim=32, visual_dim=16, frames=4, mean_mel_frames=40, max_mel_frames=120)


def app() -> typer.Typer:
    cli = typer.Typer(pretty_exceptions_enable=False, rich_markup_mode=None)
    cli.command("fit", help=fit.__doc__)(fit.command)
    cli.command("eval", help=evaluate.__doc__)(evaluate.command)
    return cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuse_cli")
    splits = [
        make_synthetic_split(400, "train", seed=1, **SHAPES),
        make_synthetic_split(150, "dev", seed=2, **SHAPES),
        make_synthetic_split(150, "test", seed=3, **SHAPES),
    ]
    cache = root / "cache"
    write_synthetic_cache(cache, splits, shard_rows=128)
    run = root / "runs" / "base"
    result = CliRunner().invoke(
        app(),
        [
            "fit",
            "--cache",
            str(cache),
            "--out",
            str(run),
            "--epochs",
            "4",
            "--lr",
            "2e-3",
            "--device",
            "cpu",
            "--set",
            "max_mel_frames=120",
            "--set",
            "modality_dropout=0.1",
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    return root, cache, run, result.output


def test_fit_command_writes_every_artifact(trained):
    _, cache, run, output = trained
    for name in ("model.pt", "config.toml", "metrics.jsonl", "curves.png", "summary.json"):
        assert (run / name).is_file(), name
    assert "Best dev emotion weighted F1" in output
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4
    payload = torch.load(run / "model.pt", weights_only=True)
    assert payload["fit_config"]["max_mel_frames"] == 120
    assert payload["fit_config"]["modality_dropout"] == 0.1
    assert payload["cache_path"] == str(cache.resolve())
    assert "modality_dropout = 0.1" in (run / "config.toml").read_text()


def test_eval_command_reports_every_field(trained):
    _, _, run, _ = trained
    result = CliRunner().invoke(app(), ["eval", "--run", str(run), "--split", "test", "--device", "cpu"])
    assert result.exit_code == 0, (result.output, result.exception)
    digest = torch.load(run / "model.pt", weights_only=True)["fingerprint_digest"][:8]
    stem = f"eval-cache-{digest}-test"
    report = json.loads((run / f"{stem}.json").read_text())
    emotion = report["metrics"]["emotion"]
    for key in ("accuracy", "weighted_f1", "macro_f1", "macro_f1_classes", "loss", "per_class", "confusion"):
        assert key in emotion
    assert set(emotion["per_class"]["neutral"]) == {"precision", "recall", "f1", "support"}
    assert sum(map(sum, emotion["confusion"])) == report["rows"] == 150
    assert set(report["fusion_weights"]) == {"early", "late"}
    assert sum(report["fusion_weights"].values()) == pytest.approx(1.0)
    assert set(report["modality_importance"]) == {"text", "audio", "visual"}
    assert 0.5 < emotion["weighted_f1"] <= 1.0  # the JSON keeps fractions
    assert report["warnings"] == []  # trained with modality_dropout 0.1: it has seen hidden modalities
    assert set(report["definitions"]) >= {"numbers", "weighted_f1", "macro_f1", "modality_importance"}
    markdown = (run / f"{stem}.md").read_text()
    assert "| neutral |" in markdown and "Modality importance" in markdown
    assert f"weighted F1 {100 * emotion['weighted_f1']:.2f} %" in markdown  # people read percent
    assert "hidden at eval time" in markdown and "classes present" in markdown
    assert (run / f"{stem}-confusion-emotion.png").stat().st_size > 1000
    assert report["files"]["json"] == str(run / f"{stem}.json")
    # the terminal: percent with the metric's name, and where every file went
    assert f"weighted F1 {100 * emotion['weighted_f1']:.2f} %" in result.output
    assert "hidden modality" in result.output and " points" in result.output
    for path in report["files"].values():
        assert path in result.output
    assert not list(run.glob(".*tmp*")), "no temporary file is left behind"


def test_eval_refuses_a_cache_with_another_fingerprint(trained):
    """A cache without one of the run's feature sets, or with one made differently, is refused in one sentence."""
    root, _, run, _ = trained
    other = root / "other_cache"  # another text encoder: another text set (text/bert-base-uncased)
    fp = dict(SYNTHETIC_FINGERPRINT, text_encoder="bert-base-uncased")
    write_synthetic_cache(other, [make_synthetic_split(20, "test", seed=3, fingerprint=fp, **SHAPES)])
    result = CliRunner().invoke(app(), ["eval", "--run", str(run), "--cache", str(other)])
    assert isinstance(result.exception, CacheError)
    message = str(result.exception)
    assert f"has no feature set text/synthetic, which run {run} was trained on" in message
    assert f"`emo extract --split all --modalities text --text-model synthetic --cache {other}`" in message
    assert len(re.findall(r"\.\s", message + " ")) == 1  # one sentence
    changed = root / "changed_cache"  # the same set name, made with another text pooling
    fp = dict(SYNTHETIC_FINGERPRINT, text_pooling="mean")
    write_synthetic_cache(changed, [make_synthetic_split(20, "test", seed=3, fingerprint=fp, **SHAPES)])
    result = CliRunner().invoke(app(), ["eval", "--run", str(run), "--cache", str(changed)])
    assert isinstance(result.exception, CacheError)
    message = str(result.exception)
    assert (
        "text/synthetic" in message and "different encoders" in message and "text_pooling ('mean' vs None)" in message
    )
    assert len(re.findall(r"\.\s", message + " ")) == 1


def test_eval_refuses_a_run_without_checkpoint(tmp_path, trained):
    with pytest.raises(UsageError, match=r"holds no checkpoint .*`emo fit --cache CACHE --out "):
        run_eval(tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        run_eval(tmp_path / "nope")


def test_fit_refuses_missing_modality_and_existing_run(trained, tmp_path):
    root, cache, run, _ = trained
    text_only = tmp_path / "text_cache"
    write_synthetic_cache(
        text_only,
        [
            make_synthetic_split(40, "train", seed=1, modalities=("text",), **SHAPES),
            make_synthetic_split(20, "dev", seed=2, modalities=("text",), **SHAPES),
        ],
    )
    # asked for by name, a modality the cache lacks is refused (left open, the cache's own are used:
    # tests/test_text_only.py)
    result = CliRunner().invoke(
        app(), ["fit", "--cache", str(text_only), "--out", str(tmp_path / "r"), "--modalities", "text,audio"]
    )
    assert isinstance(result.exception, CacheError) and "audio" in str(result.exception)
    result = CliRunner().invoke(app(), ["fit", "--cache", str(cache), "--out", str(run)])
    assert isinstance(result.exception, UsageError) and "--overwrite" in str(result.exception)
    result = CliRunner().invoke(
        app(),
        [
            "fit",
            "--cache",
            str(text_only),
            "--out",
            str(tmp_path / "t"),
            "--modalities",
            "text",
            "--epochs",
            "1",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
