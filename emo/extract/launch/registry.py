"""Launchers by name: what `--launcher` offers, the options each adds to `emo extract`, and
how one is built from them, all read from this one registry.

A launcher is a class (the `Launcher` protocol of `emo.extract.launch.base`) registered
with `@register_launcher`, and declares as class attributes:

- `name` (`--launcher NAME`) and `help` (its line in `--launcher`'s help);
- `remote`: whether its tasks run elsewhere (their output goes to logs, `--no-wait` applies);
- `state_dir`: its folder inside the cache (`CACHE/slurm/`) for job files, logs and the launch
  record, or None;
- `options`: its command-line options as `LauncherOption`s, e.g. `--slurm-time`. Typer reads
  a command's options from its signature, so `emo extract` adds these to its own
  (`emo.commands.launch_view.with_launcher_options`); the launcher is then built as
  `cls(**{option.key: value})` from the ones given.

The built-in launchers (`local`, `slurm`) register themselves when their modules are
imported, which this registry does on first use; a new one is one module that calls
`register_launcher` (see tests/toy_launcher.py), reached through `EMO_PLUGINS` or an
`emo.launchers` entry point (`emo.plugins`). Nothing heavy is imported here: the built-ins
import submitit only when they submit.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from emo.errors import UsageError
from emo.plugins import check_name, load_plugins

BUILTIN = ("emo.extract.launch.local", "emo.extract.launch.slurm")
DEFAULT = "local"


@dataclass(frozen=True)
class LauncherOption:
    """One command-line option of a launcher."""

    flag: str  # e.g. "--slurm-time"
    key: str  # the launcher's keyword argument it becomes, e.g. "time"
    help: str
    type: type = str  # str, int or float
    pairs: bool = False  # repeatable key=value (`--slurm-arg account=lab`), collected into a dict
    example: str = ""  # a key=value example for the one-sentence error

    @property
    def param(self) -> str:
        """The command's parameter name (`--slurm-time` -> slurm_time)."""
        return self.flag.lstrip("-").replace("-", "_")

    def parse(self, value: Any) -> Any:
        return _pairs(self, value) if self.pairs else value


_LAUNCHERS: dict[str, type] = {}


def register_launcher(cls: type) -> type:
    """Class decorator: make `cls` (with the class attributes above) a launcher."""
    check_name("launcher", cls.name, cls, _LAUNCHERS.get(cls.name))
    _LAUNCHERS[cls.name] = cls
    return cls


def launchers() -> dict[str, type]:
    """Every registered launcher by name, the built-ins first (plugins loaded)."""
    for module in BUILTIN:
        importlib.import_module(module)
    load_plugins("emo.launchers")
    return dict(_LAUNCHERS)


def launcher_help() -> str:
    """'local: run here; slurm: a SLURM job array of --num-shards tasks' for `--launcher`."""
    return "; ".join(f"{name}: {cls.help}" for name, cls in _quietly().items())


def remote_names() -> list[str]:
    """The launchers whose tasks run elsewhere ('slurm'), for help and errors."""
    return [name for name, cls in _quietly().items() if cls.remote]


def launcher_options() -> list[LauncherOption]:
    """The options of every launcher, each flag once (launchers may share one)."""
    seen: dict[str, LauncherOption] = {}
    for cls in _quietly().values():
        for option in cls.options:
            seen.setdefault(option.flag, option)
    return list(seen.values())


def _quietly() -> dict[str, type]:
    """For help texts, built when the CLI is imported: a plugin that fails to load is left out
    here and reported, in one sentence, when a command runs."""
    try:
        return launchers()
    except UsageError:
        return dict(_LAUNCHERS)


def make_launcher(name: str, values: dict[str, Any], wait: bool = True, shard_index: int | None = None) -> Any:
    """The launcher `name`, built from the command's launcher options (`values`: parameter
    name -> value, None where not given); a launcher option or choice that does not fit it
    is refused in one sentence."""
    known = launchers()
    if name not in known:
        raise UsageError(f"Unknown launcher '{name}'; use one of {', '.join(known)}.")
    cls = known[name]
    if not wait and not cls.remote:
        raise UsageError(f"--no-wait needs --launcher {' or '.join(remote_names())}.")
    if shard_index is not None and cls.remote:
        raise UsageError(f"--shard-index is chosen per task by --launcher {name}; give only --num-shards.")
    own = {option.param: option for option in cls.options}
    options = {}
    for option in launcher_options():
        value = values.get(option.param)
        if value is None or value == [] or value == ():
            continue
        if option.param not in own:
            owners = [n for n, c in known.items() if any(o.flag == option.flag for o in c.options)]
            raise UsageError(f"{option.flag} needs --launcher {' or '.join(owners)}.")
        options[option.key] = own[option.param].parse(value)
    return cls(**options)


def _pairs(option: LauncherOption, pairs: list[str]) -> dict[str, str]:
    """`--slurm-arg account=lab --slurm-arg qos=high` -> {"account": "lab", "qos": "high"}."""
    extra: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise UsageError(
                f"{option.flag} '{pair}' is not key=value; write it as e.g. {option.flag} {option.example or 'key=value'}."
            )
        if key in extra and extra[key] != value.strip():
            raise UsageError(f"{option.flag} {key} is given twice ({extra[key]} and {value.strip()}); give it once.")
        extra[key] = value.strip()
    return extra
