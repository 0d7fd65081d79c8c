"""Write a synthetic dataset in the exact MELD layout (CSVs + h264/AAC clips) to OUT.

Each modality carries a noisy cue of the emotion (words, pitch/rhythm, colour), so a
working pipeline learns from each alone and more from their fusion. Use it to try emo
without MELD, in tests and in benchmarks; --broken-fraction mixes in broken clips.
Example: emo synth data/synth --clips 200 --broken-fraction 0.05
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from emo.config import build_config, merge_overrides, save_config
from emo.data.synth import BROKEN_KINDS, SynthConfig, generate
from emo.errors import UsageError


def command(
    out: Path = typer.Argument(..., help="Folder to write the dataset into (created if needed)."),
    clips: Optional[int] = typer.Option(
        None, "--clips", help="Train clips; dev and test get a quarter each (at least 2) unless set on their own."
    ),
    train_clips: Optional[int] = typer.Option(None, help="Utterances in train."),
    dev_clips: Optional[int] = typer.Option(None, help="Utterances in dev."),
    test_clips: Optional[int] = typer.Option(None, help="Utterances in test."),
    min_duration: Optional[float] = typer.Option(None, help="Shortest clip, seconds."),
    max_duration: Optional[float] = typer.Option(None, help="Longest clip, seconds."),
    width: Optional[int] = typer.Option(None, help="Frame width, pixels."),
    height: Optional[int] = typer.Option(None, help="Frame height, pixels."),
    fps: Optional[int] = typer.Option(None, help="Frames per second."),
    sample_rate: Optional[int] = typer.Option(None, help="Audio sample rate, Hz."),
    audio_channels: Optional[int] = typer.Option(None, help="Audio channels: 1, 2 or 6."),
    seed: Optional[int] = typer.Option(None, help="Random seed; the same seed writes the same dataset."),
    text_cue: Optional[float] = typer.Option(None, help="Chance the text carries the true emotion's words."),
    audio_cue: Optional[float] = typer.Option(None, help="Chance the audio carries the true emotion's tone."),
    visual_cue: Optional[float] = typer.Option(None, help="Chance the frames carry the true emotion's colour."),
    broken_fraction: Optional[float] = typer.Option(None, help="Fraction of each split's clips that are broken."),
    broken_kinds: Optional[str] = typer.Option(
        None, help=f"Comma-separated broken kinds to cycle through: {', '.join(BROKEN_KINDS)}."
    ),
    long_duration: Optional[float] = typer.Option(None, help="Seconds of a too_long clip / audio_longer audio."),
    unlabeled_videos: Optional[int] = typer.Option(None, help="Extra mp4s per clip folder that no CSV row names."),
    config: Optional[Path] = typer.Option(
        None,
        "--config",
        help="TOML file with any of the keys above ([synth] or top level); options and --set override it.",
    ),
    set_: Optional[List[str]] = typer.Option(
        None,
        "--set",
        help="Override any config key: --set key=value (repeatable); a key that its own option also sets is refused.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace a dataset already in OUT."),
) -> None:
    from rich.table import Table

    from emo.commands.output import ProgressView, make_console

    named = dict(
        train_clips=train_clips,
        dev_clips=dev_clips,
        test_clips=test_clips,
        min_duration=min_duration,
        max_duration=max_duration,
        width=width,
        height=height,
        fps=fps,
        sample_rate=sample_rate,
        audio_channels=audio_channels,
        seed=seed,
        text_cue=text_cue,
        audio_cue=audio_cue,
        visual_cue=visual_cue,
        broken_fraction=broken_fraction,
        broken_kinds=broken_kinds,
        long_duration=long_duration,
        unlabeled_videos=unlabeled_videos,
    )
    overrides = merge_overrides(set_, named)
    if clips is not None:
        if "train_clips" in overrides:
            raise UsageError("--clips sets train_clips, and so does --train-clips or --set train_clips; give one.")
        overrides.update(train_clips=clips)
        overrides.setdefault("dev_clips", max(2, clips // 4))
        overrides.setdefault("test_clips", max(2, clips // 4))
    resolved = build_config(SynthConfig, config, overrides, section="synth")

    with ProgressView(make_console(stderr=True)) as view:
        report = generate(out, resolved, overwrite=force, progress=view)
    saved = save_config(resolved, Path(out) / "synth.toml", section="synth")

    console = make_console()
    table = Table(title=f"Synthetic MELD-layout dataset in {out}")
    for column in ("split", "rows", "good clips", "broken", "unlabeled"):
        table.add_column(column)
    for split, row in report.summary().items():
        broken = ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("rows", "good", "unlabeled")) or "-"
        table.add_row(split, str(row["rows"]), str(row["good"]), broken, str(row["unlabeled"]))
    console.print(table)
    console.print(f"Config saved to {saved}; ground truth per clip in {report.manifest}.")
