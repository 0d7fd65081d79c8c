"""The mel-spectrogram CNN: two k=3 convolutions over time, a pool of 2, a mean over each clip's
real frames, a projection.

It is about 95 % of a fit's FLOPs, so how it runs decides how fast `emo fit` is. Clips are
packed end to end into rows (first-fit decreasing, each clip at an even offset) and the
convolutions run once over the rows, whatever the batch is made of:

- no padding is computed: a dialogue batch mixes 0.2 s and 10 s clips, and padding each
  clip to the longest (or encoding small length-sorted groups one call each) cost a context
  fit twice the convolution time of a length-bucketed plain fit;
- one large call per layer, channels-last (NHWC), which is oneDNN's fast layout for these
  shapes on CPU (and cuDNN's on a GPU); the rows' width is a multiple of 16, so a fit sees a
  few dozen shapes rather than one per batch;
- a valid convolution's output at a position reads only the frames of the clip that starts
  there, so outputs that straddle two clips are never pooled: a clip's embedding is the same
  as if it were encoded alone (a test holds this against the plain padded convolution).

The pool of 2 runs before the second ReLU (max then ReLU is ReLU then max), so the ReLU touches
half the values, and the backward is written out (`_PackedConvs`) rather than left to a dozen
autograd kernels. The weights stay those of the seed's `nn.Conv1d` layers, under the same
names, so checkpoints load unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from emo.fuse.threads import large_kernels

ROW_MULTIPLE = 16  # rows are a multiple of this many frames: few distinct shapes per run
MIN_FRAMES = 6  # two k=3 valid convolutions and a pool of 2 need 6 frames for one output


def output_lengths(lengths: Tensor) -> Tensor:
    """Frames left after two k=3 valid convolutions and a pool of 2 (at least 1)."""
    return ((lengths - 4) // 2).clamp_min(1)


class RowPlan:
    """Where each clip sits in the packed rows, and which pooled outputs are its own.

    `need` frames per clip: its length, at least MIN_FRAMES, rounded up to even so every
    clip starts at an even offset and the pool of 2 never pairs frames of two clips.
    """

    def __init__(self, lengths: np.ndarray):
        lengths = np.asarray(lengths, dtype=np.int64)
        need = np.maximum(lengths, MIN_FRAMES)
        need = need + need % 2
        self.width = width = int(-(-int(need.max()) // ROW_MULTIPLE) * ROW_MULTIPLE)
        row = np.zeros(len(need), dtype=np.int64)
        offset = np.zeros(len(need), dtype=np.int64)
        free = np.zeros(len(need), dtype=np.int64)  # room left per row; at most one row per clip
        rows = 0
        for clip in np.argsort(-need, kind="stable"):  # first-fit decreasing
            fits = np.flatnonzero(free[:rows] >= need[clip])
            target = int(fits[0]) if len(fits) else rows
            if target == rows:
                free[rows], rows = width, rows + 1
            row[clip], offset[clip] = target, width - free[target]
            free[target] -= need[clip]
        self.rows, self.need = rows, need
        self.pooled_width = (width - 4) // 2
        clip_of_frame = np.repeat(np.arange(len(need)), need)
        first = np.repeat(np.cumsum(need) - need, need)
        self._clip, self._frame = clip_of_frame, np.arange(len(clip_of_frame)) - first
        self._target = np.repeat(row * width + offset, need) + self._frame  # position in rows*width
        # Frames a clip is given beyond its length (up to MIN_FRAMES, and the one frame an odd
        # length is rounded up by) are zero, as the seed's zero padding made them: whatever the
        # input holds there never reaches the output, and gets no gradient.
        self.blank = self._target[self._frame >= np.repeat(lengths, need)]
        # Pooled outputs: clip c owns out_len[c] positions from row*pooled_width + offset/2.
        out_len = np.maximum((lengths - 4) // 2, 1)
        self.out_len = out_len
        segment = np.full(rows * self.pooled_width, len(need), dtype=np.int64)  # len(need) = nobody's
        owned = np.repeat(row * self.pooled_width + offset // 2, out_len)
        owned += np.arange(len(owned)) - np.repeat(np.cumsum(out_len) - out_len, out_len)
        segment[owned] = np.repeat(np.arange(len(need)), out_len)
        self.segment = segment

    def source_index(self, frames: int) -> np.ndarray:
        """For each position of the rows, the row of a [B*frames, n_mels] source to copy.

        A row's tail after its last clip copies frame 0 (any finite value will do: no kept
        output reads it, and its outputs get zero gradient); a clip's frames past the batch's
        `frames` (only the one frame an odd length is rounded up by) likewise never reach a
        kept output, so they are clamped."""
        index = np.zeros(self.rows * self.width, dtype=np.int64)
        index[self._target] = self._clip * frames + np.minimum(self._frame, frames - 1)
        return index


class MelCNN(nn.Module):
    """Two small 1-D convolutions over time, then an average over the clip's real frames.

    Padding frames are excluded from the pool, so a clip's embedding does not depend on
    how long the longest clip in its batch happened to be, nor on which clips share its batch.
    """

    def __init__(self, n_mels: int = 40, channels: tuple[int, int] = (64, 128), out_dim: int = 256):
        super().__init__()
        # The seed's layers, kept as modules so the state dict keys (conv.0, conv.2, proj) and
        # the seeded initialisation stay what they were; forward reads their weights.
        self.conv = nn.Sequential(
            nn.Conv1d(n_mels, channels[0], kernel_size=3),
            nn.ReLU(),
            nn.Conv1d(channels[0], channels[1], kernel_size=3),
            nn.ReLU(),
            nn.MaxPool1d(2),
        )
        self.proj = nn.Linear(channels[1], out_dim)

    output_lengths = staticmethod(output_lengths)

    def forward(self, mel: Tensor, lengths: Tensor) -> Tensor:
        """mel [B, n_mels, T] channels-first, lengths [B] -> [B, out_dim]; frames past a clip's
        length are never read (a clip shorter than MIN_FRAMES is zero-padded, as the seed did)."""
        if mel.requires_grad:  # cached features are inputs: the backward computes no gradient for them
            raise ValueError("MelCNN does not backpropagate into the mel frames; pass them without requires_grad.")
        plan = RowPlan(lengths.detach().cpu().numpy())
        device = mel.device
        batch, n_mels, frames = mel.shape
        if frames < MIN_FRAMES:  # the seed's zero padding for clips too short for one output
            mel = F.pad(mel, (0, MIN_FRAMES - frames))
            frames = MIN_FRAMES
        # One gather from [B*T, n_mels] (a view when the batch is channels-last in memory, as
        # TensorSplit.gather_mel makes it) straight into the rows.
        source = mel.transpose(1, 2).reshape(batch * frames, n_mels)
        rows = source.index_select(0, torch.as_tensor(plan.source_index(frames), device=device))
        if len(plan.blank):
            rows.index_fill_(0, torch.as_tensor(plan.blank, device=device), 0.0)
        # [R*W, n_mels] is [R, n_mels, 1, W] in channels-last memory: no transpose needed.
        rows = rows.view(plan.rows, 1, plan.width, n_mels).permute(0, 3, 1, 2)
        # Under autocast the convolutions run in its dtype (bf16 on a CPU with AMX); the means
        # and the weights' gradients stay float32, and the projection is autocast's, as any Linear.
        dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else rows.dtype
        first, second = self.conv[0], self.conv[2]
        owner = torch.as_tensor(plan.segment, device=device)
        counts = torch.as_tensor(plan.out_len, device=device, dtype=torch.float32)
        with torch.autocast(device.type, enabled=False):
            means = _PackedConvs.apply(
                rows.to(dtype), first.weight, first.bias, second.weight, second.bias, owner, counts
            )
        return self.proj(means)


class _PackedConvs(torch.autograd.Function):
    """conv -> ReLU -> conv -> pool of 2 -> ReLU -> per-clip mean over packed rows, with a
    hand-written backward.

    Autograd's version ran ten small kernels besides the convolutions (max-pool indices and
    their zero-filled gradient, two ReLU masks, a scatter for the means, weight layout
    copies), which took as long as the convolutions' backward. Here the pool keeps the
    difference of each pair (which frame won: the first on ties, as `max_pool1d` has it) and
    the backward is one gather, three one-pass masks and the convolutions' own backward calls. A test
    holds forward and gradients to the plain padded `nn.Conv1d` model clip by clip.
    """

    @staticmethod
    def forward(ctx, rows, w1, b1, w2, b2, owner, counts):
        with large_kernels():  # all the fit's threads (emo.fuse.threads)
            return _PackedConvs._forward(ctx, rows, w1, b1, w2, b2, owner, counts)

    @staticmethod
    def backward(ctx, grad):
        with large_kernels():
            return _PackedConvs._backward(ctx, grad)

    @staticmethod
    def _forward(ctx, rows, w1, b1, w2, b2, owner, counts):
        dtype = rows.dtype
        k1, k2 = _nhwc(w1, dtype), _nhwc(w2, dtype)
        hidden = F.conv2d(rows, k1, b1.to(dtype)).clamp_min_(0)  # [R, C1, 1, W-2]
        out = F.conv2d(hidden, k2, b2.to(dtype))  # [R, C2, 1, W-4]
        r, c2, width = out.shape[0], out.shape[1], out.shape[3]
        pairs = out.permute(0, 2, 3, 1).reshape(r, width // 2, 2, c2)  # a view of channels-last memory
        pooled = torch.maximum(pairs[:, :, 0], pairs[:, :, 1]).clamp_min_(0)  # [R, W'/2, C2]
        flat = pooled.view(-1, c2).float()
        batch = counts.shape[0]
        sums = flat.new_zeros(batch + 1, c2).index_add_(0, owner, flat)[:batch]  # row `batch`: nobody's
        if any(ctx.needs_input_grad):  # training; evaluation keeps nothing
            lead = torch.sub(pairs[:, :, 1], pairs[:, :, 0])  # > 0 where the second frame of a pair wins
            ctx.save_for_backward(rows, hidden, lead, pooled, owner, counts, k1, k2)
            ctx.shapes = (w1.shape, w2.shape, b1.dtype)
        return sums / counts.unsqueeze(1)

    @staticmethod
    def _backward(ctx, grad):
        rows, hidden, lead, pooled, owner, counts, k1, k2 = ctx.saved_tensors
        shape1, shape2, param_dtype = ctx.shapes
        dtype = rows.dtype
        r, half, c2 = pooled.shape
        per_clip = torch.cat([grad.float() / counts.unsqueeze(1), grad.new_zeros(1, c2, dtype=torch.float32)])
        spread = per_clip.to(dtype).index_select(0, owner).view(r, half, c2)
        # threshold_backward(g, x, 0) is g where x > 0, else 0: one fast pass each (torch.where
        # over bool masks was 1.5 ms per call here, longer than the convolution's backward).
        threshold_backward = torch.ops.aten.threshold_backward
        spread = threshold_backward(spread, pooled, 0)  # the ReLU after the pool
        grad_out = torch.empty(r, half, 2, c2, dtype=dtype, device=grad.device)
        threshold_backward.grad_input(spread, lead, 0, grad_input=grad_out[:, :, 1])  # second frame won
        torch.sub(spread, grad_out[:, :, 1], out=grad_out[:, :, 0])  # else the first (ties too, as max_pool1d)
        grad_out = grad_out.view(r, 1, 2 * half, c2).permute(0, 3, 1, 2)  # [R, C2, 1, W-4] channels-last
        conv_args = ([1, 1], [0, 0], [1, 1], False, [0, 0], 1)
        grad_hidden, grad_k2, grad_b2 = torch.ops.aten.convolution_backward(
            grad_out, hidden, k2, [k2.shape[0]], *conv_args, [True, True, True]
        )
        grad_hidden = threshold_backward(grad_hidden, hidden, 0)  # the first ReLU
        _, grad_k1, grad_b1 = torch.ops.aten.convolution_backward(
            grad_hidden, rows, k1, [k1.shape[0]], *conv_args, [False, True, True]
        )
        return (
            None,
            grad_k1.reshape(shape1).to(param_dtype),
            grad_b1.to(param_dtype),
            grad_k2.reshape(shape2).to(param_dtype),
            grad_b2.to(param_dtype),
            None,
            None,
        )


def _nhwc(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """A Conv1d weight [out, in, k] as a channels-last Conv2d weight [out, in, 1, k]."""
    return weight.to(dtype).unsqueeze(2).contiguous(memory_format=torch.channels_last)
