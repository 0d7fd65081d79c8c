"""A cached split as device tensors, and batches as index gathers.

The whole split is moved to the device once (mel kept as the cache's flat float16 frames,
never padded to the longest clip); a batch is a handful of index gathers - a clip's mel
frames are rows start..start+len of the flat array - plus vectorised augmentation, so an
epoch has no per-sample Python work and no DataLoader - the nanoGPT pattern. Everything random takes
an explicit `torch.Generator`, so a seed fixes the whole run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from emo.fuse.inputs import ModelInputs
from emo.fuse.dialogue import Dialogues, speaker_ids


MEL_PAD_MULTIPLE = 16


@dataclass
class Batch:
    """Model inputs for a set of rows; `present` is bool[B, M] in the model's modality order."""

    present: Tensor
    emotion: Tensor
    sentiment: Tensor
    text: Tensor | None = None
    visual: Tensor | None = None
    visual_mask: Tensor | None = None
    mel: Tensor | None = None
    mel_lengths: Tensor | None = None
    layout: Tensor | None = None  # long[D, L]: dialogue turns as batch positions (context heads only)
    speaker: Tensor | None = None  # long[B]: speaker or turn-change ids (speaker embedding only)
    audio_vector: Tensor | None = None  # float32 [B, D]: pooled speech-model features

    def inputs(self) -> dict[str, Tensor | None]:
        inputs = {
            "present": self.present,
            "text": self.text,
            "visual": self.visual,
            "visual_mask": self.visual_mask,
            "mel": self.mel,
            "mel_lengths": self.mel_lengths,
        }
        if self.layout is not None:
            inputs["layout"] = self.layout
        if self.speaker is not None:
            inputs["speaker"] = self.speaker
        if self.audio_vector is not None:
            inputs["audio_vector"] = self.audio_vector
        return inputs

    def __len__(self) -> int:
        return int(self.present.shape[0])


class TensorSplit:
    """One split's model inputs on `device`, ready for index gathers. The caller has checked
    that they hold what `modalities` and `text_feature` ask for (`emo.fuse.inputs.check_compatible`)."""

    def __init__(
        self,
        features: ModelInputs,
        modalities: tuple[str, ...],
        device: torch.device | str = "cpu",
        text_feature: str = "cls",
        max_mel_frames: int = 1000,
        keep_frames: bool = False,
        audio_views: bool = False,
    ):
        self.name = features.split
        self.modalities = tuple(modalities)
        self.device = torch.device(device)
        self.size = len(features)
        self.emotion = torch.as_tensor(np.asarray(features.emotion, dtype=np.int64), device=self.device)
        self.sentiment = torch.as_tensor(np.asarray(features.sentiment, dtype=np.int64), device=self.device)
        flags = {"text": features.has_text, "audio": features.has_audio, "visual": features.has_visual}
        present = np.stack([np.asarray(flags[m], dtype=bool) for m in self.modalities], axis=1)
        self.text = self.visual = self.visual_frames = self.visual_mask = None
        self.mel = self.mel_start = self.mel_lengths = self.audio_vector = None
        if "text" in self.modalities:
            source = features.text_cls if text_feature == "cls" else features.text_mean
            self.text = torch.as_tensor(np.asarray(source, dtype=np.float32), device=self.device)
        if "visual" in self.modalities:
            frames = torch.as_tensor(np.asarray(features.visual), device=self.device)
            mask = torch.as_tensor(np.asarray(features.visual_mask, dtype=bool), device=self.device)
            # Frame-averaged once here (in chunks, to keep float32 temporaries small): without
            # frame sampling the model never needs more than the mean.
            self.visual = torch.empty(frames.shape[0], frames.shape[2], dtype=torch.float32, device=self.device)
            for lo in range(0, frames.shape[0], 2048):
                weights = mask[lo : lo + 2048].unsqueeze(-1).float()
                block = (frames[lo : lo + 2048].float() * weights).sum(1)
                self.visual[lo : lo + 2048] = block / weights.sum(1).clamp_min(1.0)
            if keep_frames:
                self.visual_frames, self.visual_mask = frames.to(torch.float16), mask
            present[:, self.modalities.index("visual")] &= mask.any(1).cpu().numpy()
        if "audio" in self.modalities and features.audio_vector is not None:
            self.audio_vector = torch.as_tensor(np.asarray(features.audio_vector, dtype=np.float32), device=self.device)
        if "audio" in self.modalities and features.mel is not None:
            # The cache's flat [M, n_mels] frames stay as they are (float16, no padding);
            # a batch gathers its clips' frames by index, so memory is the cache's size,
            # not N x the longest clip.
            flat = np.asarray(features.mel, dtype=np.float16)
            if flat.shape[0] == 0:
                flat = np.zeros((1, flat.shape[1]), dtype=np.float16)
            self.mel = torch.as_tensor(flat, device=self.device)
            index = np.asarray(features.mel_index, dtype=np.int64)
            views = index.shape[1] if audio_views else 1
            self.mel_start = torch.as_tensor(index[:, :views, 0].T.copy(), device=self.device)  # [V, N]
            lengths = np.minimum(index[:, :views, 1].T, max_mel_frames)
            self.mel_lengths = torch.as_tensor(lengths.copy(), device=self.device)  # [V, N]
            present[:, self.modalities.index("audio")] &= lengths[0] > 0
        self.present = torch.as_tensor(present, device=self.device)
        self._ids = (features.dialogue_id, features.utterance_id)
        self.speakers = list(features.speaker)
        self.speaker: Tensor | None = None

    @functools.cached_property
    def dialogues(self) -> Dialogues:
        """The split's dialogues, built on first use: only context heads and turn embeddings need them."""
        return Dialogues.from_ids(*self._ids, self.speakers)

    def use_speakers(self, mode: str, vocabulary: tuple[str, ...] = ()) -> None:
        """Per-row speaker ids for a speaker embedding: the speaker's index in `vocabulary`
        (`speaker`), or whether the previous turn had the same speaker (`turn`)."""
        if mode == "speaker":
            self.speaker = torch.as_tensor(speaker_ids(self.speakers, vocabulary), device=self.device)
        elif mode == "turn":
            self.speaker = torch.as_tensor(self.dialogues.turn_change, device=self.device)
        else:
            self.speaker = None

    def __len__(self) -> int:
        return self.size

    @property
    def num_views(self) -> int:
        return 0 if self.mel_lengths is None else int(self.mel_lengths.shape[0])

    def lengths(self) -> Tensor:
        """Mel frames per row (view 0), the cost of a row to the CNN; zeros without audio."""
        if self.mel_lengths is None:
            return torch.zeros(self.size, dtype=torch.long, device=self.device)
        return self.mel_lengths[0]

    def gather(self, index: Tensor, views: Tensor | None = None, frames: bool = False) -> Batch:
        """Rows `index` as a Batch; mel is cut to the longest clip among them (padding costs nothing)."""
        batch = Batch(
            present=self.present[index],
            emotion=self.emotion[index],
            sentiment=self.sentiment[index],
        )
        if self.text is not None:
            batch.text = self.text[index]
        if self.visual is not None:
            if frames and self.visual_frames is not None:
                batch.visual = self.visual_frames[index].float()
                batch.visual_mask = self.visual_mask[index]
            else:
                batch.visual = self.visual[index]
        if self.audio_vector is not None:
            batch.audio_vector = self.audio_vector[index]
        if self.mel is not None:
            view = torch.zeros_like(index) if views is None else views[index]
            batch.mel, batch.mel_lengths = self.gather_mel(self.mel_start[view, index], self.mel_lengths[view, index])
        if self.speaker is not None:
            batch.speaker = self.speaker[index]
        return batch

    def gather_mel(self, starts: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """float32 [B, n_mels, T], zero-padded; T = the batch's longest clip rounded up to a
        multiple of 16. Shaped channels-first but laid out [B, T, n_mels] in memory (a
        transposed view): the mel CNN packs frames as rows of that layout, so no copy is made
        to transpose them twice."""
        longest = max(int(lengths.max()), 1)
        longest = -(-longest // MEL_PAD_MULTIPLE) * MEL_PAD_MULTIPLE
        steps = torch.arange(longest, device=self.device)
        last = (lengths - 1).clamp_min(0).unsqueeze(1)
        rows = (starts.unsqueeze(1) + torch.minimum(steps.unsqueeze(0), last)).clamp(0, self.mel.shape[0] - 1)
        frames = self.mel[rows].float()  # [B, T, n_mels]
        frames = frames * (steps.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)
        return frames.transpose(1, 2), lengths


def epoch_batches(lengths: Tensor, batch_size: int, generator: torch.Generator, bucketing: bool = True) -> list[Tensor]:
    """Shuffled training batches; with bucketing, clips of similar mel length share a batch.

    Bucketing sorts within random pools of 50 batches and then shuffles batch order, so
    batches stay random but a batch of short clips is not padded to the longest clip in
    the split. A final batch of one row is dropped (batch norm cannot train on it).
    """
    n = int(lengths.shape[0])
    order = torch.randperm(n, generator=generator)
    if bucketing and n > batch_size:
        pool = batch_size * 50
        chunks = []
        for start in range(0, n, pool):
            chunk = order[start : start + pool]
            chunks.append(chunk[torch.argsort(lengths.cpu()[chunk], stable=True)])
        order = torch.cat(chunks)
    batches = list(torch.split(order, batch_size))
    if bucketing:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return [b for b in batches if b.numel() > 1]


def eval_batches(lengths: Tensor, batch_size: int) -> list[Tensor]:
    """Every row once, sorted by length so evaluation wastes no convolutions on padding."""
    order = torch.argsort(lengths.cpu(), stable=True)
    return list(torch.split(order, batch_size))
