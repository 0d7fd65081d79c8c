"""The encoder registry: which frozen encoder makes each feature set of a run.

An encoder is a class with a name, a modality, a kind, a dim, a fingerprint (its
`identity`) and an `encode` method; what it consumes is one of a handful of inputs a
decoded clip offers (`Needs`). Everything else - decoding once for every set, batching,
writing shards - is the pipeline's, so a new encoder is a file plus one line here:

    text    any transformers / sentence-transformers model (`--text-model`; the offline
            all-MiniLM-L6-v2 and all-mpnet-base-v2 are pip-shipped)         -> vector cls+mean
    visual  open_clip or efficientnet-lite0 on whole frames                 -> frames
            the same on face crops (`--crop faces`)                         -> frames (masked)
            mediapipe-face: 52 blendshapes + head pose per frame           -> frames (masked)
    audio   mel: the seed's log-mel spectrogram (no model)                  -> sequence
            whisper-base (offline, CTranslate2) or any transformers speech
            model (`--audio-model`, `--audio-layers`)                       -> vector
            egemaps: openSMILE eGeMAPSv02 functionals (optional extra)      -> vector

Each set's fingerprint holds the encoder's identity (weights hash, revision) and every
preprocessing parameter that changes its numbers. The seed's three sets keep exactly the
fingerprint slices a version-1 cache recorded (`emo.cache.legacy`), so upgraded caches
and new extractions agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emo.cache.legacy import seed_set_fingerprint, seed_set_spec
from emo.cache.sets import SetSpec, plain_name
from emo.extract.config import OFFLINE_VISUAL_MODEL, ExtractConfig

FACE_MODEL = "mediapipe-face"
FACE_CROP_MARGIN = 0.25  # face crops are the face box enlarged by this share on each side
MEL = "mel"
WHISPER_BASE = "whisper-base"
EGEMAPS = "egemaps"


class Needs:
    """What an encoder consumes from a decoded clip."""

    TEXT = "text"  # the utterance (and its context turns)
    FRAMES = "frames"  # sampled frames, resized for the image model
    FACES = "faces"  # sampled whole frames at the face detector's size
    FACE_CROPS = "face_crops"  # face crops of those frames, for an image model
    MEL = "mel"  # log-mel views computed in the decoding workers
    WAVEFORM = "waveform"  # the mono waveform at the run's sample rate


@dataclass
class SetEncoder:
    """One feature set of a run: its spec (name, kind, dim, fingerprint), what it needs,
    and the loaded model (None for mel, which the workers compute)."""

    spec: SetSpec
    needs: str
    model: Any = None
    faces: Any = None  # the face detector, for face crops

    @property
    def modality(self) -> str:
        return self.spec.modality


def base_fingerprint(config: ExtractConfig) -> dict[str, Any]:
    """The cache-wide (version-1 style) fingerprint keys shared by the seed's sets."""
    from emo.extract.fingerprint import build_fingerprint

    return build_fingerprint(config, None)


def load_set_encoders(config: ExtractConfig, device) -> list[SetEncoder]:
    """Load the encoder of every modality the config extracts, in MODALITIES order."""
    names = config.set_names()
    out = []
    for modality in config.ordered_modalities:
        encoder = _LOADERS[modality](config, device)
        if modality in names:
            spec = encoder.spec
            encoder.spec = SetSpec(f"{modality}/{names[modality]}", spec.kind, spec.dim, spec.encoder,
                                   spec.fingerprint, spec.arrays, spec.frames, spec.views)  # fmt: skip
        out.append(encoder)
    return out


def _text(config: ExtractConfig, device) -> SetEncoder:
    from emo.extract.text import load_text_encoder

    model = load_text_encoder(config.resolved_text_model, device=device, max_length=config.text_max_length,
                              context=config.context)  # fmt: skip
    fingerprint = {**base_fingerprint(config), "text_encoder": model.identity, "text_pooling": model.intended_pooling}
    return SetEncoder(seed_set_spec("text", fingerprint, model.dim), Needs.TEXT, model)


def _visual(config: ExtractConfig, device) -> SetEncoder:
    name, pretrained = config.resolved_visual_model
    base = base_fingerprint(config)
    if name == FACE_MODEL:
        from emo.extract.faces import load_face_encoder

        model = load_face_encoder()
        fingerprint = _media_fingerprint(base, model.identity, frames=base.get("frames"))
        spec = SetSpec(f"visual/{FACE_MODEL}", "frames", model.dim, FACE_MODEL, fingerprint, frames=config.frames)
        return SetEncoder(spec, Needs.FACES, model)
    from emo.extract.visual import load_image_encoder

    model = load_image_encoder(name, pretrained, device=device)
    fingerprint = {**base, "visual_encoder": model.identity}
    if config.crop == "none":
        return SetEncoder(seed_set_spec("visual", fingerprint, model.dim, frames=config.frames), Needs.FRAMES, model)
    from emo.extract.faces import load_face_encoder

    faces = load_face_encoder()
    fingerprint = {**seed_set_fingerprint("visual", fingerprint),
                   "crop": {"faces": faces.identity, "margin": FACE_CROP_MARGIN}}  # fmt: skip
    short = plain_name(str(model.identity.get("name", name))) + "-faces"
    spec = SetSpec(f"visual/{short}", "frames", model.dim, f"{name} on face crops", fingerprint, frames=config.frames)
    return SetEncoder(spec, Needs.FACE_CROPS, model, faces=faces)


def _audio(config: ExtractConfig, device) -> SetEncoder:
    base = base_fingerprint(config)
    model_name = str(config.audio_model or MEL)
    if model_name == MEL:
        return SetEncoder(seed_set_spec("audio", base, config.n_mels, views=1 + config.audio_views), Needs.MEL)
    if model_name == EGEMAPS:
        from emo.extract.prosody import load_prosody_encoder

        model = load_prosody_encoder()
        fingerprint = _media_fingerprint(base, model.identity, sample_rate=config.sample_rate)
        return SetEncoder(SetSpec(f"audio/{EGEMAPS}", "vector", model.dim, EGEMAPS, fingerprint), Needs.WAVEFORM, model)
    from emo.extract.speech import load_speech_encoder

    model = load_speech_encoder(model_name, layers=config.audio_layers, device=str(device))
    fingerprint = _media_fingerprint(base, model.identity, sample_rate=config.sample_rate)
    short = plain_name(model.name)
    if str(config.audio_layers) not in ("", "last"):
        short += "-layers-" + str(config.audio_layers).replace(",", "-")
    spec = SetSpec(f"audio/{short}", "vector", model.dim, model_name, fingerprint)
    return SetEncoder(spec, Needs.WAVEFORM, model)


def _media_fingerprint(base: dict[str, Any], identity: dict[str, Any], **preprocessing: Any) -> dict[str, Any]:
    out = {"extract_version": base["extract_version"], "encoder": identity, "max_duration": base["max_duration"]}
    out.update({k: v for k, v in preprocessing.items() if v is not None})
    return out


_LOADERS = {"text": _text, "visual": _visual, "audio": _audio}

__all__ = ["FACE_MODEL", "MEL", "OFFLINE_VISUAL_MODEL", "Needs", "SetEncoder", "load_set_encoders"]
