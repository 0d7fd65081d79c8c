"""How fast a MELD-sized split loads from a warm feature cache, in both formats.

Target (issue 3): the MELD train split (9,989 clips, all modalities) loads into memory in
at most 2 s, for HDF5 and for Zarr. This writes a synthetic cache with the real shapes
(768-d CLS + mean text features, 16 x 512 visual frames, ~3.6 s of 100 frame/s x 40-band
log-mel per clip, fp16) in each format and compression, then times `load_split` warm
(best of N, after one untimed read so the page cache holds the files) next to the floor:
reading the same shard files' raw bytes into memory with plain Python I/O.

    .venv/bin/python bench/cache_load.py                # full MELD size
    .venv/bin/python bench/cache_load.py --clips 2000   # quicker
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # cache_writing: caches from ready columns

from cache_writing import V1Writer  # noqa: E402
from emo.cache import load_split, open_cache  # noqa: E402
from emo.cache.layout import SETS_DIR, list_data_files  # noqa: E402

TARGET_S = 2.0


def synthetic_shard(rng: np.random.Generator, start: int, n: int, args: argparse.Namespace) -> dict:
    """One shard of random features with MELD's shapes and clip-length distribution."""
    seconds = np.clip(rng.lognormal(np.log(3.2), 0.5, size=n), 0.3, args.max_seconds)
    lengths = np.zeros((n, args.views), dtype=np.int64)
    lengths[:] = np.round(seconds * 100).astype(np.int64)[:, None]
    lengths[rng.random(n) < 0.01] = 0  # a few clips without audio
    flat = lengths.ravel()
    starts = (np.cumsum(flat) - flat).reshape(n, args.views)
    frames = int(flat.sum())
    has_visual = rng.random(n) > 0.01
    return {
        "dialogue_id": np.arange(start, start + n, dtype=np.int32) // 10,
        "utterance_id": np.arange(start, start + n, dtype=np.int32) % 10,
        "emotion": rng.integers(0, 7, n),
        "sentiment": rng.integers(0, 3, n),
        "speaker": [f"Speaker {i % 300}" for i in range(start, start + n)],
        "has_text": np.ones(n, dtype=bool),
        "has_audio": lengths[:, 0] > 0,
        "has_visual": has_visual,
        "truncated": seconds >= args.max_seconds,
        "failure": ["" if v else "unreadable" for v in has_visual],
        "text_cls": rng.standard_normal((n, args.text_dim), dtype=np.float32).astype(np.float16),
        "text_mean": rng.standard_normal((n, args.text_dim), dtype=np.float32).astype(np.float16),
        "visual": rng.standard_normal((n, args.frames, args.visual_dim), dtype=np.float32).astype(np.float16),
        "visual_mask": np.repeat(has_visual[:, None], args.frames, axis=1),
        "mel": (rng.standard_normal((frames, args.n_mels), dtype=np.float32) * 4 - 30).astype(np.float16),
        "mel_index": np.stack([starts, lengths], axis=-1),
    }


def write_cache(root: Path, fmt: str, compression: str, args: argparse.Namespace) -> float:
    rng = np.random.default_rng(0)  # same data in every cache
    writer = V1Writer(root, {"bench": "cache_load"}, fmt=fmt, compression=compression)
    started = time.perf_counter()
    num_shards = -(-args.clips // args.shard_size)
    for index in range(num_shards):
        start = index * args.shard_size
        n = min(args.shard_size, args.clips - start)
        writer.write_shard("train", index, synthetic_shard(rng, start, n, args), [])
    writer.finalize("train", total_rows=args.clips, expected_shards=num_shards)
    return time.perf_counter() - started


def read_raw(root: Path) -> int:
    """The floor: every byte of every shard file read into one fresh buffer, no parsing
    (the same allocation and copy work `load_split` cannot avoid): the row table's shards
    and every feature set's (`sets/<modality>/<name>/train/`)."""
    folders = [root / "train", *sorted(root.glob(f"{SETS_DIR}/*/*/train"))]
    paths = [
        p for folder in folders for shard in sorted(folder.glob("shard-*.[hz]*")) for _, p in list_data_files(shard)
    ]
    sizes = [p.stat().st_size for p in paths]
    buffer = np.empty(sum(sizes), dtype=np.uint8)
    offset = 0
    for path, size in zip(paths, sizes):
        with open(path, "rb", buffering=0) as handle:
            handle.readinto(memoryview(buffer)[offset : offset + size])
        offset += size
    return offset


def best_of(fn, repeats: int) -> float:
    fn()  # warm the page cache
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=9989)
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--text-dim", type=int, default=768)
    parser.add_argument("--visual-dim", type=int, default=512)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--n-mels", type=int, default=40)
    parser.add_argument("--views", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compression", default="none,fast", help="comma list of none,fast")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp folder)")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="emo-cache-bench-", dir=args.dir))
    rows = []
    try:
        for compression in args.compression.split(","):
            for fmt in ("h5", "zarr"):
                root = base / f"{fmt}-{compression}"
                write_s = write_cache(root, fmt, compression, args)
                size = open_cache(root).bytes
                load_s = best_of(lambda: load_split(root, "train"), args.repeats)
                text_s = best_of(lambda: load_split(root, "train", modalities=("text",)), args.repeats)
                raw_s = best_of(lambda: read_raw(root), args.repeats)
                features = load_split(root, "train")
                assert len(features) == args.clips and len(features.sets) == 3, sorted(features.sets)
                rows.append((fmt, compression, size, write_s, raw_s, load_s, text_s))
                del features
                shutil.rmtree(root)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print(
        f"MELD-sized split: {args.clips} clips, text 2x{args.text_dim}, visual {args.frames}x{args.visual_dim}, "
        f"mel {args.n_mels} bands x ~3.6 s x {args.views} view(s), fp16, shards of {args.shard_size}"
    )
    header = (
        f"{'format':<6} {'compr':<5} {'size':>9} {'write s':>8} {'raw read s':>10} {'load s':>7} "
        f"{'load/raw':>8} {'load/target':>11} {'text-only s':>11}"
    )
    print(header)
    for fmt, compression, size, write_s, raw_s, load_s, text_s in rows:
        print(
            f"{fmt:<6} {compression:<5} {size / 2**20:>6.0f} MiB {write_s:>8.2f} {raw_s:>10.3f} {load_s:>7.3f} "
            f"{load_s / raw_s:>7.2f}x {load_s / TARGET_S:>10.2f}x {text_s:>11.3f}"
        )
    default = [r for r in rows if r[1] == "none"] or rows
    worst = max(r[5] for r in default)
    verdict = "meets" if worst <= TARGET_S else "MISSES"
    print(f"slowest {default[0][1]}-compression load {worst:.3f} s {verdict} the {TARGET_S:.0f} s target.")


if __name__ == "__main__":
    main()
