"""The mel-CNN's work around its convolutions along the strip of a batch's clips: the pool of 2
with each clip's sum over its own outputs, the route of each clip's gradient back to the frame
that won its pool pair, and the first ReLU's backward.

On a CPU this work decided the step's speed as much as the convolutions did: it is memory
bound, and as PyTorch operations it was eight passes over the ~6.5 MB of conv2's outputs
(maximum, a clamp, the pair difference, index_add; a gather, two masks, a subtraction),
each streaming from the last-level cache, plus the biases' gradients as separate reductions.
For float32 on a CPU each step here is one parallel pass compiled by numba
(emo.fuse._numba_kernels), and the backward passes sum the biases' gradients on the way:

- forward: each output pair's max into its clip's sum, and one byte saying which frame won
  (neither: both ReLU'd to 0; the first, ties included, as `max_pool1d` has it; the second);
- backward: each frame gets its clip's gradient where it won, else 0.

The chunks' partial sums are added up in numpy, on the calling thread: as a torch operation
inside the mel-CNN's all-threads block each such few-KB sum first woke the sleeping OpenMP
threads (emo.fuse.threads), ~0.1 ms, as long as the compiled pass over the strip.

Elsewhere (a GPU, bf16 under autocast) the same functions run as PyTorch operations. A test
holds the two paths to each other and both to the padded `nn.Conv1d` model. The convolutions'
outputs reach here through their ReLU, so the pool's max needs no clamp.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


CHUNKS = 16  # the compiled passes' parallel pieces: equal spans of the strip, partial sums each


def pool_sums(out: Tensor, owner: Tensor, batch: int, keep: bool) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Per-clip float32 sums [batch, C] of the pool of 2 over `out` [N, C] (position-major,
    non-negative), pooled position p belonging to clip `owner[p]` (`batch`: to nobody); and,
    when `keep`, what `route_gradient` needs."""
    n, c = out.shape
    pairs = out.view(n // 2, 2, c)
    if compiled(out):
        partial = np.zeros((CHUNKS, batch + 1, c), dtype=np.float32)
        won = torch.empty((n // 2, c) if keep else (0, 0), dtype=torch.uint8)
        _threaded_kernels().pool_sums(pairs.numpy(), owner.numpy(), partial, won.numpy(), keep)
        return torch.from_numpy(partial.sum(0)[:batch]), (won,)
    pooled = torch.maximum(pairs[:, 0], pairs[:, 1])  # [N/2, C]
    sums = pooled.new_zeros(batch + 1, c, dtype=torch.float32).index_add_(0, owner, pooled.float())
    if not keep:
        return sums[:batch], ()
    lead = torch.sub(pairs[:, 1], pairs[:, 0])  # > 0 where the second frame of a pair wins
    return sums[:batch], (pooled, lead)


def route_gradient(
    per_clip: Tensor, owner: Tensor, kept: tuple[Tensor, ...], dtype: torch.dtype
) -> tuple[Tensor, Tensor | None]:
    """The gradient at `out` [N, C] from each clip's gradient `per_clip` [batch + 1, C] (row
    `batch` zero: nobody's positions get nothing); and, where the compiled kernel ran, its sum
    over positions (the bias gradient), else None."""
    if len(kept) == 1:  # pool_sums ran compiled
        (won,) = kept
        half, c = won.shape
        grad_out = torch.empty(half, 2, c, dtype=torch.float32)
        bias_partial = np.empty((CHUNKS, c), dtype=np.float32)  # every row written
        _threaded_kernels().route(per_clip.numpy(), owner.numpy(), won.numpy(), grad_out.numpy(), bias_partial)
        return grad_out.view(2 * half, c), torch.from_numpy(bias_partial.sum(0))
    pooled, lead = kept
    half, c = pooled.shape
    spread = per_clip.to(dtype).index_select(0, owner)
    # threshold_backward(g, x, 0) is g where x > 0, else 0: one fast pass each (torch.where
    # over bool masks was slower than the convolution's backward here).
    threshold_backward = torch.ops.aten.threshold_backward
    spread = threshold_backward(spread, pooled, 0)  # the ReLU: no gradient where both were <= 0
    grad_out = torch.empty(half, 2, c, dtype=dtype, device=per_clip.device)
    threshold_backward.grad_input(spread, lead, 0, grad_input=grad_out[:, 1])  # the second won
    torch.sub(spread, grad_out[:, 1], out=grad_out[:, 0])  # else the first (ties too)
    return grad_out.view(2 * half, c), None


def relu_backward(grad: Tensor, hidden: Tensor) -> Tensor | None:
    """In place, `grad` [N, C] where `hidden` [N, C] > 0, else 0; returns its sum over
    positions (the bias gradient) where the compiled kernel ran, else None."""
    if not (compiled(grad) and compiled(hidden)):
        torch.ops.aten.threshold_backward.grad_input(grad, hidden, 0, grad_input=grad)
        return None
    bias_partial = np.empty((CHUNKS, grad.shape[1]), dtype=np.float32)  # every row written
    _threaded_kernels().relu_backward(grad.numpy(), hidden.numpy(), bias_partial)
    return torch.from_numpy(bias_partial.sum(0))


def compiled(tensor: Tensor) -> bool:
    """Whether the compiled kernels take this tensor: float32, on a CPU, contiguous."""
    return tensor.device.type == "cpu" and tensor.dtype == torch.float32 and tensor.is_contiguous()


def _threaded_kernels():
    """The compiled kernels, their parallel loops on as many threads as torch has now (all the
    fit's threads inside emo.fuse.threads.large_kernels())."""
    kernels = numba_kernels()
    kernels.use_threads(torch.get_num_threads())
    return kernels


def numba_kernels():
    """emo.fuse._numba_kernels, imported on first use (numba's import costs ~0.2 s)."""
    from emo.fuse import _numba_kernels

    return _numba_kernels
