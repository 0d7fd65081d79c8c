"""The `emo` command line: parse, call, print.

Each verb lives in its own module under `emo.commands` (one file per verb, as in
torchtune); this file only wires them together and makes every way a command can end
speak the same language (see `emo.errors` for the rule behind the codes):

- success: exit 0;
- a usage error, whether typer found it (unknown option or verb, missing argument, a value
  of the wrong type) or emo did (a path that does not exist, an unknown split or config
  key): `emo: error: <one sentence>` on stderr, exit 2;
- a failure of data or work (a corrupt cache, a broken CSV, a destination that cannot be
  written): `emo: error: <one sentence>`, exit 1;
- Ctrl-C: one line saying finished work is kept, exit 130.

Never a traceback for any of these; a traceback means a bug in emo.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import typer

from emo import __version__
from emo.commands import ablate, cache, demo, encoders, ensemble, evaluate, extract, fit, predict, synth
from emo.atomic import disk_full_sentence, is_disk_full
from emo.errors import EmoError, error_chain

try:  # recent typer vendors click; older typer uses click itself
    from typer._click.exceptions import UsageError as ClickUsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import UsageError as ClickUsageError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}
INTERRUPTED = (
    "emo: interrupted; finished work (cache shards, ablation cells) is kept and a re-run resumes from it; "
    "an unfinished fit leaves nothing behind.\n"
)
INTERRUPTED_EXIT = 130
TERMINATED = (
    "emo: terminated; finished work (cache shards, ablation cells) is kept and a re-run resumes from it; "
    "an unfinished fit leaves nothing behind.\n"
)
TERMINATED_EXIT = 143  # 128 + SIGTERM, as a shell reports it


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `scancel`, a job's time limit) unwinds like Ctrl-C: every `finally`
    runs, so temporaries are removed, writer locks released and an unfinished fit's folder
    deleted, instead of the process vanishing with its work half-written."""


app = typer.Typer(
    name="emo",
    help="Multimodal emotion recognition: extract frozen features once, train small heads fast.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=CONTEXT_SETTINGS,
)


def verb_help(doc: str | None) -> str:
    """A verb module's docstring as its help, with the example commands kept line by line.

    click re-wraps every paragraph, which would run "Example: emo fit ..." into the text
    before it; a paragraph that starts with `\\b` is printed as written.
    """
    lines = (doc or "").strip().splitlines()
    for index, line in enumerate(lines):
        if line.startswith("Example:"):
            return "\n".join(lines[:index]).rstrip() + "\n\n\b\n" + "\n".join(lines[index:])
    return "\n".join(lines)


app.command("synth", help=verb_help(synth.__doc__))(synth.command)
app.command("extract", help=verb_help(extract.__doc__))(extract.command)
app.command("encoders", help=verb_help(encoders.__doc__))(encoders.command)
app.command("fit", help=verb_help(fit.__doc__))(fit.command)
app.command("eval", help=verb_help(evaluate.__doc__))(evaluate.command)
app.command("ablate", help=verb_help(ablate.__doc__))(ablate.command)
app.command("ensemble", help=verb_help(ensemble.__doc__))(ensemble.command)
app.command("predict", help=verb_help(predict.__doc__))(predict.command)
app.command("demo", help=verb_help(demo.__doc__))(demo.command)
app.add_typer(cache.app, name="cache", help=verb_help(cache.__doc__))


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"emo {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", help="Print emo's version and exit.", callback=_print_version, is_eager=True
    ),
) -> None:
    """Options of `emo` itself (before the verb)."""


def usage_sentence(error: Any, command_path: str) -> str:
    """typer/click's usage message as one sentence that says where help is.

    click writes e.g. "No such command 'fitt'. Did you mean 'fit'?" and "No such option:
    --fusio (Possible options: --fusion)"; emo's form is one sentence ending in a hint.
    """
    message = " ".join(error.format_message().split())
    message = re.sub(r"\. Did you mean (.*)\?$", r" (did you mean \1?)", message)
    message = re.sub(r"\(Possible options: (.*)\)$", r"(did you mean \1?)", message)
    if getattr(error, "ctx", None) is not None:
        command_path = error.ctx.command_path
    return f"{message.rstrip('.')}; see `{command_path} -h`."


def command_path(application: typer.Typer, argv: list[str], prog_name: str) -> str:
    """`emo eval` for `emo eval --split`: the verbs named in `argv`, for errors click gives no context."""
    command, words = typer.main.get_command(application), [prog_name]
    for token in argv:
        commands = getattr(command, "commands", None)
        if not commands or token not in commands:
            break
        command = commands[token]
        words.append(token)
    return " ".join(words)


def run(application: typer.Typer, argv: list[str] | None = None, prog_name: str = "emo") -> int:
    """Run `application` on `argv` and return the exit status, having said why it is not 0.

    Kept apart from `main` so tests can run any typer app through the same error handling.
    """
    try:
        try:
            status = application(args=argv, prog_name=prog_name, standalone_mode=False)
        except Exception as error:
            interrupt = interrupt_beneath(error)
            if interrupt is None:
                raise
            raise interrupt from None
    except ClickUsageError as error:
        if type(error).__name__ == "NoArgsIsHelpError":  # `emo` or `emo cache` alone: the help is the answer
            sys.stderr.write(error.format_message().rstrip("\n") + "\n")
            return error.exit_code
        where = command_path(application, list(sys.argv[1:] if argv is None else argv), prog_name)
        sys.stderr.write(f"emo: error: {usage_sentence(error, where)}\n")
        return 2
    except EmoError as error:
        message = " ".join(str(error).split()) or error.__class__.__name__
        sys.stderr.write(f"emo: error: {message}\n")
        return error.exit_code
    except OSError as error:
        # A path the user gave cannot be used (a file where a folder must be, no permission,
        # disk full): their environment to fix, not a bug, so one sentence, not a traceback.
        # OSErrors without a file name (e.g. a broken pipe) are bugs and keep their traceback.
        if is_disk_full(error):
            sys.stderr.write(f"emo: error: {disk_full_sentence(error.filename or 'its output')}\n")
            return 1
        if error.filename is None:
            raise
        reason = (error.strerror or str(error)).rstrip(".")
        sys.stderr.write(f"emo: error: Cannot use {error.filename}: {reason[:1].lower() + reason[1:]}.\n")
        return 1
    except (KeyboardInterrupt, typer.Abort):
        status = INTERRUPTED_EXIT
    if status == INTERRUPTED_EXIT and _terminated:
        sys.stderr.write(TERMINATED)
        return TERMINATED_EXIT
    if status == INTERRUPTED_EXIT:  # typer turns Ctrl-C inside a command into a silent 130
        sys.stderr.write(INTERRUPTED)
    return status if isinstance(status, int) else 0


def interrupt_beneath(error: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or SIGTERM) that `error` was raised while handling, if any.

    A library's cleanup can fail because the interrupt stopped it half-way, and its error
    then hides the interrupt: torch's zip writer, stopped inside `torch.save`, raises
    "unexpected pos 296768 vs 296656" from its `__exit__`. The user pressed Ctrl-C; they get
    the interrupt's line and exit code, not a traceback about a file emo deletes anyway.
    """
    return next((cause for cause in error_chain(error) if isinstance(cause, KeyboardInterrupt)), None)


_terminated = False


def _on_sigterm(signum: int, frame: Any) -> None:
    global _terminated
    if not _terminated:  # a second SIGTERM while cleaning up is not a reason to stop cleaning
        _terminated = True
        raise Terminated()


def _on_unraisable(unraisable: Any) -> None:
    """A signal whose exception landed in a finalizer (`__del__`, a weakref callback) is
    swallowed there by Python, and the run would go on as if never told to stop: deliver
    the same signal again, so it is raised at the next ordinary line instead."""
    global _terminated
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        import os
        import signal
        import threading

        terminated = isinstance(unraisable.exc_value, Terminated)
        if terminated:
            _terminated = False  # this one never got out: let the handler raise again
        again = signal.SIGTERM if terminated else signal.SIGINT
        threading.Timer(0.01, os.kill, (os.getpid(), again)).start()
        return
    sys.__unraisablehook__(unraisable)


def install_signal_handlers() -> None:
    """SIGTERM unwinds like Ctrl-C (`Terminated`), and neither is lost in a finalizer."""
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    sys.unraisablehook = _on_unraisable


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    install_signal_handlers()
    sys.exit(run(app, argv))


if __name__ == "__main__":
    main()
