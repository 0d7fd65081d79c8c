"""What makes a run's cached numbers what they are: the fingerprint `emo extract` writes.

A cache holds features from one recipe only. Everything that changes a cached number
goes in here - the encoders (by weight hash, from `emo.extract.encoders`), every
preprocessing parameter, the emo version and this module's own version - and nothing that
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


def build_fingerprint(config: ExtractConfig, encoders) -> dict[str, Any]:
    """The fingerprint of `config` run with `encoders` (an `emo.extract.encoders.Encoders`;
    an empty one gives every key but the encoders' own)."""
    from emo import __version__
    from emo.cache import SCHEMA_VERSION

    fingerprint: dict[str, Any] = {
        "extract_version": FINGERPRINT_VERSION,
        "emo_version": __version__,
        "cache_schema": SCHEMA_VERSION,
        "modalities": list(config.ordered_modalities),
        "max_duration": float(config.max_duration),
    }
    fingerprint.update(encoders.fingerprint())
    if "visual" in config.modalities:
        fingerprint["frames"] = {
            "count": int(config.frames),
            "sampling": "centres of equal time slices",
            "resize": config.frame_resize,
        }
    if "audio" in config.modalities:
        fingerprint["audio"] = {**mel_params(config).describe(), "views": 1 + int(config.audio_views), "seed": config.seed}
    return fingerprint
