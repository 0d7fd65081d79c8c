"""Training from splits in memory (`fit_splits`): it learns, it is reproducible, it refuses mismatches."""

from __future__ import annotations

import emo.fuse  # noqa: F401, I001 - first: sets OpenMP's passive wait policy before torch loads
import json

import numpy as np
import pytest
import torch

from emo.config import build_config
from emo.errors import CacheError, UsageError
from emo.fuse.checkpoint import CHECKPOINT_NAME, load_checkpoint
from emo.fuse.config import FitConfig
from emo.fuse.metrics import majority_baseline
from synthetic_features import make_synthetic_split, to_feature_sets
from emo.fuse.train import fit_splits
from emo.labels import EMOTIONS

SHAPES = dict(text_dim=32, visual_dim=16, frames=4, mean_mel_frames=40, max_mel_frames=120)


@pytest.fixture(scope="module")
def splits():
    train = make_synthetic_split(700, "train", seed=1, **SHAPES)
    dev = make_synthetic_split(300, "dev", seed=2, **SHAPES)
    return to_feature_sets(train), to_feature_sets(dev)  # as a cache loads them


def quick(**overrides) -> FitConfig:
    values = dict(epochs=6, lr=2e-3, max_mel_frames=120, seed=3, device="cpu")
    values.update(overrides)
    return FitConfig(**values)


def test_short_fit_learns_well_above_majority_baseline(splits, tmp_path):
    train, dev = splits
    result = fit_splits(quick(), train, dev, out_dir=tmp_path)
    baseline = majority_baseline(train.emotion, dev.emotion, EMOTIONS)["weighted_f1"]
    best = result.best_dev["emotion"]["weighted_f1"]
    assert best > baseline + 0.3, (best, baseline)
    assert result.best_epoch == max(range(1, 7), key=lambda e: result.history[e - 1]["dev"]["emotion"]["weighted_f1"])
    # artifacts: checkpoint, resolved config (loadable back), metrics lines, curves
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, 7))
    assert (tmp_path / "curves.png").stat().st_size > 1000
    again = build_config(FitConfig, tmp_path / "config.toml", section="fit")
    # the saved config records what was used: 'auto' pooling resolved for this encoder, each modality's set,
    # and the modalities the splits hold (left open in the config)
    used = "text=text/synthetic-text,audio=audio/mel,visual=visual/synthetic-visual"
    resolved = quick().copy_with(text_feature="cls", features=used, modalities=("text", "audio", "visual"))
    assert again == resolved == result.config
    payload = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert payload["epoch"] == result.best_epoch
    assert payload["fingerprint"]["rows"] == train.fingerprint and list(payload["fingerprint"]["sets"]) == list(
        train.sets
    )
    model, _ = load_checkpoint(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), result.model.state_dict().values()))


@pytest.mark.parametrize("modality", ["text", "audio", "visual"])
def test_each_modality_alone_beats_chance(splits, modality):
    train, dev = splits
    result = fit_splits(quick(modalities=(modality,), epochs=5), train, dev)
    baseline = majority_baseline(train.emotion, dev.emotion, EMOTIONS)
    best = result.best_dev["emotion"]
    assert best["weighted_f1"] > baseline["weighted_f1"] + 0.1
    assert best["macro_f1"] > 1 / 7


def test_same_seed_same_metrics_and_other_seed_differs(splits):
    train, dev = splits
    config = quick(epochs=2, spec_augment=True, modality_dropout=0.2)
    first = fit_splits(config, train, dev).history
    second = fit_splits(config, train, dev).history
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]  # noqa: E731
    assert strip(first) == strip(second)
    other = fit_splits(quick(epochs=2, seed=4, spec_augment=True, modality_dropout=0.2), train, dev).history
    assert strip(other) != strip(first)


def test_every_option_trains(tmp_path):
    train = to_feature_sets(make_synthetic_split(200, "train", seed=1, audio_views=3, **SHAPES))
    dev = to_feature_sets(make_synthetic_split(80, "dev", seed=2, **SHAPES))
    config = quick(
        epochs=2,
        task="both",
        fusion="ensemble",
        class_weights="balanced",
        text_feature="mean",
        spec_augment=True,
        frame_sampling=True,
        mel_crop_frames=30,
        audio_view_sampling=True,
        modality_dropout=0.3,
        length_bucketing=False,
    )
    result = fit_splits(config, train, dev)
    assert set(result.best_dev) == {"emotion", "sentiment"}
    for scheme, fusion in (("meld", "early"), ("none", "late")):
        result = fit_splits(quick(epochs=1, class_weights=scheme, fusion=fusion, precision="bf16"), train, dev)
        assert np.isfinite(result.history[0]["train_loss"])


def test_label_smoothing_changes_the_training_loss_only(splits):
    """Smoothing is a training objective: the first epoch's training loss rises (a smoothed
    target's cross-entropy has a floor above 0), the dev loss stays the plain cross-entropy
    (the same function of the model's logits: equal when the model is), and 0 is the seed."""
    train, dev = splits
    plain = fit_splits(quick(epochs=1), train, dev).history[0]
    assert fit_splits(quick(epochs=1, label_smoothing=0.0), train, dev).history[0]["train_loss"] == plain["train_loss"]
    smoothed = fit_splits(quick(epochs=1, label_smoothing=0.2), train, dev).history[0]
    assert smoothed["train_loss"] > plain["train_loss"] + 0.1
    assert (
        0.2 < smoothed["dev"]["emotion"]["weighted_f1"]
        and abs(smoothed["dev"]["emotion"]["loss"] - plain["dev"]["emotion"]["loss"]) < 0.5
    )
    for bad in (-0.1, 1.0):  # (a NaN is refused by every float key's own check first)
        with pytest.raises(Exception, match="label_smoothing must be at least 0 and below 1"):
            quick(label_smoothing=bad).validate()


def test_cache_config_mismatches_are_one_sentence_errors(splits, tmp_path):
    train, dev = splits
    text_only = to_feature_sets(make_synthetic_split(100, "train", seed=1, modalities=("text",), **SHAPES))
    with pytest.raises(CacheError, match="holds no audio features"):  # asked for by name; left open: text
        fit_splits(quick(modalities=("text", "audio", "visual")), text_only, dev)
    with pytest.raises(UsageError, match="several audio views"):
        fit_splits(quick(audio_view_sampling=True), train, dev)
    other = to_feature_sets(make_synthetic_split(100, "dev", seed=2, fingerprint={"text_encoder": "other"}, **SHAPES))
    with pytest.raises(CacheError, match="different encoders"):
        fit_splits(quick(), train, other)
    from emo.errors import ConfigError

    with pytest.raises(ConfigError, match="modalities"):
        quick(modalities=("text", "smell")).validate()
    with pytest.raises(ConfigError, match="fusion"):
        build_config(FitConfig, overrides={"fusion": "middle"})


def test_auto_text_feature_follows_the_encoders_pooling():
    """Sentence encoders (MiniLM, mpnet) are trained for mean pooling, BERT for CLS; a
    fingerprint that records the pooling wins over the name."""
    from emo.fuse.config import resolve_text_feature

    minilm = {"text_encoder": {"name": "sentence-transformers/all-MiniLM-L6-v2"}}
    bert = {"text_encoder": {"name": "bert-base-uncased"}}
    recorded = {"text_encoder": {"name": "my-encoder", "text_pooling": "mean"}}
    assert resolve_text_feature("auto", minilm) == "mean"
    assert resolve_text_feature("auto", bert) == "cls"
    assert resolve_text_feature("auto", recorded) == "mean"
    assert resolve_text_feature("auto", {}) == "cls"
    assert resolve_text_feature("cls", minilm) == "cls"  # an explicit choice is kept


def test_failed_fit_leaves_no_run_folder(tmp_path):
    """Errors a user can cause (a dataset folder as --cache, --device cuda without a GPU)
    fail before the run folder exists; nothing is left behind."""
    import torch

    from emo.errors import EmoError
    from emo.fuse.train import run_fit

    data = tmp_path / "not-a-cache"
    data.mkdir()
    (data / "train_sent_emo.csv").write_text("Sr No.,Utterance\n")
    with pytest.raises(EmoError):
        run_fit(FitConfig(cache=data, out=tmp_path / "run-a", epochs=1))
    assert not (tmp_path / "run-a").exists()
    if not torch.cuda.is_available():
        with pytest.raises(EmoError):
            run_fit(FitConfig(cache=data, out=tmp_path / "run-b", epochs=1, device="cuda"))
        assert not (tmp_path / "run-b").exists()


def test_fit_that_fails_midway_removes_what_it_wrote(splits, tmp_path, monkeypatch):
    import emo.fuse.train as train
    from emo.fuse.run_folder import run_folder

    def broken(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(train.Trainer, "train_epoch", broken)
    with pytest.raises(RuntimeError):
        with run_folder(tmp_path / "run", overwrite=False) as out:
            fit_splits(quick(), *splits, out_dir=out)
    assert not (tmp_path / "run").exists()
