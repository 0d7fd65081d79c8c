"""The media of a synthetic dataset: real h264 + AAC mp4 clips written with PyAV.

Why real files: everything downstream (the decoder above all) then runs the code paths it
runs on MELD. A clip renders its planned cues: the audio is a harmonic tone whose pitch
names the audio cue's emotion (a syllable rhythm is a second, redundant hint), the frames
show the visual cue's background colour under a moving grey square that carries no label.
Both are jittered, so a cue is a strong hint, never an exact code.

`write_row_clip` also writes the broken kinds `emo.extract.media.decode` must survive (empty,
cut short, a text file with a video's name, a missing stream, a too-long clip). PyAV is
imported inside `write_clip` only, so planning and reading a dataset need no codec.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emo.atomic import atomic_path
from emo.data.synth_config import LAYOUTS

if TYPE_CHECKING:
    from emo.data.synth_config import SynthConfig
    from emo.data.synth_plan import SynthClip


# Per emotion: (pitch Hz, syllable rate Hz). Pitches are ~25% apart and jittered by up to
# 5%, so the pitch names the cue; the rhythm is a second, redundant hint.
TONES: dict[str, tuple[float, float]] = {
    "sadness": (110.0, 1.5),
    "neutral": (140.0, 3.0),
    "disgust": (175.0, 2.5),
    "anger": (220.0, 7.0),
    "joy": (275.0, 5.0),
    "fear": (345.0, 9.0),
    "surprise": (430.0, 2.0),
}
# Per emotion: background RGB colour.
COLOURS: dict[str, tuple[int, int, int]] = {
    "neutral": (128, 128, 128),
    "joy": (235, 205, 40),
    "surprise": (40, 210, 220),
    "anger": (210, 35, 35),
    "sadness": (40, 60, 200),
    "disgust": (60, 170, 60),
    "fear": (130, 50, 170),
}


def cue_audio(rng: np.random.Generator, cue: str, seconds: float, rate: int, channels: int) -> np.ndarray:
    """float32[channels, samples]: a harmonic tone with the cue's pitch and syllable rhythm."""
    pitch, syllables = TONES[cue]
    pitch *= float(rng.uniform(0.95, 1.05))
    syllables *= float(rng.uniform(0.85, 1.15))
    n = max(1, int(round(seconds * rate)))
    t = np.arange(n) / rate
    phase = 2 * np.pi * pitch * t
    voice = np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase)
    envelope = 0.5 * (1 + np.sin(2 * np.pi * syllables * t + rng.uniform(0, 2 * np.pi))) ** 2
    mono = 0.18 * voice * envelope + rng.normal(0.0, 0.01, n)
    gains = np.linspace(1.0, 0.7, channels)[:, None]
    return np.clip(mono[None, :] * gains, -1, 1).astype(np.float32)


def cue_frames(rng: np.random.Generator, cue: str, n: int, width: int, height: int) -> np.ndarray:
    """uint8[n, H, W, 3]: the cue's background colour (jittered) and a moving grey square
    that carries no label information."""
    colour = np.clip(np.array(COLOURS[cue]) + rng.normal(0, 18, 3), 0, 255)
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    frames[:] = colour.astype(np.uint8)
    side = max(4, min(width, height) // 3)
    grey = int(rng.integers(60, 200))
    x0, y0 = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
    step = int(rng.integers(1, 4))
    for i in range(n):
        x = (x0 + i * step) % (width - side)
        frames[i, y0 : y0 + side, x : x + side] = grey
    return frames


def write_clip(
    path: str | Path,
    frames: np.ndarray | None,
    audio: np.ndarray | None,
    fps: int = 10,
    sample_rate: int = 22050,
    frame_times: np.ndarray | None = None,
    faststart: bool = False,
) -> Path:
    """Write an h264 + AAC mp4 with PyAV. Either stream may be left out.

    frames: uint8[T, H, W, 3]; frame_times (seconds, increasing) makes a variable-frame-rate
    file, otherwise frames are 1/fps apart. audio: float32[channels, samples] in [-1, 1].
    `faststart` puts the index (moov) before the media data, as web-ready files have it.
    Written under a temporary name and renamed (`emo.atomic`), so an interrupted run never
    leaves a half-written clip that looks valid.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        _encode(tmp, frames, audio, fps, sample_rate, frame_times, faststart)
    return path


def _encode(path: Path, frames, audio, fps: int, sample_rate: int, frame_times, faststart: bool) -> None:
    import av

    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", format="mp4", options=options) as container:
        if frames is not None:
            time_base = Fraction(1, 1000) if frame_times is not None else Fraction(1, fps)
            video = container.add_stream("libx264", rate=fps)
            video.width, video.height = int(frames.shape[2]), int(frames.shape[1])
            video.pix_fmt = "yuv420p"
            video.codec_context.time_base = time_base
            # One thread: x264 output is then byte-identical for a seed.
            video.options = {"preset": "ultrafast", "threads": "1", "crf": "20"}
        if audio is not None:
            layout = LAYOUTS[int(audio.shape[0])]
            sound = container.add_stream("aac", rate=sample_rate, layout=layout)
        if frames is not None:
            for i, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame.pts = int(round(frame_times[i] * 1000)) if frame_times is not None else i
                frame.time_base = time_base
                container.mux(video.encode(frame))
            container.mux(video.encode())
        if audio is not None:
            block = 1024
            for start in range(0, audio.shape[1], block):
                chunk = np.ascontiguousarray(audio[:, start : start + block], dtype=np.float32)
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                frame.sample_rate = sample_rate
                frame.pts = start
                frame.time_base = Fraction(1, sample_rate)
                container.mux(sound.encode(frame))
            container.mux(sound.encode())


def write_row_clip(clip: "SynthClip", rng: np.random.Generator, config: "SynthConfig") -> None:
    """Write one CSV row's clip, good or broken as `clip.broken` says."""
    kind = clip.broken
    path = clip.path
    if kind == "missing":
        return
    if kind == "zero_byte":
        path.write_bytes(b"")
        return
    if kind == "not_video":
        path.write_text("This is a text file with a video's name, as left behind by a failed download.\n")
        return
    n_frames = max(1, int(round(clip.duration * config.fps)))
    frames = None if kind == "no_video" else cue_frames(rng, clip.visual_cue, n_frames, config.width, config.height)
    audio_seconds = config.long_duration if kind == "audio_longer" else clip.duration
    audio = None
    if kind != "no_audio":
        audio = cue_audio(rng, clip.audio_cue, audio_seconds, config.sample_rate, config.audio_channels)
    truncated = kind == "truncated"
    write_clip(path, frames, audio, fps=config.fps, sample_rate=config.sample_rate, faststart=truncated)
    if truncated:
        # An interrupted download of a web-ready file: the index (moov) is intact and
        # promises the whole clip, but only the first 40% of the bytes arrived - the
        # hard case, which opens and decodes part way before failing.
        data = path.read_bytes()
        path.write_bytes(data[: max(1, int(len(data) * 0.4))])


def write_unlabeled_clip(path: Path, rng: np.random.Generator, config: "SynthConfig") -> Path:
    """A good clip that no CSV row names (MELD's folders hold a few)."""
    from emo.labels import EMOTIONS

    emotion = EMOTIONS[int(rng.integers(len(EMOTIONS)))]
    seconds = float(rng.uniform(config.min_duration, config.max_duration))
    frames = cue_frames(rng, emotion, max(1, int(round(seconds * config.fps))), config.width, config.height)
    audio = cue_audio(rng, emotion, seconds, config.sample_rate, config.audio_channels)
    return write_clip(path, frames, audio, fps=config.fps, sample_rate=config.sample_rate)
