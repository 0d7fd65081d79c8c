"""Errors a user can cause, and the exit status each one ends in.

Anything raised as an `EmoError` is the user's to fix (a path, a split, a config value, a
clip), so the CLI prints its message as one sentence (`emo: error: <sentence>`) and exits
with the class's `exit_code` instead of showing a traceback. Everything else is a bug in
emo and keeps its traceback.

The exit status tells a script what kind of fix is needed, so it follows one rule:

- 2, a usage error (`UsageError` and its subclasses): the command line or a config file
  asks for something that is not there - a path the user gave that does not exist, an
  unknown option, verb, split, modality, config key or value, a malformed TOML file.
  Fix the command and run it again.
- 1, a failure of data or work (`EmoError`, `DataError`, `CacheError`, `NetworkError`):
  the command was well formed but what it read or did failed - a corrupt or incompatible
  cache, a CSV with a missing column or an unknown label, an unreadable checkpoint, a
  destination that cannot be written. Fix or rebuild the data.

(130 means interrupted by Ctrl-C and 143 stopped by SIGTERM, e.g. `scancel`: finished cache
shards and ablation cells are kept and a re-run resumes from them; an unfinished fit leaves no
run folder, and `emo fit --overwrite` keeps the old run until the new one is complete.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


def error_chain(error: BaseException) -> Iterator[BaseException]:
    """`error`, then each error it was raised from or while handling, oldest last (each once:
    a chain can loop). A library often hides the cause that decides what the user is told (a
    full disk, a Ctrl-C) under an error of its own."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


class EmoError(Exception):
    """A failure of the user's data or work (exit 1); the message is one complete sentence."""

    exit_code = 1


class UsageError(EmoError):
    """The command line or a config file asks for something that does not exist (exit 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """A TOML file or override is malformed, names an unknown key, or has a bad value."""


class PathNotFoundError(UsageError):
    """A path the user gave does not exist: a usage error (exit 2), unlike a file missing
    inside a cache or run that emo wrote, which is damaged data (exit 1)."""


class DataError(EmoError):
    """An annotation file or data folder is malformed (a path the user named that does not
    exist at all is a `PathNotFoundError`)."""


class CacheError(EmoError):
    """A feature cache is corrupt or unfinished, or incompatible with what is asked of it."""


class NetworkError(EmoError):
    """A model could not be fetched because this machine has no network."""


class DiskFullError(EmoError):
    """A write failed for lack of room (no space, quota, file-size limit). Whatever was being
    written is removed, so the same command, run again after freeing space, finishes the work."""


def require_path(path: Path | str, what: str, hint: str = "") -> Path:
    """Return `path` if it exists, else raise `PathNotFoundError` in one sentence.

    Commands check the paths named on their command line with this before any work, so a
    typo is reported as usage (exit 2) and in the user's own words: "Cache runs/x does
    not exist; run emo extract first."
    """
    path = Path(path)
    if not path.exists():
        suffix = f"; {hint.rstrip('.')}" if hint else ""
        raise PathNotFoundError(f"{what} {path} does not exist{suffix}.")
    return path
