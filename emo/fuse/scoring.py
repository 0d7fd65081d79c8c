"""The pieces training and evaluation share: losses, batched prediction, scoring.

Kept apart from the training loop so `emo eval`, `emo demo` and `emo ablate` score a
model exactly the way `emo fit` selected it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from emo.fuse.tensors import Batch, TensorSplit, eval_batches
from emo.fuse.dialogue import dialogue_batches
from emo.fuse.metrics import classification_metrics
from emo.fuse.model import FusionModel
from emo.fuse.threads import small_kernels
from emo.labels import EMOTIONS, MELD_CLASS_WEIGHTS, SENTIMENTS

HEAD_LABELS: dict[str, tuple[str, ...]] = {"emotion": EMOTIONS, "sentiment": SENTIMENTS}


def autocast(precision: str, device: torch.device):
    """bf16 autocast where asked for; a no-op context for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def class_weights(scheme: str, head: str, labels: Tensor) -> Tensor | None:
    """Cross-entropy weights: none, inverse frequency ('balanced'), or MELD's official ones.

    MELD publishes weights for emotions only, so 'meld' leaves the sentiment head unweighted.
    """
    num = len(HEAD_LABELS[head])
    if scheme == "none" or (scheme == "meld" and head != "emotion"):
        return None
    if scheme == "meld":
        return torch.tensor(MELD_CLASS_WEIGHTS, dtype=torch.float32, device=labels.device)
    counts = torch.bincount(labels, minlength=num).float().clamp_min(1.0)
    return counts.sum() / (num * counts)


def batch_loss(
    logits: dict[str, Tensor],
    batch: Batch,
    weights: dict[str, Tensor | None] | None = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Sum of the heads' cross-entropies (joint emotion + sentiment when both are trained).
    Label smoothing applies in training only: dev and test losses stay the plain ones."""
    weights = weights or {}
    total = 0.0
    for head, out in logits.items():
        target = batch.emotion if head == "emotion" else batch.sentiment
        loss = F.cross_entropy(out.float(), target, weight=weights.get(head), label_smoothing=label_smoothing)
        total = total + loss
    return total


@torch.no_grad()
def predict(
    model: FusionModel,
    split: TensorSplit,
    batch_size: int = 256,
    hide: tuple[str, ...] = (),
    precision: str = "fp32",
) -> dict[str, np.ndarray]:
    """Logits per head for every row, in row order; `hide` masks modalities as if missing."""
    model.eval()
    hidden = [model.config.modalities.index(m) for m in hide if m in model.config.modalities]
    outputs: dict[str, list[Tensor]] = {h: [] for h in model.config.heads}
    orders = []
    with small_kernels(split.device):  # one thread but for the mel CNN (emo.fuse.threads)
        for index, batch in _eval_batches(model, split, batch_size):
            if hidden:
                batch.present = batch.present.clone()
                batch.present[:, hidden] = False
            with autocast(precision, split.device):
                logits = model(**batch.inputs())
            for head, out in logits.items():
                outputs[head].append(out.float().cpu())
            orders.append(index.cpu())
    order = torch.cat(orders)
    result = {}
    for head, parts in outputs.items():
        stacked = torch.cat(parts)
        unsorted = torch.empty_like(stacked)
        unsorted[order] = stacked
        result[head] = unsorted.numpy()
    return result


def _eval_batches(model: FusionModel, split: TensorSplit, batch_size: int):
    """(rows, Batch) pairs covering every row once: length-sorted utterances, or whole
    dialogues (each in turn order) for a model with a context head."""
    if model.config.has_context:
        for group in dialogue_batches(split.dialogues, max(batch_size, 1), split.device):
            batch = split.gather(group.rows)
            batch.layout = group.layout
            yield group.rows, batch
        return
    for index in eval_batches(split.lengths(), batch_size):
        index = index.to(split.device)
        yield index, split.gather(index)


def score(logits: dict[str, np.ndarray], split: TensorSplit, detailed: bool = False) -> dict[str, Any]:
    """Per head: loss (unweighted CE), accuracy, weighted F1, macro F1 (+ per-class when detailed)."""
    out: dict[str, Any] = {}
    for head, values in logits.items():
        target = (split.emotion if head == "emotion" else split.sentiment).cpu()
        loss = float(F.cross_entropy(torch.from_numpy(values), target)) if len(target) else 0.0
        metrics = classification_metrics(target.numpy(), values.argmax(1), HEAD_LABELS[head])
        metrics["loss"] = loss
        if not detailed:
            metrics = {k: metrics[k] for k in ("loss", "accuracy", "weighted_f1", "macro_f1")}
        out[head] = metrics
    return out


def primary_head(heads: tuple[str, ...]) -> str:
    """The head whose weighted F1 selects checkpoints: emotion whenever it is trained."""
    return "emotion" if "emotion" in heads else heads[0]
