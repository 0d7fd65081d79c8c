"""The encoder registry: which frozen encoder makes each feature set of a run.

Registries as data, as open_clip, timm and transformers' `AutoModel.register` keep them:
every module of this package is imported when the registry is first read, and each one
registers its encoders (`register`, an `emo.extract.encoders.base.Encoder`). A new encoder
is therefore one module and nothing else: dropped into this package, or anywhere as a
plugin that the registry imports before it answers:

- an installed package that declares an entry point in the group `emo.encoders`
  (`[project.entry-points."emo.encoders"] my_encoders = "my_pkg.encoders"`), or
- `EMO_PLUGINS=module[,module.py...]` in the environment (module names or Python files; `emo.plugins`).

`emo extract`, `emo predict`, `emo encoders`, SLURM tasks and the Python API all read the
registry through here, so a plugin seen by one is seen by all (a run's set records the
encoder's name, and predict looks it up again).

How a config selects an encoder (unchanged from the options' meaning): the text, visual
and audio model names (`--text-model`, `--visual-model`, `--audio-model`, `--preset`) are
looked up among the modality's registered names; a name none of them claims goes to the
modality's family (any transformers id or folder, any open_clip architecture, any
transformers speech model). `--crop faces` runs the chosen frames encoder on face crops.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from emo.errors import ConfigError, EmoError, UsageError
from emo.extract.encoders.base import Encoder, Needs, SetEncoder, renamed

PLUGIN_GROUP = "emo.encoders"  # entry-point group (emo.plugins; EMO_PLUGINS works for every registry)

_ENTRIES: dict[tuple[str, str], Encoder] = {}
_FAMILIES: dict[str, Encoder] = {}
_CROPS: dict[str, Callable[[Encoder], Encoder]] = {}  # --crop NAME -> what wraps a frames encoder
_builtins: list[str] = []  # the modules of this package, once imported


def register(encoder):
    """Add an encoder (an `Encoder` instance, or a subclass, which is instantiated) to the
    registry and return what was given, so it also works as a class decorator. A second,
    different entry under a taken name is refused (a plugin cannot shadow a built-in)."""
    from emo.cache.sets import KINDS
    from emo.labels import MODALITIES
    from emo.plugins import check_name

    entry = encoder() if isinstance(encoder, type) else encoder
    if entry.modality not in MODALITIES or entry.kind not in KINDS or entry.needs not in Needs.ALL or not entry.name:
        raise ValueError(
            f"encoder {entry.name!r}: modality, kind and needs must be among {MODALITIES}, {KINDS}, "
            f"{Needs.ALL}, and it needs a name"
        )
    table, key = (_FAMILIES, entry.modality) if entry.family else (_ENTRIES, (entry.modality, entry.name))
    held = table.get(key)
    check_name(f"{entry.modality} encoder", entry.name, type(entry), type(held) if held is not None else None)
    table[key] = entry
    return encoder


def register_crop(name: str, wrap: Callable[[Encoder], Encoder]) -> None:
    """`--crop NAME`: `wrap(frames encoder)` is the encoder that runs it on those crops."""
    _CROPS[name] = wrap


def _read_plugins() -> None:
    """Import this package's modules once (each registers its encoders), then any plugin
    not imported yet (`emo.plugins`: EMO_PLUGINS and the `emo.encoders` entry points)."""
    if not _builtins:
        import pkgutil

        import emo.extract.encoders as package

        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")
            _builtins.append(module.name)
    from emo.plugins import load_plugins

    load_plugins(PLUGIN_GROUP)


def encoders() -> list[Encoder]:
    """Every registered encoder: per modality (text, visual, audio) the named ones, then its family."""
    from emo.labels import MODALITIES

    _read_plugins()
    out = []
    for modality in MODALITIES:
        out += [e for (m, _), e in _ENTRIES.items() if m == modality]
        out += [_FAMILIES[modality]] if modality in _FAMILIES else []
    return out


def lookup(modality: str, name: str) -> Encoder:
    """The encoder `name` selects for `modality`: a registered name, else the modality's family."""
    _read_plugins()
    entry = _ENTRIES.get((modality, name)) or _FAMILIES.get(modality)
    if entry is None:
        raise UsageError(
            f"No {modality} encoder is named '{name}'; `emo encoders` lists them (a plugin's module "
            "goes in EMO_PLUGINS)."
        )
    return entry


def selected_name(config, modality: str) -> str:
    """The encoder name a config gives for a modality (`--preset offline` resolved)."""
    if modality == "text":
        return config.resolved_text_model
    if modality == "visual":
        return config.resolved_visual_model[0]
    return str(config.audio_model or "mel")


def entry_for(config, modality: str) -> Encoder:
    """The encoder that writes `modality`'s set under `config` (face crops applied)."""
    from emo.extract.encoders.layers import OPTIONS, layers_choice, parse_layers, stores_layers

    entry = lookup(modality, selected_name(config, modality))
    if stores_layers(config, modality):  # malformed: one sentence before any work (a model's range: on load)
        parse_layers(layers_choice(config, modality), "Speech" if modality == "audio" else "Text")
    if stores_layers(config, modality) and not entry.takes_layers:
        model = "speech model" if modality == "audio" else f"{modality} model"
        other = "a transformers speech model" if modality == "audio" else "a transformers text model"
        raise ConfigError(
            f"{OPTIONS[modality]} {layers_choice(config, modality)} picks layers of a {model}, and "
            f"--{modality}-model {entry.name} has none; leave it out or pass {other}."
        )
    if modality == "visual" and config.crop != "none":
        if entry.needs != Needs.FRAMES or config.crop not in _CROPS:
            raise ConfigError(f"--crop {config.crop} needs an image encoder that sees frames, not {entry.name}.")
        return _CROPS[config.crop](entry)
    return entry


def run_encoders(config) -> list[Encoder]:
    """The encoders of every modality the config extracts, in MODALITIES order (none loaded)."""
    return [entry_for(config, modality) for modality in config.ordered_modalities]


def load_set_encoders(config, device) -> list[SetEncoder]:
    """Load the encoder of every modality the config extracts, in MODALITIES order."""
    names = config.set_names()
    out: list[SetEncoder] = []
    try:
        for entry in run_encoders(config):
            out.append(entry.load_set(config, device, names.get(entry.modality)))
    except BaseException:
        for encoder in out:
            encoder.close()
        raise
    return out


def planned_specs(config, device) -> list | None:
    """The SetSpecs this run would write, each from its encoder's identity, without loading
    a model; None when an encoder cannot tell without loading (its files are not on this
    machine, or reading them failed: loading then says why)."""
    names = config.set_names()
    specs = []
    for entry in run_encoders(config):
        try:
            identity = entry.identity(config, device)
        except EmoError:
            return None
        if identity is None:
            return None
        specs.append(renamed(entry.spec(config, identity), names.get(entry.modality)))
    return specs


@dataclass(frozen=True)
class EncoderRow:
    """One line of `emo encoders`."""

    modality: str
    name: str
    kind: str
    dim: int | None
    licence: str
    offline: bool  # loads here without a network (its packages or files are present)
    note: str  # what to install or provide otherwise
    ms_per_clip: float | None
    summary: str
    family: bool
    module: str
    layers_option: str = ""  # `--text-layers` / `--audio-layers` when it can write a layers set instead

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def layers_option(entry: Encoder) -> str:
    """The option that makes `entry` write a layers set ("" when it gives one vector only)."""
    from emo.extract.encoders.layers import OPTIONS

    return OPTIONS.get(entry.modality, "") if entry.takes_layers else ""


def catalogue() -> list[EncoderRow]:
    """Every registered encoder as `emo encoders` shows it (no model is loaded)."""
    rows = []
    for entry in encoders():
        offline, note = entry.available()
        rows.append(
            EncoderRow(
                entry.modality,
                entry.name,
                entry.kind,
                entry.dim,
                entry.licence,
                bool(offline),
                note,
                entry.ms_per_clip,
                entry.summary,
                entry.family,
                type(entry).__module__,
                layers_option(entry),
            )
        )
    return rows


__all__ = [
    "PLUGIN_GROUP",
    "Encoder",
    "EncoderRow",
    "Needs",
    "SetEncoder",
    "catalogue",
    "encoders",
    "entry_for",
    "load_set_encoders",
    "lookup",
    "planned_specs",
    "register",
    "register_crop",
    "run_encoders",
]
