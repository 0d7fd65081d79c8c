"""`emo ablate`: grids run end to end from a real cache, resume, and the model bank is
the same model (and the same training) as `emo fit`'s."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from emo.errors import ConfigError, UsageError
from emo.fuse.ablate import AblateConfig, modality_subsets, parse_axes, resolve_configs, run_ablate
from emo.fuse.synthetic import make_synthetic_split, write_synthetic_cache
from emo.labels import MODALITIES

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
        assert len(list(csv.DictReader(handle))) == 14
    markdown = result.paths["markdown"].read_text()
    assert markdown.count("\n| ") == 15 and "★" in markdown
    assert result.paths["chart"].stat().st_size > 5000
    assert (out / "cells" / "text+audio+visual__ensemble__class_weights=meld" / "seed-1.json").is_file()
    # the saved config re-creates the grid exactly
    again, again_base = resolve_configs(out / "ablate.toml")
    assert again.grid == ablate.grid and again_base.epochs == 4 and again_base.lr == 1e-3
    assert again.modalities == ("all-subsets",) and again.fusion == ("ensemble",)


def test_resume_skips_finished_cells(small_cache, tmp_path):
    out = tmp_path / "ablate"
    ablate, base = _grid(small_cache, out, modalities="text,audio+visual", epochs=1)
    first = run_ablate(ablate, base)
    assert first.trained == 8
    files = sorted((out / "cells").rglob("seed-*.json"))
    assert len(files) == 8
    kept = {p: p.stat().st_mtime_ns for p in files}
    removed = out / "cells" / "audio+visual__ensemble" / "seed-1.json"
    removed.unlink()

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


def _random_models(configs):
    from emo.fuse.model import FusionModel

    torch.manual_seed(0)
    models = [FusionModel(c) for c in configs]
    for model in models:
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.2)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    return models


@pytest.mark.parametrize("audio_mode", ["loop", "grouped", "matmul"])
def test_bank_member_matches_single_model(small_splits, audio_mode):
    from emo.fuse.bank import ModelBank, canonical_present
    from emo.fuse.data import TensorSplit
    from emo.fuse.model import ModelConfig

    split = TensorSplit(small_splits[0], MODALITIES, "cpu", "cls", 64)
    configs = [
        ModelConfig(modalities=mods, fusion=fusion, text_dim=32, visual_dim=24)
        for mods in (("text",), ("audio",), ("text", "audio", "visual"), ("audio", "visual"))
        for fusion in ("early", "late", "ensemble")
    ]
    models = _random_models(configs)
    bank = ModelBank(configs)
    for g, model in enumerate(models):
        bank.stack_member(g, model.state_dict())
    batch = split.gather(torch.arange(48))
    present = torch.stack([canonical_present(batch.present, MODALITIES, c.modalities) for c in configs])
    bank.eval()
    mels = [batch.mel] * len(bank.audio_members)
    lens = [batch.mel_lengths] * len(bank.audio_members)
    logits = bank(present, batch.text, batch.visual, mels, lens, audio_mode=audio_mode)
    for g, (config, model) in enumerate(zip(configs, models)):
        cols = [MODALITIES.index(m) for m in config.modalities]
        expected = model.eval()(batch.present[:, cols], batch.text, batch.visual, None, batch.mel, batch.mel_lengths)
        torch.testing.assert_close(logits[g], expected["emotion"], rtol=1e-4, atol=1e-4)
        # and back: a member exports to the very same single model
        exported = bank.export_member(g)
        for key, value in model.state_dict().items():
            if not key.endswith("num_batches_tracked"):
                torch.testing.assert_close(exported.state_dict()[key], value)


@pytest.mark.parametrize("frames", [5, 37, 64])
def test_matmul_mel_cnn_matches_conv1d(frames):
    """The bank's im2col mel CNN (one shared input, several members) gives nn.Conv1d's
    MelCNN outputs and weight gradients, for odd, even and too-short clips."""
    from emo.fuse.bank import ModelBank
    from emo.fuse.model import MelCNN, ModelConfig

    torch.manual_seed(0)
    configs = [ModelConfig(modalities=("audio",), fusion="late", n_mels=12, mel_channels=(8, 16)) for _ in range(3)]
    bank = ModelBank(configs)
    cnns = [MelCNN(12, (8, 16), 256) for _ in configs]
    for g, cnn in enumerate(cnns):
        with torch.no_grad():
            bank.conv1_w[g].copy_(cnn.conv[0].weight), bank.conv1_b[g].copy_(cnn.conv[0].bias)
            bank.conv2_w[g].copy_(cnn.conv[2].weight), bank.conv2_b[g].copy_(cnn.conv[2].bias)
    mel = torch.randn(5, 12, frames)
    lengths = torch.tensor([frames, max(frames - 3, 1), 1, min(frames, 6), frames // 2 + 1])
    ours = bank._mel_cnn_matmul([2, 0, 1], mel, lengths)  # any member order
    upstream = torch.randn(3, 5, 16)
    (ours * upstream).sum().backward()
    for i, g in enumerate([2, 0, 1]):
        cnn = cnns[g]
        hidden = cnn.conv(F.pad(mel, (0, max(0, 6 - frames))))
        valid = torch.arange(hidden.shape[-1]) < cnn.output_lengths(lengths).unsqueeze(1)
        weights = valid.float().unsqueeze(1)
        expected = (hidden * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)
        torch.testing.assert_close(ours[i], expected, rtol=1e-5, atol=1e-5)
        (expected * upstream[i]).sum().backward()
        torch.testing.assert_close(bank.conv1_w.grad[g], cnn.conv[0].weight.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(bank.conv1_b.grad[g], cnn.conv[0].bias.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(bank.conv2_w.grad[g], cnn.conv[2].weight.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(bank.conv2_b.grad[g], cnn.conv[2].bias.grad, rtol=1e-4, atol=1e-5)


def test_same_seed_members_share_batches_and_train_alike(small_splits):
    """Members with one seed draw the same batches, so the bank hands them one mel tensor
    (the matmul path runs their first conv layer once); training matches the per-member
    Conv1d loop."""
    import emo.fuse.bank as bank_module
    from emo.fuse.bank_train import train_bank
    from emo.fuse.config import FitConfig

    common = dict(epochs=2, lr=3e-4, batch_size=32, device="cpu", seed=5)
    configs = [FitConfig(modalities=m, fusion="late", **common) for m in (("audio",), ("text", "audio"), ("audio", "visual"))]
    configs.append(FitConfig(modalities=("audio",), fusion="late", spec_augment=True, **common))
    group_sizes = []
    original = bank_module.ModelBank._mel_cnn_matmul

    def spy(self, members, mel, lengths):
        group_sizes.append(len(members))
        return original(self, members, mel, lengths)

    bank_module.ModelBank._mel_cnn_matmul = spy
    try:
        shared = train_bank(configs, small_splits[0], small_splits[1], None, audio_mode="matmul")
    finally:
        bank_module.ModelBank._mel_cnn_matmul = original
    # 6 steps x 2 epochs of [3 members on one shared batch, 1 spec-augmented], and one dev
    # batch per epoch that all 4 members share
    assert (group_sizes.count(3), group_sizes.count(1), group_sizes.count(4)) == (12, 12, 2)
    looped = train_bank(configs, small_splits[0], small_splits[1], None, audio_mode="loop")
    for a, b in zip(shared, looped):
        assert a.best_epoch == b.best_epoch
        assert [r["train_loss"] for r in a.history] == pytest.approx([r["train_loss"] for r in b.history], rel=1e-4)
        assert a.dev["emotion"]["weighted_f1"] == pytest.approx(b.dev["emotion"]["weighted_f1"], abs=1e-6)


def test_bank_training_replays_emo_fit(small_splits, monkeypatch):
    """With dropout off (its draws are the one thing a bank does not share with emo fit),
    every bank member replays fit_splits: same batches, augmentation draws, class weights,
    AdamW, clipping and plateau schedule, so the same best epoch, dev score and lr history.

    A late-fusion member has no batch norm and matches to float precision. Batch-norm
    members drift slightly: inputs that are nearly constant over a batch (the presence
    bit, the common level of the mel features) get gradients that batch norm cancels to
    float noise, and Adam scales noise up to full-size steps - in emo fit's own runs too.
    So for those the test bounds the logits instead of the weights.
    """
    import emo.fuse.bank_train as bank_train
    import emo.fuse.train as train
    from emo.fuse.config import FitConfig
    from emo.fuse.data import TensorSplit

    original = train.model_config_for

    def no_dropout(config, features):
        model_config = original(config, features)
        model_config.early_dropout = (0.0, 0.0)
        return model_config

    monkeypatch.setattr(train, "model_config_for", no_dropout)
    monkeypatch.setattr(bank_train, "model_config_for", no_dropout)
    common = dict(epochs=2, lr=3e-4, batch_size=32, device="cpu", plateau_patience=0)
    configs = [
        FitConfig(modalities=("audio", "visual"), fusion="late", seed=2, modality_dropout=0.3, **common),
        FitConfig(modalities=("text", "audio"), fusion="late", seed=4, spec_augment=True, class_weights="balanced",
                  weight_decay=0.1, **common),
        FitConfig(modalities=("text",), fusion="early", seed=0, **common),
        FitConfig(modalities=("text", "audio", "visual"), fusion="ensemble", seed=1, class_weights="meld", **common),
        FitConfig(modalities=("audio",), fusion="ensemble", seed=3, spec_augment=True, **common),
    ]
    train_split, dev_split, _ = small_splits
    dev_set = TensorSplit(dev_split, MODALITIES, "cpu", "cls", 1000)
    batch = dev_set.gather(torch.arange(len(dev_set)))
    results = bank_train.train_bank(configs, train_split, dev_split, None, keep_models=True)
    for config, member in zip(configs, results):
        single = train.fit_splits(config, train_split, dev_split)
        assert member.best_epoch == single.best_epoch
        assert member.dev["emotion"]["weighted_f1"] == pytest.approx(single.best_dev["emotion"]["weighted_f1"], abs=1e-6)
        assert [r["lr"] for r in member.history] == pytest.approx([r["lr"] for r in single.history])
        assert [r["train_loss"] for r in member.history] == pytest.approx(
            [r["train_loss"] for r in single.history], rel=1e-3
        )
        present = batch.present[:, [MODALITIES.index(m) for m in config.modalities]]
        inputs = dict(text=batch.text, visual=batch.visual, mel=batch.mel, mel_lengths=batch.mel_lengths)
        with torch.no_grad():
            ours = member.model(present, **inputs)["emotion"]
            theirs = single.model(present, **inputs)["emotion"]
        if config.fusion == "late":
            expected = single.model.state_dict()
            for key, value in member.model.state_dict().items():
                torch.testing.assert_close(value, expected[key], rtol=1e-4, atol=1e-5, msg=key)
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
        else:
            assert (ours - theirs).abs().max() < 0.02 * theirs.abs().max()
            assert (ours.argmax(1) == theirs.argmax(1)).float().mean() > 0.95


def test_cli_runs_a_grid_and_reports_bad_keys(small_cache, tmp_path):
    from typer.testing import CliRunner

    from emo.cli import app

    out = tmp_path / "cli"
    runner = CliRunner()
    args = ["ablate", "--cache", str(small_cache), "--out", str(out), "--modalities", "text,text+audio",
            "--fusion", "late", "--seeds", "1", "--epochs", "1", "--grid", "class_weights=none,balanced"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 4
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 fits trained, 4 reused" in again.output.replace("\n", " ")

    from emo.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["ablate", "--cache", str(small_cache), "--out", str(out), "--set", "bogus=1"])
    assert exit_info.value.code == 2
