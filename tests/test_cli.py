"""The `emo` command line speaks one language: `--version`, `-h` beside `--help` everywhere,
defaults written one way, and every way to fail ending in `emo: error: <one sentence>` with
the exit status `emo.errors` promises (2 usage, 1 data or work, 130 interrupted).

Everything here runs in-process through `emo.cli.run` (parsing fails before any heavy
import), plus one real `python -m emo` child to prove the entry point is wired the same way.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from enum import Enum
from pathlib import Path

import pytest
import typer

import emo
from emo import cli
from emo.errors import CacheError, ConfigError, DataError, PathNotFoundError, UsageError, require_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def run(argv: list[str], capsys, application: typer.Typer = cli.app) -> tuple[int, str, str]:
    status = cli.run(application, argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def command_paths(command=None, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command of the CLI, as the words that invoke it: (), ('fit',), ('cache', 'info'), ..."""
    command = command or typer.main.get_command(cli.app)
    paths = [path]
    for name, sub in getattr(command, "commands", {}).items():
        paths += command_paths(sub, (*path, name))
    return paths


def leaf_commands(command=None):
    command = command or typer.main.get_command(cli.app)
    subs = getattr(command, "commands", {})
    if not subs:
        return [command]
    return [leaf for sub in subs.values() for leaf in leaf_commands(sub)]


def assert_one_sentence_error(status: int, err: str, code: int, *mentions: str) -> str:
    assert status == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emo: error: "), err
    assert "Traceback" not in err
    assert len(re.findall(r"[.?!]\s+[A-Z]", lines[0])) == 0, f"more than one sentence: {err}"
    for word in mentions:
        assert word in err, err
    return lines[0]


# --- version and help --------------------------------------------------------------------


def test_version_prints_the_package_version(capsys):
    status, out, err = run(["--version"], capsys)
    assert (status, out, err) == (0, "emo 0.1.0\n", "")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert emo.__version__ == declared == "0.1.0"


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(("emo", *p)))
def test_dash_h_is_help_on_the_app_and_every_verb(path, capsys):
    short = run([*path, "-h"], capsys)
    long = run([*path, "--help"], capsys)
    assert short == long
    status, out, err = short
    assert status == 0 and err == ""
    assert out.startswith(f"Usage: {' '.join(('emo', *path))}") and "-h, --help" in out


@pytest.mark.parametrize("command", leaf_commands(), ids=lambda c: c.name)
def test_every_verb_writes_defaults_one_way(command, capsys):
    """A default is written `(default: VALUE)` at the end of an option's help, never typer's
    `[default: ...]` or `(default VALUE)`, so every verb's help reads the same."""
    ctx = typer.main.get_command(cli.app).make_context("emo", [], resilient_parsing=True)
    text = " ".join(command.get_help(ctx).split())
    assert "[default:" not in text, text
    other_ways = [m.group(0) for m in re.finditer(r"\(default\b(?!: ).{0,20}", text)]
    assert not other_ways, f"emo {command.name} writes {other_ways}; write '(default: VALUE)'"


def test_emo_alone_shows_the_help_as_a_usage_error(capsys):
    status, out, err = run([], capsys)
    assert status == 2 and out == "" and err.startswith("Usage: emo [OPTIONS] COMMAND")
    assert "-h, --help" in err and "emo: error" not in err


# --- usage errors found by the option parser ---------------------------------------------


@pytest.mark.parametrize(
    "argv, mentions",
    [
        (["eval", "--bogus"], ("--bogus", "emo eval -h")),
        (["fit", "--fusio", "early"], ("--fusio", "did you mean --fusion?", "emo fit -h")),
        (["eval"], ("Missing option '--run'", "emo eval -h")),
        (["synth"], ("Missing argument", "emo synth -h")),
        (["cache", "info"], ("Missing argument", "emo cache info -h")),
        (["fit", "--epochs", "many"], ("--epochs", "emo fit -h")),
        (["eval", "--run", "x", "--split"], ("--split", "requires an argument", "emo eval -h")),
        (["fitt"], ("fitt", "did you mean 'fit'?", "emo -h")),
        (["--bogus"], ("--bogus", "emo -h")),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_parser_usage_errors_are_one_sentence_and_exit_2(argv, mentions, capsys):
    status, out, err = run(argv, capsys)
    assert out == ""
    assert_one_sentence_error(status, err, 2, *mentions)


class Colour(str, Enum):
    red = "red"
    blue = "blue"


def toy_app() -> typer.Typer:
    """A small app through the same `cli.run`, for cases the real verbs do not have (a choice)
    and for every exception a command can end with."""
    toy = typer.Typer(context_settings=cli.CONTEXT_SETTINGS, pretty_exceptions_enable=False, rich_markup_mode=None)

    @toy.command("paint")
    def paint(colour: Colour = typer.Option(Colour.red, "--colour", help="Paint colour. (default: red)")) -> None:
        typer.echo(f"painted {colour.value}")

    @toy.command("fail")
    def fail(kind: str = typer.Argument(...)) -> None:
        raise {
            "usage": UsageError("Split 'val' does not exist; choose from train, dev, test."),
            "config": ConfigError("Unknown config key 'lrr'; known keys are: lr."),
            "path": PathNotFoundError("Cache nope does not exist; run emo extract first."),
            "data": DataError("train_sent_emo.csv has no Emotion column."),
            "cache": CacheError("Shard train/shard-00003.h5 fails its checksum; re-extract it."),
            "oserror": IsADirectoryError(21, "Is a directory", "runs/x/model.pt"),
            "interrupt": KeyboardInterrupt(),
        }[kind]

    return toy


def test_a_bad_choice_is_a_usage_error(capsys):
    status, out, err = run(["paint", "--colour", "green"], capsys, toy_app())
    assert_one_sentence_error(status, err, 2, "--colour", "green", "emo paint -h")
    assert run(["paint", "--colour", "blue"], capsys, toy_app()) == (0, "painted blue\n", "")


@pytest.mark.parametrize(
    "kind, code, mention",
    [
        ("usage", 2, "'val'"),
        ("config", 2, "lrr"),
        ("path", 2, "does not exist"),
        ("data", 1, "Emotion"),
        ("cache", 1, "checksum"),
        ("oserror", 1, "Cannot use runs/x/model.pt: is a directory."),
    ],
)
def test_emo_errors_exit_by_kind(kind, code, mention, capsys):
    status, out, err = run(["fail", kind], capsys, toy_app())
    assert_one_sentence_error(status, err, code, mention)


def test_ctrl_c_says_work_is_kept_and_exits_130(capsys):
    status, out, err = run(["fail", "interrupt"], capsys, toy_app())
    assert status == 130 and err == cli.INTERRUPTED


def test_ctrl_c_hidden_by_a_failing_cleanup_is_still_ctrl_c(capsys):
    # torch.save stopped by Ctrl-C fails again in its zip writer's __exit__ ("unexpected pos"):
    # the user pressed Ctrl-C and must get its line and 130, not that error's traceback.
    import io

    import torch

    class CtrlCMidWrite(io.BytesIO):
        def write(self, data) -> int:
            if self.tell() > 1000:
                raise KeyboardInterrupt
            return super().write(data)

    toy = toy_app()

    @toy.command("save")
    def save() -> None:
        torch.save({"weight": torch.zeros(4096)}, CtrlCMidWrite())

    with pytest.raises(RuntimeError, match="unexpected pos"):  # what torch itself lets out
        save()
    status, out, err = run(["save"], capsys, toy)
    assert status == 130 and err == cli.INTERRUPTED


def test_an_error_not_caused_by_an_interrupt_stays_a_bug():
    toy = toy_app()

    @toy.command("broken")
    def broken() -> None:
        try:
            raise ValueError("first")
        finally:
            raise RuntimeError("second")

    with pytest.raises(RuntimeError, match="second"):
        cli.run(toy, ["broken"])


def test_require_path_refuses_a_missing_path_as_usage(tmp_path):
    assert require_path(tmp_path, "Cache") == tmp_path
    with pytest.raises(PathNotFoundError, match=r"^Cache .*nope does not exist; run emo extract first\.$") as caught:
        require_path(tmp_path / "nope", "Cache", "run emo extract first.")
    assert caught.value.exit_code == 2


def test_the_installed_entry_point_speaks_the_same_way():
    child = subprocess.run(
        [sys.executable, "-m", "emo", "eval", "--nope"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert child.returncode == 2 and child.stdout == ""
    assert child.stderr == "emo: error: No such option: --nope; see `emo eval -h`.\n"


# --- messages name options that exist -------------------------------------------------------


def _cli_options() -> set[str]:
    options = set(cli.CONTEXT_SETTINGS["help_option_names"])

    def walk(command) -> None:
        for param in command.params:
            options.update(param.opts, param.secondary_opts)
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(cli.app))
    return options


def _message_strings(path: Path):
    """String literals of a module except docstrings (which may quote a typo on purpose)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_messages_name_only_options_that_exist():
    """A message that tells the user to pass `--data` when the option is `--data-root` sends
    them to a usage error; every `--option` written in emo's strings must be a real one."""
    options = _cli_options()
    wrong = []
    for path in sorted((ROOT / "emo").rglob("*.py")):
        for line, text in _message_strings(path):
            for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text):
                if option not in options:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} names {option}")
    assert not wrong, "\n".join(wrong)


SIGTERM_IN_A_FINALIZER = """
import os, signal, sys, threading, time
import typer
from emo import cli

cli.install_signal_handlers()
app = typer.Typer()


class SlowToFinalize:
    def __del__(self):
        time.sleep(1.0)  # SIGTERM arrives in here, where Python swallows any exception


@app.command("work")
def work():
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
    SlowToFinalize()
    time.sleep(5)
    print("finished the work after SIGTERM")


@app.command("noop")
def noop():
    pass


sys.exit(cli.run(app, ["work"]))
"""


def test_sigterm_that_lands_in_a_finalizer_still_stops_the_command(tmp_path):
    """Under load, SIGTERM can arrive while a `__del__` runs; Python swallows the exception
    raised there (printing a traceback) and the command went on to exit 0. It is delivered
    again, so the command stops at the next line: exit 143, one line, no traceback."""
    script = tmp_path / "sigterm_in_del.py"
    script.write_text(SIGTERM_IN_A_FINALIZER)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 143, (done.stdout, done.stderr)
    assert "finished the work" not in done.stdout
    assert "Traceback" not in done.stderr and done.stderr.startswith("emo: terminated;"), done.stderr
