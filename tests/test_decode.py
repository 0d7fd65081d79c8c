"""Clip decoding with real PyAV on real mp4 files: the shared MELD clip and clips written here."""

from __future__ import annotations

import pickle
import tracemalloc
from fractions import Fraction

import av
import numpy as np
import pytest

from emo.data.synth import BROKEN_KINDS, EXPECTED_REASON, write_clip
from emo.errors import EmoError, UsageError
from emo.extract.media.decode import ClipError, DecodedClip, decode_clip, frame_targets, probe_clip
from emo.extract.media.probe import scan_seconds


# --------------------------------------------------------------------------- the real clip


def test_real_clip_decodes_to_frames_and_16k_mono_audio(real_clip):
    clip = decode_clip(real_clip)
    assert isinstance(clip, DecodedClip)
    assert clip.frames.shape == (16, 720, 1280, 3) and clip.frames.dtype == np.uint8
    assert clip.frame_times.shape == (16,) and np.all(np.diff(clip.frame_times) > 0)
    assert 0 <= clip.frame_times[0] and clip.frame_times[-1] <= 2.461
    assert clip.audio.ndim == 1 and clip.audio.dtype == np.float32 and clip.sample_rate == 16000
    assert len(clip.audio) / 16000 == pytest.approx(2.46, abs=0.05)
    assert 0.05 < np.abs(clip.audio).max() <= 1.0  # real speech, not silence
    assert clip.duration == pytest.approx(2.46, abs=0.01) and not clip.truncated
    assert not np.array_equal(clip.frames[0], clip.frames[-1])


def test_real_clip_frames_are_nearest_to_uniform_targets(real_clip):
    clip = decode_clip(real_clip, num_frames=8, audio=False)
    frame_period = 1127 / 27021  # the clip's 23.976 fps
    targets = frame_targets(clip.duration, 8)
    assert np.all(np.abs(clip.frame_times - targets) <= frame_period / 2 + 1e-6)


def test_real_clip_max_duration_cuts_while_decoding(real_clip):
    clip = decode_clip(real_clip, num_frames=4, max_duration=1.0, frame_size=(224, 224))
    assert clip.truncated and clip.duration == 1.0 and clip.source_duration == pytest.approx(2.46, abs=0.01)
    assert len(clip.audio) == 16000
    assert clip.frames.shape == (4, 224, 224, 3) and clip.frame_times.max() < 1.0


def test_real_clip_single_modality(real_clip):
    audio_only = decode_clip(real_clip, video=False)
    assert audio_only.frames is None and audio_only.frame_times is None and audio_only.audio is not None
    video_only = decode_clip(real_clip, audio=False, num_frames=2)
    assert video_only.audio is None and video_only.frames.shape[0] == 2


def test_probe_real_clip(real_clip):
    info = probe_clip(real_clip)
    assert (info.has_video, info.has_audio, info.width, info.height) == (True, True, 1280, 720)
    assert info.fps == pytest.approx(23.976, abs=0.001)
    assert info.audio_sample_rate == 48000 and info.audio_channels == 6
    assert info.duration == pytest.approx(2.46, abs=0.01)


# --------------------------------------------------------------------------- broken clips


@pytest.mark.parametrize("kind", [k for k in BROKEN_KINDS if EXPECTED_REASON[k]])
def test_every_broken_kind_raises_its_reason(synth_report, kind):
    (clip,) = [c for c in synth_report.clips if c.broken == kind and c.split == "train"]
    with pytest.raises(ClipError) as info:
        decode_clip(clip.path, num_frames=4, max_duration=5.0)
    error = info.value
    assert error.reason == EXPECTED_REASON[kind] == clip.expected_reason
    assert error.path == clip.path and str(clip.path) in str(error)
    assert isinstance(error, EmoError) and str(error).endswith(".")


def test_too_long_clip_is_cut_not_an_error(synth_report):
    (clip,) = [c for c in synth_report.clips if c.broken == "too_long"]
    decoded = decode_clip(clip.path, num_frames=6, max_duration=5.0)
    assert decoded.truncated and decoded.duration == 5.0
    assert decoded.source_duration == pytest.approx(synth_report.config.long_duration, abs=0.2)
    assert len(decoded.audio) == 5 * 16000 and decoded.frames.shape[0] == 6
    assert decoded.frame_times.max() < 5.0
    whole = decode_clip(clip.path, num_frames=6, max_duration=30.0)
    assert not whole.truncated and len(whole.audio) / 16000 == pytest.approx(8.0, abs=0.1)


def test_audio_longer_than_video_is_bounded(synth_report):
    (clip,) = [c for c in synth_report.clips if c.broken == "audio_longer"]
    decoded = decode_clip(clip.path, num_frames=4, max_duration=5.0)
    assert decoded.truncated and len(decoded.audio) <= 5 * 16000
    assert decoded.frames.shape[0] == 4
    # frames are spread over the video stream, not over the longer audio
    assert decoded.frame_times.max() <= clip.duration + 0.2
    video_only = decode_clip(clip.path, num_frames=4, max_duration=5.0, audio=False)
    assert not video_only.truncated


def test_wrong_stream_kinds_are_fine_when_not_asked_for(synth_report):
    (no_audio,) = [c for c in synth_report.clips if c.broken == "no_audio"]
    (no_video,) = [c for c in synth_report.clips if c.broken == "no_video"]
    assert decode_clip(no_audio.path, num_frames=3, audio=False).frames.shape[0] == 3
    assert decode_clip(no_video.path, video=False).audio.size > 0


def test_directory_and_bad_arguments(tmp_path, synth_report):
    with pytest.raises(ClipError) as info:
        decode_clip(tmp_path)
    assert info.value.reason == "unreadable"
    good = next(c for c in synth_report.clips if not c.broken)
    for kwargs in ({"num_frames": 0}, {"max_duration": 0}, {"sample_rate": 0}):
        with pytest.raises(UsageError):
            decode_clip(good.path, **kwargs)


def test_clip_error_survives_pickling(tmp_path):
    error = ClipError("no_audio", tmp_path / "x.mp4", "detail")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.path, str(copy)) == (error.reason, error.path, str(error))
    with pytest.raises(ValueError):
        ClipError("exploded", tmp_path)


# --------------------------------------------------------------------------- clips written here


def _grey_frames(values, width=32, height=32) -> np.ndarray:
    return np.stack([np.full((height, width, 3), v, dtype=np.uint8) for v in values])


def _tone(seconds, rate, channels, hz=440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.repeat((0.3 * np.sin(2 * np.pi * hz * t))[None, :], channels, axis=0).astype(np.float32)


def test_sixty_second_clip_decodes_bounded(tmp_path):
    path = write_clip(
        tmp_path / "long.mp4",
        _grey_frames(np.arange(600) % 250, 32, 32),
        _tone(60, 16000, 1),
        fps=10,
        sample_rate=16000,
    )
    tracemalloc.start()
    try:
        cut = decode_clip(path, num_frames=8, max_duration=5.0)
        _, cut_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        whole = decode_clip(path, num_frames=8, max_duration=120.0)
        _, whole_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert cut.truncated and len(cut.audio) <= 5 * 16000 and cut.duration == 5.0
    assert cut.frame_times.max() < 5.0
    assert not whole.truncated and len(whole.audio) / 16000 == pytest.approx(60, abs=0.1)
    # 60 s of float32 audio is 3.8 MB; the cut decode never holds more than a fraction of it.
    assert whole_peak > 3_500_000
    assert cut_peak < 1_500_000


def test_variable_frame_rate_uses_timestamps(tmp_path):
    # 20 frames packed into the first second, then 5 frames one second apart.
    times = np.concatenate([np.arange(20) * 0.05, 1.0 + np.arange(5) * 1.0])
    values = np.linspace(10, 240, len(times)).round().astype(np.uint8)
    path = write_clip(tmp_path / "vfr.mp4", _grey_frames(values), None, fps=20, frame_times=times)
    clip = decode_clip(path, num_frames=6, audio=False)
    duration = clip.duration
    assert duration == pytest.approx(times[-1] + 0.05, abs=0.06) or duration == pytest.approx(times[-1] + 1.0, abs=0.06)
    for target, got_time, frame in zip(frame_targets(duration, 6), clip.frame_times, clip.frames):
        nearest = int(np.argmin(np.abs(times - target)))
        assert got_time == pytest.approx(times[nearest], abs=1e-3)
        assert abs(int(frame.mean()) - int(values[nearest])) <= 4
    # An index-based sampler would put 5 of 6 frames in the dense first second.
    assert (clip.frame_times >= 1.0).sum() >= 3


def test_fewer_frames_than_asked_repeat_the_nearest(tmp_path):
    path = write_clip(
        tmp_path / "three.mp4", _grey_frames([30, 130, 230]), _tone(0.75, 16000, 1), fps=4, sample_rate=16000
    )
    clip = decode_clip(path, num_frames=16)
    assert clip.frames.shape == (16, 32, 32, 3)
    assert len(np.unique(clip.frame_times)) == 3
    means = clip.frames.reshape(16, -1).mean(axis=1)
    assert means[0] == pytest.approx(30, abs=4) and means[-1] == pytest.approx(230, abs=4)
    assert np.all(np.diff(clip.frame_times) >= 0)


def test_surround_48k_audio_is_downmixed_and_resampled(tmp_path):
    path = write_clip(
        tmp_path / "surround.mp4", _grey_frames([100] * 10), _tone(1.0, 48000, 6, hz=440.0), fps=10, sample_rate=48000
    )
    clip = decode_clip(path, num_frames=2)
    assert clip.audio.ndim == 1 and clip.audio.dtype == np.float32
    assert len(clip.audio) / 16000 == pytest.approx(1.0, abs=0.05)
    spectrum = np.abs(np.fft.rfft(clip.audio))
    peak_hz = np.argmax(spectrum) * 16000 / len(clip.audio)
    assert peak_hz == pytest.approx(440, abs=5)


@pytest.mark.parametrize("faststart", [False, True])
@pytest.mark.parametrize("seconds, keep", [(3.0, 0.3), (3.0, 0.6), (3.0, 0.85), (0.5, 0.4), (0.5, 0.7)])
def test_cut_short_file_is_unreadable_not_a_fragment(tmp_path, faststart, seconds, keep):
    """Index at the end (lost with the tail) or at the start (promising data that never came):
    either way the clip is reported, never decoded into a silent fragment."""
    frames = _grey_frames((np.arange(int(seconds * 10)) * 8) % 250)
    tone = _tone(seconds, 22050, 2)
    whole = write_clip(tmp_path / "whole.mp4", frames, tone, fps=10, sample_rate=22050, faststart=faststart)
    assert decode_clip(whole).duration == pytest.approx(seconds, abs=0.1)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ClipError) as info:
        decode_clip(cut, num_frames=8)
    assert info.value.reason == "unreadable"


def test_long_last_frame_is_not_mistaken_for_a_cut(tmp_path):
    """A slideshow-like VFR clip whose last frame stays up for 2 s is whole, not damaged."""
    times = np.concatenate([np.arange(10) * 0.04, [0.4, 2.4]])
    path = write_clip(
        tmp_path / "still.mp4", _grey_frames(np.linspace(20, 220, 12).astype(np.uint8)), None, fps=25, frame_times=times
    )
    clip = decode_clip(path, num_frames=4, audio=False)
    assert clip.frames.shape[0] == 4 and clip.frame_times.max() == pytest.approx(2.4, abs=1e-3)


def test_packet_scan_finds_length_without_headers_and_stops_at_the_limit(tmp_path):
    """The fallback for containers whose headers state no duration: demux only, up to the limit."""
    path = write_clip(tmp_path / "scan.mp4", _grey_frames(np.arange(40) * 5), None, fps=10)
    assert scan_seconds(path, 0, limit=100.0) == pytest.approx(4.0, abs=0.01)
    assert scan_seconds(path, 0, limit=1.0) == pytest.approx(1.0, abs=0.11)


@pytest.mark.parametrize("fmt, suffix", [("matroska", ".mkv"), ("mpegts", ".ts")])
def test_other_containers_decode_the_same_way(tmp_path, fmt, suffix):
    """Users' own data is not always mp4: Matroska states no stream durations, MPEG-TS
    streams start at a non-zero time."""
    path = tmp_path / f"clip{suffix}"
    with av.open(str(path), "w", format=fmt) as container:
        video = container.add_stream("libx264", rate=10)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        for i in range(25):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 10, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
    clip = decode_clip(path, num_frames=5, audio=False)
    assert clip.duration == pytest.approx(2.5, abs=0.15)
    means = clip.frames.reshape(5, -1).mean(axis=1)
    expected = (np.round(clip.frame_times * 10)) * 10
    assert np.all(np.abs(means - expected) <= 4)
    assert clip.frame_times[0] < 0.5 and clip.frame_times[-1] > 2.0
