"""`emo eval` reports: named by what they scored so none is overwritten, written whole, and
honest about their numbers (percent for people, fractions in JSON, macro F1 over the classes
present, modality importance with a warning when the model never saw a hidden modality).
"""

from __future__ import annotations

import emo.fuse  # noqa: F401, I001 - first: sets OpenMP's passive wait policy before torch loads
import json
import shutil

import pytest
import typer
from typer.testing import CliRunner

from emo import cli
from emo.commands import evaluate
from emo.errors import PathNotFoundError
from emo.fuse.eval_report import report_stem
from emo.fuse.evaluate import importance_warnings, run_eval
from reliability_fixtures import synthetic_feature_cache


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small cache and a 1-epoch run trained on it without modality dropout."""
    from emo.fuse.config import FitConfig
    from emo.fuse.train import run_fit

    root = tmp_path_factory.mktemp("eval_reports")
    cache = synthetic_feature_cache(root / "meld")
    run = root / "run"
    run_fit(FitConfig(cache=cache, out=run, epochs=1, device="cpu", modality_dropout=0.0))
    # the digest of what the run was trained on and scores: the cache's rows plus its feature sets
    digest = json.loads((run / "summary.json").read_text())["fingerprint_digest"][:8]
    return root, cache, run, digest


def reports(run, split="test"):
    return sorted(p.name for p in run.glob(f"eval-*-{split}*.json"))


def test_reports_are_named_by_cache_digest_and_split_and_never_overwritten(world, capsys):
    root, cache, run, digest = world
    first = run_eval(run, split="test", device="cpu")
    assert capsys.readouterr() == ("", ""), "run_eval never prints; the command does"
    assert first["files"]["json"] == str(run / f"eval-meld-{digest}-test.json")
    assert set(first["files"]) == {"json", "markdown", "confusion_emotion", "predictions_csv", "predictions_jsonl"}
    for path in first["files"].values():
        assert (run / path.split("/")[-1]).is_file()

    # the same run on a copy of the cache under another name: a second report beside the first
    copy = shutil.copytree(cache, root / "meld-copy")
    second = run_eval(run, split="test", cache=copy, device="cpu")
    assert second["files"]["json"] == str(run / f"eval-meld-copy-{digest}-test.json")
    # another split of the first cache: a third
    run_eval(run, split="dev", device="cpu")
    assert reports(run) == sorted([f"eval-meld-copy-{digest}-test.json", f"eval-meld-{digest}-test.json"])
    assert reports(run, "dev") == [f"eval-meld-{digest}-dev.json"]

    # a different cache with the same folder name and fingerprint: numbered, not overwritten
    namesake = shutil.copytree(cache, root / "elsewhere" / "meld")
    third = run_eval(run, split="test", cache=namesake, device="cpu")
    assert third["files"]["json"] == str(run / f"eval-meld-{digest}-test-2.json")
    assert json.loads((run / f"eval-meld-{digest}-test.json").read_text())["cache"] == str(cache.resolve())

    # the same question again replaces its own answer
    again = run_eval(run, split="test", device="cpu")
    assert again["files"] == first["files"]
    assert len(reports(run)) == 3
    assert not [p for p in run.iterdir() if ".tmp" in p.name], "no temporary file is left behind"


def test_an_unreadable_report_is_not_overwritten(tmp_path):
    (tmp_path / "eval-meld-abcdef12-test.json").write_text("{not json", encoding="utf-8")
    assert report_stem(tmp_path, tmp_path / "meld", "abcdef1234567890", "test") == "eval-meld-abcdef12-test-2"


def test_the_report_says_what_its_numbers_mean(world):
    _, _, run, digest = world
    report = run_eval(run, split="test", device="cpu")
    emotion = report["metrics"]["emotion"]
    assert 0.0 <= emotion["weighted_f1"] <= 1.0 and "fractions in [0, 1]" in report["definitions"]["numbers"]
    assert "present in the evaluated labels" in report["definitions"]["macro_f1"]
    assert "hidden at eval time" in report["definitions"]["modality_importance"]
    assert "drop in the main head's weighted F1" in report["definitions"]["modality_importance"]
    markdown = (run / f"eval-meld-{digest}-test.md").read_text(encoding="utf-8")
    assert f"**emotion weighted F1 {100 * emotion['weighted_f1']:.2f} %**" in markdown
    assert f"over the {len(emotion['macro_f1_classes'])} classes present" in markdown
    assert "keeps the same numbers as fractions in [0, 1]" in markdown
    assert "drop in emotion weighted F1 when the modality is hidden at eval time" in markdown


def test_a_model_that_never_saw_a_hidden_modality_is_warned_about(world):
    _, _, run, digest = world
    report = run_eval(run, split="test", device="cpu", write=False)
    assert "files" not in report and len(report["warnings"]) == 1
    warning = report["warnings"][0]
    assert "modality_dropout 0" in warning and "never saw a hidden modality" in warning
    assert "--modality-dropout" in warning  # an option that exists on emo fit
    assert importance_warnings({"modality_dropout": 0.2}, ("text", "audio")) == []
    assert importance_warnings({}, ("text",)) == importance_warnings({"modality_dropout": 0.0}, ("text",))


def test_the_command_prints_percent_the_warning_and_where_the_files_went(world):
    _, _, run, digest = world
    app = typer.Typer(context_settings=cli.CONTEXT_SETTINGS, pretty_exceptions_enable=False)
    app.command("eval")(evaluate.command)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["eval", "--run", str(run), "--device", "cpu"])
    assert result.exit_code == 0, (result.output, result.exception)
    report = json.loads((run / f"eval-meld-{digest}-test.json").read_text())
    wf1 = report["headline"]["weighted_f1"]
    assert f"emotion on test: weighted F1 {100 * wf1:.2f} %" in result.output
    assert "Warning: The model was trained with modality_dropout 0" in result.output
    assert f"Report written to {run / f'eval-meld-{digest}-test.json'} (fractions in [0, 1])" in result.output
    assert str(run / f"eval-meld-{digest}-test-confusion-emotion.png") in result.output


def test_eval_written_to_a_log_keeps_every_sentence_whole(world):
    """With output to a file, no line of the report or its warnings is cut mid-word."""
    _, _, run, digest = world
    app = typer.Typer(context_settings=cli.CONTEXT_SETTINGS, pretty_exceptions_enable=False)
    app.command("eval")(evaluate.command)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["eval", "--run", str(run), "--device", "cpu"])
    assert result.exit_code == 0, (result.output, result.exception)
    report = json.loads((run / f"eval-meld-{digest}-test.json").read_text())
    assert report["warnings"], "the run was trained without modality dropout, so there is a warning"
    for warning in report["warnings"]:
        assert f"Warning: {warning}" in result.output
    assert "…" not in result.output


def test_a_cache_path_that_does_not_exist_is_a_usage_error(world, tmp_path):
    _, _, run, _ = world
    with pytest.raises(PathNotFoundError, match="Cache .*nope does not exist; pass the feature cache") as caught:
        run_eval(run, cache=tmp_path / "nope", device="cpu")
    assert caught.value.exit_code == 2
