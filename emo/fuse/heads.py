"""Fusion heads by name: what `--fusion` offers, what `FitConfig` and the ablation grid accept,
and what `FusionModel` builds, all read from this one registry.

A head turns the fusion slots into logits: `forward(embeddings [B, S, proj_dim], present
bool[B, S]) -> [B, num_outputs]`, where the S slots are the modalities (zeros where absent)
plus the dialogue context when there is one. It is an `nn.Module` class built as
`cls(config: ModelConfig)` and may define `weights() -> {name: share}` (what `emo eval`
reports as the fusion weights; a head without it reports `{name: 1.0}`). It is registered
as data, like open_clip's or timm's models: its name, a line of help, the class (or
"module:Class", so the built-ins are imported only when a model is built and `emo --help`
never loads torch) and `needs`, the `ModelConfig` fields and properties it reads.

A new head is one module that calls `register_head` (see tests/toy_head.py), reached
through `EMO_PLUGINS` or an `emo.heads` entry point (`emo.plugins`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from emo.plugins import check_name, load_plugins


@dataclass(frozen=True)
class HeadSpec:
    name: str
    help: str  # what `--fusion` says about it, e.g. "one MLP over all slots"
    target: Any  # the class, or "module:Class"
    needs: tuple[str, ...] = ()  # ModelConfig fields/properties the head reads

    def load(self) -> type:
        if not isinstance(self.target, str):
            return self.target
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


_HEADS: dict[str, HeadSpec] = {}


def register_head(name: str, help: str, target: Any = None, needs: tuple[str, ...] = ()) -> Callable:
    """Register a fusion head. With `target` ("module:Class" or a class) it registers now;
    without, it is a class decorator: `@register_head("toy-mean", "the mean of the slots")`."""

    def add(cls: Any) -> Any:
        spec = HeadSpec(name, help, cls, tuple(needs))
        check_name("fusion head", name, spec, _HEADS.get(name))
        _HEADS[name] = spec
        return cls

    if target is not None:
        add(target)
    return add


_SLOTS = ("num_slots", "proj_dim", "num_outputs")
_EARLY = ("early_hidden", "early_dropout", "early_mask_input")
register_head(
    "early", "one MLP over all slots with their presence mask", "emo.fuse.fusion:EarlyHead", needs=_SLOTS + _EARLY
)
register_head(
    "late",
    "one classifier per slot, averaged over the present ones",
    "emo.fuse.fusion:LateHead",
    needs=_SLOTS + ("late_hidden",),
)
register_head(
    "ensemble",
    "early and late mixed with learned weights",
    "emo.fuse.fusion:EnsembleFusion",
    needs=_SLOTS + _EARLY + ("late_hidden",),
)


def head_names() -> tuple[str, ...]:
    """Every registered head, built-ins first (plugins loaded)."""
    load_plugins("emo.heads")
    return tuple(_HEADS)


def head_spec(name: str) -> HeadSpec:
    from emo.errors import ConfigError

    names = head_names()
    if name not in names:
        raise ConfigError(f"fusion must be one of {', '.join(names)}; got {name!r}.")
    return _HEADS[name]


def fusion_help(conjunction: str = "or") -> str:
    """'early, late or ensemble' for `--fusion` help, from whatever is registered; a plugin that
    fails to load is left out here and reported when a command runs."""
    from emo.errors import UsageError

    try:
        names = head_names()
    except UsageError:
        names = tuple(_HEADS)
    return ", ".join(names[:-1]) + f" {conjunction} {names[-1]}" if len(names) > 1 else names[0]


def build_head(config: Any) -> Any:
    """The head `config.fusion` names, built from `config` (a ModelConfig)."""
    spec = head_spec(config.fusion)
    missing = [need for need in spec.needs if not hasattr(config, need)]
    if missing:
        from emo.errors import ConfigError

        raise ConfigError(f"Fusion head '{spec.name}' needs {', '.join(missing)}, which ModelConfig does not have.")
    return spec.load()(config)
