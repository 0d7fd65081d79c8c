"""What an `emo fit` asks for, checked before torch loads: `check_fit`.

Every usage error of a fit (no --cache or --out, a cache that is not there, a folder in the
way of the run, options its modalities would ignore, feature sets or modalities the cache
cannot give) depends on the config and the cache's metadata only, so all of them are decided
here, torch-free: `run_fit` starts with `check_fit`, and `emo fit` calls it before it imports
the trainer, so a mistake is answered in well under a second rather than after torch loads.

It also decides the modalities of a fit that leaves them open (`FitConfig.modalities` empty,
the default): every modality the cache holds. A full cache trains on text, audio and visual
as always; a text-only cache (`emo extract --modalities text`, MELD's CSVs without videos)
trains on text and says so in one line. Modalities asked for by name (`--modalities`, or a
`--features` choice) are never narrowed: a cache without them is refused in one sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from emo.errors import UsageError
from emo.fuse.config import FitConfig
from emo.fuse.feature_cache import cache_sets, select_for_fit
from emo.fuse.feature_sets import Selection, parse_features
from emo.fuse.run_folder import check_destination
from emo.labels import MODALITIES


@dataclass(frozen=True)
class FitRequest:
    """A checked fit: its config with the modalities decided, the cache's description, the
    feature sets it trains on (None: a cache without sets) and the line to show, if any."""

    config: FitConfig
    info: Any  # emo.cache.CacheInfo
    selection: Selection | None
    note: str | None = None


def modalities_of(set_names: Iterable[str]) -> tuple[str, ...]:
    """The modalities that feature sets named `modality/name` cover, in MODALITIES order."""
    held = {name.partition("/")[0] for name in set_names}
    return tuple(m for m in MODALITIES if m in held)


def and_list(names: Sequence[str]) -> str:
    """text | text and audio | text, audio and visual."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def fit_modalities(
    requested: Sequence[str], held: Sequence[str], features: str = "", where: str = "This cache"
) -> tuple[tuple[str, ...], str | None]:
    """The modalities a fit trains on, and a line to show when the cache decided them.

    `requested` (the config's modalities) wins whenever it names any. Left open, they are
    the cache's `held` modalities plus any that `features` names (asking for a set is asking
    for its modality); a cache that holds no set at all keeps every modality, so loading it
    names what is missing.
    """
    if requested:
        return tuple(requested), None
    chosen = tuple(m for m in MODALITIES if m in held or m in parse_features(features))
    if not held or chosen == MODALITIES:
        return (chosen or MODALITIES), None
    what = and_list(chosen)
    return chosen, f"{where} holds {what} features only; fitting on {what}."


def check_fit(config: FitConfig) -> FitRequest:
    """Every check of a fit that needs no torch, in the order a user fixes them: the config's
    values, the paths, the run's destination, then what the cache can give."""
    from emo.cache import open_cache

    config.validate()
    if config.cache is None:
        raise UsageError("No cache given; pass --cache DIR (a folder written by emo extract).")
    if config.out is None:
        raise UsageError("No run directory given; pass --out runs/NAME.")
    cache = Path(config.cache)
    if not cache.exists():
        raise UsageError(f"Cache {cache} does not exist; run emo extract first.")
    check_destination(Path(config.out), config.overwrite)
    info = open_cache(cache)
    held = modalities_of([*cache_sets(info), *(getattr(info, "damaged_sets", None) or {})])
    modalities, note = fit_modalities(config.modalities, held, config.features, where=f"Cache {cache}")
    config = config.copy_with(modalities=modalities)
    config.check_options_apply()
    selection = select_for_fit(info, config.features, config.modalities, cache)  # the one choice of sets
    return FitRequest(config, info, selection, note)
