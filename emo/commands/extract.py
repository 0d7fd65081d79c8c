"""Run the frozen encoders once over a split and write a sharded HDF5/Zarr feature cache.

Each encoder writes one named feature set (text/<model>, visual/<model>, audio/mel, ...)
beside the split's row table (ids, labels, speaker, text). By default text goes through a
BERT-family encoder (CLS + masked mean), sampled frames through a CLIP image encoder and
audio becomes log-mel spectrograms. Extracting into an existing cache adds the sets it
names and leaves every other set alone: --audio-model whisper-base, --visual-model
mediapipe-face, --crop faces, --text-model all-mpnet-base-v2, --name to choose the set's
name. Re-running resumes (finished shards are skipped, per set);
--num-shards/--shard-index split the work across processes or machines.
Progress goes to stderr, the end-of-run tables to stdout.
--launcher slurm submits the --num-shards tasks as one SLURM job array and follows it
(--no-wait: submit and return; `emo cache status CACHE` shows how far it got).
Example: emo extract --split train --data-root MELD.Raw --cache cache/
Offline: emo extract --split all --data-root MELD.Raw --cache cache/ --preset offline
Add a set: emo extract --split all --data-root MELD.Raw --cache cache/ --modalities audio --audio-model whisper-base
SLURM:   emo extract --split all --cache /shared/cache --num-shards 8 --launcher slurm --gpus-per-task 1
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from emo.commands.output import ProgressView, count, make_console
from emo.config import build_config, merge_overrides
from emo.errors import UsageError


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
        None, "--text-model", help="Hugging Face id or local folder. (default: bert-base-uncased)"
    ),
    visual_model: Optional[str] = typer.Option(
        None, "--visual-model", help="open_clip architecture, or efficientnet-lite0. (default: ViT-B-32)"
    ),
    visual_pretrained: Optional[str] = typer.Option(
        None, "--visual-pretrained", help="open_clip pretrained tag or checkpoint file. (default: openai)"
    ),
    audio_model: Optional[str] = typer.Option(
        None, "--audio-model",
        help="mel, whisper-base (offline), egemaps (needs emo[prosody]), or a transformers speech id/folder. (default: mel)",
    ),
    audio_layers: Optional[str] = typer.Option(
        None, "--audio-layers", help="Speech-model layers pooled per clip: last, all, or e.g. 6,12. (default: last)"
    ),
    crop: Optional[str] = typer.Option(
        None, "--crop", help="none, or faces: the image encoder sees the most prominent face. (default: none)"
    ),
    name: Optional[str] = typer.Option(
        None, "--name", help="Feature set name instead of the model's: NAME, or audio=NAME,visual=NAME (ASCII letters, digits, _ . -)."
    ),
    preset: Optional[str] = typer.Option(
        None, "--preset", help="offline: pip-shipped MiniLM-L6 text + EfficientNet-Lite0 frames (no network). (default: none)"
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
        None, "--config", help="TOML file with any ExtractConfig key (in an extract table or at top level); options and --set override it."
    ),
    set_: Optional[List[str]] = typer.Option(
        None, "--set", help="Override any config key: --set key=value (repeatable), e.g. --set n_mels=64; a key that its own option also sets is refused."
    ),
    launcher: str = typer.Option(
        "local", "--launcher", show_default=False,
        help="local: run here; slurm: a SLURM job array of --num-shards tasks. (default: local)",
    ),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", show_default=False,
        help="With --launcher slurm: follow the array to its end, or return once submitted. (default: wait)",
    ),
    slurm_partition: Optional[str] = typer.Option(None, "--slurm-partition", help="SLURM partition for the tasks."),
    slurm_time: Optional[str] = typer.Option(
        None, "--slurm-time", help="Time limit per task, e.g. 90 or 4:00:00. (default: the partition's)"
    ),
    slurm_mem: Optional[str] = typer.Option(None, "--slurm-mem", help="Memory per task's node, e.g. 16G."),
    cpus_per_task: Optional[int] = typer.Option(None, "--cpus-per-task", help="CPUs per SLURM task."),
    gpus_per_task: Optional[int] = typer.Option(None, "--gpus-per-task", help="GPUs per SLURM task."),
    array_parallelism: Optional[int] = typer.Option(
        None, "--array-parallelism", help="SLURM tasks running at once. (default: all)"
    ),
    slurm_arg: Optional[List[str]] = typer.Option(
        None, "--slurm-arg", help="Any other sbatch option: --slurm-arg key=value (repeatable), e.g. account=lab."
    ),
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
    if launcher == "slurm" and shard_index is not None:
        raise UsageError("--shard-index is chosen per task by --launcher slurm; give only --num-shards.")
    resolved = build_config(ExtractConfig, config, overrides, section="extract")
    slurm = dict(
        partition=slurm_partition, time=slurm_time, mem=slurm_mem, cpus_per_task=cpus_per_task,
        gpus_per_task=gpus_per_task, array_parallelism=array_parallelism,
        extra=parse_slurm_args(slurm_arg) if slurm_arg else None,
    )  # fmt: skip
    slurm = {k: v for k, v in slurm.items() if v is not None}
    given = [flag for flag, key in _SLURM_FLAGS.items() if key in slurm] + ([] if wait else ["--no-wait"])
    if launcher == "local" and given:
        raise UsageError(f"{given[0]} needs --launcher slurm.")
    from emo.commands.launch import launch_and_report

    launch_and_report(resolved, launcher, slurm, wait)


_SLURM_FLAGS = {
    "--slurm-partition": "partition", "--slurm-time": "time", "--slurm-mem": "mem", "--cpus-per-task": "cpus_per_task",
    "--gpus-per-task": "gpus_per_task", "--array-parallelism": "array_parallelism", "--slurm-arg": "extra",
}  # fmt: skip


def parse_slurm_args(pairs: List[str]) -> dict:
    """`--slurm-arg account=lab --slurm-arg qos=high` -> {"account": "lab", "qos": "high"}."""
    extra = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise UsageError(f"--slurm-arg '{pair}' is not key=value; write it as e.g. --slurm-arg account=lab.")
        if key in extra and extra[key] != value.strip():
            raise UsageError(f"--slurm-arg {key} is given twice ({extra[key]} and {value.strip()}); give it once.")
        extra[key] = value.strip()
    return extra


def extract_and_report(config, console=None, progress_console=None):
    """Run an extraction the way `emo extract` shows it; returns the `ExtractSummary`.

    Progress (bars on a terminal, a plain line every 30 s in a log) goes to
    `progress_console` (default: stderr), the end-of-run tables to `console` (default:
    stdout). Other commands that extract (the demo) call this to look the same.
    """
    from emo.extract.pipeline import run_extract

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
        "mine: shards this process owns (--num-shards/--shard-index); skipped: already in the cache; failed: clips "
        "with a failure; cut: longer than --max-duration; unlabeled: videos with no CSV row",
        style="dim",
        highlight=False,
    )

    reasons, modalities = summary.failures_by_reason, summary.failures_by_modality
    if reasons:
        console.print("Failures this run", highlight=False)
        failures = Table()
        failures.add_column("reason")
        failures.add_column("clips", justify="right")
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            failures.add_row(reason, str(n))
        failures.add_section()
        for modality, n in sorted(modalities.items(), key=lambda kv: -kv[1]):
            failures.add_row(f"lost {modality}", str(n))
        console.print(failures)

    console.print(
        f"Time per stage: {count(summary.rows_written, 'clip')} in {summary.wall_seconds:.1f} s, "
        f"{summary.clips_per_second:.2f} clips/s (worker stages are summed over the workers)",
        highlight=False,
    )
    stages = Table()
    stages.add_column("stage")
    stages.add_column("seconds", justify="right")
    for name, seconds in sorted(summary.stage_seconds.items(), key=lambda kv: -kv[1]):
        stages.add_row(name, f"{seconds:.2f}")
    console.print(stages)
