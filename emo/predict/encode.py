"""New media through the very recipe that made a run's cache: same encoders, same code.

A run's checkpoint records its cache (`cache_path`) and that cache's fingerprint. The
cache's `config.toml` is the resolved `ExtractConfig` that extracted it, so rebuilding it
and loading the encoders with `emo.extract.encoders.load_encoders` gives the same models;
the fingerprint of what was loaded is then compared with the checkpoint's, so weights that
changed since (another hash, another precision) are refused instead of silently scoring
features the head never saw.

Segments go through `emo.extract.prepare.clip_job` + `prepare_clip` (decode, mel, frame
preprocessing) and `emo.extract.shard.ShardRunner` (text batches, frame batches), the
code `emo extract` runs, and come back through `emo.cache.clips.features_from_clips` as the
`SplitFeatures` a shard of them would load as (float16 rounding included). Nothing here
re-implements a step of extraction, so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emo.errors import CacheError, UsageError, require_path
from emo.progress import Message, ProgressCallback, emit

ENCODER_KEYS = {"text": ("text_encoder", "text_pooling"), "visual": ("visual_encoder",)}


@dataclass
class Segment:
    """One utterance to predict: a stretch of one input file (times in seconds)."""

    file_index: int
    index: int  # position within its file
    path: Path
    start: float
    end: float
    text: str = ""
    speaker: str = ""

    # The utterance interface `ShardRunner` reads (as `emo.data.meld.Utterance` has it).
    @property
    def dialogue_id(self) -> int:
        return self.file_index

    @property
    def utterance_id(self) -> int:
        return self.index

    emotion_index = 0  # unknown: labels are not used for prediction
    sentiment_index = 0

    @property
    def clip_name(self) -> str:
        return self.path.name

    @property
    def key(self) -> str:
        return f"{self.path.stem}-{self.index}"


class SegmentSplit:
    """Segments in the shape `ShardRunner` takes a split: `utterances` plus `context(u, n)`,
    the `n` earlier segments of the same input (a file is one dialogue)."""

    def __init__(self, segments: list[Segment]):
        self.utterances = segments

    def context(self, utterance: Segment, n: int) -> list[Segment]:
        earlier = [s for s in self.utterances if s.file_index == utterance.file_index and s.index < utterance.index]
        return earlier[-n:] if n > 0 else []


def recipe_config(payload: dict[str, Any], run_dir: Path, cache: Path | None = None):
    """The `ExtractConfig` that made the run's cache, read from the cache's config.toml."""
    from emo.config import build_config
    from emo.extract.config import ExtractConfig

    if cache is not None:
        folder = require_path(cache, "Cache", "pass the folder of the feature cache the run was trained on")
    else:
        recorded = payload.get("cache_path") or payload.get("fit_config", {}).get("cache")
        if not recorded:
            raise UsageError(f"Run {run_dir} does not record its cache; pass --cache with the folder it was trained on.")
        folder = Path(recorded)
    toml = folder / "config.toml"
    if not toml.is_file():
        raise UsageError(
            f"Run {run_dir} was trained on cache {folder}, whose config.toml (the encoders and preprocessing to "
            "repeat) is not there; pass --cache with that cache folder or a copy of it."
        )
    return build_config(ExtractConfig, toml, {}, section="extract")


def recipe_device(fingerprint: dict[str, Any], device: str) -> str:
    """'cuda' for a cache whose encoders ran in fp16 (a GPU made it), else the CPU: the
    encoders must run at the precision the run's features were made with."""
    if device != "auto":
        return device
    precisions = {fingerprint.get(k, {}).get("precision") for k in ("text_encoder", "visual_encoder")
                  if isinstance(fingerprint.get(k), dict)}  # fmt: skip
    return "cuda" if "fp16" in precisions else "cpu"


class FeatureMaker:
    """The run's encoders, loaded once; `encode(segments)` gives their `SplitFeatures`."""

    def __init__(self, config, modalities: tuple[str, ...], fingerprint: dict[str, Any], device: str = "auto",
                 run_dir: Path | str = "", progress: ProgressCallback | None = None):
        from emo.device import resolve_device
        from emo.extract import encoders as encoder_loading
        from emo.extract.fingerprint import mel_params

        self.fingerprint = fingerprint
        self.device = resolve_device(recipe_device(fingerprint, device))
        # Only the encoders the head reads are loaded; the rest of the recipe is checked as written.
        self.config = dataclasses.replace(config, modalities=tuple(m for m in config.ordered_modalities if m in modalities),
                                          workers=0, overwrite=False)  # fmt: skip
        wanted = [m for m in ("text", "visual") if m in self.config.modalities]
        if wanted:
            emit(progress, Message(f"Loading the run's encoders ({', '.join(wanted)}) on {self.device}."))
        started = time.perf_counter()
        self.encoders = encoder_loading.load_encoders(self.config, self.device)
        self.load_seconds = time.perf_counter() - started
        self._check(config, run_dir)
        self.load_seconds = time.perf_counter() - started
        # Augmented audio views are for training only; view 0 (the clean mel) does not depend on them.
        self.job_config = dataclasses.replace(self.config, audio_views=0)
        self.mel = mel_params(self.config) if "audio" in self.config.modalities else None
        if self.mel is not None:  # librosa's one-off kernel compile, here rather than in the first clip's time
            from emo.extract.workers import warm_up

            warm_up(self.mel)

    def _check(self, full_config, run_dir) -> None:
        """Refuse encoders or preprocessing that differ from what made the run's cache."""
        from emo.cache.fingerprint import describe_difference
        from emo.extract.fingerprint import build_fingerprint

        import json

        built = json.loads(json.dumps(build_fingerprint(full_config, self.encoders), default=str))
        skip = {key for m, keys in ENCODER_KEYS.items() if m not in self.config.modalities for key in keys}
        expected = {k: v for k, v in self.fingerprint.items() if k not in skip}
        found = {k: v for k, v in built.items() if k not in skip}
        if expected != found:
            raise CacheError(
                f"The encoders or preprocessing on this machine differ from those that made run {run_dir}'s features: "
                f"{describe_difference(expected, found)}; install the same encoder weights (or run on the device "
                "the cache was made on), or re-extract and re-fit."
            )

    def encode(self, segments: list[Segment], on_clip=None):
        """(SplitFeatures, seconds per stage) for `segments`, rows in the given order."""
        from emo.cache.clips import features_from_clips
        from emo.extract.prepare import clip_job
        from emo.extract.shard import ShardRunner
        from emo.extract.summary import Stages
        from emo.extract.workers import Prefetcher

        config = self.job_config
        stages = Stages()
        split = SegmentSplit(segments)
        prefetch = None
        if {"audio", "visual"} & set(config.modalities):
            prep = self.encoders.visual.prep if self.encoders.visual is not None else None
            jobs = (clip_job(config, i, s.key, str(s.path), prep, self.mel, start=s.start, length=s.end - s.start)
                    for i, s in enumerate(segments))  # fmt: skip
            prefetch = Prefetcher(jobs, None, window=4)
        runner = ShardRunner(config, self.encoders, prefetch, stages)
        records, _ = runner.run(split, range(len(segments)), on_clip or (lambda n: None))
        features = features_from_clips(records, runner.spec(), self.fingerprint)
        hide_missing_words(features, [s.text for s in segments])
        return features, records, dict(stages.seconds)


def hide_missing_words(features, texts: list[str]) -> None:
    """Mark text absent for rows without words (no speech recognised, an empty transcript cue),
    so the head sees a missing modality rather than the embedding of an empty string, and
    the prediction's `modalities` says it went without text."""
    if features.text_cls is None:
        return
    for row, text in enumerate(texts):
        if not text.strip():
            features.has_text[row] = False
            features.text_cls[row] = 0
            if features.text_mean is not None:
                features.text_mean[row] = 0
