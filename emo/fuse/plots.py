"""Figures for runs and reports, drawn headless (matplotlib's Agg) so they work on servers.

Each function saves to the path it is given; callers pass the temporary path of
`emo.atomic.write_with`, so a process killed mid-save never leaves a truncated PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict[str, Any]], head: str, path: Path) -> Path:
    """Train/dev loss and dev accuracy / weighted F1 / macro F1 per epoch, best epoch marked."""
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train loss")
    left.plot(epochs, [row["dev"][head]["loss"] for row in history], marker="o", label="dev loss")
    left.set_xlabel("epoch")
    left.set_ylabel("cross-entropy")
    left.legend()
    for key, label in (("weighted_f1", "dev weighted F1"), ("macro_f1", "dev macro F1"), ("accuracy", "dev accuracy")):
        right.plot(epochs, [row["dev"][head][key] for row in history], marker="o", label=label)
    best = [row["epoch"] for row in history if row.get("best")]
    if best:
        right.axvline(best[-1], color="grey", linestyle="--", linewidth=1, label=f"kept (epoch {best[-1]})")
    right.set_xlabel("epoch")
    right.set_ylim(0, 1)
    from matplotlib.ticker import MaxNLocator

    for axis in (left, right):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.legend()
    fig.suptitle(f"emo fit: {head}")
    fig.tight_layout()
    return save_figure(plt, fig, path)


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix (true rows, predicted columns) with raw counts in the cells."""
    import numpy as np

    plt = pyplot()
    counts = np.asarray(matrix, dtype=float)
    rates = counts / np.clip(counts.sum(1, keepdims=True), 1, None)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(labels), 0.8 + 0.7 * len(labels)))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j,
                i,
                str(int(counts[i, j])),
                ha="center",
                va="center",
                color="white" if rates[i, j] > 0.5 else "black",
                fontsize=8,
            )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(plt, fig, path)


def plot_layer_weights(mixes: dict[str, dict[str, Any]], path: Path) -> Path:
    """One bar chart per learned layer mix: the softmax weight (percent) of each hidden state,
    with the equal share 1/L dashed, so "which layers the head used" reads at a glance."""
    plt = pyplot()
    learned = {name: mix for name, mix in mixes.items() if mix.get("weights")}
    widest = max(len(mix["layers"]) for mix in learned.values())
    fig, axes = plt.subplots(
        len(learned), 1, figsize=(max(5.0, 2.0 + 0.45 * widest), 3.0 * len(learned)), squeeze=False
    )
    for axis, (name, mix) in zip(axes[:, 0], learned.items()):
        shares = [100 * w for w in mix["weights"]]
        axis.bar([str(i) for i in mix["layers"]], shares, color="tab:blue")
        axis.axhline(100 / len(shares), color="grey", linestyle="--", linewidth=1, label="equal share (mean)")
        axis.set_xlabel("hidden state (0 = embedding output)")
        axis.set_ylabel("weight (%)")
        norm = ", layer norm" if mix.get("layer_norm") else ""
        axis.set_title(f"{name}: gamma {mix['gamma']:.3f}{norm}", fontsize=10)
        axis.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(plt, fig, path)


def save_figure(plt, fig, path: Path) -> Path:
    """Save `fig` as `path` (the format follows its suffix) and free its memory."""
    try:
        fig.savefig(Path(path), dpi=100)
    finally:
        plt.close(fig)
    return Path(path)
