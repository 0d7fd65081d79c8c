"""`mel`: the seed design's log-mel spectrogram, a registry entry without a model.

The decoding workers compute it (`emo.extract.media.mel`, `Needs.MEL`), so loading it
loads nothing. Its set keeps the fingerprint a version-1 cache recorded for its audio
(the extraction version, the mel settings with the augmented views and their seed, and
the decoded duration), so upgraded caches and new extractions name the same set.
"""

from __future__ import annotations

from typing import Any

from emo.cache.sets import SetSpec
from emo.extract.encoders.base import Encoder, Needs
from emo.extract.encoders.registry import register

MEL = "mel"


class LogMel(Encoder):
    name = MEL
    modality = "audio"
    kind = "sequence"
    dim = 40  # n_mels by default
    licence = "none (no model)"
    needs = Needs.MEL
    ms_per_clip = 37.8
    summary = "the seed's log-mel spectrogram (n_mels bands, --set n_mels=64; 10 ms hop), for the mel-CNN"
    loads_model = False

    def identity(self, config, device) -> dict[str, Any]:
        from emo.extract.encoders.fingerprint import mel_params

        return {"name": MEL, **mel_params(config).describe()}

    def spec(self, config, identity: dict[str, Any]) -> SetSpec:
        from emo.extract.encoders.fingerprint import build_fingerprint

        base = build_fingerprint(config)
        fingerprint = {key: base[key] for key in ("extract_version", "audio", "max_duration")}
        return SetSpec(
            f"audio/{MEL}", "sequence", int(config.n_mels), "log-mel", fingerprint, views=1 + int(config.audio_views)
        )


register(LogMel)
