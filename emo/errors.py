"""Errors a user can cause.

Anything raised as an `EmoError` is the user's to fix (a path, a split, a config value, a
clip), so the CLI prints its message as one sentence and exits non-zero instead of showing
a traceback. Everything else is a bug in emo and keeps its traceback.
"""


class EmoError(Exception):
    """A problem with the user's input; the message is one complete sentence."""

    exit_code = 1


class UsageError(EmoError):
    """The command line or a config file asks for something that does not exist."""

    exit_code = 2


class ConfigError(UsageError):
    """A TOML file or override is malformed, names an unknown key, or has a bad value."""


class DataError(EmoError):
    """An annotation file or data folder is missing or malformed."""


class CacheError(EmoError):
    """A feature cache is missing, corrupt, or incompatible with what is asked of it."""


class NetworkError(EmoError):
    """A model could not be fetched because this machine has no network."""
