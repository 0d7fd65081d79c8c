"""Benchmark `emo predict`: latency for one 3-s clip with warm models, and the real-time
factor (RTF = processing seconds / media seconds) for a long multi-speaker video made from
real speech, with where the time goes (speech recognition, decoding, mel, encoders, head).

Not a test: it prints measured numbers from one run on this machine: medians with their
spread, the load average before and after, and no figure at all when other work takes
over half the cores (bench/_timing.py; --allow-load prints them anyway, marked).

1. Trains a small run on a synthetic cache extracted with the offline encoders at the
   default recipe (MiniLM-L6 text, EfficientNet-Lite0 on 16 frames per clip, 40-bin mel);
   reused from --work when it is already there.
2. Latency: `Predictor.from_run` once (load time reported apart), one warm-up prediction,
   then the median of --repeats predictions of a 3-s espeak-ng clip (speech recognition
   included).
3. RTF: espeak-ng speaks a dialogue of sentences in alternating voices until it lasts
   --minutes (default 10), muxed with frames by PyAV; `predict(segment=True)` recognises,
   segments (Whisper's VAD), encodes and scores it end to end.

Run: .venv/bin/python bench/predict.py [--minutes 10] [--repeats 5] [--work bench/out/predict]
Needs espeak-ng and `pip install -e '.[offline,asr]'`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from _timing import Timing, add_arguments

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SENTENCES = [
    "I can't believe you ate the whole cake without asking anyone.",
    "Well, it was sitting right there on the counter.",
    "That was for Monica's birthday party tonight!",
    "Oh no. Should I go and buy another one?",
    "The bakery closes at six, so you'd better hurry.",
    "Fine, fine. Where are my keys? Has anyone seen my keys?",
    "They're in the kitchen next to the coffee machine.",
    "Thanks. And please don't tell her about this.",
    "I'm not promising anything, she always finds out.",
    "You know, this is exactly why nobody trusts you with food.",
    "Hey, I said I'm sorry. What more do you want from me?",
    "An apology to Monica would be a good start.",
]
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-us+f3"]


def make_run(work: Path) -> Path:
    from emo.data.synth import SynthConfig, generate
    from emo.extract.config import ExtractConfig
    from emo.extract.pipeline.run import run_extract
    from emo.fuse.config import FitConfig
    from emo.fuse.train import run_fit

    run = work / "run"
    if (run / "summary.json").is_file():
        return run
    generate(work / "data", SynthConfig(train_clips=24, dev_clips=6, test_clips=6, seed=5), overwrite=True)
    run_extract(
        ExtractConfig(
            data_root=work / "data", cache=work / "cache", split="all", preset="offline", workers=0, device="cpu"
        )
    )
    run_fit(FitConfig(cache=work / "cache", out=run, epochs=3, lr=1e-3, device="cpu", overwrite=True))
    return run


def make_dialogue(path: Path, minutes: float) -> tuple[float, int]:
    from emo.data.espeak import speak_dialogue

    lines, total = [], 0.0
    while total < minutes * 60:
        i = len(lines)
        lines.append((VOICES[i % len(VOICES)], SENTENCES[i % len(SENTENCES)]))
        total += 3.4 + 1.2  # about one line's length plus the pause; corrected by the real turns below
    turns = speak_dialogue(lines, path)
    return turns[-1][1] + 0.5, len(turns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the long dialogue video")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "predict")
    add_arguments(parser, repeats=5)  # --repeats: timed predictions of the 3-s clip
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    from emo import Predictor
    from emo.data.espeak import speak_dialogue

    run = make_run(args.work)
    timing = Timing(args.allow_load)
    t0 = time.perf_counter()
    predictor = Predictor.from_run(run)
    predictor.recognizer()
    load_s = time.perf_counter() - t0

    clip = args.work / "three-seconds.mp4"
    speak_dialogue([("en-us", "I really did not expect to see you here today.")], clip, lead=0.3)
    predictor.predict(clip)  # warm-up: first-call costs (kernel compiles, allocations)
    latencies, stages = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = predictor.predict(clip)
        latencies.append(time.perf_counter() - t0)
        stages.append(result.seconds)
    clip_s = result.audio_seconds

    video = args.work / f"dialogue-{args.minutes:g}min.mp4"
    t0 = time.perf_counter()
    media_s, turns = make_dialogue(video, args.minutes)
    make_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    long = predictor.predict(video, segment=True)
    long_s = time.perf_counter() - t0

    figures = {
        "load_s": round(load_s, 2),
        "clip_seconds": round(clip_s, 2),
        "latency_median_s": round(statistics.median(latencies), 3),
        "latency_all_s": [round(x, 3) for x in latencies],
        "latency_stages_s": {k: round(statistics.median(s.get(k, 0.0) for s in stages), 3) for k in stages[-1]},
        "long_media_s": round(media_s, 1),
        "long_turns_spoken": turns,
        "long_segments_found": len(long.segments),
        "long_wall_s": round(long_s, 1),
        "long_rtf": round(long_s / media_s, 3),
        "long_stages_s": {k: round(v, 1) for k, v in sorted(long.seconds.items(), key=lambda kv: -kv[1])},
        "make_video_s": round(make_s, 1),
    }
    print(json.dumps(figures, indent=2))
    (args.work / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(timing.figure("3-s clip, warm, latency", latencies, "s") + f"  stages {figures['latency_stages_s']}")
    label = f"{media_s / 60:.1f}-min dialogue ({turns} turns spoken, {len(long.segments)} segments found), RTF"
    print(timing.figure(label, [long_s / media_s], "", 3) + f"  stages {figures['long_stages_s']}")
    raise SystemExit(timing.finish())


if __name__ == "__main__":
    main()
