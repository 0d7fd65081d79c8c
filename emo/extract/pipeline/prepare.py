"""Per-clip work that runs in the decoding worker processes: decode, mel, frame resize.

One decode serves every feature set of a run: frames resized for the image model, frames
kept at a face detector's resolution, the log-mel views and the raw waveform for a speech
model all come out of the same `PreparedClip`.

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

from emo.cache.clips import ClipFailure
from emo.extract.encoders.faces import FACE_FRAME_SIDE
from emo.extract.encoders.visual import FramePrep
from emo.extract.media.mel import MelParams, mel_views


@dataclass(frozen=True)
class ClipJob:
    """Everything a worker needs to prepare one clip (plain data: it is pickled to the worker)."""

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
    start: float = 0.0  # seconds into the file where the clip begins (a segment of a longer video)
    face_side: int = 0  # > 0: also keep frames with this short side, for a face detector
    waveform: bool = False  # also return the decoded mono waveform, for a speech model


@dataclass(frozen=True)
class MediaNeeds:
    """What a run's encoders take from each decoded clip: frames resized for the image model,
    log-mel views, whole frames at the face detector's size, the waveform."""

    frame_prep: FramePrep | None = None
    mel: MelParams | None = None
    face_side: int = 0  # > 0: frames with this short side, for a face detector
    waveform: bool = False


def media_needs(config, encoders) -> MediaNeeds:
    """What `encoders` need from each clip under `config`: the one rule by which `emo extract`
    and `emo predict` decide what to decode, read from each encoder's `needs` (and a loaded
    image model's own `prep`; registry entries, not loaded yet, give everything else)."""
    from emo.extract.encoders.base import Needs
    from emo.extract.encoders.fingerprint import mel_params

    needs = {e.needs for e in encoders}
    loaded = [e for e in encoders if getattr(e, "model", None) is not None]
    return MediaNeeds(
        frame_prep=next((e.model.prep for e in loaded if e.needs == Needs.FRAMES), None),
        mel=mel_params(config) if Needs.MEL in needs else None,
        face_side=FACE_FRAME_SIDE if needs & {Needs.FACES, Needs.FACE_CROPS} else 0,
        waveform=Needs.WAVEFORM in needs,
    )


def clip_job(
    config, row: int, key: str, path: str, media: MediaNeeds, start: float = 0.0, length: float | None = None
) -> ClipJob:
    """The job that prepares one clip the way `config` (an `ExtractConfig`) and the run's
    encoders (`media_needs`) say: `emo extract` and `emo predict` both build their jobs here,
    so their preprocessing cannot drift. A segment of a longer file is `start` seconds in and
    at most `length` seconds long (never longer than the config's max_duration)."""
    frame_prep, mel, face_side = media.frame_prep, media.mel, media.face_side
    limit = float(config.max_duration) if length is None else min(float(config.max_duration), float(length))
    return ClipJob(
        row=row,
        key=key,
        path=str(path),
        video="visual" in config.modalities,
        audio="audio" in config.modalities,
        frames=config.frames,
        sample_rate=config.sample_rate,
        max_duration=limit,
        frame_prep=frame_prep,
        ffmpeg_resize=config.frame_resize == "ffmpeg" and not face_side,
        mel=mel,
        audio_views=config.audio_views,
        seed=config.seed,
        start=float(start),
        face_side=int(face_side),
        waveform=bool(media.waveform),
    )


@dataclass
class PreparedClip:
    """A decoded clip, ready for the image encoder (frames) and the cache (mel)."""

    row: int
    frames: np.ndarray | None = None  # uint8[T, h, w, 3], already resized/cropped for the image model
    face_frames: np.ndarray | None = None  # uint8[T, H', W', 3] whole frames at the face detector's size
    mel: list[np.ndarray] | None = None  # one float16[T_v, n_mels] per audio view
    waveform: np.ndarray | None = None  # float32 mono at the job's sample rate
    truncated: bool = False
    failures: list[ClipFailure] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _modalities(video: bool, audio: bool) -> tuple[str, ...]:
    return tuple(m for m, wanted in (("audio", audio), ("visual", video)) if wanted)


def prepare_clip(job: ClipJob) -> PreparedClip:
    """Decode one clip and turn it into what the cache stores (frames still need the encoder)."""
    from emo.extract.media.decode import decode_clip
    from emo.extract.media.probe import ClipError, probe_clip

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
                start=job.start,
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
        if job.face_side:
            out.face_frames = shrink_frames(frames, job.face_side)
        if job.frame_prep is None:
            out.frames = frames if not job.face_side else None
        elif frame_size is not None:
            out.frames = job.frame_prep.center_crop(frames)  # already scaled by FFmpeg
        else:
            out.frames = job.frame_prep.geometric(frames)
        out.seconds["resize"] = time.perf_counter() - started

    if audio and decoded.audio is not None and job.waveform:
        out.waveform = np.ascontiguousarray(decoded.audio, dtype=np.float32)
        if out.waveform.size == 0:
            out.waveform = None
            out.failures.append(ClipFailure("no_audio", ("audio",), f"Clip {job.path} has an empty audio stream."))
    if audio and decoded.audio is not None and job.mel is not None:
        started = time.perf_counter()
        views = mel_views(decoded.audio, job.mel, job.audio_views, job.seed, job.key)
        out.mel = [v.astype(np.float16) for v in views]
        out.seconds["mel"] = time.perf_counter() - started
        if out.mel[0].shape[0] == 0:
            out.mel = None
            out.failures.append(ClipFailure("no_audio", ("audio",), f"Clip {job.path} has an empty audio stream."))
    return out


def shrink_frames(frames: np.ndarray, side: int) -> np.ndarray:
    """Whole frames scaled (never enlarged) so the short side is `side`, as the face
    encoder itself would (`emo.extract.encoders.faces.resize_for_faces`), done here in the worker so
    the main process receives small frames: a face detector needs the whole picture, not
    the image model's centre crop."""
    from emo.extract.encoders.faces import resize_for_faces

    if len(frames) == 0:
        return frames
    return np.stack([resize_for_faces(np.ascontiguousarray(f[..., :3]), side) for f in frames])
