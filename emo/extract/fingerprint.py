"""What makes a run's cached numbers what they are: the fingerprint `emo extract` writes.

A cache holds features from one recipe only. Everything that changes a cached number
goes in a set's fingerprint - the encoder (by weight hash, from `emo.extract.encoders`),
every preprocessing parameter and this module's own version - and nothing that
does not: paths, workers, batch size, sharding and other run-time knobs are left out, so
processes on different machines with the same recipe can fill one cache. Kept apart from
the run itself because `emo.extract.identity` rebuilds the same fingerprint, without any
model, to recognise a finished cache.
"""

from __future__ import annotations

from typing import Any

from emo.extract.config import ExtractConfig
from emo.extract.mel import MelParams

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


def build_fingerprint(config: ExtractConfig, encoders: Any = None) -> dict[str, Any]:
    """The preprocessing keys of `config` that the seed's sets take their fingerprints from
    (`emo.cache.legacy.SEED_KEYS`): the extraction version, max duration, frame sampling
    and log-mel settings. Encoders add their own identities (`emo.extract.encoders`)."""
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
        fingerprint["audio"] = {**mel_params(config).describe(), "views": 1 + int(config.audio_views), "seed": config.seed}
    return fingerprint
