"""The mel-spectrogram CNN: two k=3 convolutions over time, a pool of 2, a mean over each clip's
real frames, a projection.

It is about 95 % of a fit's FLOPs, so how it runs decides how fast `emo fit` is. A batch's
clips are laid end to end on one strip of frames (each at an even offset) and each
convolution runs once along the strip, whatever the batch is made of:

- no padding is computed: a dialogue batch mixes 0.2 s and 10 s clips, and padding each
  clip to the longest (or encoding small length-sorted groups one call each) cost a context
  fit twice the convolution time of a length-bucketed plain fit;
- one large call per layer, in channels-last memory (emo.fuse.strip_conv: oneDNN forward,
  BLAS gradients); the strip's length is rounded up to one of 16 steps per doubling, so a fit
  sees a few dozen shapes rather than one per batch;
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

from emo.fuse.packed_pool import pool_sums, relu_backward, route_gradient
from emo.fuse.strip_conv import channels_last_weight, conv_relu, input_gradient, weight_gradient
from emo.fuse.threads import large_kernels

MIN_FRAMES = 6  # two k=3 valid convolutions and a pool of 2 need 6 frames for one output
STRIP_STEPS_LOG2 = 4  # a strip's length is rounded up to one of 2**4 steps per doubling


def output_lengths(lengths: Tensor) -> Tensor:
    """Frames left after two k=3 valid convolutions and a pool of 2 (at least 1)."""
    return ((lengths - 4) // 2).clamp_min(1)


def strip_length(frames: int) -> int:
    """`frames` rounded up to a multiple of 1/16 of its power of two (at least of 64): at most
    1/16 more frames, and a fit meets a few dozen lengths. oneDNN builds a kernel per shape
    (~4 ms each here); one strip length per batch would build one every step."""
    frames = int(frames)
    step = max(64, 1 << max(frames.bit_length() - 1 - STRIP_STEPS_LOG2, 0))
    return -(-frames // step) * step


class StripPlan:
    """Where each clip sits on the strip (the batch's clips end to end, in order), and which
    pooled outputs are its own.

    `need` frames per clip: its length, at least MIN_FRAMES, rounded up to even so every clip
    starts at an even offset and the pool of 2 never pairs frames of two clips.
    """

    def __init__(self, lengths: np.ndarray):
        lengths = np.asarray(lengths, dtype=np.int64)
        need = np.maximum(lengths, MIN_FRAMES)
        self.need = need = need + need % 2
        self.offset = offset = np.cumsum(need) - need
        self.length = strip_length(int(need.sum()))
        self.pooled = (self.length - 4) // 2
        frame = np.arange(int(need.sum())) - np.repeat(offset, need)  # each strip frame's index in its clip
        self._clip, self._frame = np.repeat(np.arange(len(need)), need), frame
        # Frames a clip is given beyond its length (up to MIN_FRAMES, and the one frame an odd
        # length is rounded up by) are zero, as the seed's zero padding made them: whatever the
        # input holds there never reaches the output, and gets no gradient.
        self.blank = np.flatnonzero(frame >= np.repeat(lengths, need))
        # Pooled outputs: clip c owns out_len[c] positions from offset[c] / 2.
        self.out_len = out_len = np.maximum((lengths - 4) // 2, 1)
        owner = np.full(self.pooled, len(need), dtype=np.int64)  # len(need) = nobody's
        owned = (
            np.repeat(offset // 2, out_len)
            + np.arange(int(out_len.sum()))
            - np.repeat(np.cumsum(out_len) - out_len, out_len)
        )
        owner[owned] = np.repeat(np.arange(len(need)), out_len)
        self.owner = owner

    def source_index(self, frames: int) -> np.ndarray:
        """For each frame of the strip, the row of a [B*frames, n_mels] source to copy.

        The strip's tail after its last clip copies frame 0 (any finite value will do: no kept
        output reads it, and its outputs get zero gradient); a clip's frames past the batch's
        `frames` (only the one frame an odd length is rounded up by) likewise never reach a
        kept output, so they are clamped."""
        index = np.zeros(self.length, dtype=np.int64)
        index[: len(self._clip)] = self._clip * frames + np.minimum(self._frame, frames - 1)
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
        plan = StripPlan(lengths.detach().cpu().numpy())
        device = mel.device
        batch, n_mels, frames = mel.shape
        if frames < MIN_FRAMES:  # the seed's zero padding for clips too short for one output
            mel = F.pad(mel, (0, MIN_FRAMES - frames))
            frames = MIN_FRAMES
        # One gather from [B*T, n_mels] (a view when the batch is channels-last in memory, as
        # TensorSplit.gather_mel makes it) straight into the strip [length, n_mels].
        source = mel.transpose(1, 2).reshape(batch * frames, n_mels)
        strip = source.index_select(0, torch.as_tensor(plan.source_index(frames), device=device))
        if len(plan.blank):
            strip.index_fill_(0, torch.as_tensor(plan.blank, device=device), 0.0)
        # Under autocast the convolutions run in its dtype (bf16 on a CPU with AMX); the means
        # and the weights' gradients stay float32, and the projection is autocast's, as any Linear.
        dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else strip.dtype
        first, second = self.conv[0], self.conv[2]
        owner = torch.as_tensor(plan.owner, device=device)
        counts = torch.as_tensor(plan.out_len, device=device, dtype=torch.float32)
        with torch.autocast(device.type, enabled=False):
            means = _PackedConvs.apply(
                strip.to(dtype), first.weight, first.bias, second.weight, second.bias, owner, counts
            )
        return self.proj(means)


class _PackedConvs(torch.autograd.Function):
    """conv -> ReLU -> conv -> ReLU -> pool of 2 -> per-clip mean along the strip, with a
    hand-written backward.

    Autograd's version ran ten small kernels besides the convolutions (max-pool indices and
    their zero-filled gradient, two ReLU masks, a scatter for the means, weight layout
    copies), which took as long as the convolutions' backward. Here the pool keeps which
    frame of each pair won (the first on ties, as `max_pool1d` has it), and the backward is
    the convolutions' gradients (emo.fuse.strip_conv) around one routing pass and one ReLU
    mask (emo.fuse.packed_pool), which also sum the biases' gradients. A test holds forward and
    gradients to the plain padded `nn.Conv1d` model clip by clip, on both of packed_pool's paths.
    """

    @staticmethod
    def forward(ctx, strip, w1, b1, w2, b2, owner, counts):
        with large_kernels():  # all the fit's threads (emo.fuse.threads)
            return _PackedConvs._forward(ctx, strip, w1, b1, w2, b2, owner, counts)

    @staticmethod
    def backward(ctx, grad):
        with large_kernels():
            return _PackedConvs._backward(ctx, grad)

    @staticmethod
    def _forward(ctx, strip, w1, b1, w2, b2, owner, counts):
        dtype = strip.dtype
        hidden = conv_relu(strip, channels_last_weight(w1, dtype), b1.to(dtype))  # [L-2, C1]
        out = conv_relu(hidden, channels_last_weight(w2, dtype), b2.to(dtype))  # [L-4, C2]; the pool of 2 follows
        keep = any(ctx.needs_input_grad)  # training; evaluation keeps nothing
        sums, kept = pool_sums(out, owner, counts.shape[0], keep)
        if keep:
            ctx.save_for_backward(strip, hidden, owner, counts, w2, *kept)
            ctx.param_dtype = b1.dtype
        return sums / counts.unsqueeze(1)

    @staticmethod
    def _backward(ctx, grad):
        strip, hidden, owner, counts, w2, *kept = ctx.saved_tensors
        per_clip = torch.cat(
            [grad.float() / counts.unsqueeze(1), grad.new_zeros(1, grad.shape[1], dtype=torch.float32)]
        )
        # Where the compiled kernels ran they also summed the biases' gradients on the way.
        grad_out, grad_b2 = route_gradient(per_clip, owner, tuple(kept), strip.dtype)  # [L-4, C2]
        grad_w2 = weight_gradient(hidden, grad_out)
        grad_hidden = input_gradient(grad_out, w2.to(strip.dtype))  # [L-2, C1]
        grad_b1 = relu_backward(grad_hidden, hidden)  # the first ReLU, in place
        grad_w1 = weight_gradient(strip, grad_hidden)
        grad_b1 = grad_hidden.sum(0, dtype=torch.float32) if grad_b1 is None else grad_b1
        grad_b2 = grad_out.sum(0, dtype=torch.float32) if grad_b2 is None else grad_b2
        dtype = ctx.param_dtype
        return None, grad_w1.to(dtype), grad_b1.to(dtype), grad_w2.to(dtype), grad_b2.to(dtype), None, None
