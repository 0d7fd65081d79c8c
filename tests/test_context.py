"""Dialogue-context heads: they read the conversation, causal mode never reads ahead,
and they fit, evaluate, save and ablate like every other head."""

from __future__ import annotations

import emo.fuse  # noqa: F401, I001 - first: sets OpenMP's passive wait policy before torch loads
import dataclasses

import numpy as np
import pytest
import torch

from emo.errors import ConfigError
from emo.fuse.config import FitConfig
from emo.fuse.tensors import TensorSplit
from emo.fuse.dialogue import FIRST_TURN, OTHER_SPEAKER, SAME_SPEAKER, Dialogues, dialogue_batches
from emo.fuse.scoring import predict
from emo.fuse.train import fit_splits as fit_loaded
from synthetic_features import make_reaction_split, make_synthetic_split, to_feature_sets

SHAPES = dict(text_dim=32, visual_dim=16, frames=4, mean_mel_frames=40, max_mel_frames=120)


@pytest.fixture(scope="module")
def reactions():
    return make_reaction_split(250, "train", seed=0), make_reaction_split(100, "dev", seed=1)


def fit_splits(config, train_inputs, dev_inputs, **kwargs):
    """`emo.fuse.train.fit_splits` on synthetic inputs, given as a cache loads them."""
    return fit_loaded(config, to_feature_sets(train_inputs), to_feature_sets(dev_inputs), **kwargs)


def text_only(**overrides) -> FitConfig:
    values = dict(modalities=("text",), fusion="early", epochs=8, lr=3e-3, seed=0, device="cpu", text_feature="mean")
    values.update(overrides)
    return FitConfig(**values)


def reaction_accuracy(result, dev) -> float:
    split = TensorSplit(dev, ("text",), "cpu", "mean")
    split.use_speakers(result.config.speaker_embedding, result.model.config.speakers)
    logits = predict(result.model, split)["emotion"]
    reaction = dev.extra["reaction"]
    return float((logits.argmax(1)[reaction] == dev.emotion[reaction]).mean())


def test_dialogue_order_comes_from_ids_not_positions():
    # rows shuffled, Utterance_IDs with gaps: dialogue 7 is utterances 0, 2, 5
    dialogue = np.array([7, 3, 7, 7, 3])
    utterance = np.array([5, 1, 0, 2, 0])
    speaker = ["Ross", "Joey", "Ross", "Rachel", "Joey"]
    found = Dialogues.from_ids(dialogue, utterance, speaker)
    assert [t.tolist() for t in found.turns] == [[4, 1], [2, 3, 0]]
    assert found.turn_change.tolist() == [OTHER_SPEAKER, SAME_SPEAKER, FIRST_TURN, OTHER_SPEAKER, FIRST_TURN]
    batches = dialogue_batches(found, max_utterances=4, device=torch.device("cpu"))
    assert [b.rows.tolist() for b in batches] == [[4, 1], [2, 3, 0]]  # a dialogue is never cut
    assert batches[0].layout.tolist() == [[0, 1]]


def test_context_head_reads_the_previous_turn(reactions):
    """Reactions take their label from the previous turn: alone they are at chance, with
    dialogue context (past or whole) they are clearly recognised."""
    train, dev = reactions
    alone = reaction_accuracy(fit_splits(text_only(), train, dev), dev)
    assert alone < 0.30  # 7 classes: chance is 1/7; the text of a reaction says nothing
    for model, direction in (("gru", "past"), ("transformer", "both")):
        result = fit_splits(text_only(context_model=model, context_direction=direction), train, dev)
        with_context = reaction_accuracy(result, dev)
        assert with_context > alone + 0.3, (model, direction, alone, with_context)


@pytest.mark.parametrize("model", ["gru", "transformer"])
def test_past_direction_never_reads_a_later_turn(reactions, model):
    train, dev = reactions
    result = fit_splits(
        text_only(epochs=1, context_model=model, context_direction="past", speaker_embedding="turn"), train, dev
    )
    split = TensorSplit(dev, ("text",), "cpu", "mean")
    split.use_speakers("turn")
    before = predict(result.model, split)["emotion"]
    # change every turn after the first two of each dialogue
    later = np.zeros(len(dev), dtype=bool)
    for turns in Dialogues.from_ids(dev.dialogue_id, dev.utterance_id, dev.speaker).turns:
        later[turns[2:]] = True
    changed = dataclasses.replace(dev, text_mean=dev.text_mean.copy())
    changed.text_mean[later] = np.random.default_rng(0).standard_normal((int(later.sum()), 32)).astype(np.float16)
    split = TensorSplit(changed, ("text",), "cpu", "mean")
    split.use_speakers("turn")
    after = predict(result.model, split)["emotion"]
    np.testing.assert_allclose(after[~later], before[~later], rtol=1e-5, atol=1e-5)
    assert not np.allclose(after[later], before[later])
    # 'both' does read ahead: the same change moves earlier turns
    both = fit_splits(text_only(epochs=1, context_model=model, context_direction="both"), train, dev)
    plain, moved = (predict(both.model, TensorSplit(s, ("text",), "cpu", "mean"))["emotion"] for s in (dev, changed))
    assert not np.allclose(plain[~later], moved[~later])


@pytest.mark.parametrize("fusion", ["early", "late", "ensemble"])
def test_context_works_with_every_fusion_and_all_modalities(fusion, tmp_path):
    from emo.fuse.checkpoint import load_checkpoint

    train = make_synthetic_split(300, "train", seed=0, **SHAPES)
    dev = make_synthetic_split(100, "dev", seed=1, **SHAPES)
    config = FitConfig(
        fusion=fusion,
        epochs=2,
        lr=1e-3,
        device="cpu",
        max_mel_frames=120,
        context_model="gru",
        speaker_embedding="speaker",
        modality_dropout=0.2,
        spec_augment=True,
    )
    result = fit_splits(config, train, dev, out_dir=tmp_path)
    assert 0.0 <= result.best_dev["emotion"]["weighted_f1"] <= 1.0
    model, payload = load_checkpoint(tmp_path)
    assert payload["model_config"]["context_model"] == "gru" and "speaker0" in payload["model_config"]["speakers"]
    split = TensorSplit(dev, result.config.modalities, "cpu", "cls", 120)
    split.use_speakers("speaker", model.config.speakers)
    reloaded = predict(model, split)["emotion"]
    np.testing.assert_allclose(reloaded, predict(result.model, split)["emotion"], rtol=1e-4, atol=1e-4)


def test_speaker_embedding_needs_a_context_model():
    with pytest.raises(ConfigError, match="context model"):
        FitConfig(speaker_embedding="speaker").validate()
    with pytest.raises(ConfigError):
        FitConfig(context_model="lstm").validate()


def test_context_model_is_an_ablation_axis(tmp_path):
    from emo.fuse.ablate import run_ablate
    from emo.fuse.ablate_grid import resolve_configs
    from synthetic_features import write_synthetic_cache

    splits = [
        make_synthetic_split(n, name, seed=i, **SHAPES)
        for i, (name, n) in enumerate((("train", 200), ("dev", 80), ("test", 80)))
    ]
    write_synthetic_cache(tmp_path / "cache", splits)
    ablate, base = resolve_configs(
        None,
        dict(
            cache=tmp_path / "cache",
            out=tmp_path / "grid",
            modalities="text+audio",
            seeds=1,
            epochs=1,
            max_mel_frames=120,
            grid=["context_model=none,gru,transformer"],
        ),
    )
    result = run_ablate(ablate, base)
    assert sorted(r["context_model"] for r in result.rows) == ["gru", "none", "transformer"]
    assert all(r["test_wf1_mean"] == r["test_wf1_mean"] for r in result.rows)  # scored on test
