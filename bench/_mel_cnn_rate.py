"""The mel-CNN's training-step rate beside this CPU's matmul rate, for bench/fit.py and
bench/mel_cnn_options.py.

The mel-CNN's convolutions are ~95 % of a fit's FLOPs, so their achieved GFLOP/s against the
same run's float32 matmul says how close a fit runs to what the CPU can do. The ceiling side
runs the step's convolutions in the step's order and as the step runs them, with the weights'
layout copies and the fused AdamW, and nothing else: no pool, per-clip mean or gather. No
rearrangement of that other work, however fused, can make the step faster than that.
"""

from __future__ import annotations

import time
from typing import Callable

from _timing import Timing

BATCH, FRAMES = 32, 400  # a MELD batch: 32 clips of ~4 s of 100 frame/s log-mel
CONV1 = 2 * 40 * 64 * 3 * (FRAMES - 2)
CONV2 = 2 * 64 * 128 * 3 * (FRAMES - 4)
# FLOPs counted are the convolutions' alone: conv1 forward and weight gradient, conv2
# forward, weight and input gradients (the mel needs no gradient). A side's time is the whole
# step's, so the pool, the means, the projection and the optimiser count against it.
STEP_FLOPS = BATCH * (2 * CONV1 + 3 * CONV2)
MATMUL_N = 2048


def rate(work: Callable[[], object], flop: float, calls: int) -> Callable[[], float]:
    """A side for Timing.interleave: GFLOP/s of `calls` back-to-back calls of `work`."""

    def side() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            work()
        return flop * calls / (time.perf_counter() - started) / 1e9

    return side


def matmul_side() -> Callable[[], float]:
    import torch

    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    return rate(lambda: a @ b, 2 * MATMUL_N**3, 5)


def model_step(model, mel, lengths=None, bf16: bool = False, fit_threads: bool = True) -> Callable[[], None]:
    """One training step of a mel model: forward, a loss, backward, fused AdamW; with
    `fit_threads`, on threads as `emo fit` runs its steps (emo.fuse.threads: small kernels on
    one thread, the mel-CNN's convolutions on all)."""
    import contextlib

    import torch

    from emo.fuse.threads import small_kernels

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    inputs = (mel,) if lengths is None else (mel, lengths)

    def step() -> None:
        with small_kernels() if fit_threads else contextlib.nullcontext():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(*inputs)
            out.float().square().mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return step


def convolution_chain(gradients: str = "blas") -> Callable[[], None]:
    """The step's convolutions alone, in order (conv1 -> conv2 forward with their ReLUs fused
    in, conv2's weight and input gradients, conv1's weight gradient) along one strip of the
    batch's frames, with the weights' per-step layout copies and a fused AdamW over the model's
    parameters: the ceiling for any arrangement of the step's other work.

    `gradients="blas"` computes the gradients as emo's step does (emo.fuse.strip_conv: BLAS
    products per tap); `"onednn"` as oneDNN's backward convolutions, biases included, as the
    step did before."""
    import torch

    from emo.fuse.model import MelCNN
    from emo.fuse.strip_conv import channels_last_weight, conv_relu, input_gradient, weight_gradient
    from emo.fuse.threads import large_kernels, small_kernels

    cnn = MelCNN()
    first, second = cnn.conv[0], cnn.conv[2]
    optimizer = torch.optim.AdamW(cnn.parameters(), lr=1e-4, fused=True)
    length = BATCH * FRAMES
    strip = torch.randn(length, 40)
    grad_out = torch.randn(length - 4, 128)
    same = ([1, 1], [0, 0], [1, 1], False, [0, 0], 1)
    backward = torch.ops.aten.convolution_backward

    def image(x):  # [N, C] as [1, C, 1, N] channels-last, a view
        return x.view(1, 1, *x.shape).permute(0, 3, 1, 2)

    def chain() -> None:
        with small_kernels():  # threads as emo's step has them: all for the convolutions
            with large_kernels():
                k1 = channels_last_weight(first.weight.detach(), torch.float32)
                k2 = channels_last_weight(second.weight.detach(), torch.float32)
                hidden = conv_relu(strip, k1, first.bias.detach())
                conv_relu(hidden, k2, second.bias.detach())
                if gradients == "blas":
                    grad_k2, grad_b2 = weight_gradient(hidden, grad_out), grad_out.sum(0)
                    grad_hidden = input_gradient(grad_out, second.weight.detach())
                    grad_k1, grad_b1 = weight_gradient(strip, grad_hidden), grad_hidden.sum(0)
                else:
                    grad_hidden, grad_k2, grad_b2 = backward(
                        image(grad_out), image(hidden), k2, [128], *same, [True, True, True]
                    )
                    _, grad_k1, grad_b1 = backward(grad_hidden, image(strip), k1, [64], *same, [False, True, True])
                    grad_k1, grad_k2 = grad_k1.squeeze(2), grad_k2.squeeze(2)
            first.weight.grad, first.bias.grad = grad_k1, grad_b1
            second.weight.grad, second.bias.grad = grad_k2, grad_b2
            for parameter in cnn.proj.parameters():
                parameter.grad = torch.zeros_like(parameter)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return chain


def has_bf16_units() -> bool:
    """emo.fuse.strip_conv.cpu_has_bf16_units, imported when asked (torch loads with it). Without
    bf16 units a bf16 figure says nothing about bf16, and ten such steps a round drag the
    other sides."""
    from emo.fuse.strip_conv import cpu_has_bf16_units

    return cpu_has_bf16_units()


def mel_cnn_rates(repeats: int, timing: Timing) -> dict[str, list[float]]:
    """GFLOP/s per round of one mel-CNN training step in fp32 and, where the CPU has bf16
    units, under bf16 autocast, of the convolution chain alone (the ceiling), and of a
    float32 2048^2 matmul, interleaved."""
    import torch

    from emo.fuse.allocator import keep_freed_memory
    from emo.fuse.model import MelCNN

    keep_freed_memory()  # as `emo fit` sets it on a CPU (emo.fuse.allocator)
    torch.manual_seed(0)
    mel = torch.randn(BATCH, FRAMES, 40).transpose(1, 2)  # laid out as a fit's batches are (TensorSplit.gather_mel)
    lengths = torch.full((BATCH,), FRAMES)
    sides = {"mel-CNN fp32": rate(model_step(MelCNN(), mel, lengths), STEP_FLOPS, 10)}
    if has_bf16_units():
        sides["mel-CNN bf16"] = rate(model_step(MelCNN(), mel, lengths, bf16=True), STEP_FLOPS, 10)
    sides["convolution chain alone fp32"] = rate(convolution_chain(), STEP_FLOPS, 10)
    sides["matmul fp32"] = matmul_side()
    for side in sides.values():  # warm-up: oneDNN builds its kernels on first use
        side()
    return timing.interleave(sides, repeats, label="mel-CNN round")
