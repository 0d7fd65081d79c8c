"""Predict the emotion of every utterance in new video or audio files with a trained run.

INPUT is any number of video or audio files, folders of them, or a long video; no CSV
and no labels are needed. Words come from --transcript (a MELD-style CSV, SRT, WebVTT or
JSON file) or from speech recognition (faster-whisper; offline by default with the
pip-shipped Whisper base, or --asr-model NAME|PATH). A clip is one utterance; with
--segment (the default for inputs over 30 s) it is split at the recogniser's speech
segments, each with its own frames and audio, each segment's end padded (--segment-pad) to
the next one's start or the media's end. Features come from the very encoders and
preprocessing that made the run's cache (refused if the weights differ). Writes
predictions.csv and predictions.jsonl (file, segment, start, end, transcript, where the
transcript came from: asr, given or none, emotion, the probability of each emotion, and
sentiment where trained, modalities used), a timeline PNG per input with several segments
and report.html (all of it on one page that opens in a browser) into --out (--overwrite
replaces earlier predictions there as a whole); inputs that cannot be read are reported
and skipped, and the command exits 1 when nothing could be predicted.
Example: emo predict runs/seed clips/ talk.mp4 --out predictions/
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from emo.commands.output import ProgressView, count, make_console
from emo.units import percent

MAX_ROWS_SHOWN = 40  # the terminal table's length; the files hold every row
FILE_SHOWN = 20  # characters of a file name in the terminal table
TRANSCRIPT_SHOWN = 100  # characters of a transcript in the terminal table; the files hold it whole


def command(
    run: Path = typer.Argument(
        ..., metavar="RUN", help="Run directory written by emo fit, or an ensemble folder written by emo ensemble."
    ),
    inputs: List[Path] = typer.Argument(
        ..., metavar="INPUT", help="Video or audio files, or folders of them.", show_default=False
    ),
    out: Path = typer.Option(..., "--out", help="Folder for predictions.csv/.jsonl and timelines.", show_default=False),
    transcript: Optional[Path] = typer.Option(
        None, "--transcript", help="MELD-style CSV, SRT, WebVTT or JSON transcript instead of speech recognition."
    ),
    segment: Optional[bool] = typer.Option(
        None,
        "--segment/--no-segment",
        help="Split inputs at speech segments. (default: only inputs over 30 s)",
        show_default=False,
    ),
    segment_pad: str = typer.Option(
        "next",
        "--segment-pad",
        help="Move each recognised segment's end on (Whisper ends them early): to the next segment's start "
        "or the media's end (next), by SECONDS but not past the next start, or not at all (none). (default: next)",
        metavar="next|none|SECONDS",
        show_default=False,
    ),
    asr_model: Optional[str] = typer.Option(
        None,
        "--asr-model",
        help="faster-whisper model name or local CTranslate2 folder, for better words than Whisper base. "
        "(default: the pip-shipped Whisper base)",
    ),
    language: str = typer.Option(
        "en", "--language", help="Spoken language code, or auto. (default: en)", show_default=False
    ),
    cache: Optional[Path] = typer.Option(
        None, "--cache", help="The run's feature cache, if it moved (its config.toml names the encoders)."
    ),
    device: str = typer.Option(
        "auto", "--device", help="auto (as the cache was made), cpu or cuda.", show_default=False
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the predictions already in --out."),
) -> None:
    from emo.errors import UsageError
    from emo.predict import Predictor, media_files, write_outputs
    from emo.predict.files import check_out
    from emo.predict.segments import parse_segment_pad

    check_out(out, overwrite)  # like a typo in an input, fails before any model loads
    media_files(inputs)
    pad = parse_segment_pad(segment_pad)
    if transcript is not None and not transcript.is_file():
        raise UsageError(f"Transcript {transcript} does not exist; pass a MELD-style CSV, SRT, WebVTT or JSON file.")
    with ProgressView() as view:
        predictor = Predictor.from_run(
            run, cache=cache, device=device, asr_model=asr_model, language=language, progress=view
        )
        with predictor:
            result = predictor.predict(inputs, transcript=transcript, segment=segment, segment_pad=pad)
        files = write_outputs(result, out, overwrite=overwrite)
    print_result(result, files, predictor.heads)
    result.require_any()  # exit 1 when every input was skipped (the reasons are printed above)


def print_result(result, files, heads, console=None) -> None:
    console = console or make_console()
    console.print(prediction_table(result, heads, console.width))
    if len(result.segments) > MAX_ROWS_SHOWN:
        console.print(f"... {len(result.segments) - MAX_ROWS_SHOWN} more rows in {files['csv']}.", highlight=False)
    for problem in result.problems:
        what = "skipped" if problem.skipped else "note"
        console.print(
            f"{what}: {problem.message}", style="yellow" if problem.skipped else None, highlight=False, soft_wrap=True
        )
    guessed = sum(s.transcript_source == "asr" for s in result.segments)
    if guessed:
        console.print(
            f"Transcripts from speech recognition (transcript_source asr): {guessed} of "
            f"{count(len(result.segments), 'utterance')}; check them, and where they are wrong pass "
            "--transcript FILE or a larger --asr-model.",
            highlight=False,
            soft_wrap=True,
        )
    if result.seconds:
        total = sum(result.seconds.values())
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(result.seconds.items(), key=lambda kv: -kv[1]))
        console.print(f"Time: {total:.1f} s for {result.audio_seconds:.1f} s of media ({parts}).", highlight=False)
    written = [str(files["csv"]), str(files["jsonl"])] + [str(v) for k, v in files.items() if k.startswith("timeline:")]
    if "problems" in files:
        written.append(str(files["problems"]))
    if "report" in files:
        written.append(str(files["report"]))
    console.print(f"Predictions written to {', '.join(written)}.", highlight=False, soft_wrap=True)


def prediction_table(result, heads, width: int):
    """The terminal table, laid out so the transcript keeps a readable column on an 80-column
    terminal: long file names keep their end (what tells files apart), the modalities get a
    column only when the segments differ in them (else the title says them once), and the
    runner-up emotion only on a terminal of 100 columns or more."""
    from rich.table import Table

    used = {"+".join(s.modalities) for s in result.segments[:MAX_ROWS_SHOWN]}
    title = f"emo predict: {count(len(result.segments), 'utterance')} in {count(len(result.inputs), 'input')}"
    if len(used) == 1:
        title += f" (modalities {next(iter(used))})"
    table = Table(title=title)
    table.add_column("file", no_wrap=True)
    table.add_column("seg", justify="right", no_wrap=True)
    table.add_column("time (s)", justify="right", no_wrap=True)
    table.add_column("emotion", no_wrap=True)
    runner_up = width >= 100
    if runner_up:
        table.add_column("2nd", no_wrap=True)
    if "sentiment" in heads:
        table.add_column("sentiment", no_wrap=True)
    if len(used) > 1:
        table.add_column("modalities", overflow="fold")
    table.add_column("transcript", overflow="fold")
    for s in result.segments[:MAX_ROWS_SHOWN]:
        ranked = sorted(s.probabilities.items(), key=lambda kv: -kv[1])
        second = f"{ranked[1][0]} {percent(ranked[1][1], 0)}" if len(ranked) > 1 else ""
        name = Path(s.file).name
        name = name if len(name) <= FILE_SHOWN else "…" + name[1 - FILE_SHOWN :]  # the end tells files apart
        row = [name, str(s.segment), f"{s.start:.1f}-{s.end:.1f}"]
        row += [f"{s.emotion} {percent(s.probabilities.get(s.emotion), 0)}"] + ([second] if runner_up else [])
        if "sentiment" in heads:
            row.append(s.sentiment or "")
        if len(used) > 1:
            row.append("+".join(s.modalities))
        row.append(_shortened(s.transcript, TRANSCRIPT_SHOWN))
        table.add_row(*row)
    return table


def _shortened(text: str, limit: int) -> str:
    """`text` cut at a word boundary to at most `limit` characters, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]  # at the last space, if there is one
    return cut.rstrip(" ,;:") + "…"
