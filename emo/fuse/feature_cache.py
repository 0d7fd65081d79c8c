"""Feature sets of a cache on disk: what a fit selects, loading them, what eval demands.

`emo.fuse.feature_sets` is the pure part (names, composing, fingerprints); this module is
where those meet `emo.cache`: it resolves a run's `features` against `open_cache`'s sets,
loads exactly the selected sets with `load_split(sets=...)` (raw: `emo.fuse.inputs.compose`
makes them model inputs), and checks that a cache holds every set a trained run needs,
with the fingerprint it was trained on.

A cache with no set at all (labels only) loads by modality and its runs keep the plain
cache fingerprint; a checkpoint trained before feature sets is told to fit again (caches
of that time are refused by `emo.cache` until `emo cache upgrade` converts them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from emo.cache.load import LoadedSplit
from emo.errors import CacheError
from emo.fuse.feature_sets import (
    Selection,
    composite_fingerprint,
    default_sets,
    extract_hint,
    format_features,
    parse_features,
    resolve_features,
    selection_of,
)


def cache_sets(info: Any) -> dict[str, Any]:
    """{full name: SetInfo} of a `CacheInfo` ({} for caches without sets); a plain dict passes."""
    if isinstance(info, Mapping):
        return dict(info)
    return dict(getattr(info, "sets", None) or {})


def cache_defaults(info: Any) -> dict[str, str]:
    """Each modality's default set: the cache's own choice, else its first set per modality."""
    method = getattr(info, "default_sets", None)
    if callable(method):
        return dict(method())
    return default_sets(cache_sets(info))


def set_names(selections: Mapping[str, Sequence[str]] | Iterable[Mapping[str, Sequence[str]]]) -> list[str]:
    """Every set name of one selection, or the union of several, in first-seen order."""
    if isinstance(selections, Mapping):
        selections = [selections]
    names: list[str] = []
    for selection in selections:
        for group in selection.values():
            names += [n for n in group if n not in names]
    return names


def refuse_damaged(info: Any, requested: Mapping[str, Sequence[str]], modalities: Sequence[str]) -> None:
    """One sentence when the run would read a damaged set (`CacheInfo.damaged_sets`): one it
    names, or any of a modality whose default it takes - that set may have been the default,
    and training on another instead would be a silent wrong answer."""
    from emo.fuse.feature_sets import full_name

    damaged = dict(getattr(info, "damaged_sets", None) or {})
    for modality in (m for m in modalities if m in {n.partition("/")[0] for n in damaged}):
        names = [full_name(modality, n) for n in requested.get(modality, [])]
        if names:
            hit = next((n for n in names if n in damaged), None)
            if hit is not None:
                raise CacheError(damaged[hit].sentence)
            continue
        name, damage = next((n, d) for n, d in damaged.items() if n.partition("/")[0] == modality)
        raise CacheError(
            f"Feature cache {damage.root} is damaged: {damage.file} {damage.problem}, so the default {modality} "
            f"feature set cannot be decided (it may be {name}); {damage.repair}, or choose another {modality} set "
            "with --features."
        )


def select_for_fit(
    info: Any, features: str, modalities: Sequence[str], cache: Path | str | None = None
) -> Selection | None:
    """The sets a fit with `features` trains on, resolved against the cache (None: a cache
    without sets, loaded by modality as before; `--features` then has nothing to choose).
    A damaged set the run would read is refused (`refuse_damaged`), never replaced."""
    refuse_damaged(info, parse_features(features), modalities)
    sets = cache_sets(info)
    if not sets:
        if parse_features(features):
            raise CacheError(
                f"Cache {cache} holds no feature sets (labels only), so --features cannot choose any; extract "
                f"features into it with `emo extract --cache {cache}` or leave --features out."
            )
        return None
    return resolve_features(parse_features(features), sets, cache_defaults(info), modalities, cache=cache)


def fit_fingerprint(info: Any, selection: Selection | None) -> dict[str, Any]:
    """The fingerprint a run trained on `selection` of this cache records (read from the
    sets' descriptions, no arrays): what ablate compares finished cells with."""
    if selection is None:
        return info.fingerprint
    sets = cache_sets(info)
    return composite_fingerprint(info.fingerprint, selection, {n: sets[n].fingerprint for n in set_names(selection)})


def resolved_features(selection: Selection | None, features: str) -> str:
    """What a run's saved config records: the full names trained on, or `features` unchanged."""
    return format_features(selection) if selection is not None else features


def load_raw(
    cache: Path | str, split: str, selections: list[Selection | None], modalities: Sequence[str], verify: bool = True
) -> LoadedSplit:
    """One split with every set any of `selections` needs (None: a cache without sets, by
    `modalities`), raw: an ablation loads a split once for all its cells, and each fit
    composes its own choice (`emo.fuse.fit_plan`). `verify` re-checks every file's checksum."""
    from emo import cache as cache_api

    chosen = [s for s in selections if s is not None]
    if not chosen:
        return cache_api.load_split(Path(cache), split, modalities=tuple(modalities), verify=verify)
    return cache_api.load_split(Path(cache), split, sets=set_names(chosen), verify=verify)


def _extract_command(name: str, trained: Any, cache: Any) -> str:
    """`emo extract ... --audio-model ID --cache X`, ID the encoder the set's fingerprint
    names where it names one, else the set's own name."""
    modality, _, short = name.partition("/")
    model = short
    if isinstance(trained, dict):
        encoder = trained.get("encoder") or trained.get(f"{modality}_encoder")
        if isinstance(encoder, dict):
            encoder = encoder.get("name") or encoder.get("id")
        if isinstance(encoder, str) and encoder.strip():
            model = encoder.strip()
    return extract_hint(modality, cache, model, short)


def require_run_sets(payload: dict[str, Any], info: Any, cache: Path | str, run_dir: Path | str) -> Selection | None:
    """The sets run `run_dir` was trained on, once the cache is known to hold each of them
    with the very fingerprint it was trained on (None for a run trained before feature
    sets: its plain cache fingerprint is compared instead). One sentence otherwise."""
    from emo.cache.fingerprint import describe_difference, fingerprint_digest
    from emo.fuse.checkpoint import plain

    selection = selection_of(payload.get("fingerprint"))
    if selection is None:
        if cache_sets(info):
            raise CacheError(
                f"Run {run_dir} was trained on a cache from before feature sets and cannot be scored on cache "
                f"{cache}, which holds feature sets; fit it again on this cache with `emo fit --cache {cache}`."
            )
        return None
    sets, trained = cache_sets(info), payload["fingerprint"]["sets"]
    refuse_damaged(info, selection, list(selection))
    for name in set_names(selection):
        if name not in sets:
            raise CacheError(
                f"Cache {cache} has no feature set {name}, which run {run_dir} was trained on; extract it into "
                f"this cache with {_extract_command(name, trained.get(name), cache)}."
            )
        found, expected = plain(sets[name].fingerprint), plain(trained.get(name))
        if fingerprint_digest(found) != fingerprint_digest(expected):
            raise CacheError(
                f"Feature set {name} of cache {cache} (fingerprint {fingerprint_digest(found)}) was made with "
                f"different encoders or preprocessing than run {run_dir} was trained on (fingerprint "
                f"{fingerprint_digest(expected)}): {describe_difference(expected or {}, found or {})}."
            )
    return selection


def run_selection(payload: dict[str, Any], features: LoadedSplit, modalities: Sequence[str]) -> Selection:
    """How to compose in-memory `features` for a checkpoint: its recorded sets, else (a run
    from before feature sets) each modality's first set."""
    selection = selection_of(payload.get("fingerprint"))
    if selection is not None or not features.sets:
        return selection or {}
    defaults = default_sets(features.sets)
    return {m: [defaults[m]] for m in modalities if m in defaults}
