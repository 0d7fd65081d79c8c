"""What an encoder is: the `Encoder` protocol every registry entry follows, what it consumes
from a decoded clip (`Needs`), and a loaded set's `SetEncoder`.

An entry is light data (name, modality, kind, dim, licence, cost) plus four methods:
`available` (does it load here without a network: its packages or files are present),
`identity` (its fingerprint, from its files alone), `load` (the model, importing the heavy
libraries only then) and `spec` (the feature set it writes). Entries import no torch, so
`emo encoders` and a finished cache's quick check never pay for a model.

Why `identity` is computed from files, and the loaded set uses that same answer: a cache
is recognised as finished without loading any model (tens of seconds on a CPU), and that
is only sound when the recognition and the extraction compute the fingerprint in one way.
A model loaded from the hub that is not on this machine yet has no files to read; `load`
fetches them, and `identity` is asked again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from emo.cache.sets import SetSpec, plain_name


class Needs:
    """What an encoder consumes from a decoded clip; the model `load` returns takes it in `encode`:
    TEXT: `encode(texts, contexts, batch_size) -> (cls [N, D], mean [N, D])`;
    FRAMES and FACE_CROPS: `prep` (a `FramePrep`), `pass_size(batch_size)` and
    `encode(frames uint8 [N, h, w, 3], batch_size) -> [N, D]`;
    FACES: `encode(frames uint8 [F, H, W, 3]) -> (values [F, D], mask [F])`;
    WAVEFORM: `encode(waveforms) -> [N, D]` (mono float32 at the run's sample rate);
    an encoder asked for layers (`takes_layers`) returns [N, L, D] instead of [N, D];
    MEL: nothing (the decoding workers compute log-mel)."""

    TEXT = "text"  # the utterance (and its context turns)
    FRAMES = "frames"  # sampled frames, resized for the image model
    FACES = "faces"  # sampled whole frames at the face detector's size
    FACE_CROPS = "face_crops"  # face crops of those frames, for an image model
    MEL = "mel"  # log-mel views computed in the decoding workers
    WAVEFORM = "waveform"  # the mono waveform at the run's sample rate
    ALL = (TEXT, FRAMES, FACES, FACE_CROPS, MEL, WAVEFORM)
    PICTURES = (FRAMES, FACES, FACE_CROPS)


class Encoder:
    """One registered encoder. A subclass sets the class attributes and implements
    `identity` and `load`; the rest has defaults that fit most encoders.

    name: what selects it (`--text-model NAME`, `--visual-model NAME`, `--audio-model NAME`);
    for a family (`family = True`, one per modality) a description of the ids it takes,
    since it takes every id or path that no other entry of its modality claims.
    """

    name: str = ""
    modality: str = ""  # text | visual | audio
    kind: str = "vector"  # vector | frames | sequence (emo.cache.sets)
    dim: int | None = None  # None: the model decides (a family of hub models)
    licence: str = ""
    needs: str = ""  # a Needs value
    ms_per_clip: float | None = None  # the README's cost table (bench/encoders.py), None: not measured
    summary: str = ""  # one line for `emo encoders`
    family: bool = False
    loads_model: bool = True  # False for log-mel, which the decoding workers compute
    # True: its modality's `--text-layers` / `--audio-layers` picks which hidden states are pooled; any
    # choice but `last` writes a `layers` set whose indices the identity lists under "layers".
    takes_layers: bool = False

    # -- light: no model ------------------------------------------------------------------

    def available(self) -> tuple[bool, str]:
        """(loads here without a network, what to install or provide otherwise), from
        installed packages and files only."""
        return True, ""

    def model_id(self, config) -> str:
        """The model this config asks for (a family: the id or path the user gave)."""
        return self.name

    def identity(self, config, device) -> dict[str, Any] | None:
        """Everything about the encoder that changes its numbers (weights hash, revision,
        preprocessing, precision), read from its files; None when they are not on this
        machine (a hub id not downloaded yet)."""
        raise NotImplementedError

    def spec(self, config, identity: dict[str, Any]) -> SetSpec:
        """The feature set this encoder writes under `config`, from its `identity` (a
        `layers` set when its modality's layers option asks for more than the last)."""
        layers = self.stored_layers(config, identity)
        return SetSpec(
            f"{self.modality}/{self.set_name(config, identity)}",
            "layers" if layers else self.kind,
            self.set_dim(config, identity),
            self.label(config, identity),
            self.fingerprint(config, identity),
            ("cls", "mean") if self.needs == Needs.TEXT else ("values",),
            frames=int(config.frames) if self.kind == "frames" else 0,
            layers=layers,
        )

    def stored_layers(self, config, identity: dict[str, Any]) -> tuple[int, ...]:
        """The hidden-state indices a `layers` set stores (its identity's "layers"); () for a plain set."""
        from emo.extract.encoders.layers import stores_layers

        if not (self.takes_layers and stores_layers(config, self.modality)):
            return ()
        return tuple(int(i) for i in identity["layers"])

    def set_name(self, config, identity: dict[str, Any]) -> str:
        """The model's plain name, plus `-layers-<choice>` for a set of chosen layers."""
        from emo.extract.encoders.layers import layers_suffix

        suffix = layers_suffix(config, self.modality) if self.takes_layers else ""
        return plain_name(str(identity.get("name") or self.name)) + suffix

    def set_dim(self, config, identity: dict[str, Any]) -> int:
        return int(identity.get("dim") or self.dim or 0)

    def label(self, config, identity: dict[str, Any]) -> str:
        return str(self.model_id(config))

    def fingerprint(self, config, identity: dict[str, Any]) -> dict[str, Any]:
        return media_fingerprint(config, identity, self.needs)

    def describe(self, config) -> str:
        """How the 'Loading the encoders' message names it."""
        return f"{self.modality} {self.model_id(config)}"

    # -- heavy ----------------------------------------------------------------------------

    def load(self, config, device) -> Any:
        """The frozen model, taking what `needs` names in `encode` (see `Needs`)."""
        raise NotImplementedError

    def load_set(self, config, device, name: str | None = None) -> "SetEncoder":
        """The loaded model and the spec of the set it writes (renamed by `--name`)."""
        model = self.load(config, device) if self.loads_model else None
        identity = self.identity(config, device) or getattr(model, "identity", None)
        if identity is None:  # a bug in the entry: after loading, its files are here
            raise RuntimeError(f"encoder {self.name} loaded but cannot say its identity")
        spec = renamed(self.spec(config, identity), name)
        if model is not None and getattr(model, "dim", spec.dim) != spec.dim:
            raise RuntimeError(f"encoder {self.name} gives {model.dim}-d features but its identity says {spec.dim}")
        return SetEncoder(spec, self.needs, model, entry=self)


@dataclass
class SetEncoder:
    """One feature set of a run: its spec (name, kind, dim, fingerprint), what it needs,
    and the loaded model (None for log-mel, which the workers compute)."""

    spec: SetSpec
    needs: str
    model: Any = None
    faces: Any = None  # the face detector, for face crops
    entry: Encoder | None = None

    @property
    def modality(self) -> str:
        return self.spec.modality

    def close(self) -> None:
        """Release native resources (MediaPipe's landmarker) now, not in a destructor at exit."""
        for part in (self.model, self.faces):
            if hasattr(part, "close"):
                part.close()


def renamed(spec: SetSpec, name: str | None) -> SetSpec:
    """`spec` under the short name `--name` gave it (unchanged without one)."""
    return replace(spec, name=f"{spec.modality}/{name}") if name else spec


def media_fingerprint(config, identity: dict[str, Any], needs: str) -> dict[str, Any]:
    """The fingerprint of a set that is not one of the seed's three: the extraction version,
    the encoder's identity, the decoded duration, and the frame sampling or sample rate it sees."""
    from emo.extract.encoders.fingerprint import build_fingerprint

    base = build_fingerprint(config)
    out = {"extract_version": base["extract_version"], "encoder": identity, "max_duration": base["max_duration"]}
    if needs in Needs.PICTURES and base.get("frames") is not None:
        out["frames"] = base["frames"]
    if needs == Needs.WAVEFORM:
        out["sample_rate"] = config.sample_rate
    return out


def precision(device: Any) -> str:
    """ "fp16" on a GPU (the encoders run in half precision there), else "fp32"."""
    return "fp16" if getattr(device, "type", str(device).split(":")[0]) == "cuda" else "fp32"
