"""Plugins: code outside emo that adds encoders, fusion heads or launchers.

emo's extension points are registries filled when a module is imported, the way open_clip,
timm and transformers' `AutoModel.register` are: a module that calls the registry's
`register_...` function adds a name every command then offers (`--fusion NAME`,
`--launcher NAME`, an encoder). Such a module reaches emo in one of two ways:

- `EMO_PLUGINS=lab.heads,/path/to/my_launcher.py`: module names or `.py` files, comma
  separated, imported by every process that asks a registry for its names (array tasks
  inherit the variable);
- an installed package's entry point in the group `emo.encoders`, `emo.heads` or
  `emo.launchers` (`[project.entry-points."emo.heads"] toy = "lab.heads"`): the module it
  names is imported, and a callable it names is called once.

Each registry calls `load_plugins(group)` before it answers, so no command has to
remember to. A plugin is imported once per process. One that cannot be imported is a
usage error in one sentence (exit 2), never a traceback. This module imports nothing
heavy: `emo --help` stays fast unless a plugin itself is slow to import.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

ENV = "EMO_PLUGINS"
GROUPS = ("emo.encoders", "emo.heads", "emo.launchers")

_loaded: set[str] = set()  # EMO_PLUGINS entries and "group:entry point" names already imported


def load_plugins(group: str | None = None) -> None:
    """Import the modules `EMO_PLUGINS` names and the entry points of `group` (all groups when
    None) that this process has not imported yet."""
    from emo.errors import UsageError

    for entry in (e.strip() for e in os.environ.get(ENV, "").split(",")):
        if entry and entry not in _loaded:
            _loaded.add(entry)
            try:
                _import(entry)
            except Exception as error:  # noqa: BLE001 - any failure of someone else's module
                _loaded.discard(entry)
                raise UsageError(
                    f"{ENV} names '{entry}', which could not be imported ({type(error).__name__}: "
                    f"{' '.join(str(error).split()).rstrip('.')}); fix it or remove it from {ENV}."
                ) from None
    for name in GROUPS if group is None else (group,):
        for point in _entry_points(name):
            key = f"{name}:{point.name}"
            if key in _loaded:
                continue
            _loaded.add(key)
            try:
                loaded = point.load()
                if callable(loaded) and not isinstance(loaded, type):
                    loaded()
            except Exception as error:  # noqa: BLE001
                raise UsageError(
                    f"The {name} plugin '{point.name}' ({point.value}) could not be loaded ({type(error).__name__}: "
                    f"{' '.join(str(error).split()).rstrip('.')}); fix or uninstall the package that provides it."
                ) from None


def _import(entry: str) -> None:
    """A module name (`lab.heads`) or a Python file (`plugins/heads.py`)."""
    if not entry.endswith(".py"):
        importlib.import_module(entry)
        return
    path = Path(entry).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no file {path}")
    name = f"emo_plugin_{path.stem}"  # a stable name, so a pickled class from it loads again
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def _entry_points(group: str) -> list:
    from importlib.metadata import entry_points

    return list(entry_points(group=group))


def check_name(kind: str, name: str, new: object, old: object | None) -> None:
    """Refuse a second, different registration of `name` (a plugin shadowing a built-in or
    another plugin); registering the same class again (a module imported twice) is fine."""
    if old is None or old == new or _origin(old) == _origin(new):
        return
    from emo.errors import UsageError

    raise UsageError(f"Two {kind}s are registered as '{name}' ({_origin(old)} and {_origin(new)}); rename one.")


def _origin(thing: object) -> str:
    target = getattr(thing, "target", thing)
    if isinstance(target, str):
        return target
    return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', '?')}"
