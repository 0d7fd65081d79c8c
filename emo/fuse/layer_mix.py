"""Layer mixing: how a `layers` feature set (one pooled vector per hidden state) enters the head.

A frozen encoder's last layer is tuned for its pre-training task (a sentence encoder's for
similarity, a speech model's for predicting masked units), not for affect; the middle layers
often keep more of it. Probing every layer of all-MiniLM-L6-v2 on MELD put the mean of all
layers about 1.7 weighted-F1 points above the last one (issue #20). So the cache may store
every layer of an encoder (`emo extract --text-layers all`, `--audio-layers all`: a set of
kind `layers`, [N, L, D]) and the head decides how to combine them (`--layer-mix`):

- `weighted` (the default): a learned scalar per layer, softmax-normalised, times a learned
  global scale gamma - the scalar mix of ELMo (Peters et al., 2018) that SUPERB (Yang et
  al., 2021) uses to probe speech models. L + 1 parameters; the softmax keeps the weights
  a distribution, so they can be read as "which layers the head used" (`emo eval` reports
  them), and gamma lets the mix's scale follow what the projection after it wants. The
  scalars start at 0 (every layer weighted 1/L, the `mean` mix) and gamma at 1, so no
  random number is drawn and a seeded fit stays reproducible.
- `mean`: the equal-weight average of the layers, nothing learned (the probe's best
  cheap choice, and the baseline the learned weights are compared with).
- `concat`: every layer side by side, L * D inputs to the projection: the most flexible
  and the most parameters (L times the projection's weights).
- `last`: only the last stored layer, as a plain vector set of that layer would be.

`layer_norm` normalises each layer over its D features (no learned scale or shift) before
mixing. Layers of one encoder differ in scale by an order of magnitude (the embedding
output is small, later residual streams grow), so without it a weight partly measures a
layer's norm rather than its use; with it the weights compare like with like, as in
SUPERB's and ELMo's optional normalisation. No affine part: the projection that follows
already rescales every feature, so per-layer gains would add L * 2 * D parameters that
learn nothing it cannot.

In the model a modality's vector sets are concatenated into one input row (see
`emo.fuse.inputs`: a layers set's [L, D] is flattened there, so batches stay one gather);
`MixedInput` cuts that row back into its parts by the layout `compose` recorded, sends
each layers part through its `LayerMix` and concatenates the results for the modality's
projection. A run without a layers set never builds one, so its weights and checkpoint
keys are exactly what they were before layer mixing existed.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from emo.units import index_ranges

# What `--layer-mix` may name (`emo.fuse.config.LAYER_MIXES` validates the same names before
# torch loads; a test holds the two equal - importing the config here would close an import cycle).
MODES: tuple[str, ...] = ("weighted", "mean", "concat", "last")


class LayerMix(nn.Module):
    """[B, L, D] hidden states of one set -> [B, D] (`concat`: [B, L * D]); see the module docstring."""

    def __init__(self, num_layers: int, dim: int, mode: str = "weighted", layer_norm: bool = False):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown layer mix {mode!r}; expected one of {MODES}")
        if num_layers < 1 or dim < 1:
            raise ValueError(f"a layer mix needs at least one layer and one feature; got {num_layers} x {dim}")
        self.num_layers, self.dim, self.mode, self.layer_norm = int(num_layers), int(dim), mode, bool(layer_norm)
        if mode == "weighted":
            self.scalars = nn.Parameter(torch.zeros(self.num_layers))  # softmax(0) = 1/L each: the mean
            self.gamma = nn.Parameter(torch.ones(()))

    @property
    def out_dim(self) -> int:
        return self.num_layers * self.dim if self.mode == "concat" else self.dim

    def weights(self) -> Tensor | None:
        """The softmax weight of each layer (sums to 1); None for mixes that learn none."""
        return torch.softmax(self.scalars, dim=0) if self.mode == "weighted" else None

    def forward(self, hidden: Tensor) -> Tensor:
        if self.layer_norm:
            hidden = F.layer_norm(hidden, (self.dim,))
        if self.mode == "weighted":
            weights = torch.softmax(self.scalars, dim=0).to(hidden.dtype)
            return self.gamma.to(hidden.dtype) * torch.einsum("bld,l->bd", hidden, weights)
        if self.mode == "mean":
            return hidden.mean(1)
        if self.mode == "last":
            return hidden[:, -1]
        return hidden.flatten(1)


def layout_width(part: dict[str, Any]) -> int:
    """Columns a layout part takes in the modality's concatenated input row."""
    if part["kind"] == "layers":
        return len(part["layers"]) * int(part["dim"])
    return int(part["width"])


def has_layers(layout: Sequence[dict[str, Any]]) -> bool:
    return any(part["kind"] == "layers" for part in layout)


class MixedInput(nn.Module):
    """A modality's input row [B, W] cut into its layout's parts, each layers part mixed, the
    parts concatenated again in order: [B, out_dim], ready for the modality's projection.

    `layout` is plain data (`emo.fuse.inputs` makes it, the checkpoint's model config keeps
    it): per part {"set", "kind": "vector", "width"} or {"set", "kind": "layers", "layers":
    hidden-state indices, "dim"}; a presence column per set is a vector part of its own."""

    def __init__(self, layout: Sequence[dict[str, Any]], mode: str = "weighted", layer_norm: bool = False):
        super().__init__()
        self.layout = [dict(part) for part in layout]
        self.widths = [layout_width(part) for part in self.layout]
        self.mixes = nn.ModuleList(
            LayerMix(len(part["layers"]), int(part["dim"]), mode, layer_norm)
            for part in self.layout
            if part["kind"] == "layers"
        )

    @property
    def in_dim(self) -> int:
        return sum(self.widths)

    @property
    def out_dim(self) -> int:
        mixes = iter(self.mixes)
        return sum(next(mixes).out_dim if p["kind"] == "layers" else w for p, w in zip(self.layout, self.widths))

    def forward(self, row: Tensor) -> Tensor:
        if row.shape[-1] != self.in_dim:
            raise ValueError(f"expected {self.in_dim} input features for this layout, got {row.shape[-1]}")
        parts, mixes = [], iter(self.mixes)
        for part, piece in zip(self.layout, torch.split(row, self.widths, dim=-1)):
            if part["kind"] == "layers":
                piece = next(mixes)(piece.reshape(piece.shape[0], len(part["layers"]), int(part["dim"])))
            parts.append(piece)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def report(self) -> dict[str, dict[str, Any]]:
        """Per layers set, what the head does with its layers (see `describe_mix`)."""
        parts = [p for p in self.layout if p["kind"] == "layers"]
        return {part["set"]: describe_mix(mix, part["layers"]) for part, mix in zip(parts, self.mixes)}


def describe_mix(mix: LayerMix, layers: Sequence[int]) -> dict[str, Any]:
    """What one set's mix uses, honestly: the learned softmax weight per hidden-state index and
    gamma for `weighted`; for the fixed mixes, which layers they take and that nothing was learned."""
    layers = [int(i) for i in layers]
    out: dict[str, Any] = {"mode": mix.mode, "layer_norm": mix.layer_norm, "layers": layers}
    span = index_ranges(layers)  # 0-6, or 2, 4, 6
    if mix.mode == "weighted":
        weights = mix.weights().detach().cpu().tolist()
        out.update(learned=True, weights=[float(w) for w in weights], gamma=float(mix.gamma.detach().cpu()))
        out["uses"] = f"a learned softmax-weighted sum of hidden states {span}, scaled by gamma"
        return out
    out["learned"] = False
    out["uses"] = {
        "mean": f"the mean of hidden states {span} (fixed equal weights, nothing learned)",
        "last": f"hidden state {layers[-1]} only, the last one stored (nothing learned)",
        "concat": f"hidden states {span} side by side ({len(layers)} x {mix.dim} inputs to the projection; "
        "no per-layer weight)",
    }[mix.mode]
    return out


def mixed_input(layout: Sequence[dict[str, Any]], mode: str, layer_norm: bool) -> MixedInput | None:
    """The modality's `MixedInput`, or None when its layout holds no layers set (a plain
    vector input, projected as it always was)."""
    return MixedInput(layout, mode, layer_norm) if layout and has_layers(layout) else None


def mix_report(model: nn.Module) -> dict[str, dict[str, Any]]:
    """{layers set name: `describe_mix`} for every layers set a `FusionModel` reads ({} for none)."""
    out: dict[str, dict[str, Any]] = {}
    encoders = getattr(model, "encoders", None)
    for name in ("text_mix", "audio_mix"):
        mixed = getattr(encoders, name, None)
        if mixed is not None:
            out.update(mixed.report())
    return out
