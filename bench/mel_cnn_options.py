"""The ways to run the mel-CNN's training step on this CPU, side by side against the same run's
float32 matmul (issue #22: the step at >= 0.60x of the fp32 matmul rate).

Each side is one training step (forward, a loss, backward, fused AdamW) on a batch of 32 clips
x 400 frames, counted by the convolutions' FLOPs alone (bench/_mel_cnn_rate.py), all sides
interleaved round by round (bench/_timing.py):

- emo's step: the batch's clips end to end on one channels-last strip, the backward written
  out (`emo/fuse/mel_cnn.py`, `emo/fuse/strip_conv.py`), what `emo fit` runs;
- the seed's model as PyTorch writes it (padded `nn.Conv1d`, ReLU, `MaxPool1d`, mean), eager;
- the same seed model under `torch.compile` (TorchInductor's generated C++), compile time
  reported separately;
- the ceiling: the step's convolutions as it runs them, weight copies and AdamW, nothing else;
- the same chain with its gradients as oneDNN's backward convolutions (the step's way
  before): BLAS products per tap compute the weights' gradients about twice as fast here;
- the float32 2048^2 matmul.

It also times fusing each ReLU into its convolution (oneDNN's post-op, through PyTorch's
`torch.ops.mkldnn._convolution_pointwise`) against a separate ReLU pass, to say what that
fusion would save per step.

    .venv/bin/python bench/mel_cnn_options.py
    .venv/bin/python bench/mel_cnn_options.py --repeats 5 --no-compile

Exit 3 when other work made the figures untrustworthy (bench/_timing.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _mel_cnn_rate import BATCH, FRAMES, STEP_FLOPS, convolution_chain, matmul_side, model_step, rate
from _timing import Timing, add_arguments

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# emo before torch: emo sets OpenMP's passive wait (emo/__init__.py) and `emo fit` its short spin
# (emo/fuse/openmp_wait.py), which only take effect if set before torch loads OpenMP; every side
# then runs on the threads `emo fit` has.
from emo.fuse.openmp_wait import spin_between_kernels  # noqa: E402

spin_between_kernels()


def seed_model():
    """The seed's mel-CNN as plain PyTorch: every clip here is FRAMES long, so its masked mean
    over real frames is a plain mean."""
    from torch import nn

    class SeedMelCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Sequential(
                nn.Conv1d(40, 64, 3), nn.ReLU(), nn.Conv1d(64, 128, 3), nn.ReLU(), nn.MaxPool1d(2)
            )
            self.proj = nn.Linear(128, 256)

        def forward(self, mel):
            return self.proj(self.conv(mel).mean(2))

    return SeedMelCNN()


def compiled_side(mel):
    """The seed model's step under torch.compile, and the seconds its first step took (the
    compilation); (None, reason) when this machine cannot compile."""
    import torch

    model = torch.compile(seed_model())
    step = model_step(model, mel, fit_threads=False)
    started = time.perf_counter()
    try:
        step()
    except Exception as error:  # no C++ compiler, an inductor bug: say so, keep the other sides
        return None, f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
    return step, time.perf_counter() - started


def relu_pairs() -> dict:
    """Milliseconds per step for both convolutions' forward with the ReLU as its own pass, and
    with it fused into the convolution as oneDNN's post-op."""
    import torch

    conv = torch.nn.functional.conv2d
    pointwise = torch.ops.mkldnn._convolution_pointwise
    last = torch.channels_last
    rows = torch.randn(1, 40, 1, BATCH * FRAMES).contiguous(memory_format=last)  # the strip, as emo runs it
    k1, b1 = torch.randn(64, 40, 1, 3).contiguous(memory_format=last), torch.randn(64)
    k2, b2 = torch.randn(128, 64, 1, 3).contiguous(memory_format=last), torch.randn(128)
    hidden = conv(rows, k1, b1).clamp_min_(0)
    same = ([0, 0], [1, 1], [1, 1], 1)

    def separate() -> None:
        conv(rows, k1, b1).clamp_min_(0)
        conv(hidden, k2, b2).clamp_min_(0)

    def fused() -> None:
        pointwise(rows, k1, b1, *same, "relu", [], "")
        pointwise(hidden, k2, b2, *same, "relu", [], "")

    if not torch.equal(pointwise(rows, k1, b1, *same, "relu", [], ""), conv(rows, k1, b1).clamp_min_(0)):
        raise SystemExit("the fused convolution + ReLU differs from the separate one; its timing would mislead")
    return {"ReLU as its own pass": _ms(separate), "ReLU as a oneDNN post-op": _ms(fused)}


def _ms(work, calls: int = 20):
    def side() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            work()
        return (time.perf_counter() - started) / calls * 1e3

    return side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the torch.compile side (its compile takes ~10 s)"
    )
    add_arguments(parser, repeats=3)
    args = parser.parse_args()
    import torch

    from emo.fuse.allocator import keep_freed_memory
    from emo.fuse.model import MelCNN

    keep_freed_memory()  # as `emo fit` sets it on a CPU (emo.fuse.allocator)
    timing = Timing(allow_load=args.allow_load)
    torch.manual_seed(0)
    mel = torch.randn(BATCH, FRAMES, 40).transpose(1, 2)  # laid out as a fit's batches are (TensorSplit.gather_mel)
    lengths = torch.full((BATCH,), FRAMES)
    sides = {
        "emo step (clips on one strip, written-out backward)": rate(model_step(MelCNN(), mel, lengths), STEP_FLOPS, 10),
        "seed model, eager autograd": rate(model_step(seed_model(), mel, fit_threads=False), STEP_FLOPS, 10),
    }
    compile_note = "skipped (--no-compile)"
    if not args.no_compile:
        step, compiled = compiled_side(mel)
        if step is None:
            compile_note = f"not measured: torch.compile failed here ({compiled})"
        else:
            sides["seed model, torch.compile"] = rate(step, STEP_FLOPS, 10)
            compile_note = f"first step, compiling included: {compiled:.1f} s"
    sides["ceiling: convolution chain + AdamW alone"] = rate(convolution_chain(), STEP_FLOPS, 10)
    sides["the chain with oneDNN's backward convolutions"] = rate(convolution_chain("onednn"), STEP_FLOPS, 10)
    sides["matmul fp32"] = matmul_side()
    sides.update(relu_pairs())
    for side in sides.values():  # warm-up: oneDNN builds its kernels on first use
        side()
    rates = timing.interleave(sides, args.repeats, label="round")

    print(f"mel-CNN training step, batch {BATCH} x {FRAMES} frames, fp32, vs float32 matmul 2048^2, interleaved:")
    for name, values in rates.items():
        if "ReLU" in name:
            continue
        print("  " + timing.figure(name, values, "GFLOP/s", 1))
    for name in rates:
        if "ReLU" in name or name == "matmul fp32":
            continue
        target = "(target >= 0.60x)" if name.startswith("emo step") else ""
        print("  " + timing.ratio(f"{name} / matmul", rates[name], rates["matmul fp32"], target))
    print(f"  torch.compile: {compile_note}")
    step_ms = [STEP_FLOPS / rate_ / 1e6 for rate_ in rates["emo step (clips on one strip, written-out backward)"]]
    saved = [a - b for a, b in zip(rates["ReLU as its own pass"], rates["ReLU as a oneDNN post-op"])]
    print("\nboth convolutions' forward with their ReLUs:")
    for name in ("ReLU as its own pass", "ReLU as a oneDNN post-op"):
        print("  " + timing.figure(name, rates[name], "ms", 2))
    print(
        "  "
        + timing.figure("saved per step by the post-op", saved, "ms", 2)
        + f" of emo's {statistics.median(step_ms):.1f} ms step"
    )
    raise SystemExit(timing.finish())


if __name__ == "__main__":
    main()
