"""Issue 6, requirement 4: bad input to every command ends in one clear sentence on stderr
and a non-zero exit (2 for usage errors), never a traceback, and leaves nothing a later run
would trust.

Every case runs the real entry point (`python -m emo ...`) in a child process; the cases
are independent, so they run a few at a time and each is then checked on its own.
The exit status follows emo.errors: a path the user gave that does not exist, an unknown
option, split, modality, config key or value and a malformed TOML are usage errors (exit 2);
broken content (a CSV without a column, an incompatible cache) is a failure of data (exit 1).
A path that exists but is the wrong kind (a file for a folder, a folder that is no cache)
is a usage error too (issue 18); a destination inside a file, which cannot be created, may
be either.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from emo.data.meld import COLUMNS
from extract_fixtures import tiny_bert  # noqa: F401  (session fixture)
from reliability_fixtures import assert_clean_error, emo_many, synthetic_feature_cache, write_csv

USAGE = 2
ANY = (1, 2)

GOOD_ROWS = [
    ["1", "Hello there.", "Joey", "joy", "positive", "0", "0", "1", "1", "00:00:01,000", "0:00:02,500"],
    ["2", "Oh. My. God.", "Janice", "surprise", "positive", "0", "1", "1", "1", "00:00:03,000", "00:00:04,100"],
]


@dataclass
class Case:
    argv: tuple[str, ...]
    codes: int | tuple[int, ...]
    mentions: tuple[str, ...] = ()
    # Checks that nothing a later run would trust was left behind.
    leaves_nothing: Callable[[], None] | None = None


def _no_cache(path: Path) -> Callable[[], None]:
    """Neither a cache description, nor a row-table shard, nor any feature set (or its shards)."""

    def check() -> None:
        assert not (path / "cache.json").exists() and not list(path.glob("*/shard-*")), f"{path} holds a cache"
        assert not (path / "sets").exists(), f"{path} holds feature sets"

    return check


def _no_file(*paths: Path) -> Callable[[], None]:
    def check() -> None:
        for path in paths:
            assert not path.exists(), f"{path} was written"

    return check


def _no_report(run: Path, split: str) -> Callable[[], None]:
    """No `emo eval` report for `split` in `run` (reports are named eval-CACHE-DIGEST-SPLIT.*)."""

    def check() -> None:
        written = sorted(run.glob(f"eval-*-{split}*"))
        assert not written, f"{written} were written"

    return check


def _meld_folder(root: Path, header: list[str], rows: list[list[str]] | None, raw: bytes | None = None) -> Path:
    root.mkdir(parents=True)
    path = root / "train_sent_emo.csv"
    if raw is not None:
        path.write_bytes(raw)
    else:
        write_csv(path, header, rows or [])
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_bert):  # noqa: F811
    """Valid and broken inputs for every command, plus a trained run."""
    from emo.fuse.config import FitConfig
    from synthetic_features import SYNTHETIC_FINGERPRINT
    from emo.fuse.train import run_fit

    root = tmp_path_factory.mktemp("bad-input")
    w: dict[str, Path] = {"root": root, "tiny_bert": tiny_bert}
    header = list(COLUMNS)
    w["good_meld"] = _meld_folder(root / "good_meld", header, GOOD_ROWS)
    w["no_column"] = _meld_folder(
        root / "no_column", [c for c in header if c != "Emotion"], [r[:3] + r[4:] for r in GOOD_ROWS]
    )
    w["empty_csv"] = _meld_folder(root / "empty_csv", header, None, raw=b"")
    w["header_only"] = _meld_folder(root / "header_only", header, [])
    w["bad_label"] = _meld_folder(
        root / "bad_label", header, [GOOD_ROWS[0], GOOD_ROWS[1][:3] + ["happiness"] + GOOD_ROWS[1][4:]]
    )
    w["bad_time"] = _meld_folder(root / "bad_time", header, [GOOD_ROWS[0][:9] + ["1:2:3", "00:00:04,100"]])
    (root / "bad.toml").write_text("[fit]\nepochs = [1,\n", encoding="utf-8")
    (root / "unknown.toml").write_text(
        "[fit]\nnot_a_key = 3\n[extract]\nnot_a_key = 3\n[synth]\nnot_a_key = 3\n", encoding="utf-8"
    )
    (root / "a_file").write_text("not a folder\n", encoding="utf-8")
    w["cache"] = synthetic_feature_cache(root / "cache")
    # Another text encoder: the cache holds another text set (text/bert-base-uncased), not the run's.
    other = dict(SYNTHETIC_FINGERPRINT, text_encoder="bert-base-uncased")
    w["other_cache"] = synthetic_feature_cache(root / "other_cache", fingerprint=other)
    # The run's text set by name (text/synthetic), made differently (another pooling): another fingerprint.
    changed = dict(SYNTHETIC_FINGERPRINT, text_pooling="mean")
    w["changed_cache"] = synthetic_feature_cache(root / "changed_cache", fingerprint=changed)
    w["run"] = root / "run"
    run_fit(FitConfig(cache=w["cache"], out=w["run"], epochs=1, device="cpu"))
    w["empty_run"] = root / "empty_run"
    w["empty_run"].mkdir()
    return w


def cases(w: dict[str, Path]) -> dict[str, Case]:
    r = w["root"]
    bad, unknown, a_file = r / "bad.toml", r / "unknown.toml", r / "a_file"
    cache, other, changed, run = w["cache"], w["other_cache"], w["changed_cache"], w["run"]

    def extract(name: str, data: Path, *more: str) -> tuple[str, ...]:
        return (
            "extract",
            "--split",
            "train",
            "--data-root",
            str(data),
            "--cache",
            str(r / f"x-{name}"),
            "--modalities",
            "text",
            "--device",
            "cpu",
            *more,
        )

    def fit(name: str, *more: str) -> tuple[str, ...]:
        return ("fit", "--cache", str(cache), "--out", str(r / f"f-{name}"), "--epochs", "1", "--device", "cpu", *more)

    def ablate(name: str, *more: str) -> tuple[str, ...]:
        return (
            "ablate",
            "--cache",
            str(cache),
            "--out",
            str(r / f"a-{name}"),
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--device",
            "cpu",
            *more,
        )

    def synth(name: str, *more: str) -> tuple[str, ...]:
        return ("synth", str(r / f"s-{name}"), "--clips", "4", *more)

    x = lambda name: _no_cache(r / f"x-{name}")  # noqa: E731
    f = lambda name: _no_file(r / f"f-{name}" / "model.pt", r / f"f-{name}" / "metrics.jsonl")  # noqa: E731
    a = lambda name: _no_file(r / f"a-{name}" / "results.csv", r / f"a-{name}" / "cells")  # noqa: E731
    s = lambda name: _no_file(*(r / f"s-{name}" / f"{sp}_sent_emo.csv" for sp in ("train", "dev", "test")))  # noqa: E731
    return {
        # --- emo extract
        "extract: missing data folder": Case(extract("missing", r / "nope"), USAGE, ("nope",), x("missing")),
        "extract: data folder is a file": Case(extract("file", a_file), USAGE, ("a_file",), x("file")),
        "extract: split that does not exist": Case(
            extract("split", w["good_meld"], "--split", "val"), USAGE, ("val",), x("split")
        ),
        "extract: unknown modality": Case(
            extract("modality", w["good_meld"], "--modalities", "text,smell"), USAGE, ("smell",), x("modality")
        ),
        "extract: unknown config key": Case(
            extract("key", w["good_meld"], "--set", "not_a_key=1"), USAGE, ("not_a_key",), x("key")
        ),
        "extract: unknown key in TOML": Case(
            extract("tkey", w["good_meld"], "--config", str(unknown)), USAGE, ("not_a_key",), x("tkey")
        ),
        "extract: malformed TOML": Case(
            extract("toml", w["good_meld"], "--config", str(bad)), USAGE, ("bad.toml",), x("toml")
        ),
        "extract: missing config file": Case(
            extract("nocfg", w["good_meld"], "--config", str(r / "nope.toml")), USAGE, ("nope.toml",), x("nocfg")
        ),
        "extract: CSV missing a column": Case(extract("column", w["no_column"]), 1, ("Emotion",), x("column")),
        "extract: empty CSV": Case(extract("empty", w["empty_csv"]), 1, ("empty",), x("empty")),
        "extract: CSV with a header only": Case(extract("header", w["header_only"]), 1, ("no rows",), x("header")),
        "extract: unknown emotion label": Case(extract("label", w["bad_label"]), 1, ("happiness", "row 3"), x("label")),
        "extract: malformed time": Case(extract("time", w["bad_time"]), 1, ("StartTime", "1:2:3"), x("time")),
        "extract: text model path that does not exist": Case(
            extract("model", w["good_meld"], "--text-model", str(r / "no-such-model")),
            ANY,
            ("no-such-model",),
            x("model"),
        ),
        "extract: bad value": Case(extract("value", w["good_meld"], "--frames", "0"), USAGE, ("frames",), x("value")),
        "extract: unknown option": Case(
            extract("option", w["good_meld"], "--frame", "2"), USAGE, ("--frame", "emo extract -h"), x("option")
        ),
        # --- emo fit
        "fit: missing cache": Case(
            ("fit", "--cache", str(r / "nope"), "--out", str(r / "f-missing")), USAGE, ("nope",), f("missing")
        ),
        "fit: not a cache": Case(
            ("fit", "--cache", str(w["good_meld"]), "--out", str(r / "f-notcache")),
            USAGE,
            ("good_meld",),
            f("notcache"),
        ),
        "fit: split that does not exist": Case(fit("split", "--set", "dev_split=val"), USAGE, ("val",), f("split")),
        "fit: unknown modality": Case(fit("modality", "--modalities", "text,smell"), USAGE, ("smell",), f("modality")),
        "fit: unknown config key": Case(fit("key", "--set", "not_a_key=1"), USAGE, ("not_a_key",), f("key")),
        "fit: unknown key in TOML": Case(fit("tkey", "--config", str(unknown)), USAGE, ("not_a_key",), f("tkey")),
        "fit: malformed TOML": Case(fit("toml", "--config", str(bad)), USAGE, ("bad.toml",), f("toml")),
        "fit: bad value": Case(fit("value", "--set", "lr=-1"), USAGE, ("lr",), f("value")),
        "fit: value of the wrong type": Case(
            fit("type", "--epochs", "many"), USAGE, ("--epochs", "emo fit -h"), f("type")
        ),
        # --- emo eval
        "eval: missing run directory": Case(("eval", "--run", str(r / "nope")), USAGE, ("nope",)),
        "eval: no --run": Case(("eval", "--split", "test"), USAGE, ("--run", "emo eval -h")),
        "eval: run directory without a checkpoint": Case(
            ("eval", "--run", str(w["empty_run"])), USAGE, ("checkpoint",), _no_report(w["empty_run"], "test")
        ),
        "eval: split that does not exist": Case(
            ("eval", "--run", str(run), "--split", "val", "--device", "cpu"), USAGE, ("val",), _no_report(run, "val")
        ),
        "eval: missing cache": Case(("eval", "--run", str(run), "--cache", str(r / "nope")), USAGE, ("nope",)),
        "eval: cache without the run's feature set": Case(
            ("eval", "--run", str(run), "--cache", str(other), "--device", "cpu"),
            1,
            ("no feature set text/synthetic", "emo extract"),
            _no_report(run, "test"),
        ),
        "eval: checkpoint from an incompatible cache": Case(
            ("eval", "--run", str(run), "--cache", str(changed), "--device", "cpu"),
            1,
            ("text/synthetic", "different", "text_pooling"),
            _no_report(run, "test"),
        ),
        # --- emo ablate
        "ablate: missing cache": Case(
            ("ablate", "--cache", str(r / "nope"), "--out", str(r / "a-missing")), USAGE, ("nope",), a("missing")
        ),
        "ablate: split that does not exist": Case(
            ablate("split", "--set", "test_split=val", "--modalities", "text"), USAGE, ("val",), a("split")
        ),
        "ablate: unknown modality": Case(
            ablate("modality", "--modalities", "text+smell"), USAGE, ("smell",), a("modality")
        ),
        "ablate: unknown config key": Case(ablate("key", "--set", "not_a_key=1"), USAGE, ("not_a_key",), a("key")),
        "ablate: malformed TOML": Case(ablate("toml", "--config", str(bad)), USAGE, ("bad.toml",), a("toml")),
        "ablate: unknown key in TOML": Case(ablate("tkey", "--config", str(unknown)), USAGE, ("not_a_key",), a("tkey")),
        # --- emo cache info / verify
        "cache info: missing path": Case(("cache", "info", str(r / "nope")), USAGE, ("nope",)),
        "cache info: not a cache": Case(("cache", "info", str(w["good_meld"])), USAGE, ("good_meld",)),
        "cache info: a file": Case(("cache", "info", str(a_file)), USAGE, ("a_file",)),
        "cache verify: missing path": Case(("cache", "verify", str(r / "nope")), USAGE, ("nope",)),
        "cache: unknown verb": Case(("cache", "check", str(cache)), USAGE, ("check", "emo cache -h")),
        "cache verify: not a cache": Case(("cache", "verify", str(w["good_meld"])), USAGE, ("good_meld",)),
        # --- emo synth
        "synth: output is a file": Case(("synth", str(a_file), "--clips", "4"), USAGE, ("a_file",)),
        "synth: unknown config key": Case(synth("key", "--set", "not_a_key=1"), USAGE, ("not_a_key",), s("key")),
        "synth: unknown key in TOML": Case(synth("tkey", "--config", str(unknown)), USAGE, ("not_a_key",), s("tkey")),
        "synth: malformed TOML": Case(synth("toml", "--config", str(bad)), USAGE, ("bad.toml",), s("toml")),
        "synth: unknown broken kind": Case(
            synth("kind", "--broken-fraction", "0.5", "--broken-kinds", "exploded"), USAGE, ("exploded",), s("kind")
        ),
        "synth: bad value": Case(synth("value", "--set", "fps=0"), USAGE, ("fps",), s("value")),
        "synth: over real MELD data": Case(
            ("synth", str(w["good_meld"]), "--clips", "4", "--force"), ANY, ("synth",), lambda: None
        ),
        # --- emo demo
        "demo: unknown config key": Case(("demo", "--set", "not_a_key=1"), USAGE, ("not_a_key",)),
        "demo: output is a file": Case(("demo", "--quick", "--out", str(a_file)), USAGE, ("a_file",)),
        "demo: output inside a file": Case(("demo", "--quick", "--out", str(a_file / "demo")), ANY, ("a_file",)),
        # --- destinations that cannot be created
        "synth: output inside a file": Case(("synth", str(a_file / "sub"), "--clips", "4"), ANY, ("a_file",)),
        "fit: output inside a file": Case(fit("x", "--out", str(a_file / "run")), ANY, ("a_file",)),
        "ablate: output inside a file": Case(
            ablate("x", "--out", str(a_file / "run"), "--modalities", "text"), ANY, ("a_file",)
        ),
        "extract: cache inside a file": Case(
            (
                "extract",
                "--split",
                "train",
                "--data-root",
                str(w["good_meld"]),
                "--cache",
                str(a_file / "cache"),
                "--modalities",
                "text",
                "--text-model",
                str(w["tiny_bert"]),
                "--device",
                "cpu",
            ),
            ANY,
            ("a_file",),
        ),
    }


CASE_NAMES = list(cases(collections.defaultdict(lambda: Path("."))))


@pytest.fixture(scope="module")
def outcomes(world):
    table = cases(world)
    results = emo_many([case.argv for case in table.values()], parallel=4)
    return table, dict(zip(table, results))


@pytest.mark.slow
@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_gets_one_sentence_and_the_right_exit_code(name, outcomes, world):
    table, results = outcomes
    case, result = table[name], results[name]
    assert_clean_error(result, case.codes, mentions=case.mentions)
    if case.leaves_nothing is not None:
        case.leaves_nothing()


@pytest.mark.slow
def test_synth_over_real_meld_deleted_nothing(outcomes, world):
    """`--force` must never delete a folder's files that emo synth did not write."""
    assert (world["good_meld"] / "train_sent_emo.csv").read_text(encoding="utf-8").count("\n") == 3


@pytest.mark.slow
def test_failed_commands_leave_a_usable_state(outcomes, world):
    """After the failures above, the same destinations accept a good run: nothing half-made
    blocks or poisons them."""
    from emo.fuse.config import FitConfig
    from emo.fuse.train import run_fit

    result = run_fit(FitConfig(cache=world["cache"], out=world["root"] / "f-split", epochs=1, device="cpu"))
    assert result.checkpoint is not None and result.checkpoint.is_file()
