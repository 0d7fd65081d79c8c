"""What one fit trains on, decided and checked once: `FitPlan`.

Every fit (`emo fit`, each `emo ablate` cell, `fit_splits`, the demo) goes through
`plan_fit` exactly once, after its config was validated once (by `run_fit`, by
`fit_splits`, or by `build_config` for an ablation cell). It takes the splits as the cache
loads them (`emo.cache.LoadedSplit`) and the run's feature sets - chosen against the cache
by the caller, which needed them to know what to load, or else here from `config.features`
for splits built in memory - composes each split once (`emo.fuse.inputs.compose`),
resolves `text_feature = "auto"` unless the caller already did, and checks everything the
trainer relies on. The trainer (`emo.fuse.train.Trainer`) reads the plan and decides and
checks nothing again, so one fact has one place, and a fit and an ablation cell with the
same config cannot differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from emo.cache.load import LoadedSplit
from emo.errors import CacheError, UsageError
from emo.fuse.config import FitConfig, resolve_text_feature
from emo.fuse.feature_sets import (
    Selection,
    default_sets,
    format_features,
    parse_features,
    require_same_fingerprint,
    resolve_features,
)
from emo.fuse.inputs import ModelInputs, check_compatible, compose
from emo.labels import MODALITIES


@dataclass(frozen=True)
class FitPlan:
    """A fit's resolved config (the full set names trained on, the text pooling) and its
    splits composed as the model reads them; `test` is scored once with the kept model."""

    config: FitConfig
    selection: Selection
    train: ModelInputs
    dev: ModelInputs
    test: ModelInputs | None = None


def plan_fit(
    config: FitConfig,
    train: LoadedSplit,
    dev: LoadedSplit,
    test: LoadedSplit | None = None,
    selection: Selection | None = None,
) -> FitPlan:
    """The one plan of a fit whose `config` is validated. `selection`: the sets the caller
    chose against the cache (None: resolve `config.features` against `train`'s sets, each
    modality's first set by default; modalities left open become those `train` holds, as
    `check_fit` decides them for a cache). One sentence for anything the splits cannot give."""
    if not config.modalities:
        from emo.fuse.fit_request import fit_modalities, modalities_of

        held = modalities_of(train.sets) if train.sets else MODALITIES  # no sets: loaded by modality
        config = config.copy_with(modalities=fit_modalities((), held, config.features)[0])
    if selection is None:
        selection = resolve_features(
            parse_features(config.features), train.sets, default_sets(train.sets), config.modalities
        )
    inputs = [compose(split, selection) if split is not None else None for split in (train, dev, test)]
    train_in, dev_in, test_in = inputs
    config = config.copy_with(features=format_features(selection))  # the full names trained on
    if config.text_feature == "auto":  # an ablation resolves it up front, to compare finished cells
        config = config.copy_with(text_feature=resolve_text_feature("auto", train_in.fingerprint))
    for split in (train_in, dev_in):
        if len(split) == 0:
            raise CacheError(f"The cache's '{split.split}' split has no rows; extract it before training.")
    for split in (s for s in inputs if s is not None):
        check_compatible(split, config.modalities, config.text_feature)
    for split in (s for s in (dev_in, test_in) if s is not None):
        require_same_fingerprint(train_in.fingerprint, split.fingerprint, f"The '{split.split}' split")
    if config.audio_view_sampling and "audio" in config.modalities and train_in.num_audio_views < 2:
        raise UsageError(
            "audio_view_sampling needs a cache with several audio views, but this one holds only the clean "
            "audio; re-extract with --audio-views K or turn it off."
        )
    return FitPlan(config, selection, train_in, dev_in, test_in)
