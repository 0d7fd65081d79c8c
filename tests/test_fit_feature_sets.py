"""Training from named feature sets: `--features` parsing and resolution, composing sets into
model inputs, the composite fingerprint, fits on a speech-model vector set, eval's refusal
of a cache that lacks a run's set, and `emo ablate --grid features.audio=...`."""

from __future__ import annotations

import emo.fuse  # noqa: F401, I001 - first: sets OpenMP's passive wait policy before torch loads
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from emo.cache.load import LoadedSplit
from emo.cache.fingerprint import fingerprint_digest
from emo.cache.sets import LoadedSet
from emo.errors import CacheError, ConfigError, UsageError
from emo.labels import EMOTIONS
from emo.fuse.ablate_grid import AblateConfig, is_seed_design, parse_axes, plan_grid
from emo.fuse.config import FitConfig, resolve_text_feature
from emo.fuse.feature_cache import require_run_sets
from emo.fuse.feature_sets import (
    UnknownFeatureSetError,
    describe_fingerprint_difference,
    format_features,
    parse_features,
    require_same_fingerprint,
    resolve_features,
)
from emo.fuse.inputs import ModelInputs, compose
from synthetic_features import make_synthetic_split, to_feature_sets, write_synthetic_cache

SPEECH = "audio/whisper-base"
SMALL = dict(text_dim=16, visual_dim=8, frames=4, mean_mel_frames=20, max_mel_frames=48)


def one_sentence(message: str) -> bool:
    return len(re.findall(r"\.\s", message + " ")) == 1


def loaded(name, kind, arrays, present, fingerprint=None, failures=None, truncated=None) -> LoadedSet:
    present = np.asarray(present, dtype=bool)
    return LoadedSet(
        name=name,
        kind=kind,
        dim=0,
        encoder=name,
        fingerprint=fingerprint or {"encoder": name},
        digest=name,
        present=present,
        arrays=arrays,
        failures=failures or [],
        truncated=np.zeros(len(present), bool) if truncated is None else np.asarray(truncated),
    )


def raw_split(sets: dict, n: int) -> LoadedSplit:
    """A loaded split of `n` rows holding `sets`."""
    return LoadedSplit(
        split="train",
        fingerprint={"rows": 1},
        dialogue_id=np.arange(n, dtype=np.int32),
        utterance_id=np.zeros(n, dtype=np.int32),
        emotion=np.zeros(n, dtype=np.int64),
        sentiment=np.zeros(n, dtype=np.int64),
        speaker=["a"] * n,
        text=[""] * n,
        sets=sets,
    )


def speech_values(features, dim: int = 12, reliability: float = 0.8, world_seed: int = 5):
    """A speech encoder's pooled features that show each row's class (with chance `reliability`),
    present for 90 % of rows."""
    world = np.random.default_rng(world_seed)
    proto = world.standard_normal((7, dim)).astype(np.float32) * 2.0
    rng = np.random.default_rng([len(features), world_seed, int(features.emotion.sum())])
    n = len(features)
    shown = np.where(rng.random(n) < reliability, features.emotion, rng.integers(0, 7, n))
    values = proto[shown] + rng.standard_normal((n, dim), dtype=np.float32)
    present = rng.random(n) >= 0.1
    values[~present] = 0
    return values.astype(np.float16), present


def with_speech(features, kind: str = "vector", frames: int = 3):
    """`features` (carrying sets) plus a speech-model set: a vector, or frames whose valid
    ones each hold the row's vector plus noise."""
    values, present = speech_values(features)
    if kind == "vector":
        arrays = {"values": values}
    else:
        rng = np.random.default_rng(3)
        mask = (np.arange(frames)[None, :] < rng.integers(1, frames + 1, len(values))[:, None]) & present[:, None]
        stacked = (
            values[:, None, :].astype(np.float32) + rng.standard_normal((len(values), frames, values.shape[1])) * 0.3
        )
        arrays = {"values": np.where(mask[..., None], stacked, 0).astype(np.float16), "mask": mask}
    features.sets[SPEECH] = loaded(SPEECH, kind, arrays, present, {"encoder": "openai/whisper-base", "layer": -1})
    return features


# --- names ------------------------------------------------------------------------------------


def test_parse_features_short_and_full_names():
    text = "visual=efficientnet-lite0+mediapipe-face,text=all-MiniLM-L6-v2,audio=audio/mel+whisper-base"
    parsed = parse_features(text)
    assert parsed == {
        "text": ["text/all-MiniLM-L6-v2"],
        "audio": ["audio/mel", "audio/whisper-base"],
        "visual": ["visual/efficientnet-lite0", "visual/mediapipe-face"],
    }
    assert list(parsed) == ["text", "audio", "visual"]
    assert parse_features(format_features(parsed)) == parsed
    assert parse_features("") == {} and parse_features("  ") == {}
    assert FitConfig().features == ""


@pytest.mark.parametrize(
    "bad", ["smell=x", "audio", "audio=", "audio=text/x", "audio=mel,audio=w", "audio=mel+mel", "audio=a/b"]
)
def test_parse_features_refuses_bad_syntax_in_one_sentence(bad):
    with pytest.raises(ConfigError) as caught:
        parse_features(bad)
    assert one_sentence(str(caught.value))
    with pytest.raises(ConfigError):
        FitConfig(features=bad).validate()


def test_resolve_features_defaults_unknown_names_and_missing_modalities():
    kinds = {"text/minilm": "vector", "audio/mel": "sequence", SPEECH: "frames", "visual/effnet": "frames"}
    available = {name: SimpleNamespace(name=name, kind=kind) for name, kind in kinds.items()}
    defaults = {"text": "text/minilm", "audio": "audio/mel", "visual": "visual/effnet"}
    assert resolve_features({}, available, defaults, ("text", "audio")) == {
        "text": ["text/minilm"],
        "audio": ["audio/mel"],
    }
    chosen = resolve_features(
        parse_features("visual=effnet,audio=mel+whisper-base"), available, defaults, ("audio", "text")
    )
    assert chosen == {"text": ["text/minilm"], "audio": ["audio/mel", SPEECH]}  # visual is not in the run
    with pytest.raises(UnknownFeatureSetError) as caught:
        resolve_features(parse_features("audio=wav2vec2"), available, defaults, ("audio",), cache="cache/meld")
    message = str(caught.value)
    assert isinstance(caught.value, UsageError) and one_sentence(message)
    assert "audio/wav2vec2" in message and "mel, whisper-base" in message
    assert "`emo extract --split all --modalities audio --audio-model NAME --cache cache/meld`" in message
    with pytest.raises(CacheError, match="holds no visual features"):
        resolve_features({}, {"text/minilm": available["text/minilm"]}, {"text": "text/minilm"}, ("visual",))


# --- compose ----------------------------------------------------------------------------------


def test_frames_sets_are_pooled_each_over_its_own_mask_and_concatenated():
    rng = np.random.default_rng(0)
    a_values = rng.standard_normal((4, 3, 2)).astype(np.float16)
    a_mask = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]], dtype=bool)
    b_values = rng.standard_normal((4, 2, 3)).astype(np.float16)
    b_mask = np.array([[1, 0], [1, 1], [1, 1], [1, 1]], dtype=bool)
    sets = {
        "visual/effnet": loaded("visual/effnet", "frames", {"values": a_values, "mask": a_mask}, [1, 1, 1, 0]),
        "visual/face": loaded("visual/face", "frames", {"values": b_values, "mask": b_mask}, [1, 1, 1, 1]),
    }
    split = raw_split(sets, 4)
    both = compose(split, {"visual": ["visual/effnet", "visual/face"]})
    # values of both sets (2 + 3), then one presence column per set
    assert both.visual.shape == (4, 1, 7) and both.visual_mask.shape == (4, 1)
    # row 2 has no valid effnet frame, row 3 no effnet at all: their effnet part is zeros and
    # marked absent (never passed off as features), and the face part still counts
    assert both.visual_mask[:, 0].tolist() == [True, True, True, True] == both.has_visual.tolist()
    assert both.visual[:, 0, 5:].tolist() == [[1, 1], [1, 1], [0, 1], [0, 1]]
    assert not both.visual[2:, 0, :2].any()
    expected = np.concatenate([a_values[0, :2].astype(np.float32).mean(0), b_values[0, :1].astype(np.float32).mean(0)])
    np.testing.assert_allclose(both.visual[0, 0, :5].astype(np.float32), expected, atol=2e-3)
    np.testing.assert_allclose(
        both.visual[1, 0, 2:5].astype(np.float32), b_values[1].astype(np.float32).mean(0), atol=2e-3
    )
    assert isinstance(both, ModelInputs) and both.mel is None and both.text_cls is None
    one = compose(split, {"visual": ["visual/effnet"]})  # one frames set: as extracted (frame sampling works)
    assert one.visual is a_values and one.visual.shape == (4, 3, 2)
    assert one.visual_mask.tolist() == (a_mask & np.array([1, 1, 1, 0], bool)[:, None]).tolist()
    assert one.has_visual.tolist() == [True, True, False, False]


def test_text_vector_sets_concatenate_cls_mean_and_values():
    cls, mean, values = (np.full((3, d), v, np.float16) for d, v in ((4, 1), (4, 2), (2, 3)))
    sets = {
        "text/minilm": loaded("text/minilm", "vector", {"cls": cls, "mean": mean}, [1, 1, 0], {"text_pooling": "mean"}),
        "text/hand": loaded("text/hand", "vector", {"values": values}, [1, 0, 1]),
    }
    out = compose(raw_split(sets, 3), {"text": ["text/minilm", "text/hand"]})
    assert out.text_cls.shape == out.text_mean.shape == (3, 6)
    assert out.text_cls[0].tolist() == [1] * 4 + [3] * 2 and out.text_mean[0].tolist() == [2] * 4 + [3] * 2
    assert out.has_text.tolist() == [True, False, False]
    single = compose(raw_split(sets, 3), {"text": ["text/minilm"]})
    assert single.text_cls is cls and resolve_text_feature("auto", single.fingerprint) == "mean"


def test_mel_and_speech_vector_feed_both_audio_inputs():
    base = to_feature_sets(make_synthetic_split(40, "train", seed=1, modalities=("audio",), **SMALL))
    mel = base.sets["audio/mel"]
    mel.failures = [
        {"dialogue_id": int(base.dialogue_id[0]), "utterance_id": int(base.utterance_id[0]), "reason": "audio_decode"}
    ]
    with_speech(base, kind="frames")
    base.sets[SPEECH].failures = [
        dict(mel.failures[0]),
        {"dialogue_id": int(base.dialogue_id[1]), "utterance_id": int(base.utterance_id[1]), "reason": "empty"},
    ]
    base.sets[SPEECH].truncated = np.arange(40) == 5
    out = compose(base, {"audio": ["audio/mel", SPEECH]})
    assert out.mel is mel.arrays["values"] and out.mel_index is mel.arrays["index"]
    assert out.audio_vector.shape == (40, 12) and out.modalities == ("audio",)
    frames_ok = base.sets[SPEECH].arrays["mask"].any(1) & base.sets[SPEECH].present
    assert out.has_audio.tolist() == (mel.present & frames_ok).tolist()
    assert out.failure[0] == "audio_decode" and out.failure[1] == "empty" and out.failure[2] == ""
    assert out.truncated[5] and out.truncated.sum() == (mel.truncated | (np.arange(40) == 5)).sum()
    assert out.fingerprint["features"] == {"audio": ["audio/mel", SPEECH]}
    with pytest.raises(ConfigError, match="at most one audio sequence set"):
        base.sets["audio/mel2"] = loaded("audio/mel2", "sequence", dict(mel.arrays), mel.present)
        compose(base, {"audio": ["audio/mel", "audio/mel2"]})
    # the model sums the mel CNN's and the speech projection in one audio slot
    import torch

    from emo.fuse.tensors import TensorSplit
    from emo.fuse.model import FusionModel, ModelConfig

    data = TensorSplit(out, ("audio",), "cpu", max_mel_frames=48)
    model = FusionModel(ModelConfig(modalities=("audio",), n_mels=40, audio_dim=12, proj_dim=16)).eval()
    assert model.encoders.audio is not None and model.encoders.audio_vector is not None
    batch = data.gather(torch.arange(8))
    assert batch.audio_vector.shape == (8, 12) and batch.mel is not None
    assert model(**batch.inputs())["emotion"].shape == (8, 7)


def test_composite_fingerprint_covers_exactly_the_sets_trained_on():
    base = with_speech(
        to_feature_sets(make_synthetic_split(30, "train", seed=1, modalities=("text", "audio"), **SMALL))
    )
    choice = {"text": ["text/synthetic-text"], "audio": [SPEECH]}
    first = compose(base, choice).fingerprint
    assert set(first) >= {"rows", "features", "sets"} and list(first["sets"]) == ["text/synthetic-text", SPEECH]
    assert compose(base, {"text": ["text/synthetic-text"], "audio": ["audio/mel"]}).fingerprint != first
    base.sets["audio/mel"].fingerprint = {"changed": True}  # a set the run does not use: no difference
    assert fingerprint_digest(compose(base, choice).fingerprint) == fingerprint_digest(first)
    base.sets[SPEECH].fingerprint = {"encoder": "openai/whisper-base", "layer": -2}
    second = compose(base, choice).fingerprint
    assert fingerprint_digest(second) != fingerprint_digest(first)
    assert "audio/whisper-base: layer (-2 vs -1)" in describe_fingerprint_difference(first, second)
    with pytest.raises(CacheError, match="audio/whisper-base: layer") as caught:
        require_same_fingerprint(first, second, "The 'dev' split")
    assert one_sentence(str(caught.value))
    assert resolve_text_feature("auto", {"features": {"text": ["text/all-MiniLM-L6-v2"]}, "sets": {}}) == "mean"
    assert resolve_text_feature("auto", {"features": {"text": ["text/bert-base-uncased"]}, "sets": {}}) == "cls"


# --- fit and eval -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def speech_splits():
    made = []
    for n, name, seed in ((700, "train", 1), (250, "dev", 2)):
        made.append(
            with_speech(to_feature_sets(make_synthetic_split(n, name, seed=seed, modalities=("text",), **SMALL)))
        )
    return made


def test_fit_on_a_speech_vector_set_learns_and_reloads(speech_splits, tmp_path):
    from emo.fuse.checkpoint import load_checkpoint, plain
    from emo.fuse.scoring import score
    from emo.fuse.metrics import majority_baseline
    from emo.fuse.predictions import model_inputs, model_split, predict_features
    from emo.fuse.train import fit_splits

    train, dev = speech_splits
    config = FitConfig(
        modalities=("audio",),
        features="audio=whisper-base",
        epochs=6,
        lr=3e-3,
        proj_dim=32,
        device="cpu",
        fusion="late",
    )
    result = fit_splits(config, train, dev, out_dir=tmp_path / "run")
    assert result.config.features == "audio=audio/whisper-base"
    assert (result.model.config.audio_mel, result.model.config.audio_dim) == (False, 12)
    majority = majority_baseline(train.emotion, dev.emotion, EMOTIONS)["weighted_f1"]
    assert result.best_dev["emotion"]["weighted_f1"] > majority + 0.15
    model, payload = load_checkpoint(tmp_path / "run")
    assert payload["fit_config"]["features"] == "audio=audio/whisper-base"
    assert list(payload["fingerprint"]["sets"]) == [SPEECH]
    assert payload["fingerprint_digest"] == fingerprint_digest(plain(payload["fingerprint"]))
    assert 'features = "audio=audio/whisper-base"' in (tmp_path / "run" / "config.toml").read_text()
    logits, present = predict_features(model, payload, dev, "cpu")  # raw sets, composed as in training
    inputs = model_inputs(payload, dev, model.config.modalities)
    again = score(logits, model_split(model, payload, inputs, "cpu"))["emotion"]["weighted_f1"]
    assert again == pytest.approx(result.best_dev["emotion"]["weighted_f1"], abs=1e-6)
    assert present.shape == (len(dev), 1)

    # emo eval's check: a cache without the set, or with the set made differently, is refused
    sets = {name: SimpleNamespace(fingerprint=s.fingerprint) for name, s in dev.sets.items()}
    assert require_run_sets(payload, sets, "cache/x", tmp_path / "run") == {"audio": [SPEECH]}
    with pytest.raises(CacheError) as caught:
        require_run_sets(payload, {k: v for k, v in sets.items() if k != SPEECH}, "cache/x", tmp_path / "run")
    message = str(caught.value)
    assert message.startswith(f"Cache cache/x has no feature set {SPEECH}, which run {tmp_path / 'run'} was trained on")
    hint = "`emo extract --split all --modalities audio --audio-model openai/whisper-base --cache cache/x`"
    assert f"extract it into this cache with {hint}" in message
    assert one_sentence(message)
    sets[SPEECH] = SimpleNamespace(fingerprint={"encoder": "openai/whisper-base", "layer": 3})
    with pytest.raises(CacheError, match=r"different encoders or preprocessing.*layer \(3 vs -1\)"):
        require_run_sets(payload, sets, "cache/x", tmp_path / "run")
    old_run = {"fingerprint": {"text_encoder": "bert-base-uncased"}}  # trained before feature sets
    assert require_run_sets(old_run, {}, "cache/x", "runs/old") is None
    with pytest.raises(CacheError, match="from before feature sets"):
        require_run_sets(old_run, sets, "cache/x", "runs/old")


def test_checkpoints_from_before_speech_vectors_load_unchanged():
    from emo.fuse.model import FusionModel, ModelConfig

    old = {k: v for k, v in ModelConfig().to_dict().items() if k not in ("audio_mel", "audio_dim")}
    config = ModelConfig.from_dict(old)
    assert (config.audio_mel, config.audio_dim) == (True, 0)
    keys = set(FusionModel(config).state_dict())
    assert not any(k.startswith("encoders.audio_vector") for k in keys) and "encoders.audio.proj.weight" in keys
    with pytest.raises(ValueError):
        ModelConfig(modalities=("audio",), audio_mel=False, audio_dim=0)


def test_fit_on_mel_plus_speech_and_default_sets(speech_splits):
    from emo.fuse.train import fit_splits

    train = with_speech(
        to_feature_sets(make_synthetic_split(120, "train", seed=1, modalities=("text", "audio"), **SMALL))
    )
    dev = with_speech(to_feature_sets(make_synthetic_split(40, "dev", seed=2, modalities=("text", "audio"), **SMALL)))
    quick = dict(epochs=1, device="cpu", proj_dim=16, max_mel_frames=48)
    both = fit_splits(FitConfig(modalities=("text", "audio"), features="audio=mel+whisper-base", **quick), train, dev)
    assert both.config.features == "text=text/synthetic-text,audio=audio/mel+audio/whisper-base"
    assert both.model.encoders.audio is not None and both.model.encoders.audio_vector is not None
    plain = fit_splits(
        FitConfig(modalities=("text", "audio"), **quick), train, dev
    )  # the default sets: the seed design
    assert plain.config.features == "text=text/synthetic-text,audio=audio/mel"
    assert plain.model.encoders.audio_vector is None and plain.model.config.audio_dim == 0


# --- on disk: fit, eval, ablate ---------------------------------------------------------------


def add_speech_set(root: Path, splits, shard_rows: int) -> None:
    """Write `audio/whisper-base` into a cache beside its seed sets, as `emo extract` would."""
    from emo.cache import CacheWriter
    from emo.cache.sets import SetSpec

    writer = CacheWriter(root)
    writer.add_set(
        SetSpec(SPEECH, "vector", 12, "openai/whisper-base", {"encoder": "openai/whisper-base", "layer": -1})
    )
    for features in splits:
        values, present = speech_values(features)
        n, shards = len(features), 0
        for shards, start in enumerate(range(0, n, shard_rows), start=1):
            part = slice(start, min(start + shard_rows, n))
            arrays = {"values": values[part], "present": present[part], "truncated": np.zeros(part.stop - start, bool)}
            writer.write_set(features.split, SPEECH, shards - 1, arrays)
        writer.finalize(features.split, total_rows=n, expected_shards=shards)


@pytest.fixture(scope="module")
def speech_cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sets") / "cache"
    splits = [
        make_synthetic_split(n, s, seed=i, modalities=("text", "audio"), **SMALL)
        for i, (n, s) in enumerate(((300, "train"), (100, "dev"), (100, "test")))
    ]
    write_synthetic_cache(root, splits, shard_rows=128)
    add_speech_set(root, splits, shard_rows=128)
    return root


def test_fit_and_eval_from_a_cache_with_a_speech_set(speech_cache, tmp_path):
    from emo.cache import open_cache
    from emo.fuse.evaluate import run_eval
    from emo.fuse.train import run_fit

    assert SPEECH in open_cache(speech_cache).sets
    config = FitConfig(
        cache=speech_cache,
        out=tmp_path / "run",
        modalities=("text", "audio"),
        features="audio=whisper-base",
        epochs=2,
        device="cpu",
        proj_dim=16,
    )
    result = run_fit(config)
    assert result.config.features == "text=text/synthetic,audio=audio/whisper-base"
    report = run_eval(tmp_path / "run", split="test", write=False)
    assert report["features"] == result.config.features and report["rows"] == 100
    with pytest.raises(UnknownFeatureSetError, match="its audio sets: mel, whisper-base"):
        run_fit(config.copy_with(features="audio=wav2vec2", out=tmp_path / "other"))
    assert not (tmp_path / "other").exists()
    bare = tmp_path / "bare"  # the same seed sets, no speech set: eval names what to extract
    write_synthetic_cache(bare, [make_synthetic_split(100, "test", seed=2, modalities=("text", "audio"), **SMALL)])
    with pytest.raises(CacheError, match=f"has no feature set {SPEECH}, which run"):
        run_eval(tmp_path / "run", split="test", cache=bare, write=False)


def test_ablate_grid_over_feature_sets_parses_and_names_cells():
    axes = parse_axes(("features.audio=mel,whisper-base", "features.text=a,b+c"))
    assert axes == [("features.audio", ["mel", "whisper-base"]), ("features.text", ["a", "b+c"])]
    for bad in ("features=audio=mel", "features.smell=a", "features.audio=a/b"):
        with pytest.raises(ConfigError):
            parse_axes((bad,))
    ablate = AblateConfig(
        modalities=("text", "audio", "text+audio"), grid=("features.audio=mel,whisper-base",), seeds=1
    )
    cells, jobs = plan_grid(ablate, FitConfig(features="text=a"))
    assert [c.label for c in cells] == [
        "text / ensemble",
        "audio / ensemble, audio=mel",
        "audio / ensemble, audio=whisper-base",
        "text+audio / ensemble, audio=mel",
        "text+audio / ensemble, audio=whisper-base",
    ]  # the text-only cell does not vary with the audio axis
    assert cells[2].key == "audio__ensemble__audio=whisper-base"
    mel, speech = "text=text/a,audio=audio/mel", "text=text/a,audio=audio/whisper-base"
    assert [j.config.features for j in jobs] == ["text=a", mel, speech, mel, speech]
    base = FitConfig(features="text=text/a,audio=audio/mel")
    trimodal = plan_grid(
        AblateConfig(modalities=("text+audio+visual",), grid=("features.audio=mel,whisper-base",), seeds=1), base
    )[0]
    assert [is_seed_design(c, base) for c in trimodal] == [True, False]


def test_ablate_loads_every_set_once_and_composes_per_cell(speech_cache, tmp_path, monkeypatch):
    import emo.cache as cache_api
    from emo.fuse.ablate import run_ablate
    from emo.fuse.ablate_grid import resolve_configs

    calls = []
    real = cache_api.load_split

    def spy(root, split, *args, **kwargs):
        calls.append((split, tuple(kwargs.get("sets") or ())))
        return real(root, split, *args, **kwargs)

    monkeypatch.setattr(cache_api, "load_split", spy)
    values = dict(
        cache=speech_cache,
        out=tmp_path / "grid",
        modalities="audio",
        seeds=1,
        epochs=1,
        device="cpu",
        grid=["features.audio=mel,whisper-base"],
        test_split="",
        proj_dim=16,
    )
    result = run_ablate(*resolve_configs(None, values))
    assert result.trained == 2
    assert sorted(calls) == [("dev", ("audio/mel", SPEECH)), ("train", ("audio/mel", SPEECH))]  # once per split
    assert [(r["label"], r["features.audio"]) for r in result.rows] == [
        ("audio / ensemble, audio=mel", "mel"),
        ("audio / ensemble, audio=whisper-base", "whisper-base"),
    ]
    assert "features.audio" in result.paths["markdown"].read_text()
    cell = tmp_path / "grid" / "cells" / "audio__ensemble__audio=whisper-base" / "seed-0"
    assert 'features = "audio=audio/whisper-base"' in (cell / "config.toml").read_text()
    summary, record = (json.loads((cell / name).read_text()) for name in ("summary.json", "result.json"))
    assert summary["fingerprint_digest"] == record["fingerprint_digest"]  # the checkpoint's digest is the cell's
    again = run_ablate(*resolve_configs(None, values))  # each cell's digest covers its own sets: all reused
    assert (again.trained, again.skipped) == (0, 2)
