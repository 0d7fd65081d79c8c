"""The mel-CNN's training-step rate beside this CPU's matmul rate, for bench/fit.py.

The mel-CNN's convolutions are ~95 % of a fit's FLOPs, so their achieved GFLOP/s against the
same run's float32 matmul says how close a fit runs to what the CPU can do; the convolutions
timed alone on the step's shapes say how much of the gap is the step's other work.
"""

from __future__ import annotations

import time

from _timing import Timing


def mel_cnn_rates(repeats: int, timing: Timing) -> dict[str, list[float]]:
    """GFLOP/s per round of one mel-CNN training step (forward, backward, fused AdamW) in fp32
    and under bf16 autocast, of its convolutions alone, and of a float32 2048^2 matmul,
    interleaved in this process.

    FLOPs counted are the convolutions' alone (conv1 forward and weight gradient, conv2
    forward, weight and input gradients: the mel needs no gradient); the time is the whole
    step's, so the pool, the means, the projection and the optimiser count against it."""
    import torch

    from emo.fuse.model import MelCNN

    torch.manual_seed(0)
    batch, time_steps = 32, 400
    cnn = MelCNN()
    optimizer = torch.optim.AdamW(cnn.parameters(), lr=1e-4, fused=True)
    mel = torch.randn(batch, 40, time_steps)
    lengths = torch.full((batch,), time_steps)
    conv1 = 2 * 40 * 64 * 3 * (time_steps - 2)
    conv2 = 2 * 64 * 128 * 3 * (time_steps - 4)
    flops = batch * (2 * conv1 + 3 * conv2)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = cnn(mel, lengths)
        out.float().square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def rate(work, flop: float, calls: int):
        def side() -> float:
            started = time.perf_counter()
            for _ in range(calls):
                work()
            return flop * calls / (time.perf_counter() - started) / 1e9

        return side

    # The same convolutions with nothing around them (forward, and the backward calls the step
    # makes, on the step's channels-last shapes): the ceiling the step's other work falls from.
    conv = torch.nn.functional.conv2d
    last = torch.channels_last
    rows = torch.randn(batch, 40, 1, time_steps).contiguous(memory_format=last)
    k1 = torch.randn(64, 40, 1, 3).contiguous(memory_format=last)
    k2 = torch.randn(128, 64, 1, 3).contiguous(memory_format=last)
    hidden = conv(rows, k1).contiguous(memory_format=last)
    grad_out = torch.randn(batch, 128, 1, time_steps - 4).contiguous(memory_format=last)
    grad_hidden = torch.randn_like(hidden)
    same = ([1, 1], [0, 0], [1, 1], False, [0, 0], 1)
    backward = torch.ops.aten.convolution_backward

    def convolutions() -> None:
        conv(rows, k1)
        conv(hidden, k2)
        backward(grad_out, hidden, k2, [128], *same, [True, True, True])
        backward(grad_hidden, rows, k1, [64], *same, [False, True, True])

    sides = {
        "mel-CNN fp32": rate(lambda: step(False), flops, 10),
        "mel-CNN bf16": rate(lambda: step(True), flops, 10),
        "convolutions alone fp32": rate(convolutions, flops, 10),
        "matmul fp32": rate(lambda: a @ b, 2 * 2048**3, 5),
    }
    for side in sides.values():  # warm-up: oneDNN builds its kernels on first use
        side()
    return timing.interleave(sides, repeats, label="mel-CNN round")
