"""Training-time augmentation on cached tensors, vectorised over the batch.

Frozen-encoder features cannot be re-augmented at the pixel or waveform level without
re-running the encoders, so augmentation works on what the cache holds: masks and crops
of the mel, subsets of the cached frames, hidden modalities. Random numbers come from a
CPU `torch.Generator` so the same seed gives the same run on any device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from emo.fuse.tensors import Batch


def _rand(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(shape, generator=generator).to(device)


def modality_dropout(present: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Hide each present modality with chance p, never hiding all of a row's modalities."""
    if p <= 0 or present.shape[1] < 2:
        return present
    keep = _rand(tuple(present.shape), generator, present.device) >= p
    dropped = present & keep
    emptied = ~dropped.any(1, keepdim=True)
    return torch.where(emptied, present, dropped)


def sample_frames(mask: Tensor, keep: float, generator: torch.Generator) -> Tensor:
    """Keep each valid frame with chance `keep`; a row that would lose all its frames keeps them."""
    chosen = mask & (_rand(tuple(mask.shape), generator, mask.device) < keep)
    return torch.where(chosen.any(1, keepdim=True), chosen, mask)


def random_crop(mel: Tensor, lengths: Tensor, frames: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A random window of `frames` frames from each clip's valid part (shorter clips are kept whole)."""
    if frames <= 0 or mel.shape[-1] <= frames:
        return mel, lengths
    slack = (lengths - frames).clamp_min(0)
    start = (_rand((mel.shape[0],), generator, mel.device) * (slack + 1).float()).long().clamp_max(slack)
    index = start.unsqueeze(1) + torch.arange(frames, device=mel.device)  # [B, frames]
    index = index.clamp_max(mel.shape[-1] - 1).unsqueeze(1).expand(-1, mel.shape[1], -1)
    return mel.gather(2, index), lengths.clamp_max(frames)


def spec_augment(
    mel: Tensor,
    lengths: Tensor,
    generator: torch.Generator,
    freq_masks: int = 2,
    freq_width: int = 8,
    time_masks: int = 2,
    time_width: int = 40,
) -> Tensor:
    """SpecAugment (Park et al., 2019) frequency and time masks, filled with each clip's mean.

    Log-mel values are not centred on zero, so masking with the clip's mean level keeps a
    mask from looking like a loud or silent event.
    """
    batch, n_mels, frames = mel.shape
    device = mel.device
    valid = torch.arange(frames, device=device) < lengths.unsqueeze(1)  # [B, T]
    fill = (mel * valid.unsqueeze(1)).sum((1, 2)) / (valid.sum(1).clamp_min(1) * n_mels)
    masked = torch.zeros(batch, n_mels, frames, dtype=torch.bool, device=device)
    bins = torch.arange(n_mels, device=device)
    steps = torch.arange(frames, device=device)
    for _ in range(freq_masks):
        width = (_rand((batch,), generator, device) * (freq_width + 1)).long()
        start = (_rand((batch,), generator, device) * (n_mels - width + 1).float()).long()
        band = (bins >= start.unsqueeze(1)) & (bins < (start + width).unsqueeze(1))  # [B, F]
        masked |= band.unsqueeze(2)
    for _ in range(time_masks):
        width = torch.minimum((_rand((batch,), generator, device) * (time_width + 1)).long(), lengths)
        start = (_rand((batch,), generator, device) * (lengths - width + 1).clamp_min(1).float()).long()
        span = (steps >= start.unsqueeze(1)) & (steps < (start + width).unsqueeze(1))  # [B, T]
        masked |= span.unsqueeze(1)
    return torch.where(masked, fill.view(batch, 1, 1).to(mel.dtype), mel)


def augment_batch(batch: Batch, config, generator: torch.Generator, modalities: tuple[str, ...]) -> Batch:
    """Apply the FitConfig's enabled augmentations to a training batch (in place, returned)."""
    if batch.mel is not None:
        if config.mel_crop_frames > 0:
            batch.mel, batch.mel_lengths = random_crop(batch.mel, batch.mel_lengths, config.mel_crop_frames, generator)
        if config.spec_augment:
            batch.mel = spec_augment(
                batch.mel,
                batch.mel_lengths,
                generator,
                config.freq_masks,
                config.freq_mask_width,
                config.time_masks,
                config.time_mask_width,
            )
    if batch.visual_mask is not None and config.frame_sampling:
        batch.visual_mask = sample_frames(batch.visual_mask, config.frame_keep, generator)
    if config.modality_dropout > 0:
        batch.present = modality_dropout(batch.present, config.modality_dropout, generator)
    return batch
