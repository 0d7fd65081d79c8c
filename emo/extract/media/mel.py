"""Log-mel spectrograms and their augmented copies, computed once at extract time.

The audio head trains from these frames, so the spectrogram is fixed here and the
augmentations that need the waveform (time-stretch, pitch shift, additive noise) are
made here too: `audio_views` extra copies per clip that the trainer can sample from,
since waveforms are not kept in the cache. Each copy's random draw depends only on the
run seed, the clip key and the view number, so re-running, resuming or splitting a run
across machines gives bit-identical views.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass

import numpy as np

# Augmentation ranges (the seed's design), part of the fingerprint via `MelParams.describe`.
STRETCH_RANGE = (0.9, 1.1)  # time-stretch rate, +-10%
PITCH_RANGE = (-2.0, 2.0)  # semitones
NOISE_SNR_DB = 15.0  # white noise at this signal-to-noise ratio
LOG_FLOOR = 1e-10  # power floor before 10*log10


@dataclass(frozen=True)
class MelParams:
    sample_rate: int = 16000
    n_mels: int = 40
    n_fft: int = 1024
    hop_length: int = 160
    win_length: int = 400
    fmin: float = 0.0
    fmax: float = 8000.0

    def describe(self) -> dict:
        """Everything that changes the numbers, for the cache fingerprint."""
        return {
            **asdict(self),
            "window": "hann",
            "center": True,
            "power": 2.0,
            "log": f"10*log10(max(power, {LOG_FLOOR}))",
            "augment": {
                "stretch": list(STRETCH_RANGE),
                "pitch_semitones": list(PITCH_RANGE),
                "noise_snr_db": NOISE_SNR_DB,
            },
        }


def log_mel(audio: np.ndarray, params: MelParams) -> np.ndarray:
    """float32[T, n_mels] log-mel frames (time first, as the cache stores them).

    Empty audio gives zero frames instead of one frame of padding, so a silent-length
    clip is never mistaken for a real one.
    """
    import librosa

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"log_mel expects mono audio, got shape {audio.shape}")
    if audio.size == 0:
        return np.zeros((0, params.n_mels), dtype=np.float32)
    power = librosa.feature.melspectrogram(
        y=audio,
        sr=params.sample_rate,
        n_fft=params.n_fft,
        hop_length=params.hop_length,
        win_length=params.win_length,
        window="hann",
        center=True,
        pad_mode="constant",
        power=2.0,
        n_mels=params.n_mels,
        fmin=params.fmin,
        fmax=params.fmax,
    )
    log_power = 10.0 * np.log10(np.maximum(power, LOG_FLOOR))
    return np.ascontiguousarray(log_power.T, dtype=np.float32)


def view_seed(seed: int, clip_key: str, view: int) -> np.random.Generator:
    """The random stream of one augmented view: a pure function of (seed, clip, view)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(clip_key.encode("utf-8")), int(view)])


def augment_waveform(audio: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One augmented copy: random time-stretch, random pitch shift, then noise at 15 dB SNR."""
    import librosa

    audio = np.asarray(audio, dtype=np.float32)
    rate = float(rng.uniform(*STRETCH_RANGE))
    steps = float(rng.uniform(*PITCH_RANGE))
    out = audio
    if audio.size >= 2048:  # the phase vocoder needs a few STFT frames to work on
        out = librosa.effects.time_stretch(out, rate=rate)
        out = librosa.effects.pitch_shift(out, sr=sample_rate, n_steps=steps)
    signal_power = float(np.mean(out.astype(np.float64) ** 2)) if out.size else 0.0
    noise = rng.standard_normal(size=out.shape[0])
    if signal_power > 0.0:
        noise_power = signal_power / (10.0 ** (NOISE_SNR_DB / 10.0))
        out = out + (np.sqrt(noise_power) * noise).astype(np.float32)
    return out.astype(np.float32, copy=False)


def mel_views(audio: np.ndarray, params: MelParams, audio_views: int, seed: int, clip_key: str) -> list[np.ndarray]:
    """View 0 is the clean log-mel; views 1..audio_views are augmented copies."""
    views = [log_mel(audio, params)]
    for view in range(1, audio_views + 1):
        augmented = augment_waveform(audio, params.sample_rate, view_seed(seed, clip_key, view))
        views.append(log_mel(augmented, params))
    return views
