"""`emo demo`: the README's first command runs the whole pipeline on synthetic data and
visibly learns; re-runs reuse the dataset and the cache without loading an encoder."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from extract_fixtures import quiet_console, tiny_bert, tiny_config  # noqa: F401


class EncodersLoaded(Exception):
    """Raised by a stand-in for emo.extract.encoders.load_encoders."""


def forbid_encoder_loading(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise EncodersLoaded("the encoders were loaded")

    monkeypatch.setattr("emo.extract.encoders.load_encoders", refuse)


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
    for path in ("runs/fit/model.pt", "runs/fit/eval_test.json", "runs/fit/curves.png",
                 "runs/ablate/results.md", "runs/ablate/results.png", "runs/ablate/results.csv",
                 "cache/manifest.json", "data/train_sent_emo.csv", "demo.toml"):  # fmt: skip
        assert (out / path).is_file(), path
        assert str(out / path.split("/")[0]) in text
    # The settings that differ from the verbs' defaults are shown with a reason.
    assert "differ from the defaults" in text and "lr" in text and "0.0001" in text


@pytest.mark.slow
def test_quick_demo_learns_from_every_modality_and_fusion_helps(quick_demo):
    out, text = quick_demo
    floor = majority_weighted_f1(out / "cache")
    report = json.loads((out / "runs" / "fit" / "eval_test.json").read_text())
    fused = report["metrics"]["emotion"]["weighted_f1"]
    assert fused > floor + 0.2, (fused, floor)
    assert f"{100 * fused:.1f}" in text and f"{100 * floor:.1f}" in text  # both printed side by side

    with (out / "runs" / "ablate" / "results.csv").open() as handle:
        rows = {row["modalities"]: float(row["test_wf1_mean"]) for row in csv.DictReader(handle)}
    assert set(rows) == {"text", "audio", "visual", "text+audio+visual"}
    for single in ("text", "audio", "visual"):
        assert rows[single] > floor + 0.1, (single, rows, floor)
    assert rows["text+audio+visual"] > max(rows[m] for m in ("text", "audio", "visual")), rows


@pytest.mark.slow
def test_rerunning_the_demo_reuses_data_and_cache_without_loading_encoders(quick_demo, monkeypatch):
    out, _ = quick_demo
    forbid_encoder_loading(monkeypatch)
    clip = next((out / "data" / "train_splits").glob("*.mp4"))
    written = clip.stat().st_mtime_ns
    result = invoke(["demo", "--quick", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    from emo.commands.demo import QUICK

    shards = sum(-(-QUICK[f"{split}_clips"] // 64) for split in ("train", "dev", "test"))  # the demo's shard size
    assert "reusing the dataset" in text and f"nothing to do: {shards} shards already extracted" in text
    assert "0 to train" in text  # every ablation cell is reused too
    assert clip.stat().st_mtime_ns == written


def test_demo_config_layers_quick_toml_and_set(tmp_path):
    from emo.commands.demo import QUICK, DemoConfig, resolve_demo_config

    full = resolve_demo_config()
    assert full.train_clips == DemoConfig.train_clips and not full.quick
    toml = tmp_path / "demo.toml"
    toml.write_text("[demo]\nquick = true\nepochs = 7\n", encoding="utf-8")
    resolved = resolve_demo_config(toml, {"lr": "0.01", "ablate_modalities": "text,audio"})
    assert resolved.quick and resolved.train_clips == QUICK["train_clips"]  # quick sits below the file
    assert resolved.epochs == 7 and resolved.lr == 0.01 and resolved.ablate_modalities == ("text", "audio")
    fit = resolved.fit_config(tmp_path / "cache", tmp_path / "fit")
    assert fit.epochs == 7 and fit.lr == 0.01 and fit.text_feature == "mean"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "tpu"], "Unknown device 'tpu'"),
        (["--set", "epochs=0"], "epochs must be at least 1"),
        (["--set", "no_such_key=1"], "Unknown config key 'no_such_key'"),
        (["--set", "text_cue=2"], "text_cue"),
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
    from emo.extract.pipeline import run_extract

    model = tmp_path / "bert"
    shutil.copytree(tiny_bert, model)
    config = tiny_config(synth_root, tmp_path / "cache", model, None, split="all", modalities=("text", "audio"),
                         shard_size=8)  # fmt: skip
    first = run_extract(config, console=quiet_console())
    shards = sum(s.written for s in first.splits.values())
    assert shards == 5  # train 24 rows = 3 shards, dev and test one each

    forbid_encoder_loading(monkeypatch)
    console = quiet_console()
    again = run_extract(config, console=console)
    assert sum(s.skipped for s in again.splits.values()) == shards
    assert sum(s.written for s in again.splits.values()) == 0
    assert all(s.complete for s in again.splits.values())
    assert again.digest == first.digest
    assert f"nothing to do: {shards} shards already extracted" in " ".join(console.file.getvalue().split())

    # Same path, different weights: the cheap check cannot vouch for the cache, so the run
    # goes on to load the encoders (and would then refuse the mismatched cache).
    import torch
    from transformers import BertModel

    bert = BertModel.from_pretrained(model)
    with torch.no_grad():
        bert.embeddings.word_embeddings.weight.add_(1.0)
    bert.save_pretrained(model)
    with pytest.raises(EncodersLoaded):
        run_extract(config, console=quiet_console())
