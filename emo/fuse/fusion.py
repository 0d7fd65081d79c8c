"""The built-in fusion heads: early, late, and their learned-weight ensemble.

Each is registered by name in `emo.fuse.heads` and built by `FusionModel` from its
`ModelConfig` (read, not imported here: the config's `num_slots`, `proj_dim`,
`num_outputs` and the head's own widths). They see the fusion slots - one projected
embedding per modality, zero where absent, plus the dialogue context - and a `present`
mask, and never let an absent slot vote.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class EarlyFusion(nn.Module):
    """Concatenate the projected modalities (zeros where absent, plus the mask) into one MLP."""

    def __init__(self, config: Any):
        super().__init__()
        num = config.num_slots
        self.mask_input = config.early_mask_input
        width = num * config.proj_dim + (num if self.mask_input else 0)
        h1, h2 = config.early_hidden
        d1, d2 = config.early_dropout
        self.net = nn.Sequential(
            nn.Linear(width, h1),
            nn.BatchNorm1d(h1),
            nn.ReLU(),
            nn.Dropout(d1),
            nn.Linear(h1, h2),
            nn.BatchNorm1d(h2),
            nn.ReLU(),
            nn.Dropout(d2),
            nn.Linear(h2, config.num_outputs),
        )

    def forward(self, embeddings: Tensor, present: Tensor) -> Tensor:
        flat = embeddings.flatten(1)
        if self.mask_input:
            flat = torch.cat([flat, present.to(flat.dtype)], dim=1)
        return self.net(flat)


class LateFusion(nn.Module):
    """One small classifier per modality; their logits are averaged over present modalities."""

    def __init__(self, config: Any):
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Linear(config.proj_dim, config.late_hidden),
                nn.ReLU(),
                nn.Linear(config.late_hidden, config.num_outputs),
            )
            for _ in range(config.num_slots)
        )

    def forward(self, embeddings: Tensor, present: Tensor) -> Tensor:
        logits = torch.stack([head(embeddings[:, i]) for i, head in enumerate(self.heads)], dim=1)
        weights = present.to(logits.dtype).unsqueeze(-1)  # [B, M, 1]
        return (logits * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class EarlyHead(nn.Module):
    """`--fusion early`: the early-fusion MLP alone."""

    def __init__(self, config: Any):
        super().__init__()
        self.early = EarlyFusion(config)

    def forward(self, embeddings: Tensor, present: Tensor) -> Tensor:
        return self.early(embeddings, present)


class LateHead(nn.Module):
    """`--fusion late`: the per-slot classifiers alone."""

    def __init__(self, config: Any):
        super().__init__()
        self.late = LateFusion(config)

    def forward(self, embeddings: Tensor, present: Tensor) -> Tensor:
        return self.late(embeddings, present)


class EnsembleFusion(nn.Module):
    """`--fusion ensemble`: early and late mixed with learned weights, w = sigmoid(scalar) per
    head, normalised, so training decides how much each view of the data is trusted."""

    def __init__(self, config: Any):
        super().__init__()
        self.early = EarlyFusion(config)
        self.late = LateFusion(config)
        self.early_logit = nn.Parameter(torch.zeros(()))
        self.late_logit = nn.Parameter(torch.zeros(()))

    def weights(self) -> dict[str, float]:
        """The normalised weights on the early and late heads."""
        w_early = torch.sigmoid(self.early_logit).item()
        w_late = torch.sigmoid(self.late_logit).item()
        return {"early": w_early / (w_early + w_late), "late": w_late / (w_early + w_late)}

    def forward(self, embeddings: Tensor, present: Tensor) -> Tensor:
        w_early = torch.sigmoid(self.early_logit)
        w_late = torch.sigmoid(self.late_logit)
        mixed = self.early(embeddings, present) * w_early + self.late(embeddings, present) * w_late
        return mixed / (w_early + w_late)
