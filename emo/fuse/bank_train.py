"""`train_bank`: `emo fit`'s recipe for G configs at once, over splits loaded once.

Each member replays exactly what `emo.fuse.train.fit_splits` does for its own config: the
same seeded initial weights, the same `epoch_batches` order from its own generator, the
same `augment_batch` draws from its own augmentation generator, class weights, AdamW,
ReduceLROnPlateau on dev weighted F1, gradient clipping and best-on-dev selection. What
changes is that the G forward/backward passes and optimizer steps are one call each (see
`emo.fuse.bank.ModelBank`), and the data are loaded and moved to the device once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from emo.cache.features import SplitFeatures
from emo.cache.fingerprint import require_same
from emo.device import resolve_device
from emo.errors import UsageError
from emo.fuse.augment import augment_batch
from emo.fuse.bank import (
    BankAdamW,
    MemberResult,
    ModelBank,
    canonical_present,
    clip_member_grads,
    group_key,
    initial_state,
)
from emo.fuse.config import FitConfig
from emo.fuse.data import Batch, TensorSplit, check_compatible, epoch_batches, eval_batches
from emo.fuse.engine import HEAD_LABELS, autocast, class_weights, primary_head, score
from emo.fuse.model import masked_mean
from emo.fuse.train import model_config_for
from emo.labels import MODALITIES

Progress = Callable[[dict[str, Any]], None]


def union_modalities(configs: list[FitConfig]) -> tuple[str, ...]:
    return tuple(m for m in MODALITIES if any(m in c.modalities for c in configs))


AUDIO_MODES: tuple[str, ...] = ("auto", "loop", "grouped", "matmul")


def resolve_audio_mode(mode: str, device: torch.device) -> str:
    """Grouped convolutions pay off where kernel launches dominate (GPU). On a CPU the
    per-member oneDNN Conv1d loop stays the default: the im2col matmul path ("matmul",
    `SharedMelCNN`) measured ~10% slower per step on the MELD-size grid (its matmuls run
    near peak, but the im2col copies and the pool/ReLU routing cost more than oneDNN
    loses)."""
    if mode == "auto":
        return "grouped" if device.type == "cuda" else "loop"
    if mode not in AUDIO_MODES:
        raise UsageError(f"Unknown audio_mode '{mode}'; use {', '.join(AUDIO_MODES)}.")
    return mode


class _Member:
    """One member's view of the shared split: which columns, generators and weights."""

    def __init__(self, g: int, config: FitConfig, split_modalities: tuple[str, ...], train_set: TensorSplit):
        self.g = g
        self.config = config
        self.modalities = config.modalities
        self.cols = [split_modalities.index(m) for m in config.modalities]
        self.has_audio = "audio" in config.modalities
        self.order_rng = torch.Generator().manual_seed(config.seed)
        self.augment_rng = torch.Generator().manual_seed(config.seed + 1)
        self.lengths = train_set.lengths() if self.has_audio else torch.zeros(len(train_set), dtype=torch.long)

    def restrict(self, batch: Batch) -> Batch:
        """The batch the member's own single model would see (its modalities only)."""
        return Batch(
            present=batch.present[:, self.cols],
            emotion=batch.emotion,
            sentiment=batch.sentiment,
            text=batch.text if "text" in self.modalities else None,
            visual=batch.visual if "visual" in self.modalities else None,
            visual_mask=batch.visual_mask if "visual" in self.modalities else None,
            mel=batch.mel if self.has_audio else None,
            mel_lengths=batch.mel_lengths if self.has_audio else None,
        )


def _stack_rows(tensors: list[Tensor | None], rows: int) -> Tensor | None:
    present = [t for t in tensors if t is not None]
    if not present:
        return None
    template = present[0]
    out = template.new_zeros((len(tensors), rows) + tuple(template.shape[1:]))
    for g, t in enumerate(tensors):
        if t is not None:
            out[g, : t.shape[0]] = t
    return out


def _visual_vectors(batch: Batch) -> Tensor | None:
    if batch.visual is None:
        return None
    return batch.visual if batch.visual.dim() == 2 else masked_mean(batch.visual, batch.visual_mask)


@torch.no_grad()
def bank_predict(
    bank: ModelBank,
    split: TensorSplit,
    members: list[_Member],
    batch_size: int = 256,
    precision: str = "fp32",
    audio_mode: str = "loop",
) -> Tensor:
    """Logits [G, N, K] of every member for every row of `split`, in row order."""
    bank.eval()
    device = split.device
    G = bank.size
    out: Tensor | None = None
    for index in eval_batches(split.lengths(), batch_size):
        index = index.to(device)
        batch = split.gather(index)
        present = torch.stack([canonical_present(batch.present, split.modalities, m.modalities) for m in members])
        mels = lens = None
        if bank.audio_members and batch.mel is not None:
            mels = [batch.mel for _ in bank.audio_members]
            lens = [batch.mel_lengths for _ in bank.audio_members]
        with autocast(precision, device):
            logits = bank(present, batch.text, _visual_vectors(batch), mels, lens, audio_mode=audio_mode).float()
        if out is None:
            out = torch.zeros(G, len(split), logits.shape[-1])
        out[:, index.cpu()] = logits.cpu()
    return out if out is not None else torch.zeros(G, 0, 1)


def _member_scores(bank: ModelBank, logits: Tensor, split: TensorSplit, g: int, detailed: bool = False):
    heads = {h: v[g].numpy() for h, v in bank.split_heads(logits).items()}
    return score(heads, split, detailed=detailed)


def train_bank(
    configs: list[FitConfig],
    train: SplitFeatures,
    dev: SplitFeatures,
    test: SplitFeatures | None = None,
    progress: Progress | None = None,
    audio_mode: str = "auto",
    keep_models: bool = False,
) -> list[MemberResult]:
    """Fit every config in `configs` (one bank; they must share `group_key`) and return,
    per member, its best-on-dev metrics, its test metrics at that point, and its history."""
    if not configs:
        return []
    for config in configs:
        config.validate()
    base = configs[0]
    if any(group_key(c) != group_key(base) for c in configs):
        raise ValueError("configs of one bank must agree on every non-member key (see emo.fuse.bank.MEMBER_KEYS)")
    modalities = union_modalities(configs)
    splits = [train, dev] + ([test] if test is not None else [])
    for features in splits:
        check_compatible(features, modalities, base.text_feature)
        require_same(train.fingerprint, features.fingerprint, f"The '{features.split}' split")
    if base.audio_view_sampling and "audio" in modalities and train.num_audio_views < 2:
        raise UsageError("audio_view_sampling needs a cache with several audio views; re-extract with --audio-views K.")
    if base.threads > 0:
        torch.set_num_threads(base.threads)
    device = resolve_device(base.device)
    audio_mode = resolve_audio_mode(audio_mode, device)

    train_set = TensorSplit(
        train,
        modalities,
        device,
        base.text_feature,
        base.max_mel_frames,
        keep_frames=base.frame_sampling,
        audio_views=base.audio_view_sampling,
    )
    dev_set = TensorSplit(dev, modalities, device, base.text_feature, base.max_mel_frames)
    test_set = TensorSplit(test, modalities, device, base.text_feature, base.max_mel_frames) if test is not None else None

    model_configs = [model_config_for(c, train) for c in configs]
    bank = ModelBank(model_configs)
    for g, (c, mc) in enumerate(zip(configs, model_configs)):
        bank.stack_member(g, initial_state(mc, c.seed))
    bank.to(device)
    G = bank.size
    members = [_Member(g, c, modalities, train_set) for g, c in enumerate(configs)]
    heads = bank.heads
    main = primary_head(heads)

    def weight_table(head: str) -> Tensor:
        labels = train_set.emotion if head == "emotion" else train_set.sentiment
        rows = []
        for c in configs:
            w = class_weights(c.class_weights, head, labels)
            rows.append(torch.ones(len(HEAD_LABELS[head]), device=device) if w is None else w.to(device))
        return torch.stack(rows)

    loss_weights = {h: weight_table(h) for h in heads}
    params = list(bank.parameters())
    optimizer = BankAdamW(
        params,
        lr=torch.tensor([c.lr for c in configs], device=device),
        weight_decay=torch.tensor([c.weight_decay for c in configs], device=device),
    )
    schedulers = []
    for c in configs:
        dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=c.lr)
        schedulers.append(
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                dummy, mode="max", factor=c.plateau_factor, patience=c.plateau_patience
            )
        )
    max_norm = torch.tensor([c.grad_clip for c in configs], device=device)
    state_names = [name for name, _ in bank.named_parameters()] + [
        name for name, _ in bank.named_buffers() if name.startswith("bn")
    ]
    tensors = dict(bank.named_parameters()) | dict(bank.named_buffers())
    best_state = {name: tensors[name].detach().clone() for name in state_names}
    best_score = [-math.inf] * G
    best_epoch = [0] * G
    best_dev: list[dict[str, Any]] = [{} for _ in range(G)]
    histories: list[list[dict[str, Any]]] = [[] for _ in range(G)]
    started = time.perf_counter()

    for epoch in range(1, base.epochs + 1):
        epoch_started = time.perf_counter()
        bank.train()
        plans, views = [], []
        for m in members:
            v = None
            if m.has_audio and train_set.num_views > 1:
                v = torch.randint(train_set.num_views, (len(train_set),), generator=m.order_rng).to(device)
            views.append(v)
            plans.append(epoch_batches(m.lengths, base.batch_size, m.order_rng, base.length_bucketing))
        steps = max(len(p) for p in plans)
        total_loss = torch.zeros(G, device=device)
        seen = torch.zeros(G, device=device)
        for step in range(steps):
            batches: list[Batch | None] = []
            # Members with the same seed draw the same batches: gather each distinct one
            # once, so they also share its tensors (the bank runs the mel CNN's first
            # layer once per shared mel tensor; augmentation makes new tensors, never
            # edits these in place).
            gathered: dict[tuple, Batch] = {}
            for m, plan, v in zip(members, plans, views):
                if step >= len(plan):
                    batches.append(None)
                    continue
                index = plan[step].to(device)
                key = (tuple(plan[step].tolist()), None if v is None else tuple(v[index].tolist()))
                if key not in gathered:
                    gathered[key] = train_set.gather(index, views=v, frames=base.frame_sampling)
                batch = m.restrict(gathered[key])
                batches.append(augment_batch(batch, m.config, m.augment_rng, m.modalities))
            rows = max(len(b) for b in batches if b is not None)
            sizes = torch.tensor([len(b) if b is not None else 0 for b in batches], device=device)
            valid = torch.arange(rows, device=device) < sizes.unsqueeze(1)
            present = torch.zeros(G, rows, len(MODALITIES), dtype=torch.bool, device=device)
            for g, (m, b) in enumerate(zip(members, batches)):
                if b is not None:
                    present[g, : len(b)] = canonical_present(b.present, m.modalities, m.modalities)
            text = _stack_rows([b.text if b is not None else None for b in batches], rows)
            visual = _stack_rows([_visual_vectors(b) if b is not None else None for b in batches], rows)
            mels, lens = [], []
            for g in bank.audio_members:
                b = batches[g]
                if b is None or b.mel is None:
                    mels.append(torch.zeros(1, bank.conv1_w.shape[2], 6, device=device))
                    lens.append(torch.zeros(1, dtype=torch.long, device=device))
                else:
                    mels.append(b.mel)
                    lens.append(b.mel_lengths)
            targets = {
                "emotion": _stack_rows([b.emotion if b is not None else None for b in batches], rows),
                "sentiment": _stack_rows([b.sentiment if b is not None else None for b in batches], rows),
            }
            full = bool(valid.all())
            with autocast(base.precision, device):
                logits = bank(present, text, visual, mels or None, lens or None, None if full else valid, audio_mode)
            loss = torch.zeros(G, device=device)
            for head, out in bank.split_heads(logits).items():
                target = targets[head]
                nll = F.cross_entropy(out.float().reshape(-1, out.shape[-1]), target.reshape(-1), reduction="none")
                w = loss_weights[head].gather(1, target) * valid
                loss = loss + (w * nll.view(G, rows)).sum(1) / w.sum(1).clamp_min(1e-12)
            optimizer.zero_grad()
            loss.sum().backward()
            clip_member_grads(params, max_norm)
            optimizer.step()
            total_loss += loss.detach() * sizes
            seen += sizes
        train_seconds = time.perf_counter() - epoch_started
        dev_logits = bank_predict(bank, dev_set, members, base.eval_batch_size, base.precision, audio_mode)
        improved_any = []
        weights = torch.sigmoid(bank.ens.detach()).cpu()
        for g, c in enumerate(configs):
            dev_scores = _member_scores(bank, dev_logits, dev_set, g)
            current = dev_scores[main]["weighted_f1"]
            lr = float(optimizer.lr[g])
            schedulers[g].step(current)
            optimizer.lr[g] = schedulers[g].optimizer.param_groups[0]["lr"]
            improved = current > best_score[g]
            if improved:
                best_score[g], best_epoch[g], best_dev[g] = current, epoch, dev_scores
                improved_any.append(g)
            histories[g].append(
                {
                    "epoch": epoch,
                    "train_loss": float(total_loss[g] / seen[g].clamp_min(1)),
                    "dev": dev_scores,
                    "lr": lr,
                    "fusion_weights": _fusion_weights(c.fusion, weights[g]),
                    "best": improved,
                }
            )
        if improved_any:
            idx = torch.tensor(improved_any, device=device)
            with torch.no_grad():
                for name in state_names:
                    best_state[name].index_copy_(0, idx, tensors[name].detach().index_select(0, idx))
        if progress is not None:
            progress(
                {
                    "epoch": epoch,
                    "epochs": base.epochs,
                    "members": G,
                    "train_seconds": train_seconds,
                    "epoch_seconds": time.perf_counter() - epoch_started,
                    "best_dev": max(best_score),
                }
            )

    with torch.no_grad():
        for name in state_names:
            tensors[name].copy_(best_state[name])
    test_logits = (
        bank_predict(bank, test_set, members, base.eval_batch_size, base.precision, audio_mode)
        if test_set is not None
        else None
    )
    weights = torch.sigmoid(bank.ens.detach()).cpu()
    fit_seconds = time.perf_counter() - started
    results = []
    for g, c in enumerate(configs):
        results.append(
            MemberResult(
                best_epoch=best_epoch[g],
                dev=best_dev[g],
                test=_member_scores(bank, test_logits, test_set, g) if test_logits is not None else None,
                history=histories[g],
                fusion_weights=_fusion_weights(c.fusion, weights[g]),
                model=bank.export_member(g) if keep_models else None,
            )
        )
    for r in results:
        r.history and r.history[-1].setdefault("bank_fit_seconds", round(fit_seconds, 3))
    return results


def _fusion_weights(fusion: str, sig: Tensor) -> dict[str, float]:
    if fusion != "ensemble":
        return {fusion: 1.0}
    we, wl = float(sig[0]), float(sig[1])
    return {"early": we / (we + wl), "late": wl / (we + wl)}
