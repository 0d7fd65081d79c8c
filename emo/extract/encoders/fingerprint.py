"""What makes a run's cached numbers what they are: the preprocessing part of a fingerprint.

A cache holds features from one recipe only. Everything that changes a cached number
goes in a set's fingerprint - the encoder's identity (by weight hash, from its registry
entry's `identity`), every preprocessing parameter and this module's own version - and
nothing that does not: paths, workers, batch size, sharding and other run-time knobs are
left out, so processes on different machines with the same recipe can fill one cache.
Each encoder takes the keys it depends on from `build_fingerprint` (`Encoder.fingerprint`).
"""

from __future__ import annotations

from typing import Any

from emo.extract.config import ExtractConfig
from emo.extract.media.mel import MelParams

FINGERPRINT_VERSION = 1  # bump when extraction changes the numbers in a way no parameter names


def mel_params(config: ExtractConfig) -> MelParams:
    """The log-mel settings of a config, as the workers receive them."""
    return MelParams(
        sample_rate=config.sample_rate,
        n_mels=config.n_mels,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        win_length=config.win_length,
        fmin=config.fmin,
        fmax=config.fmax,
    )


def build_fingerprint(config: ExtractConfig) -> dict[str, Any]:
    """The preprocessing keys of `config` the encoders take their fingerprints from: the
    extraction version, max duration, frame sampling and log-mel settings (the keys a
    version-1 cache recorded once for the whole cache; `emo.cache.legacy`)."""
    fingerprint: dict[str, Any] = {
        "extract_version": FINGERPRINT_VERSION,
        "max_duration": float(config.max_duration),
    }
    if "visual" in config.modalities:
        fingerprint["frames"] = {
            "count": int(config.frames),
            "sampling": "centres of equal time slices",
            "resize": config.frame_resize,
        }
    if "audio" in config.modalities:
        fingerprint["audio"] = {
            **mel_params(config).describe(),
            "views": 1 + int(config.audio_views),
            "seed": config.seed,
        }
    return fingerprint
