"""Issue 21, items 5 and 10: a text-only cache is a first-class cache.

MELD's CSVs without the videos, or `emo extract --modalities text`, give a cache of text
features only. Through the command line, on a real one (a CSV folder with no clip folder,
extracted by the tiny BERT of tests/extract_fixtures.py):

- extraction counts the CSV's rows as utterances, never as clips (item 10);
- `emo fit` without --modalities fits on text and says so in one line; asking for audio by
  name is still refused in one sentence; a full cache still fits all three, silently;
- `emo eval` on the text-only run reports no modality importance (hiding its only modality
  leaves no input) and no modality-dropout warning, where a three-modality run has both;
- `emo ablate`'s all-subsets grid covers the modalities the cache holds: text alone.
"""

from __future__ import annotations

import io
import json
import traceback
from contextlib import redirect_stderr, redirect_stdout

import pytest

from emo.data.meld import COLUMNS
from extract_fixtures import tiny_bert  # noqa: F401 - a fixture
from reliability_fixtures import Result, assert_clean_error, emo, synthetic_feature_cache, write_csv

WORDS = {"neutral": "okay then", "joy": "oh great", "surprise": "what really", "anger": "stop it now"}
NOTE = "holds text features only; fitting on text."


def run_cli(*argv: str) -> Result:
    """`emo ARGV` through `emo.cli.run` (the console script's code path), output captured."""
    from emo.cli import app, run

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = run(app, [str(a) for a in argv])
        except BaseException:  # noqa: BLE001 - a traceback is a failure of the test
            err.write(traceback.format_exc())
            code = -1
    return Result(tuple(map(str, argv)), code, out.getvalue(), err.getvalue())


def csv_rows(n: int) -> list[list[str]]:
    """MELD rows whose words carry their emotion, in dialogues of four turns."""
    rows = []
    for i in range(n):
        emotion = list(WORDS)[i % len(WORDS)]
        rows.append(
            [str(i + 1), f"{WORDS[emotion]} number {i}", "Joey", emotion, "neutral", str(i // 4), str(i % 4)]
            + ["1", "1", "00:00:01,000", "00:00:02,000"]
        )
    return rows


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory, tiny_bert):  # noqa: F811 - the fixture imported above
    """A text-only cache extracted from CSVs alone (no clip folder), and what extraction printed."""
    root = tmp_path_factory.mktemp("text-only")
    data = root / "data"
    for split, n in (("train", 40), ("dev", 12), ("test", 12)):
        write_csv(data / f"{split}_sent_emo.csv", list(COLUMNS), csv_rows(n))
    cache = root / "cache"
    result = run_cli(
        "extract", "--split", "all", "--data-root", data, "--cache", cache, "--modalities", "text",
        "--text-model", tiny_bert, "--device", "cpu", "--shard-size", "64",
    )  # fmt: skip
    assert result.returncode == 0, result.describe()
    return {"root": root, "cache": cache, "extract": result}


@pytest.fixture(scope="module")
def text_run(text_cache):
    """`emo fit` on the text-only cache, as a user types it: no --modalities (the real entry point)."""
    run = text_cache["root"] / "runs" / "text"
    result = emo("fit", "--cache", text_cache["cache"], "--out", run, "--epochs", "2", "--device", "cpu")
    assert result.returncode == 0, result.describe()
    return run, result


def test_text_only_extraction_counts_utterances_not_clips(text_cache):
    result = text_cache["extract"]
    said = result.stdout + result.stderr
    print(said)
    assert "extract train: started (40 utterances)." in result.stderr
    assert "extract dev: done, 12 utterances in" in result.stderr
    assert "Time per stage: 64 utterances in" in result.stdout and "utterances/s" in result.stdout
    assert "clip" not in said.lower(), "a CSV row is an utterance: no clip was decoded"


def test_the_unit_follows_what_is_decoded():
    from emo.extract.pipeline.summary import row_unit

    assert row_unit(("text",)) == "utterances"
    assert row_unit(("text", "audio")) == row_unit(("visual",)) == "clips"


def test_fit_on_a_text_only_cache_fits_text_and_says_so_once(text_run):
    run, result = text_run
    notes = [line for line in result.stdout.splitlines() if NOTE in line]
    assert len(notes) == 1, result.describe()
    assert (run / "config.toml").read_text(encoding="utf-8").count('modalities = ["text"]') == 1
    assert (run / "summary.json").is_file() and (run / "model.pt").is_file()


def test_fit_asking_for_a_modality_the_cache_lacks_is_refused(text_cache):
    out = text_cache["root"] / "runs" / "text-audio"
    result = run_cli("fit", "--cache", text_cache["cache"], "--out", out, "--modalities", "text,audio")
    assert_clean_error(result, 1, mentions=("no audio features", "--modalities"))
    assert not out.exists()


def test_a_full_cache_still_fits_every_modality_without_a_note(tmp_path):
    cache = synthetic_feature_cache(tmp_path / "cache")
    run = tmp_path / "run"
    result = run_cli("fit", "--cache", cache, "--out", run, "--epochs", "1", "--device", "cpu")
    assert result.returncode == 0, result.describe()
    assert "features only" not in result.stdout + result.stderr
    assert 'modalities = ["text", "audio", "visual"]' in (run / "config.toml").read_text(encoding="utf-8")


def test_eval_of_a_text_only_run_reports_no_modality_importance(text_run, tmp_path):
    run, _ = text_run
    result = run_cli("eval", "--run", run, "--split", "test", "--device", "cpu")
    assert result.returncode == 0, result.describe()
    print(result.stdout[-1500:])
    assert "Modality importance: not measured, since the run uses text only" in result.stdout
    assert "hidden modality" not in result.stdout and "modality_dropout" not in result.stderr
    report = json.loads(next(run.glob("eval-*-test.json")).read_text(encoding="utf-8"))
    assert report["modality_importance"] == {} and report["warnings"] == []
    markdown = next(run.glob("eval-*-test.md")).read_text(encoding="utf-8")
    assert "not measured" in markdown and "| text |" not in markdown
    # the same command on a three-modality run trained without dropout keeps both
    cache = synthetic_feature_cache(tmp_path / "cache")
    full = tmp_path / "full"
    assert run_cli("fit", "--cache", cache, "--out", full, "--epochs", "1", "--device", "cpu").returncode == 0
    result = run_cli("eval", "--run", full, "--split", "test", "--device", "cpu")
    assert result.returncode == 0, result.describe()
    assert "hidden modality" in result.stdout and "modality_dropout 0" in result.stderr


def test_ablate_on_a_text_only_cache_grids_over_text(text_cache):
    out = text_cache["root"] / "ablate"
    result = run_cli(
        "ablate", "--cache", text_cache["cache"], "--out", out, "--seeds", "1", "--epochs", "1",
        "--fusion", "early", "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.describe()
    assert "holds text features only; all-subsets covers text." in result.stdout + result.stderr
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert cells == ["text__early"], cells
