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

On a CPU each ReLU runs inside its convolution (oneDNN's post-op), and the rest of the step,
memory-bound passes over the convolutions' outputs, runs as one compiled pass each way
(emo.fuse.packed_pool); the backward is written out (`_PackedConvs`) rather than left to a
dozen autograd kernels. The weights stay those of the seed's `nn.Conv1d` layers, under the
same names, so checkpoints load unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from emo.fuse.packed_pool import numba_kernels, pool_sums, relu_backward, route_gradient
from emo.fuse.threads import large_kernels

ROW_MULTIPLE = 16  # rows are a multiple of this many frames: few distinct shapes per run
MIN_FRAMES = 6  # two k=3 valid convolutions and a pool of 2 need 6 frames for one output
# oneDNN's convolution with a fused element-wise post-op, as PyTorch's own compiler calls it;
# absent from builds without oneDNN, where the ReLU runs as its own pass.
_ONEDNN_POINTWISE = (
    getattr(torch.ops.mkldnn, "_convolution_pointwise", None) if torch.backends.mkldnn.is_available() else None
)


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
        # first-fit decreasing, compiled: a Python loop over 128 clips took over 1 ms a batch
        row, offset, rows = numba_kernels().first_fit_decreasing(need, width)
        self.rows = rows = int(rows)
        self.need = need
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
    """conv -> ReLU -> conv -> ReLU -> pool of 2 -> per-clip mean over packed rows, with a
    hand-written backward.

    Autograd's version ran ten small kernels besides the convolutions (max-pool indices and
    their zero-filled gradient, two ReLU masks, a scatter for the means, weight layout
    copies), which took as long as the convolutions' backward. Here the pool keeps which
    frame of each pair won (the first on ties, as `max_pool1d` has it), and the backward is
    the convolutions' own backward calls around one routing pass and one ReLU mask
    (emo.fuse.packed_pool), which also sum the biases' gradients. A test holds forward and
    gradients to the plain padded `nn.Conv1d` model clip by clip, on both of packed_pool's paths.
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
        hidden = _conv_relu(rows, k1, b1.to(dtype))  # [R, C1, 1, W-2]
        out = _conv_relu(hidden, k2, b2.to(dtype))  # [R, C2, 1, W-4]; the pool of 2 follows
        keep = any(ctx.needs_input_grad)  # training; evaluation keeps nothing
        sums, kept = pool_sums(out, owner, counts.shape[0], keep)
        if keep:
            ctx.save_for_backward(rows, hidden, owner, counts, k1, k2, *kept)
            ctx.shapes = (w1.shape, w2.shape, b1.dtype)
        return sums / counts.unsqueeze(1)

    @staticmethod
    def _backward(ctx, grad):
        rows, hidden, owner, counts, k1, k2, *kept = ctx.saved_tensors
        shape1, shape2, param_dtype = ctx.shapes
        per_clip = torch.cat(
            [grad.float() / counts.unsqueeze(1), grad.new_zeros(1, grad.shape[1], dtype=torch.float32)]
        )
        # Where the compiled kernels ran they also summed the biases' gradients on the way,
        # and oneDNN's own bias reduction (a slow single pass) is skipped.
        grad_out, grad_b2 = route_gradient(per_clip, owner, tuple(kept), rows.dtype)  # [R, C2, 1, W-4]
        conv_args = ([1, 1], [0, 0], [1, 1], False, [0, 0], 1)
        grad_hidden, grad_k2, conv_b2 = torch.ops.aten.convolution_backward(
            grad_out, hidden, k2, [k2.shape[0]], *conv_args, [True, True, grad_b2 is None]
        )
        grad_b1 = relu_backward(grad_hidden, hidden)  # the first ReLU, in place
        _, grad_k1, conv_b1 = torch.ops.aten.convolution_backward(
            grad_hidden, rows, k1, [k1.shape[0]], *conv_args, [False, True, grad_b1 is None]
        )
        grad_b1 = conv_b1 if grad_b1 is None else grad_b1
        grad_b2 = conv_b2 if grad_b2 is None else grad_b2
        return (
            None,
            grad_k1.reshape(shape1).to(param_dtype),
            grad_b1.to(param_dtype),
            grad_k2.reshape(shape2).to(param_dtype),
            grad_b2.to(param_dtype),
            None,
            None,
        )


def _conv_relu(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """ReLU(conv2d(x)), the ReLU applied by oneDNN inside the convolution on a CPU (its
    post-op: no second pass over the output), as a separate in-place pass elsewhere."""
    if x.device.type == "cpu" and _ONEDNN_POINTWISE is not None:
        return _ONEDNN_POINTWISE(x, weight, bias, [0, 0], [1, 1], [1, 1], 1, "relu", [], "")
    return F.conv2d(x, weight, bias).clamp_min_(0)


def _nhwc(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """A Conv1d weight [out, in, k] as a channels-last Conv2d weight [out, in, 1, k]."""
    return weight.to(dtype).unsqueeze(2).contiguous(memory_format=torch.channels_last)
