"""Train the mel-CNN + early/late fusion head from a feature cache, in seconds to minutes.

Writes to --out: model.pt (best-on-dev checkpoint: weights, resolved config and the
cache fingerprint; loads with torch.load(weights_only=True)), config.toml (re-run with
--config), metrics.jsonl (one line per epoch), curves.png and summary.json.
Defaults are the seed design (AdamW 1e-4, batch 32, 15 epochs, ensemble fusion).
Feature sets: --features text=all-MiniLM-L6-v2,audio=mel+whisper-base picks the cache's sets per
modality ('+' concatenates several); a modality not named uses the cache's default set.
Example: emo fit --cache cache/meld --out runs/base --modalities text,audio --set spec_augment=true
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from emo.commands.output import make_console, percent
from emo.fuse.heads import fusion_help


def command(
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache written by emo extract."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory to write (e.g. runs/NAME)."),
    modalities: Optional[str] = typer.Option(
        None,
        help="Comma-separated subset of text,audio,visual. (default: every modality the cache holds; all three for a full cache)",
    ),
    features: Optional[str] = typer.Option(
        None,
        "--features",
        help="Cached feature sets per modality, e.g. text=all-MiniLM-L6-v2,audio=mel+whisper-base ('+' concatenates). (default: each modality's default set)",
    ),
    fusion: Optional[str] = typer.Option(None, help=f"Fusion head: {fusion_help()}. (default: ensemble)"),
    task: Optional[str] = typer.Option(
        None, help="Labels to learn: emotion, sentiment or both (joint heads). (default: emotion)"
    ),
    text_feature: Optional[str] = typer.Option(
        None,
        help="Cached text embedding: cls, mean, or auto = the encoder's own pooling (mean for sentence encoders such as MiniLM, cls for BERT). (default: auto)",
    ),
    layer_mix: Optional[str] = typer.Option(
        None,
        help="How a layers feature set (every hidden state of an encoder, emo extract --text-layers/--audio-layers) enters the head: weighted (learned softmax weight per layer times a scale), mean, concat or last; acts on layers sets only, other sets ignore it. (default: weighted)",
    ),
    layer_norm: Optional[bool] = typer.Option(
        None,
        "--layer-norm/--no-layer-norm",
        help="Normalise each layer of a layers feature set (LayerNorm, no learned scale) before mixing; acts on layers sets only. (default: off)",
    ),
    context_model: Optional[str] = typer.Option(
        None, help="Dialogue context over each conversation: none, gru or transformer. (default: none)"
    ),
    context_direction: Optional[str] = typer.Option(
        None, help="both (the whole dialogue, offline) or past (earlier turns only, for live use). (default: both)"
    ),
    speaker_embedding: Optional[str] = typer.Option(
        None,
        help="With a context model: none, speaker (learned per speaker) or turn (same speaker as the previous turn?). (default: none)",
    ),
    epochs: Optional[int] = typer.Option(None, help="Training epochs. (default: 15)"),
    batch_size: Optional[int] = typer.Option(None, help="Batch size. (default: 32)"),
    lr: Optional[float] = typer.Option(None, help="AdamW learning rate. (default: 1e-4)"),
    class_weights: Optional[str] = typer.Option(
        None, help="Loss class weights: none, balanced or meld (official MELD weights). (default: none)"
    ),
    modality_dropout: Optional[float] = typer.Option(
        None, help="Chance of hiding each modality per clip in training. (default: 0)"
    ),
    spec_augment: Optional[bool] = typer.Option(
        None, "--spec-augment/--no-spec-augment", help="SpecAugment masks on mel. (default: off)"
    ),
    audio_view_sampling: Optional[bool] = typer.Option(
        None,
        "--audio-views/--no-audio-views",
        help="Sample one of the cache's augmented audio views per epoch. (default: off)",
    ),
    seed: Optional[int] = typer.Option(None, help="Random seed (same seed, same metrics on CPU). (default: 0)"),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda. (default: auto)"),
    config: Optional[Path] = typer.Option(
        None, "--config", help="TOML file with any FitConfig key ([fit] or top level); options and --set override it."
    ),
    set_: Optional[List[str]] = typer.Option(
        None,
        "--set",
        help="Override any config key: --set key=value (repeatable); a key that its own option also sets is refused.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run already in --out."),
) -> None:
    from emo.fuse.openmp_wait import spin_between_kernels

    spin_between_kernels()  # before torch loads (emo.fuse.openmp_wait)
    from emo.config import build_config, merge_overrides
    from emo.fuse.config import FitConfig

    named = dict(
        cache=cache,
        out=out,
        modalities=modalities,
        features=features,
        fusion=fusion,
        task=task,
        text_feature=text_feature,
        layer_mix=layer_mix,
        layer_norm=layer_norm,
        context_model=context_model,
        context_direction=context_direction,
        speaker_embedding=speaker_embedding,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        class_weights=class_weights,
        modality_dropout=modality_dropout,
        spec_augment=spec_augment,
        audio_view_sampling=audio_view_sampling,
        seed=seed,
        device=device,
        overwrite=overwrite or None,
    )
    overrides = merge_overrides(set_, named, flags={"audio_view_sampling": "--audio-views"})
    resolved = build_config(FitConfig, config, overrides, section="fit")
    from emo.fuse.fit_request import check_fit

    check_fit(resolved)  # every usage error is answered here, before torch loads (run_fit checks again)
    from emo.fuse.train import run_fit

    console = make_console()
    with EpochTable(console) as table:
        result = run_fit(resolved, progress=table)
    best = result.best_dev
    head = "emotion" if "emotion" in best else next(iter(best))
    console.print(
        f"Best dev {head} weighted F1 {percent(best[head]['weighted_f1'])} at epoch {result.best_epoch} "
        f"({result.fit_seconds:.1f} s training, {result.load_seconds:.1f} s loading the cache); "
        f"run saved in {result.run_dir}.",
        highlight=False,
    )
    if result.config is not None and result.config.features:
        console.print(f"Trained on feature sets {result.config.features}.", highlight=False, soft_wrap=True)
    console.print(f"Next: emo eval --run {result.run_dir} --split test", highlight=False)


class EpochTable:
    """Shows a fit's epochs: a live table on a terminal, one plain line per epoch in a log.

    Pass the instance as `run_fit(progress=...)`; it reads the epoch rows the trainer
    sends with each `TaskAdvanced` event.
    """

    COLUMNS = ("epoch", "train loss", "dev loss", "acc", "wF1", "mF1", "lr", "sec", "")

    def __init__(self, console, title: str = "emo fit"):
        from rich.table import Table

        self.console, self.live = console, None
        self.table = Table(title=f"{title}: dev accuracy, weighted F1, macro F1 in percent")
        for name in self.COLUMNS:
            self.table.add_column(name, justify="left" if name == "" else "right")

    def __enter__(self) -> "EpochTable":
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self.table, console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        if self.live is not None:
            self.live.__exit__(*exc)
        return False

    def __call__(self, event) -> None:
        from emo.progress import Message, TaskAdvanced

        if isinstance(event, Message):
            self.console.print(event.text, highlight=False)
        if not isinstance(event, TaskAdvanced) or "dev" not in event.info:
            return
        row = event.info
        head = "emotion" if "emotion" in row["dev"] else next(iter(row["dev"]))
        dev = row["dev"][head]
        cells = (
            str(row["epoch"]),
            f"{row['train_loss']:.4f}",
            f"{dev['loss']:.4f}",
            f"{100 * dev['accuracy']:.2f}",
            f"{100 * dev['weighted_f1']:.2f}",
            f"{100 * dev['macro_f1']:.2f}",
            f"{row['lr']:.0e}",
            f"{row['epoch_seconds']:.1f}",
            "best" if row["best"] else "",
        )
        if self.live is not None:
            self.table.add_row(*cells)
            self.live.refresh()
        else:  # a log: one complete line per epoch, as soon as the epoch ends
            self.console.print(
                f"epoch {cells[0]}: train loss {cells[1]}, dev loss {cells[2]}, dev accuracy {cells[3]} %, "
                f"dev weighted F1 {cells[4]} %, dev macro F1 {cells[5]} %, lr {cells[6]}, {cells[7]} s"
                + (" (best so far)" if row["best"] else ""),
                highlight=False,
            )
