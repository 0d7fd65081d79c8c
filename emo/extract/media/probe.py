"""Opening a clip and reading what its headers say, without decoding it.

Decoding needs a clip's streams, their time origins and their stated lengths before the
first packet (to place the sampled frames and to know when a download was cut short),
and extraction needs a clip's frame size up front to let FFmpeg scale while it decodes.
Both read container headers only, so that knowledge lives here, apart from the decoding
loop. Every way a file cannot even be opened is turned into one `ClipError` with a
machine-readable `reason`, so extraction records the clip as failed and moves on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emo.errors import EmoError

CLIP_ERROR_REASONS: tuple[str, ...] = ("missing", "empty", "unreadable", "no_video", "no_audio")

_REASON_TEXT = {
    "missing": "does not exist",
    "empty": "is empty (0 bytes)",
    "unreadable": "cannot be decoded",
    "no_video": "has no video stream",
    "no_audio": "has no audio stream",
}


class ClipError(EmoError):
    """A clip that cannot give what was asked; `reason` is one of `CLIP_ERROR_REASONS`."""

    def __init__(self, reason: str, path: str | Path, detail: str | None = None):
        if reason not in CLIP_ERROR_REASONS:
            raise ValueError(f"unknown clip error reason {reason!r}")
        self.reason = reason
        self.path = Path(path)
        self.detail = detail
        message = f"Clip {self.path} {_REASON_TEXT[reason]}"
        if detail:
            message += f" ({detail.rstrip('.')})"
        super().__init__(message + ".")

    def __reduce__(self):
        # Exceptions with a custom __init__ do not pickle by default; extraction workers
        # send these across processes.
        return (ClipError, (self.reason, self.path, self.detail))


@dataclass(frozen=True)
class ClipInfo:
    """A clip's streams and lengths, read from headers only (no decoding)."""

    path: Path
    duration: float
    has_video: bool
    has_audio: bool
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    video_duration: float | None = None
    audio_duration: float | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None


def open_container(path: Path):
    """Open a container, turning every failure into a ClipError."""
    import av

    if not path.exists():
        raise ClipError("missing", path)
    if path.is_dir():
        raise ClipError("unreadable", path, "it is a directory")
    try:
        size = path.stat().st_size
    except OSError as error:
        raise ClipError("unreadable", path, error.strerror or str(error)) from None
    if size == 0:
        raise ClipError("empty", path)
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except FileNotFoundError:
        raise ClipError("missing", path) from None
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as error:
        detail = getattr(error, "strerror", None) or str(error)
        raise ClipError("unreadable", path, detail) from None


def stream_seconds(stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    return None


def stream_origin(stream) -> float:
    if stream.start_time is not None and stream.time_base is not None:
        return float(stream.start_time * stream.time_base)
    return 0.0


def container_seconds(container) -> float | None:
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000
    return None


def scan_seconds(path: Path, stream_index: int, limit: float) -> float | None:
    """A stream's length from packet timestamps when headers do not state it.

    Demuxing without decoding is cheap; the scan stops at `limit` because anything longer
    will be cut there anyway.
    """
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = container.streams[stream_index]
            origin = stream_origin(stream)
            end = None
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                t = float((packet.pts + (packet.duration or 0)) * packet.time_base) - origin
                end = t if end is None else max(end, t)
                if end >= limit:
                    break
            return end
    except av.error.FFmpegError:
        return None


def probe_clip(path: str | Path) -> ClipInfo:
    """Streams and lengths from the container headers, without decoding anything."""
    path = Path(path)
    container = open_container(path)
    with container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        video_duration = stream_seconds(video) if video is not None else None
        audio_duration = stream_seconds(audio) if audio is not None else None
        known = [d for d in (video_duration, audio_duration, container_seconds(container)) if d]
        duration = max(known) if known else float("nan")
        fps = None
        if video is not None:
            rate = video.average_rate or video.guessed_rate
            fps = float(rate) if rate else None
        return ClipInfo(
            path=path,
            duration=duration,
            has_video=video is not None,
            has_audio=audio is not None,
            width=video.codec_context.width if video is not None else None,
            height=video.codec_context.height if video is not None else None,
            fps=fps,
            video_duration=video_duration,
            audio_duration=audio_duration,
            audio_sample_rate=audio.codec_context.sample_rate if audio is not None else None,
            audio_channels=audio.codec_context.channels if audio is not None else None,
        )
