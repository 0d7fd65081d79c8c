"""A model bank: G copies of `emo.fuse.model.FusionModel` trained in one forward/backward.

An ablation grid is many small heads over the same cached tensors. Trained one by one,
each step of each head pays Python, autograd and optimizer overhead for a few tiny
matmuls; stacked with a leading member dimension, one `bmm` does the work of G `Linear`s
and one optimizer step updates every member. Nothing is shared between members but the
data tensors: each member keeps the seed model's own initial weights, its own batch order
and augmentation draws (the same generators `emo fit` uses), its own modality subset,
fusion mode, class weights, AdamW state, ReduceLROnPlateau learning rate, gradient-norm
clipping and best-on-dev weights. So a member is the same model `emo fit` would train
with that config, up to dropout draws and float summation order.

Layout. Every member uses the bank's modality order (those of text, audio, visual that
any member uses): the early-fusion input is [n*proj + n] wide and a member without a
modality has zero
weight rows there, which get zero gradient and so stay zero under AdamW (weight decay of
zero is zero). Late-fusion heads and projections of a member's absent modalities get no
gradient either. `stack_member`/`export_member` translate to and from the single model's
`state_dict`, so a bank member can be checked against, and saved as, a normal `emo fit`
checkpoint.

The mel CNN is the only heavy part. On a GPU the members' convolutions run as one grouped
Conv1d (groups=G_audio), which is what removes the per-kernel launch cost of G small
models; on a CPU the grouped kernel is no faster than G plain ones (the work is the same
FLOPs and batch 32 already fills the cores), so `audio_mode="auto"` loops there.
`audio_mode="matmul"` (`SharedMelCNN`) is the alternative: im2col matmuls with a
hand-written backward, the first layer run once for all members that see the same mel
tensor (same seed, no mel augmentation); equal results, but measured ~10% slower than
the loop on this CPU (see `emo.fuse.bank_train.resolve_audio_mode`). Under bf16
autocast it falls back to the per-member Conv1d loop, exactly what `emo fit` runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from emo.fuse.config import FitConfig
from emo.fuse.model import HEAD_SIZES, FusionModel, ModelConfig, task_heads
from emo.labels import MODALITIES

# FitConfig fields a bank member may set on its own. Everything else changes the shape of
# training (epochs, batch size, heads, which tensors are loaded) and is shared by a bank.
MEMBER_KEYS: frozenset[str] = frozenset(
    {
        "seed",
        "modalities",
        "fusion",
        "class_weights",
        "lr",
        "weight_decay",
        "grad_clip",
        "plateau_factor",
        "plateau_patience",
        "modality_dropout",
        "spec_augment",
        "freq_masks",
        "freq_mask_width",
        "time_masks",
        "time_mask_width",
        "mel_crop_frames",
        "frame_keep",
        "out",
        "overwrite",
    }
)

# `SharedMelCNN` call sizes: members per call, and clip x frame rows per evaluation chunk
MATMUL_MEMBERS = 4
MATMUL_ROWS = 16384
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def group_key(config: FitConfig) -> tuple:
    """Configs with equal keys can share one bank."""
    from emo.config import config_to_dict

    items = config_to_dict(config)
    return tuple(sorted((k, repr(v)) for k, v in items.items() if k not in MEMBER_KEYS))


def _uniform_(tensor: Tensor, fan_in: int) -> Tensor:
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


class ModelBank(nn.Module):
    """G fusion models with stacked weights; see the module docstring for the layout."""

    def __init__(self, configs: list[ModelConfig]):
        super().__init__()
        if not configs:
            raise ValueError("a bank needs at least one member")
        first = configs[0]
        for c in configs:
            same = (c.text_dim, c.visual_dim, c.n_mels, c.proj_dim, c.mel_channels, c.heads, c.early_hidden,
                    c.early_dropout, c.early_mask_input, c.late_hidden)
            ref = (first.text_dim, first.visual_dim, first.n_mels, first.proj_dim, first.mel_channels, first.heads,
                   first.early_hidden, first.early_dropout, first.early_mask_input, first.late_hidden)
            if same != ref:
                raise ValueError("bank members must share every model dimension; only modalities and fusion may differ")
        self.configs = list(configs)
        G = len(configs)
        self.size = G
        c = first
        P, (C1, C2), (H1, H2), L = c.proj_dim, c.mel_channels, c.early_hidden, c.late_hidden
        K = c.num_outputs
        self.heads = c.heads
        self.dropout = c.early_dropout
        self.mask_input = c.early_mask_input
        mods = torch.zeros(G, len(MODALITIES), dtype=torch.bool)
        for g, cfg in enumerate(configs):
            for m in cfg.modalities:
                mods[g, MODALITIES.index(m)] = True
        self.register_buffer("member_modalities", mods)
        self.register_buffer("fusion_code", torch.tensor([("early", "late", "ensemble").index(x.fusion) for x in configs]))
        self.audio_members = [g for g, cfg in enumerate(configs) if "audio" in cfg.modalities]
        # The bank's layout spans only the modalities some member uses (a text-only grid
        # carries no zero blocks for audio and visual).
        self.modalities = tuple(m for m in MODALITIES if any(m in cfg.modalities for cfg in configs))
        self.register_buffer("modality_columns", torch.tensor([MODALITIES.index(m) for m in self.modalities]))
        n = len(self.modalities)
        width = n * P + n

        def param(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.zeros(G, *shape))

        self.text_w, self.text_b = param(c.text_dim, P), param(P)
        self.visual_w, self.visual_b = param(c.visual_dim, P), param(P)
        self.conv1_w, self.conv1_b = param(C1, c.n_mels, 3), param(C1)
        self.conv2_w, self.conv2_b = param(C2, C1, 3), param(C2)
        self.audio_w, self.audio_b = param(C2, P), param(P)
        self.e1_w, self.e1_b = param(width, H1), param(H1)
        self.bn1_w, self.bn1_b = nn.Parameter(torch.ones(G, H1)), param(H1)
        self.e2_w, self.e2_b = param(H1, H2), param(H2)
        self.bn2_w, self.bn2_b = nn.Parameter(torch.ones(G, H2)), param(H2)
        self.e3_w, self.e3_b = param(H2, K), param(K)
        self.late1_w, self.late1_b = param(n, P, L), param(n, L)
        self.late2_w, self.late2_b = param(n, L, K), param(n, K)
        self.ens = param(2)
        self.register_buffer("bn1_mean", torch.zeros(G, H1))
        self.register_buffer("bn1_var", torch.ones(G, H1))
        self.register_buffer("bn2_mean", torch.zeros(G, H2))
        self.register_buffer("bn2_var", torch.ones(G, H2))

    # ---- translation to and from the single model ------------------------------------
    def stack_member(self, g: int, state: dict[str, Tensor]) -> None:
        """Copy a FusionModel state_dict (of `self.configs[g]`) into slot g."""
        cfg = self.configs[g]
        P = cfg.proj_dim
        n = len(self.modalities)
        with torch.no_grad():
            for p in self.parameters():
                p[g].zero_()
            self.bn1_w[g].fill_(1.0), self.bn2_w[g].fill_(1.0)
            self.bn1_mean[g].zero_(), self.bn2_mean[g].zero_(), self.bn1_var[g].fill_(1.0), self.bn2_var[g].fill_(1.0)
            if "text" in cfg.modalities:
                self.text_w[g].copy_(state["encoders.text.weight"].T)
                self.text_b[g].copy_(state["encoders.text.bias"])
            if "visual" in cfg.modalities:
                self.visual_w[g].copy_(state["encoders.visual.weight"].T)
                self.visual_b[g].copy_(state["encoders.visual.bias"])
            if "audio" in cfg.modalities:
                self.conv1_w[g].copy_(state["encoders.audio.conv.0.weight"])
                self.conv1_b[g].copy_(state["encoders.audio.conv.0.bias"])
                self.conv2_w[g].copy_(state["encoders.audio.conv.2.weight"])
                self.conv2_b[g].copy_(state["encoders.audio.conv.2.bias"])
                self.audio_w[g].copy_(state["encoders.audio.proj.weight"].T)
                self.audio_b[g].copy_(state["encoders.audio.proj.bias"])
            canon = [self.modalities.index(m) for m in cfg.modalities]
            if cfg.fusion in ("early", "ensemble"):
                w1 = state["early.net.0.weight"].T  # [m*P (+m), H1]
                m = len(canon)
                for i, c in enumerate(canon):
                    self.e1_w[g, c * P : (c + 1) * P].copy_(w1[i * P : (i + 1) * P])
                    if cfg.early_mask_input:
                        self.e1_w[g, n * P + c].copy_(w1[m * P + i])
                self.e1_b[g].copy_(state["early.net.0.bias"])
                self.bn1_w[g].copy_(state["early.net.1.weight"]), self.bn1_b[g].copy_(state["early.net.1.bias"])
                self.bn1_mean[g].copy_(state["early.net.1.running_mean"])
                self.bn1_var[g].copy_(state["early.net.1.running_var"])
                self.e2_w[g].copy_(state["early.net.4.weight"].T), self.e2_b[g].copy_(state["early.net.4.bias"])
                self.bn2_w[g].copy_(state["early.net.5.weight"]), self.bn2_b[g].copy_(state["early.net.5.bias"])
                self.bn2_mean[g].copy_(state["early.net.5.running_mean"])
                self.bn2_var[g].copy_(state["early.net.5.running_var"])
                self.e3_w[g].copy_(state["early.net.8.weight"].T), self.e3_b[g].copy_(state["early.net.8.bias"])
            if cfg.fusion in ("late", "ensemble"):
                for i, c in enumerate(canon):
                    self.late1_w[g, c].copy_(state[f"late.heads.{i}.0.weight"].T)
                    self.late1_b[g, c].copy_(state[f"late.heads.{i}.0.bias"])
                    self.late2_w[g, c].copy_(state[f"late.heads.{i}.2.weight"].T)
                    self.late2_b[g, c].copy_(state[f"late.heads.{i}.2.bias"])
            if cfg.fusion == "ensemble":
                self.ens[g, 0].copy_(state["early_logit"])
                self.ens[g, 1].copy_(state["late_logit"])

    def export_member(self, g: int) -> FusionModel:
        """Slot g as a stand-alone FusionModel (CPU, eval mode): the inverse of stack_member."""
        cfg = self.configs[g]
        model = FusionModel(cfg)
        state = model.state_dict()
        P, n = cfg.proj_dim, len(self.modalities)
        canon = [self.modalities.index(m) for m in cfg.modalities]
        put: dict[str, Tensor] = {}
        if "text" in cfg.modalities:
            put["encoders.text.weight"], put["encoders.text.bias"] = self.text_w[g].T, self.text_b[g]
        if "visual" in cfg.modalities:
            put["encoders.visual.weight"], put["encoders.visual.bias"] = self.visual_w[g].T, self.visual_b[g]
        if "audio" in cfg.modalities:
            put["encoders.audio.conv.0.weight"], put["encoders.audio.conv.0.bias"] = self.conv1_w[g], self.conv1_b[g]
            put["encoders.audio.conv.2.weight"], put["encoders.audio.conv.2.bias"] = self.conv2_w[g], self.conv2_b[g]
            put["encoders.audio.proj.weight"], put["encoders.audio.proj.bias"] = self.audio_w[g].T, self.audio_b[g]
        if cfg.fusion in ("early", "ensemble"):
            rows = [self.e1_w[g, c * P : (c + 1) * P] for c in canon]
            if cfg.early_mask_input:
                rows += [self.e1_w[g, n * P + c].unsqueeze(0) for c in canon]
            put["early.net.0.weight"], put["early.net.0.bias"] = torch.cat(rows).T, self.e1_b[g]
            put["early.net.1.weight"], put["early.net.1.bias"] = self.bn1_w[g], self.bn1_b[g]
            put["early.net.1.running_mean"], put["early.net.1.running_var"] = self.bn1_mean[g], self.bn1_var[g]
            put["early.net.4.weight"], put["early.net.4.bias"] = self.e2_w[g].T, self.e2_b[g]
            put["early.net.5.weight"], put["early.net.5.bias"] = self.bn2_w[g], self.bn2_b[g]
            put["early.net.5.running_mean"], put["early.net.5.running_var"] = self.bn2_mean[g], self.bn2_var[g]
            put["early.net.8.weight"], put["early.net.8.bias"] = self.e3_w[g].T, self.e3_b[g]
        if cfg.fusion in ("late", "ensemble"):
            for i, c in enumerate(canon):
                put[f"late.heads.{i}.0.weight"], put[f"late.heads.{i}.0.bias"] = self.late1_w[g, c].T, self.late1_b[g, c]
                put[f"late.heads.{i}.2.weight"], put[f"late.heads.{i}.2.bias"] = self.late2_w[g, c].T, self.late2_b[g, c]
        if cfg.fusion == "ensemble":
            put["early_logit"], put["late_logit"] = self.ens[g, 0], self.ens[g, 1]
        for key, value in put.items():
            state[key] = value.detach().cpu().clone().reshape(state[key].shape)
        model.load_state_dict(state)
        return model.eval()

    # ---- forward ------------------------------------------------------------------------
    def _batch_norm(self, x: Tensor, which: int, valid: Tensor | None) -> Tensor:
        """Per-member BatchNorm1d over the member's valid rows (x [G, B, C])."""
        w, b = (self.bn1_w, self.bn1_b) if which == 1 else (self.bn2_w, self.bn2_b)
        rm, rv = (self.bn1_mean, self.bn1_var) if which == 1 else (self.bn2_mean, self.bn2_var)
        if not self.training:
            return (x - rm.unsqueeze(1)) * torch.rsqrt(rv.unsqueeze(1) + BN_EPS) * w.unsqueeze(1) + b.unsqueeze(1)
        if valid is None:
            mean = x.mean(1)
            var = x.var(1, unbiased=False)
            count = torch.full((x.shape[0],), float(x.shape[1]), device=x.device)
        else:
            v = valid.to(x.dtype).unsqueeze(-1)
            count = v.sum(1).clamp_min(1.0)  # [G, 1]
            mean = (x * v).sum(1) / count
            var = (((x - mean.unsqueeze(1)) ** 2) * v).sum(1) / count
            count = count.squeeze(-1)
        with torch.no_grad():
            unbiased = var * (count / (count - 1).clamp_min(1.0)).unsqueeze(-1)
            rm.mul_(1 - BN_MOMENTUM).add_(mean.detach() * BN_MOMENTUM)
            rv.mul_(1 - BN_MOMENTUM).add_(unbiased.detach() * BN_MOMENTUM)
        return (x - mean.unsqueeze(1)) * torch.rsqrt(var.unsqueeze(1) + BN_EPS) * w.unsqueeze(1) + b.unsqueeze(1)

    def _mel_cnn(self, g: int, mel: Tensor, lengths: Tensor) -> Tensor:
        """MelCNN of member g on [B, n_mels, T] -> [B, C2] (before the projection)."""
        if mel.shape[-1] < 6:
            mel = F.pad(mel, (0, 6 - mel.shape[-1]))
        h = F.relu(F.conv1d(mel, self.conv1_w[g], self.conv1_b[g]))
        h = F.max_pool1d(F.relu(F.conv1d(h, self.conv2_w[g], self.conv2_b[g])), 2)
        valid = torch.arange(h.shape[-1], device=h.device) < ((lengths - 4) // 2).clamp_min(1).unsqueeze(1)
        weights = valid.to(h.dtype).unsqueeze(1)
        return (h * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)

    def _mel_cnn_grouped(self, members: list[int], mels: list[Tensor], lengths: list[Tensor]) -> Tensor:
        """All `members`' MelCNNs as grouped convolutions -> [Ga, B, C2]."""
        Ga = len(members)
        T = max(max(int(m.shape[-1]) for m in mels), 6)
        rows = max(int(m.shape[0]) for m in mels)
        stacked = mels[0].new_zeros(rows, Ga * mels[0].shape[1], T)
        n_mels = mels[0].shape[1]
        lens = torch.zeros(Ga, rows, dtype=torch.long, device=mels[0].device)
        for j, (m, n) in enumerate(zip(mels, lengths)):
            stacked[: m.shape[0], j * n_mels : (j + 1) * n_mels, : m.shape[-1]] = m
            lens[j, : n.shape[0]] = n
        idx = torch.tensor(members, device=stacked.device)
        w1, b1 = self.conv1_w[idx], self.conv1_b[idx]
        w2, b2 = self.conv2_w[idx], self.conv2_b[idx]
        h = F.relu(F.conv1d(stacked, w1.reshape(-1, *w1.shape[2:]), b1.reshape(-1), groups=Ga))
        h = F.relu(F.conv1d(h, w2.reshape(-1, *w2.shape[2:]), b2.reshape(-1), groups=Ga))
        h = F.max_pool1d(h, 2).reshape(rows, Ga, w2.shape[1], -1).transpose(0, 1)  # [Ga, B, C2, T']
        valid = torch.arange(h.shape[-1], device=h.device) < ((lens - 4) // 2).clamp_min(1).unsqueeze(-1)
        weights = valid.to(h.dtype).unsqueeze(2)  # [Ga, B, 1, T']
        return (h * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)

    def _mel_cnn_matmul(self, members: list[int], mel: Tensor, lengths: Tensor) -> Tensor:
        """The MelCNNs of `members`, which all see the same `mel` [B, n_mels, T], as
        im2col matmuls (see `SharedMelCNN`) -> [len(members), B, C2]."""
        rows = max(1, MATMUL_ROWS // max(mel.shape[-1], 6))
        if mel.shape[0] > rows and not (torch.is_grad_enabled() and self.conv1_w.requires_grad):
            # evaluation batches are large (256 clips of up to 10 s); cut them so the
            # intermediates stay the size of a training step's
            return torch.cat(
                [self._mel_cnn_matmul(members, mel[i : i + rows], lengths[i : i + rows]) for i in range(0, mel.shape[0], rows)],
                dim=1,
            )
        idx = torch.tensor(members, device=mel.device)
        T = max(mel.shape[-1], 6)
        T += T % 2  # even, so the pool's pairs never straddle two clips
        if mel.shape[-1] < T:
            mel = F.pad(mel, (0, T - mel.shape[-1]))
        valid = torch.arange(T // 2, device=mel.device) < ((lengths - 4) // 2).clamp_min(1).unsqueeze(1)
        weights = valid.to(mel.dtype)
        weights = weights / weights.sum(-1, keepdim=True).clamp_min(1.0)  # [B, T/2], zero past the clip
        return SharedMelCNN.apply(
            mel.transpose(1, 2), weights, self.conv1_w[idx], self.conv1_b[idx], self.conv2_w[idx], self.conv2_b[idx]
        )

    def _mel_cnn_shared(self, members: list[int], mels: list[Tensor], lengths: list[Tensor]) -> Tensor:
        """All audio members through `_mel_cnn_matmul`, one call per distinct input tensor
        (members trained on the same batch - same seed, no mel augmentation - are handed
        the very same tensor object by `train_bank`) -> [G_audio, B, C2]."""
        rows = max(int(m.shape[0]) for m in mels)
        groups: dict[int, list[int]] = {}
        for j, mel in enumerate(mels):
            groups.setdefault(id(mel), []).append(j)
        out: list[Tensor | None] = [None] * len(members)
        for shared in groups.values():
            # a few members per call: the wide first-layer matmul is already efficient at
            # 4 x C1 columns, and more would only grow the intermediates
            for lo in range(0, len(shared), MATMUL_MEMBERS):
                positions = shared[lo : lo + MATMUL_MEMBERS]
                j0 = positions[0]
                pooled = self._mel_cnn_matmul([members[j] for j in positions], mels[j0], lengths[j0])
                if pooled.shape[1] < rows:
                    pooled = F.pad(pooled, (0, 0, 0, rows - pooled.shape[1]))
                for i, j in enumerate(positions):
                    out[j] = pooled[i]
        return torch.stack(out)

    def forward(
        self,
        present: Tensor,
        text: Tensor | None = None,
        visual: Tensor | None = None,
        mels: list[Tensor] | None = None,
        mel_lengths: list[Tensor] | None = None,
        valid: Tensor | None = None,
        audio_mode: str = "loop",
    ) -> Tensor:
        """present bool[G, B, 3] (canonical order, already restricted to each member's
        modalities); text [G, B, D] or shared [B, D]; visual likewise, frame-averaged;
        mels/mel_lengths: one [B_g, n_mels, T_g] per audio member (in `audio_members`
        order; B_g <= B, missing rows count as absent); valid bool[G, B] marks real rows
        (batch norm statistics use only those). -> logits [G, B, K]."""
        G, B = present.shape[0], present.shape[1]
        dtype = self.text_w.dtype
        pres = present.index_select(2, self.modality_columns).to(dtype)  # [G, B, n] in bank order
        embeds = []
        for c, name in enumerate(self.modalities):
            if name == "text" and text is not None:
                e = torch.matmul(text, self.text_w) + self.text_b.unsqueeze(1)
            elif name == "visual" and visual is not None:
                e = torch.matmul(visual, self.visual_w) + self.visual_b.unsqueeze(1)
            elif name == "audio" and self.audio_members and mels:
                members = self.audio_members
                if audio_mode == "matmul" and not torch.is_autocast_enabled(mels[0].device.type):
                    pooled = self._mel_cnn_shared(members, mels, mel_lengths)
                elif audio_mode == "grouped" and len(members) > 1:
                    pooled = self._mel_cnn_grouped(members, mels, mel_lengths)
                else:
                    rows = []
                    for g, mel, lens in zip(members, mels, mel_lengths):
                        out = self._mel_cnn(g, mel, lens)
                        if out.shape[0] < B:
                            out = F.pad(out, (0, 0, 0, B - out.shape[0]))
                        rows.append(out)
                    pooled = torch.stack(rows)
                if pooled.shape[1] < B:
                    pooled = F.pad(pooled, (0, 0, 0, B - pooled.shape[1]))
                idx = torch.tensor(members, device=pooled.device)
                proj = torch.bmm(pooled, self.audio_w[idx]) + self.audio_b[idx].unsqueeze(1)
                e = pres.new_zeros(G, B, proj.shape[-1]).index_copy(0, idx, proj)
            else:
                e = pres.new_zeros(G, B, self.text_b.shape[-1])
            embeds.append(e * pres[:, :, c : c + 1])
        stacked = torch.stack(embeds, dim=2)  # [G, B, n, P]
        codes = self.fusion_code
        early = late = None
        if bool((codes != 1).any()):
            flat = stacked.flatten(2)
            if self.mask_input:
                flat = torch.cat([flat, pres], dim=2)
            h = torch.baddbmm(self.e1_b.unsqueeze(1), flat, self.e1_w)
            h = F.dropout(F.relu(self._batch_norm(h, 1, valid)), self.dropout[0], self.training)
            h = torch.baddbmm(self.e2_b.unsqueeze(1), h, self.e2_w)
            h = F.dropout(F.relu(self._batch_norm(h, 2, valid)), self.dropout[1], self.training)
            early = torch.baddbmm(self.e3_b.unsqueeze(1), h, self.e3_w)
        if bool((codes != 0).any()):
            # [G, B, 3, P] x [G, 3, P, L] -> [G, B, 3, L]
            h = F.relu(torch.einsum("gbmp,gmpl->gbml", stacked, self.late1_w) + self.late1_b.unsqueeze(1))
            logits = torch.einsum("gbml,gmlk->gbmk", h, self.late2_w) + self.late2_b.unsqueeze(1)
            weights = pres.unsqueeze(-1)
            late = (logits * weights).sum(2) / weights.sum(2).clamp_min(1.0)
        if early is None:
            return late
        if late is None:
            return early
        w = torch.sigmoid(self.ens)  # [G, 2]
        mixed = (early * w[:, :1, None] + late * w[:, 1:, None]) / (w[:, :1, None] + w[:, 1:, None])
        code = codes.view(G, 1, 1)
        return torch.where(code == 0, early, torch.where(code == 1, late, mixed))

    def split_heads(self, logits: Tensor) -> dict[str, Tensor]:
        out, start = {}, 0
        for head in self.heads:
            out[head] = logits[..., start : start + HEAD_SIZES[head]]
            start += HEAD_SIZES[head]
        return out


def _shifted(x: Tensor, out: Tensor | None = None) -> Tensor:
    """im2col for a k=3 convolution over the rows of x [N, C] -> [N, 3C]: row t holds rows
    t, t+1, t+2 (the last two rows, which would run past the end, are zero)."""
    n, c = x.shape
    cols = x.new_empty(n, 3 * c) if out is None else out
    cols[n - 2 :].zero_()
    for k in range(3):
        cols[: n - 2, k * c : (k + 1) * c] = x[k : n - 2 + k]
    return cols


def _unshift_(grad: Tensor, dcols: Tensor) -> None:
    """The transpose of `_shifted`: add dcols [N, 3C]'s blocks back onto rows of grad [N, C]."""
    n, c = grad.shape
    for k in range(3):
        grad[k : n - 2 + k] += dcols[: n - 2, k * c : (k + 1) * c]


class SharedMelCNN(torch.autograd.Function):
    """Gs MelCNNs (conv k3 -> ReLU -> conv k3 -> ReLU -> max-pool 2 -> weighted time
    average) over one shared input, forward and backward written as plain matmuls.

    Why: on a CPU oneDNN's Conv1d with 40/64 input channels runs well below the matmul
    rate (about 100 vs 180 GFLOP/s on an idle 2-core Zen 4), and autograd's backward of slicing/cat/amax spends more time
    allocating, zero-filling and copying than multiplying. Here the clips lie end to end
    as one time-major sequence [B*T, C] (T even): a valid k=3 convolution is the
    sequence's im2col [B*T, 3C] times the reshaped kernel; the last rows of each clip,
    whose windows reach into the next clip, are garbage that the pooling weights (zero
    past each clip's valid length) never read and never send gradient to. The first
    layer's im2col is built once for all members and multiplied by their concatenated
    kernels in one wide matmul; ReLU and the pool commute, so the pool runs first.

    Inputs: x [B, T, F] (no gradient), weights [B, T/2] (each row sums to 1 over the
    clip's valid pooled frames), w1 [Gs, C1, F, 3], b1 [Gs, C1], w2 [Gs, C2, C1, 3],
    b2 [Gs, C2]. Output [Gs, B, C2].
    """

    @staticmethod
    def forward(ctx, x, weights, w1, b1, w2, b2):
        B, T, Fm = x.shape
        Gs, C1, C2 = w1.shape[0], w1.shape[1], w2.shape[1]
        N = B * T
        cols1 = _shifted(x.reshape(N, Fm))  # [N, 3F]
        W1 = w1.permute(3, 2, 0, 1).reshape(3 * Fm, Gs * C1)  # rows k*F + f, columns g*C1 + o
        h1 = torch.addmm(b1.reshape(-1), cols1, W1).relu_()  # [N, Gs*C1]
        W2 = w2.permute(0, 3, 2, 1).reshape(Gs, 3 * C1, C2)
        cols2 = x.new_empty(Gs, N, 3 * C1)
        y2 = x.new_empty(Gs, N, C2)
        for g in range(Gs):
            _shifted(h1[:, g * C1 : (g + 1) * C1], out=cols2[g])
        torch.baddbmm(b2.unsqueeze(1), cols2, W2, out=y2)
        pairs = y2.view(Gs, B, T // 2, 2, C2)
        pooled = torch.maximum(pairs[:, :, :, 0], pairs[:, :, :, 1]).relu_()  # [Gs, B, T/2, C2]
        out = torch.matmul(weights.unsqueeze(1), pooled).squeeze(2)  # [Gs, B, C2]
        if not any(ctx.needs_input_grad):
            return out
        # where each output's gradient goes: the larger of each pair, if it passed the
        # ReLU, times the clip's pooling weight - one tensor, so backward is one multiply
        first = pairs[:, :, :, 0] >= pairs[:, :, :, 1]
        live = pooled > 0
        route = torch.stack([first & live, live & ~first], dim=3).to(x.dtype)
        route *= weights.view(1, B, T // 2, 1, 1)
        ctx.save_for_backward(cols1, cols2, h1, W2, route)
        ctx.shapes = (B, T, Fm, Gs, C1, C2)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        cols1, cols2, h1, W2, route = ctx.saved_tensors
        B, T, Fm, Gs, C1, C2 = ctx.shapes
        N = B * T
        # through the average, the ReLU and the pool (the larger of each pair takes it all)
        g_y2 = (route * grad_out.view(Gs, B, 1, 1, C2)).view(Gs, N, C2)
        g_b2 = g_y2.sum(1)
        g_W2 = torch.bmm(cols2.transpose(1, 2), g_y2)  # [Gs, 3*C1, C2]
        g_cols2 = torch.bmm(g_y2, W2.transpose(1, 2))  # [Gs, N, 3*C1]
        g_h1 = h1.new_zeros(N, Gs * C1)
        for g in range(Gs):
            _unshift_(g_h1[:, g * C1 : (g + 1) * C1], g_cols2[g])
        g_h1 *= h1 > 0
        g_W1 = torch.mm(cols1.T, g_h1)  # [3F, Gs*C1]
        g_b1 = g_h1.sum(0).view(Gs, C1)
        g_w1 = g_W1.view(3, Fm, Gs, C1).permute(2, 3, 1, 0)
        g_w2 = g_W2.view(Gs, 3, C1, C2).permute(0, 3, 2, 1)
        return None, None, g_w1, g_b1, g_w2, g_b2


class BankAdamW:
    """torch.optim.AdamW's update, vectorised over members with a per-member lr and decay.

    AdamW is elementwise, so one update over stacked weights is exactly G independent
    AdamWs; only lr and weight decay need a [G] shape (ReduceLROnPlateau moves each
    member's lr on its own).
    """

    def __init__(self, params: list[Tensor], lr: Tensor, weight_decay: Tensor, betas=(0.9, 0.999), eps=1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr.clone().float()
        self.weight_decay = weight_decay.clone().float()
        self.betas, self.eps, self.step_count = betas, eps, 0
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.step_count += 1
        if hasattr(torch, "_fused_adamw_"):
            self._fused_step()
        else:
            self._plain_step()

    def _runs(self) -> list[tuple[int, int, float, float]]:
        """Contiguous member ranges sharing one (lr, weight decay)."""
        lr, wd = self.lr.tolist(), self.weight_decay.tolist()
        runs, start = [], 0
        for g in range(1, len(lr) + 1):
            if g == len(lr) or (lr[g], wd[g]) != (lr[start], wd[start]):
                runs.append((start, g, lr[start], wd[start]))
                start = g
        return runs

    def _fused_step(self) -> None:
        """torch's one-pass fused AdamW kernel on member slices (views), one call per lr run."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        for lo, hi, lr, wd in self._runs():
            step = torch.tensor(float(self.step_count))
            torch._fused_adamw_(
                [self.params[i].data[lo:hi] for i in live],
                [self.params[i].grad[lo:hi] for i in live],
                [self.exp_avg[i][lo:hi] for i in live],
                [self.exp_avg_sq[i][lo:hi] for i in live],
                [],
                [step] * len(live),
                lr=lr,
                beta1=self.betas[0],
                beta2=self.betas[1],
                weight_decay=wd,
                eps=self.eps,
                amsgrad=False,
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )

    def _plain_step(self) -> None:
        beta1, beta2 = self.betas
        bc1 = 1 - beta1**self.step_count
        bc2_sqrt = math.sqrt(1 - beta2**self.step_count)
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            lr = self.lr.to(p.device).view(shape)
            p.mul_(1 - lr * self.weight_decay.to(p.device).view(shape))
            m.lerp_(p.grad, 1 - beta1)
            v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            denom = v.sqrt().div_(bc2_sqrt).add_(self.eps)
            p.sub_(m.div(denom).mul_(lr / bc1))


@torch.no_grad()
def clip_member_grads(params: list[Tensor], max_norm: Tensor) -> Tensor:
    """clip_grad_norm_ per member (each member's norm over its own slices); returns norms."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros_like(max_norm)
    G = grads[0].shape[0]
    sq = torch.zeros(G, device=grads[0].device)
    for grad in grads:
        sq += torch.linalg.vector_norm(grad.reshape(G, -1), dim=1).square()
    norm = sq.sqrt()
    coef = (max_norm.to(norm.device) / (norm + 1e-6)).clamp(max=1.0)
    coef = torch.where(max_norm.to(norm.device) > 0, coef, torch.ones_like(coef))
    for grad in grads:
        grad.mul_(coef.view((-1,) + (1,) * (grad.dim() - 1)))
    return norm


@dataclass
class MemberResult:
    """What one member ended with: best-on-dev metrics, its test metrics, and its history."""

    best_epoch: int
    dev: dict[str, Any]
    test: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)
    fusion_weights: dict[str, float] = field(default_factory=dict)
    model: FusionModel | None = None


def member_model_config(config: FitConfig, dims: dict[str, Any]) -> ModelConfig:
    return ModelConfig(
        modalities=config.modalities, fusion=config.fusion, heads=task_heads(config.task), proj_dim=config.proj_dim, **dims
    )


def initial_state(model_config: ModelConfig, seed: int) -> dict[str, Tensor]:
    """The weights `emo fit` starts from for this seed (it seeds, then builds the model)."""
    from emo.device import seed_everything

    seed_everything(seed)
    return FusionModel(model_config).state_dict()


def canonical_present(present: Tensor, split_modalities: tuple[str, ...], member: tuple[str, ...]) -> Tensor:
    """[B, len(split_modalities)] presence -> [B, 3] canonical, restricted to `member`."""
    out = torch.zeros(present.shape[0], len(MODALITIES), dtype=torch.bool, device=present.device)
    for i, m in enumerate(split_modalities):
        if m in member:
            out[:, MODALITIES.index(m)] = present[:, i]
    return out


def to_numpy(x: Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()
