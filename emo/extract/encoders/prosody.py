"""Prosody features: openSMILE's eGeMAPS v02 functionals, 88 numbers per utterance.

Why: how something is said (pitch level and range, loudness, voice quality, speaking
rate) carries emotion that neither the words nor a face show, and eGeMAPS is the
standard, small, hand-designed set for it (Eyben et al. 2016) - cheap to compute on a CPU
and easy to interpret, beside learned audio embeddings.

openSMILE is under audEERING's research licence (see `LICENCE_NOTE`), not an open-source
one, so it lives in its own extra (`pip install 'emo[prosody]'`) and is never needed by
the rest of emo.

Edge cases, measured with opensmile 2.6.0:
- openSMILE returns no frame at all - a row of NaN and a warning - for signals shorter
  than its longest analysis window, 60 ms at any sample rate. Waveforms shorter than
  `MIN_SECONDS` (0.1 s) are padded with trailing silence to that length, so every
  utterance gets finite features (an empty waveform gets the features of 0.1 s of
  silence); the pipeline masks clips it could not decode, not this encoder.
- openSMILE scales float samples by 32768 and casts to int16, so a sample of exactly 1.0
  would wrap to -32768: samples are clipped to [-1, 32767/32768] first, and NaN or
  infinite samples become 0.
"""

from __future__ import annotations

import warnings
from importlib import util
from typing import Any, Sequence

import numpy as np

from emo.errors import UsageError
from emo.extract.encoders.base import Encoder, Needs
from emo.extract.encoders.registry import register

MIN_SECONDS = 0.1
DIM = 88
LICENCE_NOTE = (
    "openSMILE is licensed by audEERING GmbH under its research licence: free for non-commercial use (research, "
    "teaching, personal use) and commercial research not tied to product development; any use in or for a "
    "product, including features extracted with it, needs a commercial licence from audEERING"
)


class ProsodyEncoder:
    """Waveforms -> float32[N, 88] eGeMAPS v02 functionals (one row per utterance)."""

    name = "egemaps"
    dim = DIM

    def __init__(self) -> None:
        self._smile = _smile()
        self.feature_names: list[str] = list(self._smile.feature_names)
        if len(self.feature_names) != DIM:
            raise RuntimeError(f"eGeMAPSv02 functionals have {len(self.feature_names)} features, expected {DIM}")
        self.identity: dict[str, Any] = prosody_identity(self._smile)

    def encode(self, waveforms: Sequence[np.ndarray], sample_rate: int = 16000) -> np.ndarray:
        """Mono float waveforms in [-1, 1] (one per utterance) -> float32[N, 88]."""
        out = np.zeros((len(waveforms), DIM), dtype=np.float32)
        minimum = int(np.ceil(MIN_SECONDS * sample_rate))
        for i, waveform in enumerate(waveforms):
            signal = np.asarray(waveform, dtype=np.float32)
            if signal.ndim != 1:
                raise ValueError(f"prosody waveforms must be mono 1-D arrays, got shape {signal.shape}")
            signal = np.clip(np.nan_to_num(signal, nan=0.0, posinf=0.0, neginf=0.0), -1.0, 32767 / 32768)
            if signal.size < minimum:
                signal = np.pad(signal, (0, minimum - signal.size))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # library code stays quiet; NaN is checked below
                row = self._smile.process_signal(signal, sample_rate).to_numpy(dtype=np.float64)
            if row.shape != (1, DIM) or not np.isfinite(row).all():
                raise RuntimeError(f"openSMILE gave {row.shape} features or NaN for a {signal.size}-sample waveform")
            out[i] = row[0]
        return out


def _smile() -> Any:
    import opensmile

    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
    )


def prosody_identity(smile: Any = None) -> dict[str, Any] | None:
    """What changes the features: openSMILE's version, the feature set and its feature names
    (read from an openSMILE configured as `ProsodyEncoder` runs it); None without opensmile."""
    if smile is None and util.find_spec("opensmile") is None:
        return None
    import opensmile

    return {
        "name": ProsodyEncoder.name,
        "opensmile": getattr(opensmile, "__version__", "unknown"),
        "feature_set": "eGeMAPSv02",
        "feature_level": "Functionals",
        "min_seconds": MIN_SECONDS,
        "short_policy": "padded with trailing silence to min_seconds",
        "features": list((smile or _smile()).feature_names),
    }


def load_prosody_encoder() -> ProsodyEncoder:
    """A ready `ProsodyEncoder`; a UsageError in one sentence when opensmile is missing."""
    if util.find_spec("opensmile") is None:
        raise UsageError(
            "The egemaps prosody encoder needs opensmile; pip install 'emo[prosody]' "
            "(audEERING's research licence: non-commercial use only without a commercial licence)."
        )
    return ProsodyEncoder()


@register
class Egemaps(Encoder):
    name = ProsodyEncoder.name
    modality = "audio"
    dim = DIM
    licence = "audEERING research licence: non-commercial use only"
    needs = Needs.WAVEFORM
    ms_per_clip = 85.9
    summary = "openSMILE eGeMAPSv02 functionals per utterance (pip install 'emo[prosody]'; see LICENCE_NOTE)"

    def available(self) -> tuple[bool, str]:
        return util.find_spec("opensmile") is not None, "pip install 'emo[prosody]'"

    def identity(self, config, device) -> dict[str, Any] | None:
        return prosody_identity()

    def load(self, config, device) -> ProsodyEncoder:
        return load_prosody_encoder()
