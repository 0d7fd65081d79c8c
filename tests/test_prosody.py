"""The eGeMAPS prosody encoder on real speech, on waveforms too short for openSMILE, and
without opensmile installed."""

from __future__ import annotations

import json
import sys
import warnings
from importlib import util
from pathlib import Path

import numpy as np
import pytest

from emo.errors import UsageError
from emo.extract.encoders.prosody import DIM, MIN_SECONDS, ProsodyEncoder, load_prosody_encoder

RATE = 16000


def clip_audio(path: Path, rate: int = RATE) -> np.ndarray:
    """A clip's audio as float32 mono at `rate`, downmixed and resampled by FFmpeg (PyAV)."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    pieces = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            pieces += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
    pieces += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(pieces).astype(np.float32)


@pytest.fixture(scope="module")
def encoder() -> ProsodyEncoder:
    if util.find_spec("opensmile") is None:
        pytest.skip("opensmile is not installed (the emo[prosody] extra)")
    return load_prosody_encoder()


@pytest.fixture(scope="module")
def speech(request: pytest.FixtureRequest) -> list[np.ndarray]:
    """Two real utterances at 16 kHz: espeak-ng's voices when it is installed, else the
    MELD clip's speech cut in two halves."""
    from emo.data.espeak import espeak_available, speak

    if espeak_available():
        out = []
        for voice, text in (("en-us", "I can't believe you did that"), ("en-gb", "Oh no, this is terrible")):
            samples, rate = speak(text, voice)
            # Linear interpolation to 16 kHz is plenty for pitch and loudness statistics.
            times = np.arange(int(len(samples) * RATE / rate)) / RATE
            out.append(np.interp(times, np.arange(len(samples)) / rate, samples).astype(np.float32))
        return out
    audio = clip_audio(request.getfixturevalue("real_clip"))
    half = len(audio) // 2
    return [audio[:half], audio[half:]]


def test_real_speech_gives_88_finite_features(encoder: ProsodyEncoder, speech: list[np.ndarray]):
    features = encoder.encode(speech, sample_rate=RATE)
    assert features.shape == (2, DIM) == (2, encoder.dim) and features.dtype == np.float32
    assert np.isfinite(features).all()
    assert not np.allclose(features[0], features[1])  # two utterances, two descriptions
    names = encoder.feature_names
    pitch = features[:, names.index("F0semitoneFrom27.5Hz_sma3nz_amean")]
    assert np.all((pitch > 5) & (pitch < 60))  # a human voice: roughly 37-800 Hz


def test_short_and_empty_waveforms_are_padded_not_nan(encoder: ProsodyEncoder, speech: list[np.ndarray]):
    voice = speech[0]
    short = [np.zeros(0, np.float32), voice[:10], voice[: int(0.05 * RATE)], voice[: int(MIN_SECONDS * RATE)]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # openSMILE's "Segment too short" must not happen
        features = encoder.encode(short, sample_rate=RATE)
    assert features.shape == (4, DIM) and np.isfinite(features).all()
    assert encoder.encode([], sample_rate=RATE).shape == (0, DIM)


def test_full_scale_samples_do_not_wrap(encoder: ProsodyEncoder, speech: list[np.ndarray]):
    loud = speech[0] / np.abs(speech[0]).max()  # peaks at exactly +-1.0
    features = encoder.encode([loud, loud * 0.999], sample_rate=RATE)
    loudness = encoder.feature_names.index("loudness_sma3_amean")
    assert np.isfinite(features).all()
    assert abs(features[0, loudness] - features[1, loudness]) < 0.05 * abs(features[1, loudness])


def test_stereo_is_refused(encoder: ProsodyEncoder):
    with pytest.raises(ValueError, match="mono"):
        encoder.encode([np.zeros((2, RATE), np.float32)])


def test_identity_is_json(encoder: ProsodyEncoder):
    identity = json.loads(json.dumps(encoder.identity))
    assert identity["name"] == "egemaps" and identity["feature_set"] == "eGeMAPSv02"
    assert len(identity["features"]) == DIM and identity["opensmile"]


def test_missing_opensmile_names_the_extra_and_licence(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "opensmile", None)  # how Python blocks an import
    with pytest.raises(UsageError, match=r"pip install 'emo\[prosody\]'") as caught:
        load_prosody_encoder()
    assert "non-commercial" in str(caught.value)
