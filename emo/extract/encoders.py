"""The set of frozen encoders one extraction run uses, loaded by what the config asks for.

`emo.extract.text` and `emo.extract.visual` each know one kind of model; this module is
the one place that picks and loads them for a run (the audio path has no neural
encoder) and says what they contribute to the cache fingerprint: each encoder's
identity, and the text pooling the text model was trained for (`text_pooling`), which
`emo fit` uses as its default text feature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Encoders:
    """The frozen encoders one run uses; None for modalities that are not extracted."""

    text: Any = None
    visual: Any = None

    def fingerprint(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.text is not None:
            out["text_encoder"] = self.text.identity
            out["text_pooling"] = self.text.intended_pooling
        if self.visual is not None:
            out["visual_encoder"] = self.visual.identity
        return out


def load_encoders(config, device) -> Encoders:
    """Load what the config's modalities need (the audio path has no neural encoder)."""
    from emo.extract.text import load_text_encoder
    from emo.extract.visual import load_image_encoder

    encoders = Encoders()
    if "text" in config.modalities:
        encoders.text = load_text_encoder(
            config.resolved_text_model, device=device, max_length=config.text_max_length, context=config.context
        )
    if "visual" in config.modalities:
        name, pretrained = config.resolved_visual_model
        encoders.visual = load_image_encoder(name, pretrained, device=device)
    return encoders
