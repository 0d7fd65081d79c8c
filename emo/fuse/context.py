"""Dialogue context: a GRU or transformer over each dialogue's fused utterance embeddings.

Whether "Really?" is joy or fear depends on what was said before; every strong MELD system
(bcLSTM, DialogueRNN, COSMIC, EmoBERTa) models the dialogue. With frozen features cached,
this is cheap: the sequence model runs over one small vector per utterance.

The context vector of each utterance becomes one more input slot of the fusion heads
(beside text, audio and visual), so early, late and ensemble fusion, modality subsets,
modality dropout and "modality importance" all work unchanged. `direction="past"` is
causal (a turn sees only itself and earlier turns: what live use needs); `"both"` sees
the whole dialogue, as the published offline systems do.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from emo.fuse.recurrence import run_gru

CONTEXT_MODELS: tuple[str, ...] = ("none", "gru", "transformer")
DIRECTIONS: tuple[str, ...] = ("both", "past")
SPEAKER_EMBEDDINGS: tuple[str, ...] = ("none", "speaker", "turn")  # turn = same speaker as the previous turn?
MAX_POSITIONS = 128  # turns with a learned position (later turns share the last one)


class ContextModel(nn.Module):
    def __init__(
        self,
        num_modalities: int,
        proj_dim: int,
        kind: str = "gru",
        width: int = 128,
        direction: str = "both",
        layers: int = 1,
        speaker_embedding: str = "none",
        num_speakers: int = 1,
        dropout: float = 0.1,
    ):
        super().__init__()
        if kind not in CONTEXT_MODELS[1:] or direction not in DIRECTIONS:
            raise ValueError(f"unknown context model {kind!r} / direction {direction!r}")
        self.kind, self.causal = kind, direction == "past"
        # The sequence model runs at `width` (narrower than the modality projections): a CPU
        # GRU/attention step costs width^2 per turn, and a dialogue's gist needs few dimensions.
        self.utterance = nn.Sequential(
            nn.Linear(num_modalities * proj_dim + num_modalities, width), nn.LayerNorm(width), nn.ReLU()
        )
        self.speaker = None
        if speaker_embedding == "speaker":
            self.speaker = nn.Embedding(max(num_speakers, 1), width)
        elif speaker_embedding == "turn":
            self.speaker = nn.Embedding(3, width)  # first turn / same speaker / other speaker
        if kind == "gru":
            hidden = width if self.causal else width // 2
            self.sequence = nn.GRU(width, hidden, num_layers=layers, batch_first=True, bidirectional=not self.causal)
        else:
            self.position = nn.Embedding(MAX_POSITIONS, width)
            layer = nn.TransformerEncoderLayer(
                width, nhead=4, dim_feedforward=2 * width, dropout=dropout, batch_first=True, norm_first=True
            )
            self.sequence = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, proj_dim), nn.ReLU())

    def forward(self, embeddings: Tensor, present: Tensor, layout: Tensor | None, speaker: Tensor | None) -> Tensor:
        """embeddings [B, M, P], present bool[B, M], layout long[D, L] (-1 = pad) -> [B, P]."""
        batch = embeddings.shape[0]
        if layout is None:  # no dialogue given: every utterance is a dialogue of its own
            layout = torch.arange(batch, device=embeddings.device).unsqueeze(1)
        units = self.utterance(torch.cat([embeddings.flatten(1), present.to(embeddings.dtype)], dim=1))
        if self.speaker is not None and speaker is not None:
            units = units + self.speaker(speaker)
        valid = layout >= 0
        positions = layout[valid]
        sequence = units.new_zeros(*layout.shape, units.shape[-1])
        sequence[valid] = units[positions]
        if self.kind == "gru":
            hidden = run_gru(self.sequence, sequence, valid)  # emo.fuse.recurrence: few kernels on CPU
        else:
            steps = torch.arange(layout.shape[1], device=layout.device).clamp_max(MAX_POSITIONS - 1)
            sequence = sequence + self.position(steps).unsqueeze(0)
            mask = None
            if self.causal:
                ones = torch.ones(layout.shape[1], layout.shape[1], dtype=torch.bool, device=layout.device)
                mask = torch.triu(ones, diagonal=1)  # True = may not attend: every later turn
            hidden = self.sequence(sequence, mask=mask, src_key_padding_mask=~valid, is_causal=self.causal)
        context = hidden.new_zeros(batch, hidden.shape[-1])
        context[positions] = hidden[valid]
        return self.out(context)
