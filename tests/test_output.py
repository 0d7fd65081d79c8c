"""What commands print into a file or a batch log: complete tables and steady progress lines."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

from emo.commands.output import LOG_WIDTH, ProgressView, make_console, percent
from emo.progress import Message, TaskAdvanced, TaskFinished, TaskStarted


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def log_console() -> Console:
    return Console(file=io.StringIO(), width=LOG_WIDTH, force_terminal=False, soft_wrap=False)


def test_console_for_a_log_is_wide_enough_for_whole_tables(capsys):
    console = make_console()  # pytest's captured stdout is not a terminal
    assert not console.is_terminal and console.width >= LOG_WIDTH
    table = Table(title="results")
    for name in ("cell", "dev weighted F1", "test weighted F1", "dev accuracy", "test accuracy", "seeds"):
        table.add_column(name)
    table.add_row(
        "text+audio+visual / ensemble, class_weights=meld", "58.62 ± 0.72", "56.90 ± 0.31", "60.1", "58.7", "3"
    )
    console.print(table)
    out = capsys.readouterr().out
    assert "text+audio+visual / ensemble, class_weights=meld" in out and "…" not in out


def test_plain_progress_lines_at_a_steady_interval():
    clock, console = FakeClock(), log_console()
    with ProgressView(console, interval_s=30, clock=clock) as view:
        view(TaskStarted("extract:train", "train", 1000, "clips"))
        for done in range(1, 1001):
            clock.now = done * 0.5  # 2 clips/s for 500 s
            view(TaskAdvanced("extract:train", done))
        view(TaskFinished("extract:train", "3 failed"))
        view(Message("Cache written."))
    lines = console.file.getvalue().splitlines()
    progress = [line for line in lines if "clips/s" in line]
    # one line every 30 s of a 500 s task, each with count, rate and ETA
    assert 15 <= len(progress) <= 17
    assert progress[0].startswith("train: 60/1000 clips, 2.00 clips/s") and "ETA 7:50" in progress[0]
    assert lines[0] == "train: started (1000 clips)."
    assert "train: done, 1000 clips in 8:20; 3 failed." in lines and lines[-1] == "Cache written."


def test_percent_for_people_fractions_in_files():
    assert percent(0.76943) == "76.94 %"
    assert percent(float("nan")) == "-" and percent(None) == "-"


def test_a_panel_in_a_log_wraps_inside_its_frame_instead_of_cutting_words(capsys):
    """The demo's banner, written to a file, keeps the sentence that says its scores say
    nothing about MELD (rich cut a soft-wrapped panel at its frame: "... shows the true emoti")."""
    from emo.commands.demo import show_intro
    from emo.recipes.demo_config import DemoConfig

    show_intro(make_console(), DemoConfig())
    out = capsys.readouterr().out
    inside = " ".join(line.strip("│ ") for line in out.splitlines() if line.startswith("│"))
    words = " ".join(inside.split())
    assert "each modality shows the true emotion's cue" in words
    assert words.endswith("they say nothing about MELD.") or "they say nothing about MELD." in words
    assert "…" not in out


def test_a_long_sentence_in_a_log_stays_one_whole_line(capsys):
    sentence = "Fitted head: " + " ".join(f"word{i}" for i in range(80)) + " end."
    make_console().print(sentence, highlight=False)
    assert capsys.readouterr().out.strip() == sentence
