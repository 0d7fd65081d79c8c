"""The trainable part of `emo`: a mel-spectrogram CNN and per-modality projections feeding a
fusion head (`emo.fuse.heads`: early, late, their ensemble, or a plugin's).

Everything upstream (text encoder, image encoder, speech model) is frozen and cached, so the
model only sees fixed-size vectors plus the mel frames, and the same modules serve `emo fit`,
`emo eval` and the batched heads of `emo ablate`. Shapes come from `ModelConfig`, whose
dims follow the cache (768/384-d text, 512/1280-d frames, 40 mel bins), so a checkpoint
can be rebuilt from its stored config alone.

A missing modality is a fact of MELD (broken clips, silent clips), not an error: every
forward takes a `present` mask and the fusion heads never let an absent modality vote.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from emo.fuse.fusion import EarlyFusion, LateFusion  # noqa: F401  (the seed's fusion modules, built by heads)
from emo.fuse.mel_cnn import MelCNN
from emo.labels import EMOTIONS, MODALITIES, SENTIMENTS

TASKS: tuple[str, ...] = ("emotion", "sentiment", "both")
HEAD_SIZES: dict[str, int] = {"emotion": len(EMOTIONS), "sentiment": len(SENTIMENTS)}


def task_heads(task: str) -> tuple[str, ...]:
    """The label heads a task trains: `both` means emotion and sentiment jointly."""
    return ("emotion", "sentiment") if task == "both" else (task,)


@dataclass
class ModelConfig:
    modalities: tuple[str, ...] = MODALITIES  # subset of text/audio/visual, in MODALITIES order
    text_dim: int = 768  # cached text embedding size (768 BERT-base, 384 MiniLM)
    visual_dim: int = 512  # cached per-frame image embedding size (512 CLIP ViT-B/32, 1280 EfficientNet-Lite0)
    n_mels: int = 40  # mel bins in the cache
    audio_mel: bool = True  # the audio encoder has the mel CNN (the cache's log-mel set)
    audio_dim: int = 0  # pooled speech-model features (e.g. whisper-base) projected and added; 0 = none
    proj_dim: int = 256  # every modality is projected to this size before fusion
    mel_channels: tuple[int, int] = (64, 128)  # the two Conv1d layers of the mel CNN
    fusion: str = "ensemble"  # a registered fusion head (emo.fuse.heads): early | late | ensemble | a plugin's
    heads: tuple[str, ...] = ("emotion",)  # label heads: emotion and/or sentiment
    early_hidden: tuple[int, int] = (512, 256)  # early-fusion MLP widths
    early_dropout: tuple[float, float] = (0.4, 0.3)  # dropout after each early-fusion block
    early_mask_input: bool = True  # early fusion also sees the presence mask, not just zeros
    late_hidden: int = 128  # per-modality late-fusion MLP width
    context_model: str = "none"  # none | gru | transformer: a sequence model over each dialogue
    context_direction: str = "both"  # both | past (causal: only earlier turns, for live use)
    context_layers: int = 1
    context_dim: int = 128  # width of the context GRU / transformer
    speaker_embedding: str = "none"  # none | speaker (learned per speaker) | turn (same speaker as before?)
    speakers: tuple[str, ...] = ()  # the speaker vocabulary (index 0 = everyone else)
    # layers sets (emo.fuse.layer_mix): how text_dim / audio_dim columns split into parts
    # (emo.fuse.inputs' layout; () = one plain vector) and how each layers part is mixed
    text_layout: tuple[dict[str, Any], ...] = ()
    audio_layout: tuple[dict[str, Any], ...] = ()
    layer_mix: str = "weighted"
    layer_norm: bool = False

    def __post_init__(self) -> None:
        self.modalities = tuple(m for m in MODALITIES if m in tuple(self.modalities))
        self.text_layout = tuple(dict(part) for part in self.text_layout)
        self.audio_layout = tuple(dict(part) for part in self.audio_layout)
        self.mel_channels = tuple(self.mel_channels)
        self.heads = tuple(self.heads)
        self.early_hidden = tuple(self.early_hidden)
        self.early_dropout = tuple(self.early_dropout)
        self.speakers = tuple(self.speakers)
        if not self.modalities:
            raise ValueError("a model needs at least one modality")
        from emo.fuse.heads import head_names

        if self.fusion not in head_names():
            raise ValueError(f"unknown fusion {self.fusion!r}")
        if "audio" in self.modalities and not self.audio_mel and self.audio_dim <= 0:
            raise ValueError("an audio model needs the mel CNN (audio_mel) or audio_dim > 0")

    @property
    def has_context(self) -> bool:
        return self.context_model != "none"

    @property
    def num_slots(self) -> int:
        """Inputs of the fusion heads: one per modality, plus the dialogue context if any."""
        return len(self.modalities) + int(self.has_context)

    @property
    def num_outputs(self) -> int:
        return sum(HEAD_SIZES[h] for h in self.heads)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists/str/numbers, so a checkpoint holding it loads with weights_only=True."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over dim 1 of [B, T, D] counting only mask[B, T] positions; all-masked rows give 0."""
    weights = mask.to(values.dtype).unsqueeze(-1)
    return (values * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class ModalityEncoders(nn.Module):
    """Project each modality's cached features to `proj_dim`, zeroing absent ones."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        from emo.fuse.layer_mix import mixed_input

        self.modalities = config.modalities
        # A layers set is mixed (emo.fuse.layer_mix) before its modality's projection; without
        # one these are None and the model is exactly what it was before layer mixing.
        text, audio = "text" in config.modalities, "audio" in config.modalities
        self.text_mix = mixed_input(config.text_layout, config.layer_mix, config.layer_norm) if text else None
        self.audio_mix = mixed_input(config.audio_layout, config.layer_mix, config.layer_norm) if audio else None
        text_in = self.text_mix.out_dim if self.text_mix is not None else config.text_dim
        self.text = nn.Linear(text_in, config.proj_dim) if text else None
        self.audio = MelCNN(config.n_mels, config.mel_channels, config.proj_dim) if audio and config.audio_mel else None
        # A speech model's pooled features: one more projection into the same audio slot,
        # summed with the mel CNN's when a run uses both (a late sum keeps one audio slot,
        # so fusion heads, modality dropout and importance treat audio as one modality).
        audio_in = self.audio_mix.out_dim if self.audio_mix is not None else config.audio_dim
        self.audio_vector = nn.Linear(audio_in, config.proj_dim) if audio and config.audio_dim > 0 else None
        self.visual = nn.Linear(config.visual_dim, config.proj_dim) if "visual" in config.modalities else None

    def forward(
        self,
        present: Tensor,
        text: Tensor | None = None,
        visual: Tensor | None = None,
        visual_mask: Tensor | None = None,
        mel: Tensor | None = None,
        mel_lengths: Tensor | None = None,
        audio_vector: Tensor | None = None,
    ) -> Tensor:
        """-> [B, M, proj_dim] in `config.modalities` order; rows of absent modalities are 0.

        `visual` is either per-frame [B, F, D] with `visual_mask` [B, F], or already
        frame-averaged [B, D]: the projection is linear, so averaging first is the same
        function and lets the trainer pool once instead of every epoch. Audio is the mel
        CNN's embedding, `audio_vector`'s projection [B, audio_dim], or their sum.
        """
        outputs = []
        for name in self.modalities:
            if name == "text":
                outputs.append(self.text(text if self.text_mix is None else self.text_mix(text)))
            elif name == "audio":
                parts = []
                if self.audio is not None:
                    parts.append(self.audio(mel, mel_lengths))
                if self.audio_vector is not None:
                    vector = audio_vector if self.audio_mix is None else self.audio_mix(audio_vector)
                    parts.append(self.audio_vector(vector))
                outputs.append(parts[0] if len(parts) == 1 else parts[0] + parts[1])
            else:
                pooled = visual if visual.dim() == 2 else masked_mean(visual, visual_mask)
                outputs.append(self.visual(pooled))
        stacked = torch.stack(outputs, dim=1)
        return stacked * present.to(stacked.dtype).unsqueeze(-1)


class FusionModel(nn.Module):
    """Encoders, the optional dialogue context, and the fusion head `config.fusion` names
    (`emo.fuse.heads`: early, late, their learned-weight ensemble, or a plugin's).

    The head's parameters, buffers and modules become the model's own, under the head's
    names (`early.net.0.weight`, `early_logit`), rather than sitting under a `head.`
    prefix: checkpoints keep the keys they had before heads were a registry, and the
    optimiser and gradient clipping see the parameters in the order they always did, so a
    seeded fit gives the same weights.
    """

    def __init__(self, config: ModelConfig):
        from emo.fuse.heads import build_head

        super().__init__()
        self.config = config
        self.encoders = ModalityEncoders(config)
        self.context = None
        if config.has_context:
            from emo.fuse.context import ContextModel

            self.context = ContextModel(
                len(config.modalities),
                config.proj_dim,
                config.context_model,
                config.context_dim,
                config.context_direction,
                config.context_layers,
                config.speaker_embedding,
                len(config.speakers),
            )
        head = build_head(config)  # built last, as the fusion modules always were: the same seeded init
        parts = [*head.named_parameters(recurse=False), *head.named_buffers(recurse=False), *head.named_children()]
        for name, part in parts:
            if hasattr(self, name):
                raise ValueError(f"fusion head {config.fusion!r} names a part {name!r}, which the model already has")
            if isinstance(part, nn.Parameter):
                self.register_parameter(name, part)
            elif isinstance(part, nn.Module):
                self.add_module(name, part)
            else:
                self.register_buffer(name, part)
        self.__dict__["head"] = head  # a plain attribute: its parts are registered above

    def _apply(self, fn, *args, **kwargs):
        """`.to()` may replace the model's own tensors; the head must keep seeing the same ones."""
        super()._apply(fn, *args, **kwargs)
        for store in ("_parameters", "_buffers"):
            for name in getattr(self.head, store):
                getattr(self.head, store)[name] = getattr(self, store)[name]
        return self

    def train(self, mode: bool = True) -> "FusionModel":
        super().train(mode)
        self.head.training = mode  # its modules are the model's children; its own flag is not
        return self

    def fusion_weights(self) -> dict[str, float]:
        """The head's own weights (the ensemble's mix), or all weight on the one head."""
        weights = getattr(self.head, "weights", None)
        return weights() if callable(weights) else {self.config.fusion: 1.0}

    def fuse(self, embeddings: Tensor, present: Tensor) -> Tensor:
        return self.head(embeddings, present)

    def split_heads(self, logits: Tensor) -> dict[str, Tensor]:
        out, start = {}, 0
        for head in self.config.heads:
            out[head] = logits[:, start : start + HEAD_SIZES[head]]
            start += HEAD_SIZES[head]
        return out

    def forward(
        self,
        present: Tensor,
        text: Tensor | None = None,
        visual: Tensor | None = None,
        visual_mask: Tensor | None = None,
        mel: Tensor | None = None,
        mel_lengths: Tensor | None = None,
        layout: Tensor | None = None,
        speaker: Tensor | None = None,
        audio_vector: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """present bool[B, M] (config.modalities order) + features -> {head: logits[B, K]}.

        With a context model, `layout` long[D, L] gives each dialogue's turns (positions in
        the batch, -1 = padding; see emo.fuse.dialogue) and `speaker` long[B] the speaker
        or turn-change ids; without a layout every utterance is its own dialogue.
        `audio_vector` [B, audio_dim]: pooled speech-model features (models with audio_dim).
        """
        embeddings = self.encoders(present, text, visual, visual_mask, mel, mel_lengths, audio_vector)
        if self.context is not None:
            context = self.context(embeddings, present, layout, speaker)
            embeddings = torch.cat([embeddings, context.unsqueeze(1)], dim=1)
            present = torch.cat([present, present.new_ones(present.shape[0], 1)], dim=1)
        return self.split_heads(self.fuse(embeddings, present))
