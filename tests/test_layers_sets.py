"""The `layers` feature-set kind (issue #20): every chosen hidden state of a frozen model
kept apart in the cache, [N, L, D], through real extraction.

`emo extract --text-layers all` on the pip-shipped MiniLM (HDF5 and Zarr) and `--audio-layers
all` on a tiny random wav2vec2 saved with save_pretrained, read back by `load_split`, shown
by `emo cache info`, checked by `emo cache verify` (and damage found), resumed after an
interrupted shard, and rebuilt in memory by `features_from_clips` (what `emo predict` scores)
with the very same arrays. `last`, the default, keeps today's plain vector set byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emo.cache.sets import SetSpec
from reliability_fixtures import assert_clean_error, emo

MINILM_LAYERS = "text/all-MiniLM-L6-v2-layers-all"
MINILM_PLAIN = "text/all-MiniLM-L6-v2"
# set_digest of the plain MiniLM set as the code before the layers kind computed it
# (git show HEAD~ of this change, planned_specs on ExtractConfig(modalities=text, preset=offline)).
MINILM_PLAIN_DIGEST = "2cdb6e4f778f94cc"


def _offline(name: str) -> bool:
    from emo.extract.encoders.registry import lookup

    return bool(lookup("text", name).available()[0])


needs_minilm = pytest.mark.skipif(not _offline("all-MiniLM-L6-v2"), reason="pip install 'emo[offline]' (MiniLM)")


def _planned(**values):
    from emo.extract.config import ExtractConfig
    from emo.extract.encoders.registry import planned_specs

    return planned_specs(ExtractConfig(modalities=("text",), device="cpu", **values), "cpu")[0]


# --- the cache: the kind itself ----------------------------------------------------------------


def test_a_layers_spec_names_its_layers_and_other_kinds_keep_their_set_json():
    from emo.cache.digests import set_digest
    from emo.cache.schema import normalize_set
    from emo.cache.sets import spec_from_meta

    plain = SetSpec("text/m", "vector", 4, "m", {"a": 1}, ("cls", "mean"))
    assert "layers" not in plain.describe() and spec_from_meta(plain.describe()) == plain  # old set.json: as before
    spec = SetSpec("text/m-layers-all", "layers", 4, "m", {"a": 1}, ("cls", "mean"), layers=(0, 1, 2))
    assert spec.describe()["layers"] == [0, 1, 2] and spec_from_meta(spec.describe()) == spec
    assert set_digest(spec) != set_digest(SetSpec(**{**spec.__dict__, "layers": (1, 2)}))  # layers are identity
    for bad in (dict(kind="layers", layers=()), dict(kind="vector", layers=(1,))):
        with pytest.raises(ValueError, match="layers"):
            SetSpec("text/m", dim=4, encoder="m", fingerprint={}, **bad)
    good = {"present": np.ones(2, bool), "truncated": np.zeros(2, bool)}
    arrays = {"cls": np.zeros((2, 3, 4), np.float32), "mean": np.zeros((2, 3, 4), np.float32)}
    assert normalize_set(spec, {**good, **arrays})["mean"].dtype == np.float16
    with pytest.raises(ValueError, match="shape"):
        normalize_set(spec, {**good, **arrays, "mean": np.zeros((2, 2, 4))})  # L must be the spec's


# --- extract: names, fingerprints, refusals ------------------------------------------------------


@needs_minilm
def test_text_layers_last_keeps_todays_set_name_and_fingerprint():
    """`--text-layers last` (the default) must not move an existing cache's text set."""
    from emo.cache.digests import set_digest

    for values in ({}, {"text_layers": "last"}, {"text_layers": " LAST "}):
        spec = _planned(preset="offline", **values)
        assert (spec.name, spec.kind, spec.layers) == (MINILM_PLAIN, "vector", ())
        assert "layers" not in spec.fingerprint["text_encoder"] and "layers" not in spec.describe()
        assert set_digest(spec) == MINILM_PLAIN_DIGEST


@needs_minilm
def test_text_layers_choose_the_set_name_kind_and_fingerprint():
    every = _planned(preset="offline", text_layers="all")
    some = _planned(preset="offline", text_layers="2,3,4")
    assert (every.name, every.kind, every.dim, every.layers) == (MINILM_LAYERS, "layers", 384, tuple(range(7)))
    assert (some.name, some.layers) == ("text/all-MiniLM-L6-v2-layers-2-3-4", (2, 3, 4))
    assert every.fingerprint["text_encoder"]["layers"] == list(range(7)) and every.arrays == ("cls", "mean")
    assert every.fingerprint["text_pooling"] == "mean"  # --text-feature auto still reads it
    if _offline("all-mpnet-base-v2"):
        mpnet = _planned(text_model="all-mpnet-base-v2", text_layers="all", context=2)
        assert (mpnet.name, mpnet.dim, mpnet.layers) == ("text/all-mpnet-base-v2-layers-all", 768, tuple(range(13)))


def test_text_layers_are_refused_before_any_work_by_an_encoder_that_has_none(tmp_path, capsys, monkeypatch):
    """Whether an encoder gives layers is its own fact (`takes_layers`), read by the registry."""
    from emo.cli import app, run
    from emo.extract.encoders import registry
    from emo.extract.encoders.base import Encoder, Needs

    class Words(Encoder):
        name, modality, needs = "toy-words", "text", Needs.TEXT

    registry.encoders()  # the built-ins first, so the toy entry is not overwritten by a later import
    monkeypatch.setitem(registry._ENTRIES, ("text", "toy-words"), Words())
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train_sent_emo.csv").write_text("Sr No.\n", encoding="utf-8")
    cache = tmp_path / "cache"
    base = ["extract", "--data-root", str(tmp_path / "data"), "--cache", str(cache), "--modalities", "text"]
    assert run(app, [*base, "--text-model", "toy-words", "--text-layers", "all"]) == 2
    assert "--text-layers all" in capsys.readouterr().err and not cache.exists()
    assert run(app, [*base, "--preset", "offline", "--text-layers", "mid"]) == 2
    assert "Text layers 'mid'" in capsys.readouterr().err and not cache.exists()


@needs_minilm
def test_a_layer_the_model_lacks_is_one_sentence_and_writes_nothing(tmp_path, synth_root):
    cache = tmp_path / "cache"
    args = ("extract", "--split", "dev", "--data-root", synth_root, "--cache", cache, "--modalities", "text")
    result = emo(*args, "--preset", "offline", "--text-layers", "3,9")
    assert "hidden states 0 to 6" in assert_clean_error(result, 2) and not cache.exists()


# --- real extraction -----------------------------------------------------------------------------


def _shards(cache: Path, name: str, split: str = "train") -> list[Path]:
    return sorted(
        p for p in (cache / "sets" / name / split).iterdir() if p.name.startswith("shard-") and p.suffix != ".json"
    )


@needs_minilm
@pytest.mark.parametrize("fmt", ["h5", "zarr"])
def test_text_layers_all_through_real_extraction(tmp_path, synth_root, fmt):
    import emo as api

    cache = tmp_path / "cache"
    args = ("extract", "--split", "train", "--data-root", synth_root, "--cache", cache, "--modalities", "text")
    args += ("--preset", "offline", "--format", fmt, "--shard-size", "8", "--workers", "0")
    first = emo(*args, "--text-layers", "all")
    assert first.returncode == 0, first.describe()
    plain = emo(*args)  # the last layer's plain set beside it, in the same cache
    assert plain.returncode == 0, plain.describe()

    split = api.load_split(cache, "train", sets=[MINILM_LAYERS, MINILM_PLAIN])
    layers, last = split.sets[MINILM_LAYERS], split.sets[MINILM_PLAIN]
    n = len(split.emotion)
    assert (layers.kind, layers.layers, layers.dim, last.kind, last.layers) == (
        "layers",
        tuple(range(7)),
        384,
        "vector",
        (),
    )
    assert {k: (v.shape, v.dtype) for k, v in layers.arrays.items()} == {
        "cls": ((n, 7, 384), np.float16),
        "mean": ((n, 7, 384), np.float16),
    }
    assert layers.present.all() and layers.fingerprint["text_encoder"]["layers"] == list(range(7))
    for pooling in ("cls", "mean"):  # the last stored layer is the plain set, number for number
        np.testing.assert_allclose(layers.arrays[pooling][:, 6], last.arrays[pooling], atol=2e-3)
        assert not np.allclose(layers.arrays[pooling][:, 0], layers.arrays[pooling][:, 6], atol=1e-2)

    info = emo("cache", "info", cache)
    assert info.returncode == 0 and MINILM_LAYERS in info.stdout and "7 x 384" in info.stdout, info.describe()
    manifest = json.loads(emo("cache", "info", cache, "--json").stdout)
    assert manifest["sets"][MINILM_LAYERS]["kind"] == "layers" and manifest["sets"][MINILM_LAYERS]["layers"] == list(
        range(7)
    )
    assert emo("cache", "verify", cache).returncode == 0

    # An interrupted run: the last shard of the layers set never got its sidecar. Running the
    # same command again writes that shard alone, with the same numbers, and leaves the plain set be.
    shards = _shards(cache, MINILM_LAYERS)
    assert len(shards) == 3
    plain_times = [p.stat().st_mtime_ns for p in _shards(cache, MINILM_PLAIN)]
    shards[-1].with_name(shards[-1].name.rsplit(".", 1)[0] + ".json").unlink()
    again = emo(*args, "--text-layers", "all")
    assert again.returncode == 0, again.describe()
    assert [p.stat().st_mtime_ns for p in _shards(cache, MINILM_PLAIN)] == plain_times
    resumed = api.load_split(cache, "train", sets=[MINILM_LAYERS]).sets[MINILM_LAYERS]
    for pooling in ("cls", "mean"):
        np.testing.assert_array_equal(resumed.arrays[pooling], layers.arrays[pooling])

    # Damage to a layers shard is found by verify, named by its file.
    target = shards[0] if fmt == "h5" else next(p for p in shards[0].rglob("*") if p.is_file() and "mean" in p.parts)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    damaged = emo("cache", "verify", cache)
    assert damaged.returncode == 1 and shards[0].name in damaged.stdout + damaged.stderr, damaged.describe()


@needs_minilm
def test_predicts_in_memory_features_are_the_caches_for_a_layers_set(tmp_path, synth_root):
    """`features_from_clips` (emo predict's path) gives the arrays the cache holds, for the same rows."""
    import emo as api
    from emo.cache.clips import ClipRecord, features_from_clips
    from emo.extract.config import ExtractConfig
    from emo.extract.encoders.registry import load_set_encoders

    cache = tmp_path / "cache"
    args = ("extract", "--split", "dev", "--data-root", synth_root, "--cache", cache, "--modalities", "text")
    done = emo(*args, "--preset", "offline", "--text-layers", "all", "--workers", "0")
    assert done.returncode == 0, done.describe()
    stored = api.load_split(cache, "dev")
    config = ExtractConfig(modalities=("text",), preset="offline", text_layers="all", device="cpu")
    (encoder,) = load_set_encoders(config, "cpu")
    assert (
        encoder.spec.name == MINILM_LAYERS
        and encoder.spec.describe() == api.open_cache(cache).sets[MINILM_LAYERS].spec.describe()
    )
    cls, mean = encoder.model.encode(list(stored.text))
    records = [
        ClipRecord(int(d), int(u), int(e), int(s), features={MINILM_LAYERS: {"cls": c, "mean": m}})
        for d, u, e, s, c, m in zip(
            stored.dialogue_id, stored.utterance_id, stored.emotion, stored.sentiment, cls, mean
        )
    ]
    fresh = features_from_clips(records, [encoder.spec], {}).sets[MINILM_LAYERS]
    cached = stored.sets[MINILM_LAYERS]
    assert (fresh.kind, fresh.layers, fresh.digest) == (cached.kind, cached.layers, cached.digest)
    # The same encoder code on the same words: float32 sums may differ in their last bits with the
    # batch and thread count (extract batches, predict may not), which float16 storage can turn
    # into one step of its own rounding (about 1e-4 here); a different layer or pooling is off by far more.
    for pooling in ("cls", "mean"):
        np.testing.assert_allclose(
            fresh.arrays[pooling].astype(np.float32), cached.arrays[pooling].astype(np.float32), rtol=1e-2, atol=5e-4
        )


def test_audio_layers_all_writes_a_layers_set_not_a_concatenation(tmp_path, synth_root):
    import emo as api
    from test_speech_encoders import _save_tiny

    model = _save_tiny(tmp_path / "tiny-w2v", "wav2vec2", masked=True)
    cache = tmp_path / "cache"
    args = ("extract", "--split", "dev", "--data-root", synth_root, "--cache", cache, "--modalities", "audio")
    args += ("--audio-model", model, "--workers", "0")
    for extra in (("--audio-layers", "all"), ()):
        done = emo(*args, *extra)
        assert done.returncode == 0, done.describe()
    split = api.load_split(cache, "dev", sets=["audio/tiny-w2v-layers-all", "audio/tiny-w2v"])
    layers, last = split.sets["audio/tiny-w2v-layers-all"], split.sets["audio/tiny-w2v"]
    n = len(split.emotion)
    assert (layers.kind, layers.layers, layers.dim, layers.arrays["values"].shape) == (
        "layers",
        (0, 1, 2),
        32,
        (n, 3, 32),
    )
    assert (last.kind, last.dim, last.arrays["values"].shape) == ("vector", 32, (n, 32))
    assert layers.present.any() and (layers.present == last.present).all()  # broken clips lack both
    np.testing.assert_allclose(layers.arrays["values"][:, 2], last.arrays["values"], atol=2e-3)
    assert not layers.arrays["values"][~layers.present].any()
    assert "3 x 32" in emo("cache", "info", cache).stdout


def test_emo_encoders_says_which_encoders_can_write_a_layers_set():
    from emo.extract.encoders.registry import catalogue

    options = {(r.modality, r.name): r.layers_option for r in catalogue()}
    assert options[("text", "all-MiniLM-L6-v2")] == options[("text", "all-mpnet-base-v2")] == "--text-layers"
    assert options[("audio", "whisper-base")] == "" and options[("visual", "efficientnet-lite0")] == ""
    assert "transformers-speech" in {n for (m, n), o in options.items() if o == "--audio-layers"}
