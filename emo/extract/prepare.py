"""Per-clip work that runs in the decoding worker processes: decode, mel, frame resize.

Everything here is a pure function of a `ClipJob` (plain, picklable data) and imports no
torch, so spawned workers start quickly and hold little memory. A broken clip never
raises out of `prepare_clip`: it comes back as failures naming the reason and the
modalities it cost, and the pipeline keeps the row with those modalities marked absent.
When a clip lacks only one stream (`no_audio`, `no_video`) the other one is still
decoded, so a silent clip keeps its frames and a sound-only clip keeps its mel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from emo.extract.mel import MelParams, mel_views
from emo.extract.visual import FramePrep


@dataclass(frozen=True)
class ClipJob:
    row: int  # position in the split's key-sorted rows
    key: str  # "dia{D}_utt{U}", seeds the augmented audio views
    path: str
    video: bool
    audio: bool
    frames: int
    sample_rate: int
    max_duration: float
    frame_prep: FramePrep | None
    ffmpeg_resize: bool  # scale frames while decoding instead of resizing full frames with PIL
    mel: MelParams | None
    audio_views: int
    seed: int


@dataclass
class ClipFailure:
    reason: str  # a ClipError reason: missing, empty, unreadable, no_video, no_audio
    modalities: tuple[str, ...]  # what the failure cost, in emo.labels.MODALITIES order
    message: str


@dataclass
class PreparedClip:
    row: int
    frames: np.ndarray | None = None  # uint8[T, h, w, 3], already resized/cropped for the image model
    mel: list[np.ndarray] | None = None  # one float16[T_v, n_mels] per audio view
    truncated: bool = False
    failures: list[ClipFailure] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _modalities(video: bool, audio: bool) -> tuple[str, ...]:
    return tuple(m for m, wanted in (("audio", audio), ("visual", video)) if wanted)


def prepare_clip(job: ClipJob) -> PreparedClip:
    """Decode one clip and turn it into what the cache stores (frames still need the encoder)."""
    from emo.extract.decode import ClipError, decode_clip, probe_clip

    out = PreparedClip(row=job.row)
    video, audio = job.video, job.audio
    started = time.perf_counter()
    decoded = None
    frame_size = None
    while decoded is None and (video or audio):
        try:
            frame_size = None
            if video and job.ffmpeg_resize and job.frame_prep is not None:
                info = probe_clip(job.path)
                if info.width and info.height:
                    frame_size = job.frame_prep.resized_size(info.width, info.height)
            decoded = decode_clip(
                job.path,
                num_frames=job.frames,
                sample_rate=job.sample_rate,
                max_duration=job.max_duration,
                video=video,
                audio=audio,
                frame_size=frame_size,
            )
        except ClipError as error:
            # A missing stream costs only that modality; anything else costs all that is left.
            if error.reason == "no_audio" and audio and video:
                lost = ("audio",)
                audio = False
            elif error.reason == "no_video" and audio and video:
                lost = ("visual",)
                video = False
            else:
                lost = _modalities(video, audio)
                video = audio = False
            out.failures.append(ClipFailure(error.reason, lost, str(error)))
    out.seconds["decode"] = time.perf_counter() - started
    if decoded is None:
        return out
    out.truncated = bool(decoded.truncated)

    if video and decoded.frames is not None:
        started = time.perf_counter()
        frames = decoded.frames
        if job.frame_prep is None:
            out.frames = frames
        elif frame_size is not None:
            out.frames = job.frame_prep.center_crop(frames)  # already scaled by FFmpeg
        else:
            out.frames = job.frame_prep.geometric(frames)
        out.seconds["resize"] = time.perf_counter() - started

    if audio and decoded.audio is not None:
        started = time.perf_counter()
        views = mel_views(decoded.audio, job.mel, job.audio_views, job.seed, job.key)
        out.mel = [v.astype(np.float16) for v in views]
        out.seconds["mel"] = time.perf_counter() - started
        if out.mel[0].shape[0] == 0:
            out.mel = None
            out.failures.append(ClipFailure("no_audio", ("audio",), f"Clip {job.path} has an empty audio stream."))
    return out


def worker_init() -> None:
    """Keep each worker to one BLAS/OpenMP thread: the parallelism is across processes."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # optional: only oversubscription is at stake
        pass


def warm_up(params: MelParams | None = None) -> float:
    """Pay the one-off costs (PyAV import, librosa's numba compile/cache load) up front, while
    the main process is still loading encoders, instead of on the first clip."""
    started = time.perf_counter()
    import av  # noqa: F401

    from emo.extract.decode import decode_clip  # noqa: F401

    mel_views(np.zeros(4000, dtype=np.float32) + 1e-3, params or MelParams(), 0, 0, "warm-up")
    return time.perf_counter() - started
