"""What a new user meets when a command's output goes to a terminal or a log file, and the
mistakes they make on the way: each test pins one finding of a "try it as a user" pass."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from emo.cli import app, run
from emo.commands.output import LOG_WIDTH, ProgressView, make_console
from emo.progress import TaskAdvanced, TaskFinished, TaskStarted
from emo.units import count_units, index_ranges
from synthetic_features import make_synthetic_split, split_rows, to_feature_sets


def write_partial_cache(root, skip_shard: int | None = None, finalize: bool = True, shard_rows: int = 8):
    """A train split of 3 shards written as `emo extract` would, one shard left out (another
    --shard-index's) or the split plan never written (an interrupted run)."""
    from cache_writing import V1Writer

    features = make_synthetic_split(
        24, text_dim=8, visual_dim=8, frames=2, n_mels=4, mean_mel_frames=5, max_mel_frames=8
    )
    writer = V1Writer(root, features.fingerprint, fmt="h5")
    for index, start in enumerate(range(0, len(features), shard_rows)):
        if index != skip_shard:
            writer.write_shard("train", index, split_rows(features, start, start + shard_rows))
    if finalize:
        writer.finalize("train", total_rows=len(features), expected_shards=3)


def one_sentence(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emo: error: ") and "Traceback" not in err, err
    return lines[0]


# --- numbers and words --------------------------------------------------------------------
def test_counts_of_a_plural_unit_and_index_ranges():
    assert count_units(1, "files") == "1 file" and count_units(3, "files") == "3 files"
    assert count_units(1, "utterances") == "1 utterance" and count_units(0, "clips") == "0 clips"
    assert index_ranges([5, 0, 1, 2]) == "0-2, 5" and index_ranges([0, 1, 3], sep=",") == "0-1,3"


def test_progress_in_a_log_says_1_file_not_1_files():
    console = Console(file=io.StringIO(), width=LOG_WIDTH, force_terminal=False)
    with ProgressView(console) as view:
        view(TaskStarted("predict:plan", "transcribe and segment", 1, "files"))
        view(TaskAdvanced("predict:plan", 1))
        view(TaskFinished("predict:plan", "1 utterance"))
    out = console.file.getvalue()
    assert "started (1 file)." in out and "done, 1 file in" in out and "files" not in out


def test_a_log_keeps_long_sentences_on_one_line(capsys):
    console = make_console(highlight=False)  # pytest's stdout is not a terminal
    sentence = "Reports: " + ", ".join(f"runs/ablate-name/report-{i}.csv" for i in range(12)) + "; every fit's folder."
    assert len(sentence) > LOG_WIDTH
    console.print(sentence)
    assert capsys.readouterr().out == sentence + "\n"


# --- a dataset folder given where a cache belongs -----------------------------------------
def test_a_dataset_folder_as_cache_is_a_usage_error_that_says_what_to_run(tmp_path, capsys):
    data = tmp_path / "MELD.Raw"
    data.mkdir()
    (data / "train_sent_emo.csv").write_text("Sr No.,Utterance\n")
    for argv in (
        ["cache", "info", str(data)],
        ["cache", "status", str(data)],
        ["fit", "--cache", str(data), "--out", str(tmp_path / "run")],
    ):
        assert run(app, argv) == 2
        line = one_sentence(capsys.readouterr().err)
        assert "dataset folder" in line and f"--data-root {data}" in line
    assert not (tmp_path / "run").exists() and sorted(p.name for p in data.iterdir()) == ["train_sent_emo.csv"]


# --- an incomplete cache: how to finish it ------------------------------------------------
def test_a_shard_of_another_shard_index_is_named_with_a_hint_that_finishes_it(tmp_path, capsys):
    root = tmp_path / "c"
    write_partial_cache(root, skip_shard=1)
    assert run(app, ["cache", "verify", str(root)]) == 1
    err = capsys.readouterr().err
    line = one_sentence(err)  # one problem: said once, and no empty line from a progress bar in a log
    assert "missing shard-00001" in line and "without --num-shards/--shard-index" in line
    assert run(app, ["cache", "info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "missing shards: 1)" in out and "without --num-shards/--shard-index" in out
    assert "\nFeature sets\n" in out and "\nSplits\n" in out  # headings are whole lines, not padded titles


def test_status_after_an_interrupted_extract_says_how_to_finish(tmp_path, capsys):
    root = tmp_path / "c"
    write_partial_cache(root, finalize=False)
    assert run(app, ["cache", "status", str(root)]) == 0
    out = capsys.readouterr().out
    assert "train: shard count unknown" in out and "re-run `emo extract --split train`" in out


# --- emo predict on a clip without speech -------------------------------------------------
def test_a_segment_without_words_is_predicted_without_text():
    from emo.predict.encode import hide_missing_words

    features = to_feature_sets(
        make_synthetic_split(
            3, text_dim=4, visual_dim=4, frames=2, n_mels=4, mean_mel_frames=5, max_mel_frames=8, missing=0.0
        )
    )
    (text,) = (s for s in features.sets.values() if s.modality == "text")
    text.present[:] = True
    hide_missing_words(features, ["hello there", "", "  "])
    assert text.present.tolist() == [True, False, False]
    assert not np.any(text.arrays["cls"][1:]) and not np.any(text.arrays["mean"][1:]) and np.any(text.arrays["cls"][0])
