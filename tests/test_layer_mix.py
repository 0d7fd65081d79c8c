"""Layer mixing (`emo.fuse.layer_mix`, issue #20): the `LayerMix` modes, a `layers` set composed
into a modality's row and mixed before its projection (text and audio, beside vector sets,
every fusion and context head), what the learned weights say, the checkpoint rebuilding the
mix, and `--layer-mix` / `--layer-norm` as options and ablation axes. The end-to-end tests
on a real cache (`emo extract --text-layers all`, fit, eval, ablate, predict) are in
tests/test_layer_mix_cache.py."""

from __future__ import annotations

import emo.fuse  # noqa: F401, I001 - first: sets OpenMP's passive wait policy before torch loads
import re

import numpy as np
import pytest
import torch

from emo.cache.sets import LoadedSet
from emo.errors import ConfigError
from emo.fuse.config import FitConfig
from emo.fuse.inputs import compose
from emo.fuse.layer_mix import LayerMix, MixedInput, describe_mix, mix_report
from emo.fuse.model import FusionModel, ModelConfig
from synthetic_features import make_synthetic_split, to_feature_sets

SMALL = dict(text_dim=16, visual_dim=8, frames=4, mean_mel_frames=20, max_mel_frames=48)
LAYERS = "text/enc-layers-all"
SPEECH_LAYERS = "audio/speech-layers-all"


def one_sentence(message: str) -> bool:
    return len(re.findall(r"\.\s", message + " ")) == 1


def layers_set(name, arrays, present, layers, truncated=None) -> LoadedSet:
    """A layers set as `emo.cache` loads one (arrays [N, L, D], `.layers` the hidden-state indices)."""
    present = np.asarray(present, dtype=bool)
    dim = next(iter(arrays.values())).shape[2]
    return LoadedSet(
        name=name,
        kind="layers",
        dim=dim,
        encoder=name,
        fingerprint={"encoder": name, "layers": list(layers)},
        digest=name,
        present=present,
        truncated=np.zeros(len(present), bool) if truncated is None else truncated,
        arrays=arrays,
        layers=tuple(layers),
    )


def with_layers(split, signal_layer: int = 2, layers=(0, 1, 2, 3, 4), name=LAYERS, names=("cls", "mean")):
    """`split` plus a layers set (arrays `names`) whose layer `signal_layer` (a position in
    `layers`) carries the text set's class signal; the other layers are noise at its scale."""
    base = split.sets["text/synthetic-text"]
    rng = np.random.default_rng([len(split), signal_layer])
    arrays = {}
    for array in names:
        signal = base.arrays["mean" if array == "mean" else "cls"].astype(np.float32)
        stack = rng.standard_normal((len(split), len(layers), signal.shape[1])).astype(np.float32) * 2.0
        stack[:, signal_layer] = signal
        stack[~base.present] = 0
        arrays[array] = stack.astype(np.float16)
    split.sets[name] = layers_set(name, arrays, base.present, layers)
    return split


@pytest.fixture(scope="module")
def splits():
    train = with_layers(to_feature_sets(make_synthetic_split(300, "train", seed=0, **SMALL)))
    dev = with_layers(to_feature_sets(make_synthetic_split(100, "dev", seed=1, **SMALL)))
    return train, dev


# --- LayerMix ---------------------------------------------------------------------------------


def test_weighted_mix_is_a_softmax_distribution_times_gamma():
    torch.manual_seed(0)
    hidden = torch.randn(4, 5, 3)
    mix = LayerMix(5, 3, "weighted")
    # it starts as the mean: 1/L each, gamma 1
    assert torch.allclose(mix.weights(), torch.full((5,), 0.2)) and float(mix.gamma.detach()) == 1.0
    with torch.no_grad():
        mix.scalars.copy_(torch.tensor([2.0, -1.0, 0.5, 0.0, 3.0]))
        mix.gamma.fill_(1.5)
    weights = mix.weights().detach()
    assert float(weights.sum()) == pytest.approx(1.0) and bool((weights > 0).all())
    expected = 1.5 * (hidden * torch.softmax(mix.scalars, 0)[None, :, None]).sum(1)
    assert torch.allclose(mix(hidden), expected, atol=1e-6)
    assert mix.out_dim == 3


def test_fixed_mixes_mean_last_concat():
    hidden = torch.randn(4, 5, 3)
    assert torch.allclose(LayerMix(5, 3, "mean")(hidden), hidden.mean(1))
    assert torch.equal(LayerMix(5, 3, "last")(hidden), hidden[:, 4])
    concat = LayerMix(5, 3, "concat")
    assert concat.out_dim == 15 and torch.equal(concat(hidden), hidden.reshape(4, 15))
    for mode in ("mean", "last", "concat"):  # nothing learned: no parameter, no weights to report
        assert list(LayerMix(5, 3, mode).parameters()) == [] and LayerMix(5, 3, mode).weights() is None
    with pytest.raises(ValueError):
        LayerMix(5, 3, "sum")


def test_gradient_reaches_the_layer_weights_and_gamma():
    torch.manual_seed(0)
    mix = LayerMix(4, 6, "weighted")
    hidden = torch.randn(8, 4, 6)
    hidden[:, 1] *= 5  # layers that differ, so moving weight between them changes the output
    loss = (mix(hidden) * torch.randn(8, 6)).sum()
    loss.backward()
    assert mix.scalars.grad is not None and float(mix.scalars.grad.abs().sum()) > 0
    assert mix.gamma.grad is not None and float(mix.gamma.grad.abs()) > 0


def test_layer_norm_normalises_each_layer_before_mixing():
    torch.manual_seed(0)
    hidden = torch.randn(4, 3, 8)
    scaled = hidden.clone()
    scaled[:, 0] = scaled[:, 0] * 100 + 7  # one layer far louder: without the norm it dominates the mean
    plain, normed = LayerMix(3, 8, "mean"), LayerMix(3, 8, "mean", layer_norm=True)
    assert not torch.allclose(plain(hidden), plain(scaled), atol=1e-3)
    assert torch.allclose(normed(hidden), normed(scaled), atol=1e-4)
    each = torch.nn.functional.layer_norm(hidden, (8,))
    assert torch.allclose(LayerMix(3, 8, "concat", layer_norm=True)(hidden), each.reshape(4, 24), atol=1e-6)
    assert list(normed.parameters()) == []  # no affine part: the projection after it rescales


def test_mixed_input_cuts_the_row_by_its_layout_in_order():
    layout = [
        {"set": "text/a", "kind": "vector", "width": 3},
        {"set": LAYERS, "kind": "layers", "layers": [0, 2, 4], "dim": 2},
        {"set": "text/b", "kind": "vector", "width": 1},
    ]
    mixed = MixedInput(layout, "last")
    row = torch.arange(2 * 10, dtype=torch.float32).reshape(2, 10)
    assert (mixed.in_dim, mixed.out_dim) == (10, 6)
    expected = torch.cat([row[:, :3], row[:, 7:9], row[:, 9:]], dim=1)  # layer 4 = the last pair of its 6 columns
    assert torch.equal(mixed(row), expected)
    assert MixedInput(layout, "concat").out_dim == 10
    with pytest.raises(ValueError, match="expected 10 input features"):
        mixed(torch.zeros(2, 9))


def test_describe_mix_reports_learned_weights_or_the_fixed_choice():
    mix = LayerMix(3, 4, "weighted")
    with torch.no_grad():
        mix.scalars.copy_(torch.tensor([0.0, 1.0, 2.0]))
    learned = describe_mix(mix, [4, 5, 6])
    assert learned["learned"] is True and learned["layers"] == [4, 5, 6]
    assert learned["weights"] == pytest.approx(torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0).tolist())
    assert learned["gamma"] == 1.0
    for mode, phrase in (("mean", "mean of hidden states 4-6"), ("last", "hidden state 6 only"), ("concat", "3 x 4")):
        fixed = describe_mix(LayerMix(3, 4, mode), [4, 5, 6])
        assert fixed["learned"] is False and "weights" not in fixed and "gamma" not in fixed
        assert phrase in fixed["uses"]
    assert "2, 4, 6" in describe_mix(LayerMix(3, 4, "mean"), [2, 4, 6])["uses"]


# --- composing a layers set ------------------------------------------------------------------


def test_a_layers_set_is_flattened_beside_vector_sets_with_its_layout(splits):
    train, _ = splits
    n, dim = len(train), SMALL["text_dim"]
    both = compose(train, {"text": [LAYERS, "text/synthetic-text"]})
    assert both.text_cls.shape == (n, 5 * dim + dim) and both.text_mean.shape == both.text_cls.shape
    stored = train.sets[LAYERS]
    assert np.array_equal(both.text_cls[:, : 5 * dim].reshape(n, 5, dim), stored.arrays["cls"])
    assert np.array_equal(both.text_mean[:, : 5 * dim].reshape(n, 5, dim), stored.arrays["mean"])
    assert both.layouts["text"] == [
        {"set": LAYERS, "kind": "layers", "layers": [0, 1, 2, 3, 4], "dim": dim},
        {"set": "text/synthetic-text", "kind": "vector", "width": dim},
    ]
    alone = compose(train, {"text": [LAYERS]})
    assert alone.text_cls.base is not None  # a view of the loaded array, not a copy
    assert compose(train, {"text": ["text/synthetic-text"]}).layouts == {}  # vector sets: no layout at all


def test_an_audio_layers_set_beside_mel_and_a_visual_one_refused(splits):
    train, _ = splits
    n = len(train)
    rng = np.random.default_rng(0)
    values = rng.standard_normal((n, 3, 6)).astype(np.float16)
    present = np.arange(n) % 4 != 0
    train.sets[SPEECH_LAYERS] = layers_set(SPEECH_LAYERS, {"values": values}, present, (2, 4, 6))
    try:
        inputs = compose(train, {"audio": ["audio/mel", SPEECH_LAYERS]})
        assert inputs.mel is not None and inputs.audio_vector.shape == (n, 18)
        assert inputs.layouts["audio"] == [{"set": SPEECH_LAYERS, "kind": "layers", "layers": [2, 4, 6], "dim": 6}]
        inputs.layouts.clear()
        visual = "visual/faces-layers"
        train.sets[visual] = layers_set(visual, {"values": values}, present, (2, 4, 6))
        with pytest.raises(ConfigError) as caught:
            compose(train, {"visual": [visual]})
        assert "layer mixing works for text and audio sets only" in str(caught.value)
        assert one_sentence(str(caught.value))
    finally:
        train.sets.pop(SPEECH_LAYERS, None)
        train.sets.pop("visual/faces-layers", None)


# --- FitConfig and the model -----------------------------------------------------------------


def test_layer_mix_options_are_validated_in_one_sentence():
    from emo.fuse.config import LAYER_MIXES
    from emo.fuse.layer_mix import MODES

    assert LAYER_MIXES == MODES  # what the config accepts is what the module builds
    FitConfig(layer_mix="concat", layer_norm=True).validate()
    with pytest.raises(ConfigError) as caught:
        FitConfig(layer_mix="sum").validate()
    assert str(caught.value) == "layer_mix must be one of weighted, mean, concat, last; got 'sum'."


def test_layer_options_change_nothing_for_a_model_without_layers_sets():
    """A vector-only run builds exactly the model it built before layer mixing existed, whatever
    --layer-mix says: the same parameters, drawn from the same seeded generator."""
    models = []
    for options in ({}, {"layer_mix": "concat", "layer_norm": True}):
        torch.manual_seed(11)
        models.append(FusionModel(ModelConfig(text_dim=8, visual_dim=4, proj_dim=6, **options)))
    (a, b) = models
    assert list(a.state_dict()) == list(b.state_dict())
    assert not any("mix" in key for key in a.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_the_model_mixes_before_the_projection_and_its_config_round_trips():
    layout = (
        {"set": LAYERS, "kind": "layers", "layers": [0, 1, 2], "dim": 4},
        {"set": "text/b", "kind": "vector", "width": 2},
    )
    config = ModelConfig(modalities=("text",), text_dim=14, proj_dim=5, text_layout=layout, fusion="late")
    model = FusionModel(config)
    assert model.encoders.text.in_features == 6  # D of the mix + the vector set's 2
    assert {"encoders.text_mix.mixes.0.scalars", "encoders.text_mix.mixes.0.gamma"} <= set(model.state_dict())
    again = FusionModel(ModelConfig.from_dict(config.to_dict()))
    again.load_state_dict(model.state_dict())
    assert again.config.text_layout == config.text_layout
    concat = FusionModel(ModelConfig.from_dict({**config.to_dict(), "layer_mix": "concat"}))
    assert concat.encoders.text.in_features == 14


# --- fits in memory ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fusion, context",
    [("early", "none"), ("late", "none"), ("ensemble", "none"), ("ensemble", "gru"), ("late", "transformer")],
)
def test_every_fusion_and_context_head_trains_on_a_layers_set(splits, fusion, context):
    from emo.fuse.train import fit_splits

    train, dev = splits
    config = FitConfig(
        modalities=("text", "audio"),
        features=f"text={LAYERS}+synthetic-text",
        fusion=fusion,
        context_model=context,
        epochs=1,
        proj_dim=8,
        device="cpu",
        max_mel_frames=48,
    )
    result = fit_splits(config, train, dev)
    mixed = result.model.encoders.text_mix
    assert mixed is not None and [m.mode for m in mixed.mixes] == ["weighted"]
    assert result.model.encoders.text.in_features == 2 * SMALL["text_dim"]
    report = mix_report(result.model)
    assert list(report) == [LAYERS] and report[LAYERS]["weights"] != pytest.approx([0.2] * 5, abs=1e-7)


def test_an_audio_layers_set_trains_with_the_mel_cnn(splits):
    from emo.fuse.train import fit_splits

    train, dev = splits
    for split in (train, dev):
        with_layers(split, 1, (3, 6), SPEECH_LAYERS, names=("values",))
    config = FitConfig(
        modalities=("audio",),
        features=f"audio=mel+{SPEECH_LAYERS}",
        layer_mix="mean",
        layer_norm=True,
        epochs=1,
        proj_dim=8,
        device="cpu",
        max_mel_frames=48,
    )
    result = fit_splits(config, train, dev)
    assert result.model.encoders.audio is not None and result.model.encoders.audio_mix is not None
    assert mix_report(result.model)[SPEECH_LAYERS]["mode"] == "mean"
    assert result.model.encoders.audio_vector.in_features == SMALL["text_dim"]


def test_the_weighted_mix_learns_which_layer_carries_the_signal(splits):
    """Only layer 2 of the set shows the class (the others are noise): the learned weights
    must put it first, and the fit must beat the same head on the last layer alone."""
    from emo.fuse.train import fit_splits

    train, dev = splits
    common = dict(modalities=("text",), features=f"text={LAYERS}", fusion="late", epochs=6, lr=1e-2, device="cpu")
    weighted = fit_splits(FitConfig(**common, layer_norm=True), train, dev)
    weights = mix_report(weighted.model)[LAYERS]["weights"]
    assert int(np.argmax(weights)) == 2 and weights[2] > 0.25, weights  # from 0.2 each, in 60 steps
    last = fit_splits(FitConfig(**common, layer_mix="last"), train, dev)
    assert weighted.best_dev["emotion"]["weighted_f1"] > last.best_dev["emotion"]["weighted_f1"] + 0.1


def test_a_run_on_a_layers_set_reloads_and_predicts_the_same(splits, tmp_path):
    from emo.fuse.checkpoint import load_checkpoint
    from emo.fuse.predictions import predict_features
    from emo.fuse.scoring import score
    from emo.fuse.predictions import model_inputs, model_split
    from emo.fuse.train import fit_splits

    train, dev = splits
    config = FitConfig(
        modalities=("text",),
        features=f"text={LAYERS}+synthetic-text",
        text_feature="cls",
        layer_mix="weighted",
        epochs=2,
        lr=3e-3,
        device="cpu",
    )
    result = fit_splits(config, train, dev, out_dir=tmp_path / "run")
    model, payload = load_checkpoint(tmp_path / "run")
    assert payload["model_config"]["layer_mix"] == "weighted"
    assert payload["model_config"]["text_layout"][0]["layers"] == [0, 1, 2, 3, 4]
    assert payload["fit_config"]["layer_mix"] == "weighted" and payload["fit_config"]["layer_norm"] is False
    assert mix_report(model) == mix_report(result.model)
    logits, _ = predict_features(model, payload, dev, "cpu")
    data = model_split(model, payload, model_inputs(payload, dev, model.config.modalities), "cpu")
    assert score(logits, data)["emotion"]["weighted_f1"] == pytest.approx(result.best_dev["emotion"]["weighted_f1"])
