"""`emo demo`: the README's first command runs the whole pipeline on synthetic data and
visibly learns; re-runs reuse the dataset and the cache without loading an encoder; the
library (`emo.recipes.demo.run_demo`) does the same silently and returns numbers."""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from emo.errors import CacheError
from extract_fixtures import tiny_bert, tiny_config  # noqa: F401


class EncodersLoaded(Exception):
    """Raised by a stand-in for emo.extract.encoders.registry.load_set_encoders."""


def forbid_encoder_loading(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise EncodersLoaded("the encoders were loaded")

    monkeypatch.setattr("emo.extract.encoders.registry.load_set_encoders", refuse)


def invoke(args):
    from typer.testing import CliRunner

    from emo.cli import app

    return CliRunner().invoke(app, args)


def majority_weighted_f1(cache) -> float:
    """Weighted F1 on test of always predicting train's most frequent emotion (computed
    here from the cache's labels, independently of the demo's own baseline)."""
    from sklearn.metrics import f1_score

    from emo.cache import load_split

    train = load_split(cache, "train", modalities=())
    test = load_split(cache, "test", modalities=())
    majority = np.bincount(train.emotion).argmax()
    return float(f1_score(test.emotion, np.full_like(test.emotion, majority), average="weighted", zero_division=0))


def extract_hints(steps: list[str]) -> list[str]:
    return [step for step in steps if re.search(r"\bemo extract\b", step)]


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    result = invoke(["demo", "--quick", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return out, " ".join(result.output.split())


@pytest.mark.slow
def test_quick_demo_completes_and_says_the_data_are_synthetic(quick_demo):
    out, text = quick_demo
    assert "SYNTHETIC" in text and "not on MELD" in text
    for path in (
        "runs/fit/model.pt",
        "runs/fit/curves.png",
        "runs/ablate/results.md",
        "runs/ablate/results.png",
        "runs/ablate/summary.csv",
        "cache/manifest.json",
        "data/train_sent_emo.csv",
        "demo.toml",
        "demo.json",
    ):
        assert (out / path).is_file(), path
        assert str(out / path.split("/")[0]) in text
    assert "(missing)" not in text
    # The settings that differ from the verbs' defaults are shown with a reason.
    assert "differ from the defaults" in text and "lr" in text and "0.0001" in text
    # Every stage is announced and the verbs' progress reaches a log (output is not a terminal).
    for number in range(1, 6):
        assert f"{number}/5 " in text
    assert "synthetic clips in" in text and "started (220 clips)" in text
    # The eval report's and the ablation's tables come out whole.
    assert "emo eval: test" in text and "Ablation by modality subset" in text and "text+audio+visual" in text


@pytest.mark.slow
def test_quick_demo_learns_from_every_modality_and_fusion_helps(quick_demo):
    out, text = quick_demo
    floor = majority_weighted_f1(out / "cache")
    saved = json.loads((out / "demo.json").read_text())
    report = json.loads(open(saved["artifacts"]["test report (JSON)"]).read())
    fused = report["metrics"]["emotion"]["weighted_f1"]
    assert fused > floor + 0.2, (fused, floor)
    # People read percent with the metric's name, both numbers side by side.
    assert f"test weighted F1 {100 * fused:.1f} %" in text and f"test weighted F1 {100 * floor:.1f} %" in text

    with (out / "runs" / "ablate" / "summary.csv").open() as handle:
        rows = {row["modalities"]: float(row["test_wf1_mean"]) for row in csv.DictReader(handle)}
    assert set(rows) == {"text", "audio", "visual", "text+audio+visual"}
    for single in ("text", "audio", "visual"):
        assert rows[single] > floor + 0.1, (single, rows, floor)
    assert rows["text+audio+visual"] > max(rows[m] for m in ("text", "audio", "visual")), rows
    # The JSON keeps fractions.
    assert saved["test_weighted_f1"] == pytest.approx(fused) and 0 < saved["baseline"]["weighted_f1"] < 1


@pytest.mark.slow
def test_rerunning_the_demo_reuses_data_and_cache_without_loading_encoders(quick_demo, monkeypatch):
    out, _ = quick_demo
    forbid_encoder_loading(monkeypatch)
    clip = next((out / "data" / "train_splits").glob("*.mp4"))
    written = clip.stat().st_mtime_ns
    result = invoke(["demo", "--quick", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "reusing the dataset" in text and "nothing to do" in text and "encoders not loaded" in text
    assert "0 to train" in text  # every ablation cell is reused too
    assert clip.stat().st_mtime_ns == written


@pytest.mark.slow
def test_the_library_runs_the_demo_silently_and_returns_numbers(quick_demo, monkeypatch, capsys):
    from emo.progress import TaskStarted
    from emo.recipes.demo import DemoResult, DemoStage, run_demo
    from emo.recipes.demo_config import resolve_demo_config

    out, _ = quick_demo
    forbid_encoder_loading(monkeypatch)
    events = []
    result = run_demo(resolve_demo_config(None, {"quick": True, "out": out, "device": "cpu"}), progress=events.append)
    assert capsys.readouterr().out == ""  # the library never prints
    assert isinstance(result, DemoResult)
    assert [e.number for e in events if isinstance(e, DemoStage)] == [1, 2, 3, 4, 5]
    assert any(isinstance(e, TaskStarted) and e.task == "fit" for e in events)
    assert result.reused == {"dataset": True, "features": True, "ablation": True}
    assert 0 < result.baseline.weighted_f1 < result.test_weighted_f1 <= 1 and result.clearly_learns
    assert {row.modalities for row in result.ablation} == {"text", "audio", "visual", "text+audio+visual"}
    assert all(path.exists() for path in result.artifacts.values())
    assert json.loads((out / "demo.json").read_text()) == json.loads(json.dumps(result.to_dict()))


@pytest.mark.slow
def test_the_next_steps_work_offline(quick_demo, monkeypatch):
    """Every hint names offline encoders; the ones about the demo's own folders run as printed."""
    from emo.recipes.demo import next_steps
    from emo.recipes.demo_config import resolve_demo_config

    out, text = quick_demo
    steps = next_steps(resolve_demo_config(None, {"quick": True, "out": out}))
    assert all(step in text for step in steps)
    forbid_encoder_loading(monkeypatch)
    for step in steps:
        words = shlex.split(step.split(" (")[0].split(", then")[0])
        words[0] = Path(words[0]).name  # `emo`, or `.venv/bin/emo` where emo is not on PATH
        if words[:2] in (["emo", "cache"], ["emo", "eval"]):
            result = invoke(words[1:])
            assert result.exit_code == 0, (step, result.output)


def test_every_extract_hint_uses_the_offline_preset(tmp_path):
    """The default encoders need a network; a hint that fails offline is no hint."""
    from emo.recipes.demo import next_steps
    from emo.recipes.demo_config import DemoConfig

    hints = extract_hints(next_steps(DemoConfig(out=tmp_path)))
    assert hints
    for hint in hints:
        for command in re.findall(r"emo extract[^,(]*", hint):  # also matches .venv/bin/emo extract
            assert "--preset offline" in command, hint


def test_demo_config_layers_quick_toml_and_set(tmp_path):
    from emo.recipes.demo_config import QUICK, DemoConfig, resolve_demo_config

    full = resolve_demo_config()
    assert full.train_clips == DemoConfig.train_clips and not full.quick
    toml = tmp_path / "demo.toml"
    toml.write_text("[demo]\nquick = true\nepochs = 7\n", encoding="utf-8")
    resolved = resolve_demo_config(toml, {"lr": "0.01", "ablate_modalities": "text,audio"})
    assert resolved.quick and resolved.train_clips == QUICK["train_clips"]  # quick sits below the file
    assert resolved.epochs == 7 and resolved.lr == 0.01 and resolved.ablate_modalities == ("text", "audio")
    fit = resolved.fit_config(tmp_path / "cache", tmp_path / "fit")
    assert fit.epochs == 7 and fit.lr == 0.01


def test_departures_name_every_changed_default_with_its_value():
    from emo.recipes.demo_config import DemoConfig, departures

    rows = {row.key: row for row in departures(DemoConfig())}
    assert rows["lr"].demo == 1e-3 and rows["lr"].default == 1e-4 and rows["lr"].why
    assert "batch_size" not in rows  # unchanged defaults are not listed


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "tpu"], "Unknown device 'tpu'"),
        (["--set", "epochs=0"], "epochs must be at least 1"),
        (["--set", "no_such_key=1"], "Unknown config key 'no_such_key'"),
        (["--set", "text_cue=2"], "text_cue"),
        (["--set", "train_clips=3"], "train_clips must be at least 20"),
    ],
)
def test_bad_demo_options_fail_before_any_data_is_written(tmp_path, capsys, args, message):
    from emo.cli import main

    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as raised:
        main(["demo", "--quick", "--out", str(out), *args])
    assert raised.value.code != 0
    err = capsys.readouterr().err
    assert err.startswith("emo: error: ") and message in err and "Traceback" not in err
    assert not out.exists()


def test_extract_over_a_finished_cache_loads_no_encoder(synth_root, tiny_bert, tmp_path, monkeypatch):
    """A finished cache is recognised by hashing weight files, not by building the models;
    changed weights behind the same path still reach the full fingerprint check."""
    from emo.extract.pipeline.run import run_extract
    from emo.progress import Message

    model = tmp_path / "bert"
    shutil.copytree(tiny_bert, model)
    config = tiny_config(
        synth_root, tmp_path / "cache", model, None, split="all", modalities=("text", "audio"), shard_size=8
    )
    first = run_extract(config)
    shards = sum(s.written for s in first.splits.values())
    assert shards == 5  # train 24 rows = 3 shards, dev and test one each

    forbid_encoder_loading(monkeypatch)
    events = []
    again = run_extract(config, progress=events.append)
    assert sum(s.skipped for s in again.splits.values()) == shards
    assert sum(s.written for s in again.splits.values()) == 0
    assert all(s.complete for s in again.splits.values())
    assert again.digest == first.digest
    said = " ".join(e.text for e in events if isinstance(e, Message))
    assert f"nothing to do: {shards} shards of text/bert, audio/mel already extracted" in said

    # Same path, different weights: the weight files' hashes differ from the set's, so the
    # run refuses in one sentence that names the difference, still without loading a model.
    import torch
    from transformers import BertModel

    bert = BertModel.from_pretrained(model)
    with torch.no_grad():
        bert.embeddings.word_embeddings.weight.add_(1.0)
    bert.save_pretrained(model)
    with pytest.raises(CacheError, match=r"Feature set text/bert .* made differently .*weights_sha256"):
        run_extract(config)


def test_hints_name_an_emo_the_shell_finds(tmp_path, monkeypatch):
    """The quick start need not activate the venv, so a hint names `.venv/bin/emo` (or the
    full path) unless this installation's `emo` is on PATH; pasted as printed, it runs."""
    import sys

    from emo.recipes.demo import emo_command

    script = Path(sys.prefix) / "bin" / "emo"
    monkeypatch.setenv("PATH", "/nonexistent")
    command = emo_command()
    assert Path(command).resolve() == script.resolve()
    monkeypatch.setenv("PATH", str(script.parent))
    assert emo_command() == "emo"
