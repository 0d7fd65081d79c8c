"""Plain-dataclass configs: defaults equal the design, TOML files and CLI overrides on top.

Every verb has one flat dataclass. A value is resolved in this order: the dataclass
default, then the TOML file (`--config`), then explicit command-line options and
`--set key=value` pairs. Unknown keys and values of the wrong type are user errors,
reported in one sentence, so a typo never silently falls back to a default. The resolved
config is written next to every artifact (`save_config`) so a run can be reproduced.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from emo import atomic
from emo.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 has no tomllib; tomli is the same parser (pyproject installs it there)
    import tomli as tomllib

C = TypeVar("C")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Turn a TOML value or a command-line string into the field's declared type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        last_error: ConfigError | None = None
        for candidate in inner:
            try:
                return _coerce(name, value, candidate)
            except ConfigError as error:
                last_error = error
        raise last_error or ConfigError(f"Config key '{name}' has an invalid value {value!r}.")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"Config key '{name}' expects a list, got {value!r}.")
        item_type = args[0] if args else str
        items = [_coerce(name, v, item_type) for v in value]
        return tuple(items) if origin is tuple else items
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"Config key '{name}' expects true or false, got {value!r}.")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"Config key '{name}' expects an integer, got {value!r}.")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"Config key '{name}' expects an integer, got {value!r}.") from None
        if not -(2**63) <= number < 2**63:  # numpy, torch and HDF5 hold 64 bits; beyond, a traceback
            raise ConfigError(f"Config key '{name}' is out of range (beyond 64 bits), got {value}.")
        return number
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"Config key '{name}' expects a number, got {value!r}.")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"Config key '{name}' expects a number, got {value!r}.") from None
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"Config key '{name}' expects a string, got {value!r}.")
        return str(value)
    if annotation is Path:
        return Path(value)
    return value


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, turning every way it can fail into one sentence."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"Config file {path} is a folder; pass a TOML file.")
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"Config file {path} is not valid TOML: {error}.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"Config file {path} is not UTF-8 text, which TOML must be; save it as UTF-8.") from None


def parse_set_pairs(pairs: list[str] | None) -> dict[str, str]:
    """Parse repeated `--set key=value` options; a key set twice to different values is
    refused, since one of the two would be silently dropped."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"Override '{pair}' must look like key=value.")
        key, value = pair.split("=", 1)
        key, value = key.strip().replace("-", "_"), value.strip()
        if key in out and out[key] != value:
            raise ConfigError(f"--set {key} is given twice ({out[key]!r} and {value!r}); give it once.")
        out[key] = value
    return out


def merge_overrides(
    pairs: list[str] | None, named: dict[str, Any], flags: dict[str, str] | None = None
) -> dict[str, Any]:
    """A verb's overrides: its `--set key=value` pairs plus its named options (None: not given).

    Both outrank `--config`. A key given both ways (`--epochs 1 --set epochs=5`) is refused
    rather than letting either silently win. `flags` names the option of a key whose option
    is not `--key` (e.g. audio_view_sampling -> --audio-views), for the message.
    """
    out: dict[str, Any] = dict(parse_set_pairs(pairs))
    for key, value in named.items():
        if value is None:
            continue
        if key in out:
            flag = (flags or {}).get(key, "--" + key.replace("_", "-"))
            raise ConfigError(f"{flag} and --set {key}={out[key]} both set {key}; give it once.")
        out[key] = value
    return out


def build_config(
    cls: type[C],
    toml_path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    section: str | None = None,
) -> C:
    """Resolve a config: dataclass defaults < TOML file < overrides (None values are skipped).

    A TOML file may hold the keys at top level or under `[section]` (e.g. `[fit]`), so one
    file can configure several verbs.
    """
    types_by_name = _field_types(cls)
    values: dict[str, Any] = {}
    if toml_path is not None:
        data = read_toml(Path(toml_path))
        if section and isinstance(data.get(section), dict):
            data = data[section]
        for key, value in data.items():
            key = key.replace("-", "_")
            if key not in types_by_name:
                raise ConfigError(
                    f"Unknown config key '{key}' in {toml_path}; known keys are: {', '.join(types_by_name)}."
                )
            values[key] = _coerce(key, value, types_by_name[key])
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        key = key.replace("-", "_")
        if key not in types_by_name:
            raise ConfigError(f"Unknown config key '{key}'; known keys are: {', '.join(types_by_name)}.")
        values[key] = _coerce(key, value, types_by_name[key])
    config = cls(**values)
    require_finite(config)
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config


def require_finite(config: Any) -> None:
    """Every float field of a config dataclass is a real number: `inf` and `nan` parse as
    floats (from TOML, `--set`, `--lr nan`) but no setting means them, and they fail late and
    strangely (a run that trains to NaN, a traceback deep in a library) instead of at once."""
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"Config key '{item.name}' must be a finite number, got {value}.")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON/TOML-safe dict of a config (paths become strings, tuples lists)."""

    def clean(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return {k: clean(v) for k, v in dataclasses.asdict(config).items()}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def toml_text(config: Any, section: str | None = None) -> str:
    """The resolved config as TOML text (a `[section]` table when given).

    None values are left out (TOML has no null), which restores them to their default.
    """
    lines = [f"[{section}]"] if section else []
    for key, value in config_to_dict(config).items():
        if value is None:
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def save_config(config: Any, path: Path, section: str | None = None) -> Path:
    """Write the resolved config as TOML (atomically) so `--config` can load it back verbatim."""
    return atomic.write_text(Path(path), toml_text(config, section))
