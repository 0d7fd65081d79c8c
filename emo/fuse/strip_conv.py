"""A k=3 convolution along a strip of frames, forward with its ReLU and both gradients, as
the mel-CNN's training step runs it (emo.fuse.mel_cnn).

A strip is [N, C] position-major: the batch's clips end to end, which is [1, C, 1, N] in
channels-last memory, the layout oneDNN (and cuDNN) convolve fastest here, so no transpose is
made either way. The work is split by who does it fastest on a CPU
(bench/mel_cnn_options.py measures each):

- forward: oneDNN's convolution, the ReLU fused in as its post-op (no second pass over the
  output; the op PyTorch's own compiler calls);
- the weight's gradient: one BLAS product over the unfolded strip (im2col), about twice
  the rate of oneDNN's weight-gradient convolution on this layout (which also fell to a slow
  single-threaded pass for the bias);
- the input's gradient: one accumulating matrix product per tap, as fast as oneDNN's and
  with no kernel to build per new strip length.

The same functions run on a GPU (cuDNN and cuBLAS) and in bf16.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

# oneDNN's convolution with a fused element-wise post-op, as PyTorch's own compiler calls it;
# absent from builds without oneDNN, where the ReLU runs as its own pass.
_ONEDNN_POINTWISE = (
    getattr(torch.ops.mkldnn, "_convolution_pointwise", None) if torch.backends.mkldnn.is_available() else None
)


def conv_relu(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """ReLU(conv(x)) along a strip `x` [N, C_in] -> [N-2, C_out], the ReLU applied by oneDNN
    inside the convolution on a CPU (its post-op: no second pass over the output), as a
    separate in-place pass elsewhere. [N, C] is [1, C, 1, N] in channels-last memory (oneDNN's
    and cuDNN's fast layout here): no transpose either way."""
    image = x.view(1, 1, *x.shape).permute(0, 3, 1, 2)
    if _onednn_fuses(x):
        out = _ONEDNN_POINTWISE(image, weight, bias, [0, 0], [1, 1], [1, 1], 1, "relu", [], "")
    else:
        out = F.conv2d(image, weight, bias).clamp_min_(0)
    return out.permute(0, 2, 3, 1).reshape(out.shape[3], out.shape[1])


def _onednn_fuses(x: Tensor) -> bool:
    """Whether oneDNN's convolution with a ReLU post-op takes `x`: on a CPU, in float32, or in
    bf16 where the CPU has bf16 instructions (AVX-512 or AVX-NE-CONVERT; an AVX2 CPU is refused
    there, while `F.conv2d` still runs bf16 on it)."""
    if x.device.type != "cpu" or _ONEDNN_POINTWISE is None:
        return False
    return x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and cpu_has_bf16_units())


def cpu_has_bf16_units() -> bool:
    """Whether this CPU computes bf16 itself (AVX-512 BF16, AMX, AVX-NE-CONVERT), as oneDNN
    asks. Elsewhere (an AVX2 CPU) autocast's bf16 is emulated, over 10x slower than fp32."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def weight_gradient(x: Tensor, grad: Tensor) -> Tensor:
    """The gradient of a k=3 convolution's weight [C_out, C_in, 3] from its input strip `x`
    [N, C_in] and its output's gradient `grad` [N-2, C_out], as one matrix product.

    Output position t reads the 3 * C_in numbers x[t : t+3], which in a position-major strip
    lie end to end from t * C_in: the unfolded strip ("im2col") [N-2, 3 * C_in] is a view
    with rows overlapping, copied once into a matrix BLAS takes. Then the gradient of all
    three taps is unfolded.T @ grad, a [3 * C_in, C_out] result: one product with three times
    the rows of each per-tap product it replaces, which BLAS runs faster (1.2x for conv2 here,
    the copy included; bench/mel_cnn_options.py's ceiling runs this function)."""
    span, c_in, c_out = grad.shape[0], x.shape[1], grad.shape[1]
    x = x.contiguous()
    unfolded = x.as_strided((span, 3 * c_in), (c_in, 1), x.storage_offset()).contiguous()
    taps = unfolded.t() @ grad  # row tap * C_in + i: the weight's [i, tap] for every output
    return taps.view(3, c_in, c_out).permute(2, 1, 0).contiguous()


def input_gradient(grad: Tensor, weight: Tensor) -> Tensor:
    """The gradient at a k=3 convolution's input strip [N+2, C_in] from its output's gradient
    `grad` [N, C_out]: tap s of weight [C_out, C_in, 3] sends grad @ weight[:, :, s] to the
    frames s positions on. The first tap's product writes its frames, the other two add to
    them: no zero-filled pass over the result first."""
    span = grad.shape[0]
    out = torch.empty(span + 2, weight.shape[1], dtype=grad.dtype, device=grad.device)
    torch.mm(grad, weight[:, :, 0], out=out[:span])
    out[span:].zero_()
    for tap in (1, 2):
        out[tap : tap + span].addmm_(grad, weight[:, :, tap])
    return out


def channels_last_weight(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """A Conv1d weight [out, in, k] as a channels-last Conv2d weight [out, in, 1, k]."""
    return weight.to(dtype).unsqueeze(2).contiguous(memory_format=torch.channels_last)
