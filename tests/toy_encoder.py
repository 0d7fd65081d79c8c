"""An encoder in one file: what adding an encoder takes (README, "Adding an encoder").

`EMO_PLUGINS=tests/toy_encoder.py emo extract ... --modalities visual --visual-model
toy-mean-colour` writes the feature set visual/toy-mean-colour: each sampled frame's mean
red, green and blue (3-d, in [0, 1]). `emo encoders` lists it, `emo fit` trains on it, and
`emo predict` (with the same EMO_PLUGINS) encodes new clips with it, through the same code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emo.extract.encoders.base import Encoder, Needs
from emo.extract.encoders.registry import register
from emo.extract.encoders.visual import FramePrep

PREP = FramePrep(size=(16, 16), resize_mode="squash", interpolation="bilinear")  # run in the decoding workers


class MeanColour:
    """The loaded model: uint8 frames [N, 16, 16, 3] -> float32 [N, 3]."""

    dim = 3
    prep = PREP

    def pass_size(self, batch_size: int) -> int:
        return batch_size

    def encode(self, frames: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return np.asarray(frames, dtype=np.float32).mean(axis=(1, 2)) / 255.0


@register
class ToyMeanColour(Encoder):
    name = "toy-mean-colour"
    modality = "visual"
    kind = "frames"
    dim = 3
    licence = "MIT (test code)"
    needs = Needs.FRAMES
    summary = "mean red, green and blue of each sampled frame (a test plugin)"

    def identity(self, config, device) -> dict[str, Any]:
        return {"name": self.name, "version": 1, "preprocess": PREP.describe()}

    def load(self, config, device) -> MeanColour:
        return MeanColour()
