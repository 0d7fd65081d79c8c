"""The context GRU over padded dialogues, as a few large kernels on CPU.

`nn.GRU` over packed sequences runs each turn of each direction as a dozen small kernels
forward and twice that backward, and projects the inputs turn by turn: at MELD size that
was most of what a GRU context head added to an epoch. Here, on CPU:

- the input projections of every turn, layer by layer, are one batched matmul for both
  directions;
- both directions step together (a batched matmul over [direction, dialogue]) in a loop of
  a few in-place kernels per turn;
- the backward is written out: everything that does not depend on the running gradient
  is computed for all turns at once before the loop, so each turn costs three kernels.

The reverse direction reads each dialogue backwards within its own length, so padding at
the end never reaches a real turn in either direction, and the outputs at padded positions
are junk the caller never reads (their gradient is zero). The weights are the `nn.GRU`'s
own (checkpoints and seeded initialisation unchanged); a test holds outputs and gradients
to `nn.GRU` over packed sequences. On a GPU the packed `nn.GRU` (one cuDNN call) is used.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from emo.fuse.threads import one_thread


def run_gru(gru: nn.GRU, sequence: Tensor, valid: Tensor) -> Tensor:
    """[D, L, in] batch-first dialogues padded at the end (valid bool[D, L]) -> [D, L, dirs*H]."""
    if sequence.device.type != "cpu":
        lengths = valid.sum(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(sequence, lengths, batch_first=True, enforce_sorted=False)
        hidden, _ = gru(packed)
        hidden, _ = nn.utils.rnn.pad_packed_sequence(hidden, batch_first=True, total_length=sequence.shape[1])
        return hidden
    # Few FLOPs: kept in float32, and on one thread (a turn's kernels are too small to split;
    # emo.fuse.threads says why).
    with torch.autocast("cpu", enabled=False), one_thread():
        return _cpu_gru(gru, sequence.float(), valid)


def _cpu_gru(gru: nn.GRU, sequence: Tensor, valid: Tensor) -> Tensor:
    dialogues, turns, _ = sequence.shape
    steps = torch.arange(turns, device=sequence.device)
    lengths = valid.sum(1, keepdim=True)
    # Time-major [L, D]: row t of direction k is what that direction reads at its step t.
    backwards = torch.where(valid, lengths - 1 - steps, steps).t()  # [L, D]; padding stays in place
    columns = torch.arange(dialogues, device=sequence.device).expand(turns, -1)
    suffixes = ("", "_reverse") if gru.bidirectional else ("",)
    x = sequence.transpose(0, 1)  # [L, D, in]
    for layer in range(gru.num_layers):
        if layer and gru.dropout and gru.training:
            x = F.dropout(x, gru.dropout, training=True)
        w_ih, w_hh, b_ih, b_hh = ([getattr(gru, f"{name}_l{layer}{suffix}") for suffix in suffixes] for name in _NAMES)
        inputs = torch.cat([x, x[backwards, columns]][: len(suffixes)], dim=-1)  # [L, D, K*in]
        # Both directions' input projections in one matmul (block-diagonal weights).
        weight = torch.block_diag(*(w.t() for w in w_ih))  # [K*in, K*3H]
        projected = torch.addmm(torch.cat(b_ih), inputs.flatten(0, 1), weight)
        hidden = _Recurrence.apply(
            projected.view(turns, dialogues, len(suffixes), -1), torch.stack(w_hh), torch.cat(b_hh)
        )
        outputs = [hidden[:, :, 0], hidden[backwards, columns, 1]] if gru.bidirectional else [hidden[:, :, 0]]
        x = torch.cat(outputs, dim=-1)  # [L, D, dirs*H]
    return x.transpose(0, 1)


_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class _Recurrence(torch.autograd.Function):
    """h_t = GRU(h_{t-1}, projected input_t) for every direction at once: [L, D, K, 3H] -> [L, D, K, H].

    Each turn's recurrent matmul covers all K directions as one [D, K*H] x [K*H, K*3H]
    block-diagonal product: one small `addmm` costs a few microseconds, where a batched
    matmul over K was ten times that.
    """

    @staticmethod
    def forward(ctx, projected, w_hh, b_hh):
        turns, dialogues, directions, gates = projected.shape
        size = gates // 3
        hidden = projected.new_empty(turns, dialogues, directions, size)
        reset_update = projected.new_empty(turns, dialogues, directions, 2 * size)
        candidate = projected.new_empty(turns, dialogues, directions, size)
        recurrent_n = projected.new_empty(turns, dialogues, directions, size)  # W_hn h + b_hn, per turn
        state = projected.new_zeros(dialogues, directions, size)
        weight = torch.block_diag(*w_hh.transpose(1, 2))  # [K*H, K*3H]
        for t in range(turns):
            recurrent = torch.addmm(b_hh, state.view(dialogues, -1), weight).view(dialogues, directions, gates)
            rz = torch.add(projected[t, ..., : 2 * size], recurrent[..., : 2 * size], out=reset_update[t])
            rz.sigmoid_()
            recurrent_n[t] = recurrent[..., 2 * size :]
            n = torch.addcmul(projected[t, ..., 2 * size :], rz[..., :size], recurrent_n[t], out=candidate[t])
            n.tanh_()
            state = torch.addcmul(n, rz[..., size:], state - n, out=hidden[t])
        ctx.save_for_backward(hidden, reset_update, candidate, recurrent_n, weight)
        return hidden

    @staticmethod
    def backward(ctx, grad_hidden):
        with one_thread():  # autograd runs this after run_gru's own one_thread() has ended
            return _Recurrence._backward(ctx, grad_hidden)

    @staticmethod
    def _backward(ctx, grad_hidden):
        hidden, reset_update, candidate, recurrent_n, weight = ctx.saved_tensors
        turns, dialogues, directions, size = hidden.shape
        previous = torch.cat([hidden.new_zeros(1, dialogues, directions, size), hidden[:-1]])
        r, z = reset_update[..., :size], reset_update[..., size:]
        # d pre-activation = d h_t * factor, with every factor known before the loop:
        # n: (1 - z)(1 - n^2); r: that * W_hn h * r(1 - r); z: (h_{t-1} - n) z(1 - z).
        d_n = (1 - z) * (1 - candidate * candidate)
        d_r = d_n * recurrent_n * r * (1 - r)
        d_z = (previous - candidate) * z * (1 - z)
        to_input = torch.stack([d_r, d_z, d_n], dim=3)  # [L, D, K, 3, H]
        to_recurrent = torch.stack([d_r, d_z, d_n * r], dim=3)
        back = weight.t().contiguous()  # [K*3H, K*H]
        grad_state = grad_hidden.new_zeros(dialogues, directions, size)
        total = torch.empty_like(hidden)  # d loss / d h_t, through the outputs and later turns
        for t in range(turns - 1, -1, -1):
            state = torch.add(grad_hidden[t], grad_state, out=total[t])
            d_recurrent = (state.unsqueeze(2) * to_recurrent[t]).view(dialogues, -1)
            grad_state = torch.addmm((state * z[t]).view(dialogues, -1), d_recurrent, back)
            grad_state = grad_state.view(dialogues, directions, size)
        d_recurrent = (total.unsqueeze(3) * to_recurrent).view(turns * dialogues, directions, 3 * size)
        grad_projected = (total.unsqueeze(3) * to_input).view(turns, dialogues, directions, 3 * size)
        grad_w = torch.bmm(
            d_recurrent.permute(1, 2, 0), previous.reshape(turns * dialogues, directions, size).transpose(0, 1)
        )
        return grad_projected, grad_w, d_recurrent.sum(0).flatten()
