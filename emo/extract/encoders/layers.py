"""Which hidden states of a model a set stores: `--text-layers` and `--audio-layers`.

One rule for both modalities, so a text and a speech set of chosen layers are named,
fingerprinted and refused in one way: `last` (the default) keeps the encoder's plain
`vector` set exactly as before (same name, same fingerprint); `all` or a list of indices
(0 = the embedding output, n = after layer n) writes a `layers` set (emo.cache.sets)
named `<model>-layers-<choice>` that keeps each chosen layer's pooled vector apart.
"""

from __future__ import annotations

from typing import Union

from emo.errors import UsageError

Layers = Union[str, tuple[int, ...]]
OPTIONS = {"text": "--text-layers", "audio": "--audio-layers"}  # the modalities whose encoders may take layers


def parse_layers(text: str, what: str = "Speech") -> Layers:
    """ "last", "all", or a tuple of hidden-state indices from "6,12"; one sentence when
    malformed (`what` names the model: Speech, Text)."""
    value = str(text).strip().lower()
    if value in ("last", "all"):
        return value
    try:
        indices = tuple(int(part) for part in value.split(","))
    except ValueError:
        indices = ()
    if not indices or min(indices) < 0 or len(set(indices)) != len(indices):
        raise UsageError(
            f"{what} layers '{text}' are not understood; use last, all, or distinct hidden-state numbers such as 6,12."
        )
    return indices


def resolve_layers(layers: Layers | str, num_layers: int, what: str = "Speech") -> tuple[int, ...]:
    """The hidden-state indices `layers` stands for in a model with `num_layers` layers."""
    spec = parse_layers(layers, what) if isinstance(layers, str) else tuple(layers)
    if spec == "last":
        return (num_layers,)
    if spec == "all":
        return tuple(range(num_layers + 1))
    if max(spec) > num_layers:
        raise UsageError(f"{what} layer {max(spec)} does not exist; this model has hidden states 0 to {num_layers}.")
    return spec


def layers_choice(config, modality: str) -> str:
    """What the config asks of `modality`'s layers ("last" when the modality has no such option)."""
    field = {"text": "text_layers", "audio": "audio_layers"}.get(modality)
    value = str(getattr(config, field, "") or "last").strip().lower() if field else "last"
    return value or "last"


def stores_layers(config, modality: str) -> bool:
    """True when the config asks for a `layers` set of `modality` (anything but `last`)."""
    return layers_choice(config, modality) != "last"


def layers_suffix(config, modality: str) -> str:
    """`-layers-all`, `-layers-2-3-4`, or "" for `last`: a set per choice of layers."""
    choice = layers_choice(config, modality)
    return "" if choice == "last" else f"-layers-{choice.replace(',', '-').replace(' ', '')}"
