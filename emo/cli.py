"""The `emo` command line: parse, call, print.

Each verb lives in its own module under `emo.commands` (one file per verb, as in
torchtune); this file only wires them together and turns user errors into one sentence
on stderr with a non-zero exit (2 for usage errors), never a traceback.
"""

from __future__ import annotations

import sys

import typer

from emo.commands import ablate, cache, demo, evaluate, extract, fit, synth
from emo.errors import EmoError

app = typer.Typer(
    name="emo",
    help="Multimodal emotion recognition: extract frozen features once, train small heads fast.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

app.command("synth", help=synth.__doc__)(synth.command)
app.command("extract", help=extract.__doc__)(extract.command)
app.command("fit", help=fit.__doc__)(fit.command)
app.command("eval", help=evaluate.__doc__)(evaluate.command)
app.command("ablate", help=ablate.__doc__)(ablate.command)
app.command("demo", help=demo.__doc__)(demo.command)
app.add_typer(cache.app, name="cache", help=cache.__doc__)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        app(args=argv, prog_name="emo")
    except EmoError as error:
        message = str(error).strip() or error.__class__.__name__
        sys.stderr.write(f"emo: error: {message}\n")
        sys.exit(error.exit_code)
    except OSError as error:
        # A path the user gave cannot be used (a file where a folder must be, no permission,
        # disk full): their environment to fix, not a bug, so one sentence, not a traceback.
        # OSErrors without a file name (e.g. a broken pipe) are bugs and keep their traceback.
        if error.filename is None:
            raise
        reason = (error.strerror or str(error)).rstrip(".")
        sys.stderr.write(f"emo: error: Cannot use {error.filename}: {reason[:1].lower() + reason[1:]}.\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write(INTERRUPTED)
        sys.exit(130)
    except SystemExit as leaving:
        # typer turns Ctrl-C inside a command into a silent Exit(130); say what it means.
        if leaving.code == 130:
            sys.stderr.write(INTERRUPTED)
        raise


INTERRUPTED = "emo: interrupted; finished work is kept and a re-run resumes from it.\n"


if __name__ == "__main__":
    main()
