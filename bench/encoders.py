"""What each feature set `emo extract` can write costs: time per clip, size on disk, start-up.

One cache, one `emo extract` run per encoder (`run_extract`, as the CLI runs it, with
`--modalities <m>` and that encoder's option), on MELD-like synthetic clips (`emo synth`:
h264 1280x720 at 24 fps, 5.1 AAC at 48 kHz, 2.4-4.8 s) plus the real MELD clip
../shared/data/clips/dia1_utt0.mp4 when it is there (skipped with a note when absent):

    text    MiniLM-L6 (all-MiniLM-L6-v2), mpnet (all-mpnet-base-v2)
    visual  efficientnet-lite0 on whole frames, the same on face crops (--crop faces),
            mediapipe-face (blendshapes + head pose)
    audio   mel (log-mel, no model), whisper-base (CTranslate2), egemaps (openSMILE)

An encoder whose optional install is missing (mpnet's pip parts, the Whisper parts,
opensmile) is skipped with a note. Per set: kind and dim, ms per clip and clips/s (the
run's wall time minus its once-per-run start-up: the "load encoders" stage and whatever
part of the decoding worker's start the loading did not hide; both are printed), bytes on
disk per clip and projected per 10k clips (`open_cache(cache).sets[name].bytes`), and how
long a warm `load_split` of that set alone takes. Times are for this machine's CPU.

The synthetic clips have no faces, so the face sets find none there (their "faces" column
says so) and skip the crop encoding; `--real-only` times the real clip alone, which has one.

    .venv/bin/python bench/encoders.py --quick            # 24 synthetic clips + the real clip
    .venv/bin/python bench/encoders.py --clips 100        # steadier numbers
    .venv/bin/python bench/encoders.py --real-only        # the real clip alone (faces found)
    .venv/bin/python bench/encoders.py --quick --encoders minilm,mel
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cache_load import best_of  # noqa: E402  (bench/ is on the path when a bench runs)
from emo.data.meld import COLUMNS  # noqa: E402

REAL_CLIP = REPO.parent / "shared" / "data" / "clips" / "dia1_utt0.mp4"
# The real clip's row of MELD's train CSV (dialogue 1, utterance 0).
REAL_ROW = {
    "Utterance": "But then who? The waitress I went out with last month?",
    "Speaker": "Joey",
    "Emotion": "surprise",
    "Sentiment": "negative",
    "Season": "9",
    "Episode": "23",
    "StartTime": "00:36:40,364",
    "EndTime": "00:36:42,824",
}


# --- encoders ----------------------------------------------------------------------------


@dataclass
class Encoder:
    key: str  # --encoders name
    label: str
    options: dict = field(default_factory=dict)  # ExtractConfig fields of its run

    def missing(self) -> str:
        """Why this encoder cannot run here (one phrase), or "" when it can."""
        from importlib import util

        try:
            if self.key == "mpnet":
                from emo.extract.encoders.pip_models import mpnet_dir

                mpnet_dir()
            elif self.key == "whisper-base":
                from emo.extract.encoders.pip_models import whisper_base_dir

                whisper_base_dir()
            elif self.key == "egemaps" and util.find_spec("opensmile") is None:
                return "opensmile is not installed (pip install 'emo[prosody]')"
        except Exception as error:  # noqa: BLE001 - any failure to find the weights means "skip"
            return f"{type(error).__name__}: {error}"
        return ""


ENCODERS = [
    Encoder("minilm", "MiniLM-L6 text", {"modalities": ("text",), "text_model": "all-MiniLM-L6-v2"}),
    Encoder("mpnet", "mpnet text", {"modalities": ("text",), "text_model": "all-mpnet-base-v2"}),
    Encoder(
        "effnet",
        "EfficientNet-Lite0 frames",
        {"modalities": ("visual",), "visual_model": "efficientnet-lite0", "visual_pretrained": ""},
    ),
    Encoder(
        "effnet-faces",
        "EfficientNet-Lite0 face crops",
        {"modalities": ("visual",), "crop": "faces", "visual_model": "efficientnet-lite0", "visual_pretrained": ""},
    ),
    Encoder("mediapipe-face", "MediaPipe face", {"modalities": ("visual",), "visual_model": "mediapipe-face"}),
    Encoder("mel", "log-mel", {"modalities": ("audio",), "audio_model": "mel"}),
    Encoder("whisper-base", "Whisper base", {"modalities": ("audio",), "audio_model": "whisper-base"}),
    Encoder("egemaps", "eGeMAPS functionals", {"modalities": ("audio",), "audio_model": "egemaps"}),
]


# --- data --------------------------------------------------------------------------------


def synth_dataset(folder: Path, clips: int, width: int, height: int) -> Path:
    """MELD-like synthetic train clips (`emo synth`), reused when already written."""
    from emo.data.synth import MANIFEST_NAME, SynthConfig, generate

    if (folder / MANIFEST_NAME).is_file() and (folder / "train_sent_emo.csv").is_file():
        return folder
    config = SynthConfig(
        train_clips=clips,
        dev_clips=0,
        test_clips=0,
        width=width,
        height=height,
        fps=24,
        sample_rate=48000,
        audio_channels=6,
        min_duration=2.4,
        max_duration=4.8,
    )
    generate(folder, config, overwrite=folder.exists())
    return folder


def bench_dataset(root: Path, synth: Path | None, real: bool) -> tuple[Path, int]:
    """A fresh MELD-layout train split in `root`: links to the synthetic clips and, with
    `real`, to the real clip under a dialogue id the synthetic rows do not use."""
    shutil.rmtree(root, ignore_errors=True)
    clip_dir = root / "train_splits"
    clip_dir.mkdir(parents=True)
    rows = []
    if synth is not None:
        with (synth / "train_sent_emo.csv").open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        for row in rows:
            name = f"dia{row['Dialogue_ID']}_utt{row['Utterance_ID']}.mp4"
            (clip_dir / name).symlink_to((synth / "train_splits" / name).resolve())
    if real:
        dialogue = 1 + max((int(r["Dialogue_ID"]) for r in rows), default=0)
        rows.append({"Sr No.": str(len(rows) + 1), **REAL_ROW, "Dialogue_ID": str(dialogue), "Utterance_ID": "0"})
        (clip_dir / f"dia{dialogue}_utt0.mp4").symlink_to(REAL_CLIP)
    with (root / "train_sent_emo.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
    return root, len(rows)


# --- measurements ------------------------------------------------------------------------


def warm_imports() -> None:
    """Import what every run needs once, so the first encoder's timing does not pay for it."""
    import av  # noqa: F401
    import h5py  # noqa: F401
    import torch  # noqa: F401

    from emo.cache import open_cache  # noqa: F401
    from emo.extract.pipeline.run import run_extract  # noqa: F401


def extract_one(encoder: Encoder, data: Path, cache: Path, args: argparse.Namespace) -> dict:
    """One `emo extract` run of one encoder into the shared cache, and its numbers."""
    from emo.cache import load_split, open_cache
    from emo.extract.config import ExtractConfig
    from emo.extract.pipeline.run import run_extract

    config = ExtractConfig(
        data_root=data,
        cache=cache,
        split="train",
        device="cpu",
        workers=args.workers,
        frames=args.frames,
        batch_size=args.batch_size,
        format=args.format,
        **encoder.options,
    )
    summary = run_extract(config)
    stages = summary.stage_seconds
    load_s = stages.get("load encoders", 0.0)
    startup_s = stages.get("worker start-up", 0.0)
    work_s = max(summary.wall_seconds - load_s - startup_s, 1e-9)
    (name,) = summary.sets
    info = open_cache(cache)
    item = info.sets[name]
    rows = item.splits["train"].rows
    read_s = best_of(lambda: load_split(cache, "train", sets=[name]), 3)
    loaded = load_split(cache, "train", sets=[name]).sets[name]
    faces = ""
    if "mask" in loaded.arrays and ("faces" in name or "mediapipe" in name):
        faces = f"{100 * float(np.mean(loaded.arrays['mask'])):.0f}%"  # of every clip's sampled frames
    return {
        "key": encoder.key,
        "name": name,
        "kind": item.kind,
        "dim": item.dim,
        "rows": rows,
        "present": int(item.splits["train"].present),
        "work_s": work_s,
        "wall_s": summary.wall_seconds,
        "load_s": load_s,
        "startup_s": startup_s,
        "bytes": item.bytes,
        "read_s": read_s,
        "faces": faces,
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=100, help="synthetic clips (default 100)")
    parser.add_argument("--quick", action="store_true", help="24 synthetic clips (about 3 minutes on 2 cores)")
    parser.add_argument("--real-only", action="store_true", help="time the real MELD clip alone, no synthetic clips")
    parser.add_argument("--no-real", action="store_true", help="leave the real clip out")
    parser.add_argument(
        "--encoders",
        default=",".join(e.key for e in ENCODERS),
        help="comma list of: " + ", ".join(e.key for e in ENCODERS),
    )
    parser.add_argument("--workers", type=int, default=1, help="decoding processes (default 1)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--format", default="h5", choices=("h5", "zarr"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "encoders")
    parser.add_argument("--keep", action="store_true", help="keep the cache (OUT/cache) afterwards")
    args = parser.parse_args()
    if args.quick:
        args.clips = 24
    chosen = [k.strip() for k in args.encoders.split(",") if k.strip()]
    unknown = [k for k in chosen if k not in {e.key for e in ENCODERS}]
    if unknown:
        parser.error(f"unknown encoder {unknown[0]!r}; choose from {', '.join(e.key for e in ENCODERS)}")

    notes = []
    real = not args.no_real and REAL_CLIP.is_file()
    if not args.no_real and not real:
        notes.append(f"real clip {REAL_CLIP} is absent: synthetic clips only")
    if args.real_only and not real:
        print(f"--real-only: the real clip {REAL_CLIP} is absent; nothing to time.")
        return
    synth = None
    if not args.real_only:
        t0 = time.perf_counter()
        synth = synth_dataset(
            args.out / f"synth-{args.clips}-{args.width}x{args.height}", args.clips, args.width, args.height
        )
        print(f"{args.clips} synthetic clips ready in {time.perf_counter() - t0:.1f} s ({synth})")
    data, n = bench_dataset(args.out / "data", synth, real)
    what = (
        "the real MELD clip"
        if args.real_only
        else f"{args.clips} synthetic clips" + (" + the real MELD clip" if real else "")
    )

    cache = args.out / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    warm_imports()
    results = []
    try:
        for encoder in (e for e in ENCODERS if e.key in chosen):
            why = encoder.missing()
            if why:
                notes.append(f"{encoder.key} skipped: {why}")
                continue
            print(f"extracting {encoder.key} ...", file=sys.stderr, flush=True)
            try:
                results.append(extract_one(encoder, data, cache, args))
            except Exception as error:  # noqa: BLE001 - one encoder failing must not hide the others
                notes.append(f"{encoder.key} FAILED: {type(error).__name__}: {error}")
        rows_bytes = 0
        if results:
            from emo.cache import open_cache

            rows_bytes = open_cache(cache).splits["train"].bytes
    finally:
        if not args.keep:
            shutil.rmtree(cache, ignore_errors=True)

    print()
    print(
        f"clips: {n} ({what}); one cache ({args.format}), one extract run per set; workers: {args.workers}; "
        f"frames/clip: {args.frames}; device: cpu"
    )
    print(
        f"Times are for this machine's CPU: {cpu_name()}, {os.cpu_count()} cores; they exclude each run's "
        "start-up (load s: loading the encoder; start s: decoding-worker start not hidden by loading)."
    )
    header = (
        f"{'set':<34}{'kind':<9}{'dim':>5}{'ms/clip':>9}{'clips/s':>9}{'B/clip':>11}{'per 10k':>11}"
        f"{'load s':>8}{'start s':>8}{'read ms':>8}{'present':>9}{'faces':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        per_clip = r["bytes"] / max(r["rows"], 1)
        print(
            f"{r['name']:<34}{r['kind']:<9}{r['dim']:>5}{1000 * r['work_s'] / n:>9.1f}{n / r['work_s']:>9.2f}"
            f"{human_bytes(per_clip):>11}{human_bytes(per_clip * 10_000):>11}{r['load_s']:>8.2f}{r['startup_s']:>8.2f}"
            f"{1000 * r['read_s']:>8.1f}{r['present']:>5}/{r['rows']:<3}{r['faces']:>7}"
        )
    if results:
        print(
            f"row table (ids, labels, speaker, text; shared by every set): {human_bytes(rows_bytes / n)}/clip, "
            f"{human_bytes(rows_bytes / n * 10_000)} per 10k clips"
        )
        print(
            "ms/clip and clips/s: wall time of the set's own run minus load s and start s, over every clip "
            "(decoding included for media sets); B/clip: the set's shards on disk; read ms: warm load_split of the "
            "set alone (best of 3); present: rows with features; faces: share of all sampled frames in which a face was found"
        )
    if results and n < 10:
        notes.append(
            f"only {n} clip(s): each run's fixed costs (shard files, sidecars, first batch) dominate, so "
            "ms/clip, B/clip and the 10k projection are upper bounds"
        )
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
