"""The registry entries for image models on whole frames: `SeedImage` (the seed's visual set,
keyed as a version-1 cache recorded it) and any open_clip model. The models are
`emo.extract.encoders.visual`; EfficientNet-Lite0 is `emo.extract.encoders.efficientnet`."""

from __future__ import annotations

from importlib import util
from typing import Any

from emo.extract.encoders.base import Encoder, Needs
from emo.extract.encoders.registry import register
from emo.extract.encoders.visual import ImageEncoder, load_open_clip, open_clip_identity


class SeedImage(Encoder):
    """An image model on whole frames: the seed's visual set, keyed as a version-1 cache
    recorded it (the extraction version, the encoder, frame sampling, decoded duration)."""

    modality = "visual"
    kind = "frames"
    needs = Needs.FRAMES

    def label(self, config, identity: dict[str, Any]) -> str:
        return str(identity["name"])

    def fingerprint(self, config, identity: dict[str, Any]) -> dict[str, Any]:
        from emo.extract.encoders.fingerprint import build_fingerprint

        base = build_fingerprint(config)
        return {
            "extract_version": base["extract_version"],
            "visual_encoder": identity,
            "frames": base["frames"],
            "max_duration": base["max_duration"],
        }


@register
class OpenClip(SeedImage):
    """Any open_clip architecture (or architecture JSON) with a pretrained tag or checkpoint file."""

    name = "open_clip"
    licence = "the weights'"
    summary = "any open_clip architecture or JSON + --visual-pretrained TAG|FILE (default ViT-B-32 openai, 512-d)"
    family = True

    def available(self) -> tuple[bool, str]:

        return util.find_spec("open_clip") is not None, "checkpoint files and tags already downloaded load offline"

    def model_id(self, config) -> str:
        return config.resolved_visual_model[0]

    def identity(self, config, device) -> dict[str, Any] | None:
        return open_clip_identity(*config.resolved_visual_model, device)

    def load(self, config, device) -> ImageEncoder:
        return load_open_clip(*config.resolved_visual_model, device)
