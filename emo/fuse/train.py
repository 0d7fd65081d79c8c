"""`run_fit`: train the fusion head from cached features, keep the best-on-dev checkpoint.

The seed recipe (AdamW, ReduceLROnPlateau on dev weighted F1, clipped gradients, 15
epochs) over a split that lives on the device as tensors. Every epoch appends one JSON
line to metrics.jsonl and, when dev weighted F1 improves, atomically rewrites model.pt,
so an interrupted fit keeps its best model and its history.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from emo.cache.features import SplitFeatures
from emo.cache.fingerprint import fingerprint_digest, require_same
from emo.config import config_to_dict, save_config
from emo.device import resolve_device, seed_everything
from emo.errors import CacheError, UsageError
from emo.fuse.augment import augment_batch
from emo.fuse.checkpoint import CHECKPOINT_NAME, plain, save_checkpoint
from emo.fuse.config import FitConfig
from emo.fuse.data import TensorSplit, check_compatible, epoch_batches
from emo.fuse.engine import autocast, batch_loss, class_weights, predict, primary_head, score
from emo.fuse.model import FusionModel, ModelConfig, task_heads

METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.toml"
CURVES_NAME = "curves.png"
SUMMARY_NAME = "summary.json"


@dataclass
class FitResult:
    run_dir: Path | None
    checkpoint: Path | None
    best_epoch: int
    best_dev: dict[str, Any]  # dev metrics of the kept model, per head
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch, as in metrics.jsonl
    fit_seconds: float = 0.0
    load_seconds: float = 0.0
    model: FusionModel | None = None  # the best model, in eval mode on CPU


def load_features(cache: Path, split: str, modalities: tuple[str, ...]) -> SplitFeatures:
    """One split through emo.cache's reader (the only code that knows the on-disk format)."""
    from emo import cache as cache_api

    # verify=True: every shard's SHA-256 is checked against its sidecar, so a cache with a
    # flipped byte is refused instead of silently training on wrong numbers.
    return cache_api.load_split(Path(cache), split, modalities=tuple(modalities), verify=True)


def model_config_for(config: FitConfig, features: SplitFeatures) -> ModelConfig:
    """Model shape from the fit config plus the dims the cache actually holds."""
    dims: dict[str, Any] = {}
    if features.text_cls is not None:
        dims["text_dim"] = int(features.text_cls.shape[1])
    if features.visual is not None:
        dims["visual_dim"] = int(features.visual.shape[2])
    if features.mel is not None:
        dims["n_mels"] = int(features.mel.shape[1])
    return ModelConfig(
        modalities=config.modalities,
        fusion=config.fusion,
        heads=task_heads(config.task),
        proj_dim=config.proj_dim,
        **dims,
    )


def prepare_run_dir(out: Path, overwrite: bool) -> Path:
    out = Path(out)
    if (out / CHECKPOINT_NAME).exists() or (out / METRICS_NAME).exists():
        if not overwrite:
            raise UsageError(f"{out} already holds a run; choose another --out or pass --overwrite.")
        for name in (CHECKPOINT_NAME, METRICS_NAME, CURVES_NAME, SUMMARY_NAME, CONFIG_NAME):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_fit(config: FitConfig, console=None) -> FitResult:
    """Load the cache's train and dev splits and fit; the CLI and `emo demo` call this."""
    config.validate()
    if config.cache is None:
        raise UsageError("No cache given; pass --cache DIR (a folder written by emo extract).")
    if config.out is None:
        raise UsageError("No run directory given; pass --out runs/NAME.")
    if not Path(config.cache).exists():
        raise UsageError(f"Cache {config.cache} does not exist; run emo extract first.")
    out = prepare_run_dir(Path(config.out), config.overwrite)
    started = time.perf_counter()
    train = load_features(Path(config.cache), config.train_split, config.modalities)
    check_compatible(train, config.modalities, config.text_feature)
    dev = load_features(Path(config.cache), config.dev_split, config.modalities)
    load_seconds = time.perf_counter() - started
    return fit_splits(config, train, dev, out_dir=out, console=console, load_seconds=load_seconds)


def _audio_views_ok(config: FitConfig, train: SplitFeatures) -> None:
    if config.audio_view_sampling and "audio" in config.modalities and train.num_audio_views < 2:
        raise UsageError(
            "audio_view_sampling needs a cache with several audio views, but this one holds only the clean audio; "
            "re-extract with --audio-views K or turn it off."
        )


def fit_splits(
    config: FitConfig,
    train: SplitFeatures,
    dev: SplitFeatures,
    out_dir: Path | None = None,
    console=None,
    load_seconds: float = 0.0,
) -> FitResult:
    """Train on in-memory splits; writes run artifacts when `out_dir` is given."""
    config.validate()
    for split in (train, dev):
        if len(split) == 0:
            raise CacheError(f"The cache's '{split.split}' split has no rows; extract it before training.")
        check_compatible(split, config.modalities, config.text_feature)
    require_same(train.fingerprint, dev.fingerprint, f"The '{dev.split}' split")
    _audio_views_ok(config, train)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    order_rng = torch.Generator().manual_seed(config.seed)
    augment_rng = torch.Generator().manual_seed(config.seed + 1)

    train_set = TensorSplit(
        train,
        config.modalities,
        device,
        config.text_feature,
        config.max_mel_frames,
        keep_frames=config.frame_sampling,
        audio_views=config.audio_view_sampling,
    )
    dev_set = TensorSplit(dev, config.modalities, device, config.text_feature, config.max_mel_frames)
    model = FusionModel(model_config_for(config, train)).to(device)
    heads = model.config.heads
    main = primary_head(heads)
    weights = {
        "emotion": class_weights(config.class_weights, "emotion", train_set.emotion),
        "sentiment": class_weights(config.class_weights, "sentiment", train_set.sentiment),
    }
    # fused AdamW: one kernel per step instead of a dozen tiny ops per parameter tensor.
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=config.plateau_factor, patience=config.plateau_patience
    )
    digest = fingerprint_digest(plain(train.fingerprint))
    cache_path = str(Path(config.cache).resolve()) if config.cache is not None else None
    resolved = config_to_dict(config)
    if out_dir is not None:
        save_config(config, Path(out_dir) / CONFIG_NAME, section="fit")
        (Path(out_dir) / METRICS_NAME).write_text("", encoding="utf-8")

    history: list[dict[str, Any]] = []
    best_score, best_epoch, best_dev, best_state = -math.inf, 0, {}, None
    table = _EpochTable(console, heads, main)
    fit_started = time.perf_counter()
    with table:
        for epoch in range(1, config.epochs + 1):
            epoch_started = time.perf_counter()
            model.train()
            views = None
            if train_set.num_views > 1:
                views = torch.randint(train_set.num_views, (len(train_set),), generator=order_rng).to(device)
            batches = epoch_batches(train_set.lengths(), config.batch_size, order_rng, config.length_bucketing)
            total_loss, seen = 0.0, 0
            for index in batches:
                index = index.to(device)
                batch = train_set.gather(index, views=views, frames=config.frame_sampling)
                batch = augment_batch(batch, config, augment_rng, config.modalities)
                with autocast(config.precision, device):
                    logits = model(**batch.inputs())
                loss = batch_loss(logits, batch, weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                total_loss += float(loss.detach()) * len(batch)
                seen += len(batch)
            train_seconds = time.perf_counter() - epoch_started
            dev_scores = score(predict(model, dev_set, config.eval_batch_size, precision=config.precision), dev_set)
            current = dev_scores[main]["weighted_f1"]
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step(current)
            improved = current > best_score
            if improved:
                best_score, best_epoch, best_dev = current, epoch, dev_scores
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if out_dir is not None:
                    save_checkpoint(
                        Path(out_dir) / CHECKPOINT_NAME,
                        model,
                        resolved,
                        train.fingerprint,
                        digest,
                        epoch,
                        dev_scores,
                        extra={"cache_path": cache_path},
                    )
            row = {
                "epoch": epoch,
                "train_loss": total_loss / max(seen, 1),
                "dev": dev_scores,
                "lr": lr,
                "fusion_weights": model.fusion_weights(),
                "best": improved,
                "train_seconds": round(train_seconds, 4),
                "epoch_seconds": round(time.perf_counter() - epoch_started, 4),
            }
            history.append(row)
            if out_dir is not None:
                with (Path(out_dir) / METRICS_NAME).open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row) + "\n")
            table.add(row)
    fit_seconds = time.perf_counter() - fit_started
    model.load_state_dict(best_state)
    model.cpu().eval()
    result = FitResult(
        run_dir=Path(out_dir) if out_dir is not None else None,
        checkpoint=Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None,
        best_epoch=best_epoch,
        best_dev=best_dev,
        history=history,
        fit_seconds=fit_seconds,
        load_seconds=load_seconds,
        model=model,
    )
    if out_dir is not None:
        _write_summary(result, config, digest)
        from emo.fuse.plots import plot_curves

        plot_curves(history, main, Path(out_dir) / CURVES_NAME)
    return result


def _write_summary(result: FitResult, config: FitConfig, digest: str) -> None:
    summary = {
        "best_epoch": result.best_epoch,
        "best_dev": result.best_dev,
        "fit_seconds": round(result.fit_seconds, 3),
        "load_seconds": round(result.load_seconds, 3),
        "cache": str(Path(config.cache).resolve()) if config.cache is not None else None,
        "fingerprint_digest": digest,
    }
    path = result.run_dir / SUMMARY_NAME
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


class _EpochTable:
    """A rich table that grows by one row per epoch while training runs (silent without a console)."""

    def __init__(self, console, heads: tuple[str, ...], main: str):
        self.console, self.main, self.live = console, main, None
        if console is None:
            return
        from rich.table import Table

        self.table = Table(title=f"emo fit (dev {main})", show_lines=False)
        for name in ("epoch", "train loss", "dev loss", "acc", "wF1", "mF1", "lr", "sec"):
            self.table.add_column(name, justify="right")
        self.table.add_column("", justify="left")

    def __enter__(self):
        if self.console is not None:
            from rich.live import Live

            self.live = Live(self.table, console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def add(self, row: dict[str, Any]) -> None:
        if self.console is None:
            return
        dev = row["dev"][self.main]
        self.table.add_row(
            str(row["epoch"]),
            f"{row['train_loss']:.4f}",
            f"{dev['loss']:.4f}",
            f"{dev['accuracy']:.4f}",
            f"{dev['weighted_f1']:.4f}",
            f"{dev['macro_f1']:.4f}",
            f"{row['lr']:.0e}",
            f"{row['epoch_seconds']:.1f}",
            "best" if row["best"] else "",
        )
        self.live.refresh()

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)
            if not self.console.is_terminal:
                self.console.line()
        return False
