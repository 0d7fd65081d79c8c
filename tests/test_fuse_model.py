"""Shapes, masks and augmentation of emo.fuse's model: absent modalities never vote."""

from __future__ import annotations

import emo.fuse  # noqa: F401, I001 - first: sets OpenMP's passive wait policy before torch loads
import pytest
import torch

from emo.fuse.augment import modality_dropout, random_crop, sample_frames, spec_augment
from emo.fuse.tensors import TensorSplit, epoch_batches
from emo.fuse.model import EarlyFusion, FusionModel, LateFusion, MelCNN, ModelConfig
from synthetic_features import make_synthetic_split


def inputs(batch=5, text_dim=384, visual_dim=1280, frames=4, n_mels=40, time=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "present": torch.ones(batch, 3, dtype=torch.bool),
        "text": torch.randn(batch, text_dim, generator=g),
        "visual": torch.randn(batch, frames, visual_dim, generator=g),
        "visual_mask": torch.ones(batch, frames, dtype=torch.bool),
        "mel": torch.randn(batch, n_mels, time, generator=g),
        "mel_lengths": torch.full((batch,), time),
    }


@pytest.mark.parametrize("fusion", ["early", "late", "ensemble"])
@pytest.mark.parametrize("heads", [("emotion",), ("sentiment",), ("emotion", "sentiment")])
def test_output_shapes_follow_heads_and_cache_dims(fusion, heads):
    model = FusionModel(ModelConfig(text_dim=384, visual_dim=1280, fusion=fusion, heads=heads)).eval()
    out = model(**inputs())
    assert list(out) == list(heads)
    for head, logits in out.items():
        assert logits.shape == (5, 7 if head == "emotion" else 3)
        assert torch.isfinite(logits).all()


def test_seed_design_layer_sizes():
    model = FusionModel(ModelConfig())
    early = [m for m in model.early.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in early] == [(768 + 3, 512), (512, 256), (256, 7)]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.early.net) == 2
    late = [(m.in_features, m.out_features) for m in model.late.heads[0] if isinstance(m, torch.nn.Linear)]
    assert late == [(256, 128), (128, 7)]
    convs = [m for m in model.encoders.audio.conv if isinstance(m, torch.nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [(40, 64, 3), (64, 128, 3)]
    assert model.fusion_weights() == pytest.approx({"early": 0.5, "late": 0.5})


def test_mel_cnn_pools_only_valid_frames():
    cnn = MelCNN().eval()
    clip = torch.randn(1, 40, 30)
    short = cnn(clip, torch.tensor([30]))
    padded = cnn(torch.cat([clip, torch.randn(1, 40, 70) * 5], dim=2), torch.tensor([30]))
    assert torch.allclose(short, padded, atol=1e-5)
    assert cnn(torch.randn(2, 40, 3), torch.tensor([3, 0])).shape == (2, 256)


@pytest.mark.parametrize("fusion", ["early", "late", "ensemble"])
def test_absent_modality_features_do_not_change_predictions(fusion):
    model = FusionModel(ModelConfig(text_dim=384, visual_dim=1280, fusion=fusion)).eval()
    base = inputs()
    base["present"][:, 1] = False  # audio missing
    changed = dict(base, mel=torch.randn_like(base["mel"]) * 10)
    a, b = model(**base)["emotion"], model(**changed)["emotion"]
    assert torch.allclose(a, b, atol=1e-5)
    both = dict(base, present=torch.ones_like(base["present"]))
    assert not torch.allclose(model(**both)["emotion"], model(**dict(both, mel=changed["mel"]))["emotion"])


def test_late_fusion_averages_over_present_modalities_only():
    config = ModelConfig(fusion="late")
    late = LateFusion(config).eval()
    emb = torch.randn(4, 3, 256)
    only_text = torch.tensor([[True, False, False]] * 4)
    expected = late.heads[0](emb[:, 0])
    assert torch.allclose(late(emb, only_text), expected, atol=1e-6)
    nothing = torch.zeros(4, 3, dtype=torch.bool)
    assert torch.equal(late(emb, nothing), torch.zeros(4, 7))


def test_early_fusion_sees_mask_and_modality_subsets():
    config = ModelConfig(modalities=("visual", "text"), text_dim=16, visual_dim=8)
    assert config.modalities == ("text", "visual")
    early = EarlyFusion(config)
    assert early.net[0].in_features == 2 * 256 + 2
    model = FusionModel(config).eval()
    x = inputs(text_dim=16, visual_dim=8)
    out = model(present=x["present"][:, :2], text=x["text"], visual=x["visual"], visual_mask=x["visual_mask"])
    assert out["emotion"].shape == (5, 7)
    assert model.encoders.audio is None


def test_model_config_round_trips_as_plain_data():
    config = ModelConfig(modalities=("text", "audio"), fusion="late", heads=("emotion", "sentiment"), text_dim=384)
    data = config.to_dict()
    assert all(not isinstance(v, tuple) for v in data.values())
    assert ModelConfig.from_dict(data) == config


def test_visual_prepooled_equals_per_frame_projection():
    model = FusionModel(ModelConfig(modalities=("visual",), visual_dim=8)).eval()
    frames = torch.randn(3, 4, 8)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    present = torch.ones(3, 1, dtype=torch.bool)
    pooled = (frames * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
    a = model(present, visual=frames, visual_mask=mask)["emotion"]
    b = model(present, visual=pooled)["emotion"]
    assert torch.allclose(a, b, atol=1e-5)


def test_modality_dropout_never_hides_every_modality():
    g = torch.Generator().manual_seed(0)
    present = torch.rand(2000, 3, generator=torch.Generator().manual_seed(1)) > 0.3
    present[0] = False
    dropped = modality_dropout(present, 0.9, g)
    assert not (dropped & ~present).any()
    assert (dropped.any(1) == present.any(1)).all()
    assert dropped.sum() < present.sum()


def test_mel_augmentations_respect_valid_frames():
    g = torch.Generator().manual_seed(0)
    mel = torch.randn(6, 40, 100)
    lengths = torch.tensor([100, 80, 50, 20, 10, 5])
    cropped, new_lengths = random_crop(mel, lengths, 30, g)
    assert cropped.shape == (6, 40, 30)
    assert new_lengths.tolist() == [30, 30, 30, 20, 10, 5]
    assert torch.equal(cropped[4, :, :10], mel[4, :, :10])  # shorter clips are kept whole
    masked = spec_augment(mel, lengths, g, freq_masks=2, freq_width=8, time_masks=2, time_width=10)
    assert masked.shape == mel.shape and not torch.equal(masked, mel)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    sampled = sample_frames(mask, 0.5, g)
    assert not (sampled & ~mask).any() and sampled.any(1).all()


def test_epoch_batches_cover_every_row_once_and_bucket_by_length():
    lengths = torch.randint(1, 1000, (1000,), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    batches = epoch_batches(lengths, 32, g, bucketing=True)
    seen = torch.cat(batches)
    assert len(set(seen.tolist())) == len(seen) >= 999
    padded = sum(int(lengths[b].max()) * len(b) for b in batches)
    random_padded = sum(int(lengths[b].max()) * len(b) for b in epoch_batches(lengths, 32, g, bucketing=False))
    assert padded < 0.7 * random_padded


def test_tensor_split_masks_rows_without_frames_or_mel():
    features = make_synthetic_split(50, text_dim=8, visual_dim=4, frames=3, mean_mel_frames=20, max_mel_frames=64)
    features.has_visual[:] = True  # flags say present, but some rows have no valid frame
    features.visual_mask[0] = False
    data = TensorSplit(features, ("text", "audio", "visual"), max_mel_frames=64)
    assert not data.present[0, 2]
    assert data.mel.shape == (int(features.mel.shape[0]), 40) and data.mel.dtype == torch.float16
    padded, lengths = features.padded_mel(0, max_frames=64)
    batch = data.gather(torch.arange(50))
    assert torch.equal(batch.mel, torch.from_numpy(padded[:, :, : batch.mel.shape[-1]]).float())
    assert torch.equal(batch.mel_lengths, torch.from_numpy(lengths))
    assert (data.present[:, 1] == (data.mel_lengths[0] > 0)).all()
    batch = data.gather(torch.arange(10))
    longest = int(data.mel_lengths[0, :10].max())
    assert longest <= batch.mel.shape[-1] < longest + 16 and batch.mel.shape[-1] % 16 == 0
    assert not batch.mel[:, :, longest:].any()
