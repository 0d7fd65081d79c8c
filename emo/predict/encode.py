"""New media through the very recipe that made a run's features: same encoders, same code.

A run's checkpoint records its cache (`cache_path`), the feature sets it was trained on
and each set's fingerprint. Every set keeps the resolved `ExtractConfig` that extracted it
(`config.toml` in the set's folder, which names its encoder), so rebuilding it and loading
the encoder with `emo.extract.encoders.registry.load_set_encoders` gives the same model (a
plugin's encoder too, reached as `emo extract` reached it: EMO_PLUGINS or an entry point); the fingerprint of what was
loaded is then compared with the checkpoint's, so weights that changed since (another
hash, another precision) are refused instead of silently scoring features the head never saw.

Segments go through `emo.extract.pipeline.prepare.media_needs` + `clip_job` + `prepare_clip`
(what to decode for each set; decode, mel, frame preprocessing) and
`emo.extract.pipeline.shard.ShardRunner` (text batches, frame batches), the code `emo extract`
runs, and come back through `emo.cache.clips.features_from_clips` as the `LoadedSplit` a
shard of them would load as (float16 rounding included; tests/test_predict.py compares them). Nothing here
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
    transcript_source: str = "none"  # where `text` came from: asr, given (--transcript) or none

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


def recipe_cache(payload: dict[str, Any], run_dir: Path, cache: Path | None = None) -> Path:
    """The folder of the cache the run was trained on (or the copy `--cache` names)."""
    if cache is not None:
        return require_path(cache, "Cache", "pass the folder of the feature cache the run was trained on")
    recorded = payload.get("cache_path") or payload.get("fit_config", {}).get("cache")
    if not recorded:
        raise UsageError(f"Run {run_dir} does not record its cache; pass --cache with the folder it was trained on.")
    return Path(recorded)


def set_recipes(payload: dict[str, Any], run_dir: Path, cache: Path, modalities: tuple[str, ...]) -> list:
    """(set name, the `ExtractConfig` that made it) for every set the run's head reads,
    from each set's config.toml in the cache."""
    from emo.cache import set_config_path
    from emo.config import build_config
    from emo.extract.config import ExtractConfig
    from emo.fuse.feature_sets import selection_of

    selection = selection_of(payload.get("fingerprint"))
    if selection is None:
        raise CacheError(
            f"Run {run_dir} was trained on a cache from before feature sets; upgrade that cache with "
            "`emo cache upgrade CACHE` and fit the run again."
        )
    recipes = []
    for modality in modalities:
        for name in selection.get(modality, []):
            toml = set_config_path(cache, name)
            if not toml.is_file():
                raise UsageError(
                    f"Run {run_dir} was trained on feature set {name} of cache {cache}, whose config.toml (the encoder "
                    "and preprocessing to repeat) is not there; pass --cache with that cache folder or a copy of it."
                )
            config = build_config(ExtractConfig, toml, {}, section="extract")
            config = dataclasses.replace(
                config, modalities=(modality,), name=name.partition("/")[2], workers=0, overwrite=False
            )
            recipes.append((name, config))
    return recipes


def recipe_device(fingerprint: dict[str, Any], device: str) -> str:
    """'cuda' for a run whose encoders ran in fp16 (a GPU made its features), else the CPU:
    the encoders must run at the precision the run's features were made with."""
    if device != "auto":
        return device
    precisions = set()
    for set_fingerprint in (fingerprint.get("sets") or {}).values():
        for key in ("text_encoder", "visual_encoder", "encoder"):
            if isinstance(set_fingerprint.get(key), dict):
                precisions.add(set_fingerprint[key].get("precision"))
    return "cuda" if "fp16" in precisions else "cpu"


class FeatureMaker:
    """The encoders of the run's feature sets, loaded once; `encode(segments)` gives the
    `LoadedSplit` a cache of them would load as (raw sets; `emo.fuse.inputs` composes them)."""

    def __init__(
        self,
        recipes: list,
        fingerprint: dict[str, Any],
        device: str = "auto",
        run_dir: Path | str = "",
        progress: ProgressCallback | None = None,
    ):
        from emo.device import resolve_device
        from emo.extract.encoders.registry import load_set_encoders
        from emo.extract.pipeline.prepare import media_needs

        self.fingerprint = fingerprint
        self.device = resolve_device(recipe_device(fingerprint, device))
        if recipes:
            names = ", ".join(name for name, _ in recipes)
            emit(progress, Message(f"Loading the run's encoders ({names}) on {self.device}."))
        started = time.perf_counter()
        self.parts = []
        for name, config in recipes:
            encoder = load_set_encoders(config, self.device)[0]
            self._check(name, encoder, run_dir)
            media = media_needs(config, [encoder])  # what `emo extract` decodes for this set
            if media.mel is not None:  # librosa's one-off kernel compile, here rather than in the first clip's time
                from emo.extract.pipeline.workers import warm_up

                warm_up(media.mel)
            self.parts.append((config, encoder, media))
        self.load_seconds = time.perf_counter() - started

    def _check(self, name: str, encoder, run_dir) -> None:
        """Refuse an encoder or preprocessing that differs from what made the run's set."""
        import json

        from emo.cache.fingerprint import describe_difference

        expected = self.fingerprint["sets"][name]
        found = json.loads(json.dumps(encoder.spec.fingerprint, default=str))
        if expected != found:
            raise CacheError(
                f"The encoder or preprocessing of feature set {name} on this machine differs from what made run "
                f"{run_dir}'s features: {describe_difference(expected, found)}; install the same encoder weights "
                "(or run on the device the cache was made on), or re-extract and re-fit."
            )

    @property
    def max_duration(self) -> float:
        """Seconds of an input the encoders read at most (the longest of the sets' recipes):
        how long an input whose container states no duration is taken to be."""
        from emo.extract.config import ExtractConfig

        return max((config.max_duration for config, _, _ in self.parts), default=ExtractConfig.max_duration)

    def close(self) -> None:
        from emo.extract.pipeline.run import close_encoders

        close_encoders([encoder for _, encoder, _ in self.parts])

    def encode(self, segments: list[Segment], on_clip=None):
        """(LoadedSplit, records, seconds per stage) for `segments`, rows in the given order.

        Each set runs through `ShardRunner` as `emo extract` runs it, with its own recipe's
        decoding (a set's frames, waveform or mel); the first set reports progress."""
        from emo.cache.clips import features_from_clips
        from emo.extract.encoders.base import Needs
        from emo.extract.pipeline.prepare import clip_job
        from emo.extract.pipeline.shard import ShardRunner
        from emo.extract.pipeline.summary import Stages
        from emo.extract.pipeline.workers import Prefetcher

        stages = Stages()
        split = SegmentSplit(segments)
        records = None
        for i, (config, encoder, media) in enumerate(self.parts):
            prefetch = None
            if encoder.needs != Needs.TEXT:
                # Augmented log-mel copies are for training; a prediction reads the clean view 0, which
                # is the same whatever their number, so they are not made (their slots stay empty).
                clean = dataclasses.replace(config, audio_views=0)
                jobs = (
                    clip_job(clean, j, s.key, str(s.path), media, start=s.start, length=s.end - s.start)
                    for j, s in enumerate(segments)
                )
                prefetch = Prefetcher(jobs, None, window=4)
            runner = ShardRunner(config, [encoder], prefetch, stages)
            report = (on_clip or (lambda n: None)) if i == 0 else (lambda n: None)
            made, _ = runner.run(split, range(len(segments)), report)
            records = made if records is None else _merge(records, made)
        if records is None:
            records, _ = ShardRunner(self.parts[0][0] if self.parts else None, [], None, stages).run(
                split, range(len(segments)), on_clip or (lambda n: None)
            )
        features = features_from_clips(records, [e.spec for _, e, _ in self.parts], self.fingerprint.get("rows", {}))
        hide_missing_words(features, [s.text for s in segments])
        return features, records, dict(stages.seconds)


def _merge(records, more):
    """Records of one more set folded into the first set's records (same rows, in order)."""
    for record, other in zip(records, more):
        record.features.update(other.features)
        record.truncated = record.truncated or other.truncated
        known = {(f.reason, f.modalities) for f in record.failures}
        record.failures += [f for f in other.failures if (f.reason, f.modalities) not in known]
    return records


def hide_missing_words(features, texts: list[str]) -> None:
    """Mark text absent for rows without words (no speech recognised, an empty transcript cue),
    so the head sees a missing modality rather than the embedding of an empty string, and
    the prediction's `modalities` says it went without text."""
    empty = [row for row, text in enumerate(texts) if not text.strip()]
    for loaded in features.sets.values():
        if loaded.modality == "text":
            loaded.present[empty] = False
            for array in loaded.arrays.values():
                array[empty] = 0
