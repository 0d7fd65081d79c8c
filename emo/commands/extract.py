"""Run the frozen encoders once over a split and write a sharded HDF5/Zarr feature cache.

Each encoder writes one named feature set (text/<model>, visual/<model>, audio/mel, ...)
beside the split's row table (ids, labels, speaker, text). By default text goes through a
BERT-family encoder (CLS + masked mean), sampled frames through a CLIP image encoder and
audio becomes log-mel spectrograms. Extracting into an existing cache adds the sets it
names and leaves every other set alone: --audio-model whisper-base, --visual-model
mediapipe-face, --crop faces, --text-model all-mpnet-base-v2, --name to choose the set's
name. `emo encoders` lists every encoder (plugins too) with its kind, dim, licence, cost and
whether it loads here offline. Re-running resumes (finished shards are skipped, per set);
--num-shards/--shard-index split the work across processes or machines.
Progress goes to stderr, the end-of-run tables to stdout.
--launcher slurm submits the --num-shards tasks as one SLURM job array and follows it
(--no-wait: submit and return; `emo cache status CACHE` shows how far it got).
Example: emo extract --split train --data-root MELD.Raw --cache cache/
Offline: emo extract --split all --data-root MELD.Raw --cache cache/ --preset offline
Add a set: emo extract --split all --data-root MELD.Raw --cache cache/ --modalities audio --audio-model whisper-base
Every layer: emo extract --split all --data-root MELD.Raw --cache cache/ --modalities text --preset offline --text-layers all
SLURM:   emo extract --split all --cache /shared/cache --num-shards 8 --launcher slurm --gpus-per-task 1
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from emo.commands.launch_view import with_launcher_options
from emo.commands.output import ProgressView, count, count_units, make_console
from emo.config import build_config, merge_overrides
from emo.errors import EmoError
from emo.extract.launch.registry import DEFAULT, launcher_help, make_launcher, remote_names


@with_launcher_options  # + each launcher's own options (--slurm-time, ...), from the launcher registry
def command(
    split: Optional[str] = typer.Option(None, "--split", help="train, dev, test, or all. (default: train)"),
    data_root: Optional[Path] = typer.Option(
        None, "--data-root", help="Folder with the MELD CSVs and clip folders. (default: MELD.Raw)"
    ),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache folder. (default: cache)"),
    modalities: Optional[str] = typer.Option(
        None, "--modalities", help="Comma-separated subset of text,audio,visual. (default: all three)"
    ),
    text_model: Optional[str] = typer.Option(
        None,
        "--text-model",
        help="Hugging Face id, local folder, or an `emo encoders` name. (default: bert-base-uncased)",
    ),
    visual_model: Optional[str] = typer.Option(
        None,
        "--visual-model",
        help="open_clip architecture, or an `emo encoders` name (efficientnet-lite0, ...). (default: ViT-B-32)",
    ),
    visual_pretrained: Optional[str] = typer.Option(
        None, "--visual-pretrained", help="open_clip pretrained tag or checkpoint file. (default: openai)"
    ),
    audio_model: Optional[str] = typer.Option(
        None,
        "--audio-model",
        help="mel, an `emo encoders` name (whisper-base, egemaps, ...), or a transformers speech id/folder. (default: mel)",
    ),
    audio_layers: Optional[str] = typer.Option(
        None,
        "--audio-layers",
        help="Speech-model layers pooled per clip: last, or all / e.g. 6,12 for a layers set. (default: last)",
    ),
    text_layers: Optional[str] = typer.Option(
        None,
        "--text-layers",
        help="Text-model hidden states pooled per utterance: last, or all / e.g. 6,8,12 for a layers set "
        "(each layer kept apart). (default: last)",
    ),
    crop: Optional[str] = typer.Option(
        None, "--crop", help="none, or faces: the image encoder sees the most prominent face. (default: none)"
    ),
    name: Optional[str] = typer.Option(
        None,
        "--name",
        help="Feature set name instead of the model's: NAME, or audio=NAME,visual=NAME (ASCII letters, digits, _ . -).",
    ),
    preset: Optional[str] = typer.Option(
        None,
        "--preset",
        help="offline: pip-shipped MiniLM-L6 text + EfficientNet-Lite0 frames (no network). (default: none)",
    ),
    frames: Optional[int] = typer.Option(None, "--frames", help="Frames sampled per clip. (default: 16)"),
    context: Optional[int] = typer.Option(
        None, "--context", help="Earlier utterances given to the text encoder. (default: 0)"
    ),
    format: Optional[str] = typer.Option(None, "--format", help="h5 or zarr. (default: h5)"),
    shard_size: Optional[int] = typer.Option(None, "--shard-size", help="Clips per shard file. (default: 256)"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda. (default: auto)"),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="Texts or frames per encoder forward pass. (default: 64)"
    ),
    workers: Optional[int] = typer.Option(
        None, "--workers", help="Decoding processes; 0 decodes in this process. (default: 2)"
    ),
    num_shards: Optional[int] = typer.Option(
        None, "--num-shards", help="Split the shards across this many processes. (default: 1)"
    ),
    shard_index: Optional[int] = typer.Option(
        None, "--shard-index", help="Which of the --num-shards processes this is (0-based). (default: 0)"
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Redo this run's sets (replacing a same-named set made differently)."
    ),
    max_duration: Optional[float] = typer.Option(
        None, "--max-duration", help="Seconds decoded per clip; longer clips are cut. (default: 30)"
    ),
    audio_views: Optional[int] = typer.Option(
        None, "--audio-views", help="Augmented mel copies per clip. (default: 0)"
    ),
    config: Optional[Path] = typer.Option(
        None,
        "--config",
        help="TOML file with any ExtractConfig key (in an extract table or at top level); options and --set override it.",
    ),
    set_: Optional[List[str]] = typer.Option(
        None,
        "--set",
        help="Override any config key: --set key=value (repeatable), e.g. --set n_mels=64; a key that its own option also sets is refused.",
    ),
    launcher: str = typer.Option(
        DEFAULT,
        "--launcher",
        show_default=False,
        help=f"{launcher_help()}. (default: {DEFAULT})",
    ),
    wait: bool = typer.Option(
        True,
        "--wait/--no-wait",
        show_default=False,
        help=f"With a launcher that runs tasks elsewhere ({', '.join(remote_names())}): follow them to their end, "
        "or return once submitted. (default: wait)",
    ),
    **launcher_values,
) -> None:
    from emo.extract.config import ExtractConfig

    named = dict(
        split=split,
        data_root=data_root,
        cache=cache,
        modalities=modalities,
        text_model=text_model,
        visual_model=visual_model,
        visual_pretrained=visual_pretrained,
        audio_model=audio_model,
        audio_layers=audio_layers,
        text_layers=text_layers,
        crop=crop,
        name=name,
        preset=preset,
        frames=frames,
        context=context,
        format=format,
        shard_size=shard_size,
        device=device,
        batch_size=batch_size,
        workers=workers,
        num_shards=num_shards,
        shard_index=shard_index,
        overwrite=True if overwrite else None,
        max_duration=max_duration,
        audio_views=audio_views,
    )
    overrides = merge_overrides(set_, named)
    chosen = make_launcher(launcher, launcher_values, wait=wait, shard_index=shard_index)
    resolved = build_config(ExtractConfig, config, overrides, section="extract")
    launch_and_show(resolved, chosen, wait)


def launch_and_show(config, launcher, wait: bool = True):
    """Run `config` through `launcher` (built by `make_launcher` from --launcher and its own
    options), showing it as `emo extract` does; returns the `LaunchReport`."""
    from emo.commands.launch_view import LaunchView
    from emo.extract.launch.orchestrate import run_launch

    console = make_console(highlight=False)
    with LaunchView(console) as view:
        report = run_launch(config, launcher, run_node_task, wait=wait, progress=view)
    show_launch(report, console)
    return report


def show_launch(report, console) -> None:
    """The end of a launch: the summary tables, failed tasks, and the sentence to end with."""
    if report.nothing_to_do:
        console.print(f"nothing to do: all {count(report.shards, 'shard')} are already in {report.cache}.")
        return
    if not report.remote:
        if report.summary is not None and report.summary.encoders_loaded:  # else announced in one sentence
            print_summary(report.summary, console)
        return
    if not report.waited:
        console.print(f"Follow it with: emo cache status {report.cache}")
        return
    if report.summary is not None:
        print_summary(report.summary, console)
    for outcome in report.launch.failed:
        console.print(f"task {outcome.index} {outcome.state}: {outcome.log}")
    report.raise_for_failure()
    splits = ", ".join(f"{name}: {count(len(s.finished), 'shard')}" for name, s in report.status.splits.items())
    console.print(f"{report.cache} is complete ({splits}).")


def run_node_task(config):
    """What one task of a remote launch runs, on its node: the `--shard-index` extraction,
    shown as in a batch log (its output is the task's log file). A user's error ends in one
    `emo: error:` line and the CLI's exit status, not a traceback; the summary is returned
    for the launcher to hand back."""
    try:
        return extract_and_report(config)
    except EmoError as error:
        print(f"emo: error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(error.exit_code) from None


def extract_and_report(config, console=None, progress_console=None):
    """Run an extraction the way `emo extract` shows it; returns the `ExtractSummary`.

    Progress (bars on a terminal, a plain line every 30 s in a log) goes to
    `progress_console` (default: stderr), the end-of-run tables to `console` (default:
    stdout). Other commands that extract (the demo) call this to look the same.
    """
    from emo.extract.pipeline.run import run_extract

    console = console or make_console()
    with ProgressView(progress_console or make_console(stderr=True)) as view:
        summary = run_extract(config, progress=view)
    if summary.encoders_loaded:  # a finished cache was already announced in one sentence
        print_summary(summary, console)
    return summary


def print_summary(summary, console) -> None:
    """The end-of-run tables: shards per split, failures by reason, time per stage.

    Headings are printed as lines of their own, not as table titles, which rich would wrap
    to the width of a narrow table.
    """
    from rich.table import Table

    console.print(f"emo extract -> {summary.cache}: {', '.join(summary.sets) or 'no feature set'}", highlight=False)
    table = Table()
    for column in ("split", "rows", "shards", "mine", "written", "skipped", "failed", "cut", "unlabeled"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for s in summary.splits.values():
        table.add_row(
            s.split + ("" if s.complete else " (incomplete)"),
            *(str(n) for n in (s.rows, s.shards, s.assigned, s.written, s.skipped)),
            *(str(n) for n in (sum(s.failures_by_reason.values()), s.truncated, s.unlabeled_videos)),
        )
    console.print(table)
    console.print(
        "mine: shards this process owns (--num-shards/--shard-index); skipped: already in the cache; failed: "
        f"{summary.unit} with a failure; cut: longer than --max-duration; unlabeled: videos with no CSV row",
        style="dim",
        highlight=False,
    )

    reasons, modalities = summary.failures_by_reason, summary.failures_by_modality
    if reasons:
        console.print("Failures this run", highlight=False)
        failures = Table()
        failures.add_column("reason")
        failures.add_column(summary.unit, justify="right")
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            failures.add_row(reason, str(n))
        failures.add_section()
        for modality, n in sorted(modalities.items(), key=lambda kv: -kv[1]):
            failures.add_row(f"lost {modality}", str(n))
        console.print(failures)

    console.print(
        f"Time per stage: {count_units(summary.rows_written, summary.unit)} in {summary.wall_seconds:.1f} s, "
        f"{summary.clips_per_second:.2f} {summary.unit}/s (worker stages are summed over the workers)",
        highlight=False,
    )
    stages = Table()
    stages.add_column("stage")
    stages.add_column("seconds", justify="right")
    for name, seconds in sorted(summary.stage_seconds.items(), key=lambda kv: -kv[1]):
        stages.add_row(name, f"{seconds:.2f}")
    console.print(stages)
