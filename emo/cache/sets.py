"""Feature sets: one encoder's features for every row of a cache, under a name.

A version-2 cache holds, per split, one row table (ids, labels, speaker, utterance text)
and any number of feature sets. A set is named `<modality>/<name>` (`text/all-MiniLM-L6-v2`,
`audio/mel`, `audio/whisper-base`, `visual/mediapipe-face`), has one of three kinds and its
own fingerprint, shards and checksums, so adding an encoder never touches another set's
files and two encoders are compared from one cache.

Kinds and the arrays each stores (N rows, float16 features):
- `vector`:   one or more named [N, D] arrays; a sentence encoder stores two poolings
              (`cls`, `mean`), anything else one (`values`).
- `frames`:   `values` [N, F, D] and `mask` bool [N, F] (False: no frame, or no face in it).
- `sequence`: `values` [M, D], every row's frames concatenated, and `index` int64 [N, V, 2]
              = (start, length) of row i's view v (view 0 clean, others augmented copies).
- `layers`:   named [N, L, D] arrays like a vector set's (`cls` and `mean`, or `values`):
              the pooled vector of each of L hidden states of one model, kept apart so the
              head can learn which layers to use (`SetSpec.layers` names them: 0 = the
              embedding output, num_layers = the last layer). `dim` is one layer's D.
Every set also stores `present` bool [N] (the row has this set's features; False where
its media failed or held nothing to encode) and `truncated` bool [N] (the clip was cut).

`SetSpec` is what a writer needs to know about a set; `LoadedSet` is one set of one split
in memory, as `emo.cache.load_split` returns it inside `LoadedSplit.sets`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emo.labels import MODALITIES

KINDS = ("vector", "frames", "sequence", "layers")
NAMED_KINDS = ("vector", "layers")  # kinds whose arrays the spec names (cls, mean, values)
KIND_ARRAYS: dict[str, tuple[str, ...]] = {"frames": ("values", "mask"), "sequence": ("values", "index")}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_set_name(name: str) -> str:
    """A full set name `<modality>/<name>`. The short name becomes a folder, so it must be
    plain (letters, digits, `_ . -`); `+` is refused because `emo fit --features` joins
    the sets it concatenates with it."""
    modality, _, short = str(name).partition("/")
    if modality not in MODALITIES or not short or not _NAME_RE.match(short):
        raise ValueError(
            f"invalid feature set name {name!r}: expected <modality>/<name> with modality one of "
            f"{', '.join(MODALITIES)} and a name of letters, digits, '_', '.' or '-'"
        )
    return f"{modality}/{short}"


def short_name(name: str) -> str:
    return name.partition("/")[2]


def set_modality(name: str) -> str:
    return name.partition("/")[0]


def plain_name(text: str) -> str:
    """A model id or path as a set's short name: its last path component, with anything
    a folder name should not hold replaced (`sentence-transformers/all-mpnet-base-v2` ->
    `all-mpnet-base-v2`)."""
    last = str(text).rstrip("/").rsplit("/", 1)[-1] or "model"
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", last).strip("-.") or "model"
    return cleaned


@dataclass(frozen=True)
class SetSpec:
    """What the cache records about a set before any shard is written."""

    name: str  # full name, <modality>/<name>
    kind: str  # vector | frames | sequence | layers
    dim: int  # feature size D (a layers set: one layer's)
    encoder: str  # human-readable encoder id (model id, folder or registry name)
    fingerprint: dict[str, Any]  # everything that changes the numbers: encoder, weights hash, preprocessing
    arrays: tuple[str, ...] = ("values",)  # vector and layers sets: the named arrays (e.g. cls, mean)
    frames: int = 0  # frames sets: F
    views: int = 1  # sequence sets: V
    layers: tuple[int, ...] = ()  # layers sets: the hidden-state indices stored, in order (L of them)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", check_set_name(self.name))
        if self.kind not in KINDS:
            raise ValueError(f"unknown feature set kind {self.kind!r}; expected one of {KINDS}")
        if self.kind not in NAMED_KINDS:
            object.__setattr__(self, "arrays", KIND_ARRAYS[self.kind])
        object.__setattr__(self, "arrays", tuple(self.arrays))
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        if (self.kind == "layers") != bool(self.layers):
            raise ValueError(f"feature set {self.name}: a layers set, and only one, names its layers")

    @property
    def modality(self) -> str:
        return set_modality(self.name)

    def describe(self) -> dict[str, Any]:
        """set.json's content (without the digest and dates the writer adds). `layers` is
        written for a layers set only, so every other set keeps the digest it always had."""
        layers = {"layers": list(self.layers)} if self.kind == "layers" else {}
        return {
            "name": self.name,
            "modality": self.modality,
            "kind": self.kind,
            "dim": int(self.dim),
            "arrays": list(self.arrays),
            "frames": int(self.frames),
            "views": int(self.views),
            **layers,
            "encoder": self.encoder,
            "fingerprint": self.fingerprint,
        }


def spec_from_meta(meta: dict[str, Any]) -> SetSpec:
    """The SetSpec a set.json describes (the inverse of `SetSpec.describe`)."""
    return SetSpec(
        meta["name"],
        meta["kind"],
        int(meta["dim"]),
        str(meta.get("encoder", "")),
        meta.get("fingerprint", {}),
        tuple(meta.get("arrays") or ("values",)),
        int(meta.get("frames") or 0),
        int(meta.get("views") or 1),
        tuple(meta.get("layers") or ()),
    )


@dataclass
class LoadedSet:
    """One feature set of one split, as plain numpy arrays in row order."""

    name: str
    kind: str
    dim: int
    encoder: str
    fingerprint: dict[str, Any]
    digest: str
    present: np.ndarray  # bool[N]
    truncated: np.ndarray  # bool[N]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    layers: tuple[int, ...] = ()  # a layers set: the hidden-state index of each of its L rows; else ()

    @property
    def modality(self) -> str:
        return set_modality(self.name)

    @property
    def short(self) -> str:
        return short_name(self.name)
