"""Which cached feature sets a run trains on: names, choices and their fingerprints.

A version-2 cache holds any number of feature sets per modality (`emo.cache.sets`); a run
picks some with `--features text=all-MiniLM-L6-v2,audio=mel+whisper-base`. This module is
the pure part of that choice: parsing and formatting `--features`, resolving it against
the sets a cache holds (`resolve_features`, each modality's default otherwise), and the
composite fingerprint of a selection. Turning the chosen sets into model inputs is
`emo.fuse.inputs.compose`; meeting a cache on disk is `emo.fuse.feature_cache`.

A run's fingerprint names exactly the sets trained on, with each set's own fingerprint
(`composite_fingerprint`), so extracting another encoder into the cache later does not
invalidate a run that never used it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from emo.errors import CacheError, ConfigError, UsageError
from emo.labels import MODALITIES

Selection = dict[str, list[str]]  # modality -> full set names, concatenated in this order


class UnknownFeatureSetError(CacheError, UsageError):
    """The run asks for a feature set the cache does not hold (exit 2: the name was the user's)."""


def full_name(modality: str, name: str) -> str:
    """`mel` or `audio/mel` -> `audio/mel`; a name under another modality is refused."""
    name = name.strip()
    prefix, slash, short = name.partition("/")
    if slash and prefix in MODALITIES:
        if prefix != modality:
            raise ConfigError(f"Feature set '{name}' is a {prefix} set, not a {modality} set; list it under {prefix}=.")
        name = short
    if not name or "/" in name:
        raise ConfigError(
            f"Feature set name '{name}' for {modality} is not valid; use a set name such as mel or {modality}/NAME."
        )
    return f"{modality}/{name}"


def parse_features(text: str) -> Selection:
    """`"text=a,audio=mel+whisper-base"` -> {"text": ["text/a"], "audio": ["audio/mel", "audio/whisper-base"]}.

    Names may be short or full; `+` concatenates several sets of one modality. An empty
    string means "each modality's default set" and gives {}. Returned in MODALITIES order.
    """
    text = (text or "").strip()
    out: dict[str, list[str]] = {}
    if not text:
        return out
    for item in (part.strip() for part in text.split(",") if part.strip()):
        modality, eq, names = item.partition("=")
        modality = modality.strip()
        if not eq:
            raise ConfigError(f"Feature choice '{item}' must look like modality=set, such as audio=mel+whisper-base.")
        if modality not in MODALITIES:
            raise ConfigError(f"Unknown modality '{modality}' in --features; choose from {', '.join(MODALITIES)}.")
        if modality in out:
            raise ConfigError(f"--features names {modality} twice; join its sets with '+', as in {modality}=a+b.")
        full = [full_name(modality, n) for n in names.split("+")]
        if len(set(full)) != len(full):
            raise ConfigError(f"--features lists a {modality} set twice ({names.strip()}).")
        out[modality] = full
    return {m: out[m] for m in MODALITIES if m in out}


def format_features(selection: Mapping[str, Sequence[str]]) -> str:
    """The inverse of `parse_features`, with full names: `text=text/a,audio=audio/mel+audio/w`."""
    return ",".join(f"{m}={'+'.join(selection[m])}" for m in MODALITIES if selection.get(m))


def extract_hint(modality: str, cache: Any = None, model: str = "NAME", name: str = "") -> str:
    """The `emo extract` command that adds a `modality` set made by `model` (named `name`
    when that is not the model's own name) to `cache`, leaving its other sets alone."""
    from emo.cache.sets import plain_name

    rename = f" --name {name}" if name and name != plain_name(model) else ""
    where = cache if cache is not None else "CACHE"
    return f"`emo extract --split all --modalities {modality} --{modality}-model {model}{rename} --cache {where}`"


def resolve_features(
    requested: Mapping[str, Sequence[str]],
    available: Mapping[str, Any],
    defaults: Mapping[str, str],
    modalities: Sequence[str],
    cache: Any = None,
) -> Selection:
    """Full set names per modality of the run (MODALITIES order): the requested ones, checked
    against the sets the cache holds, else the modality's default set.

    `available` maps full names to anything with a `kind` (SetInfo or LoadedSet). Choices
    for modalities the run does not use are dropped, so one `features` value serves every
    modality subset of an ablation; the resolved value saved with the run says what was used.
    """
    where = f"Cache {cache}" if cache is not None else "The cache"
    out: Selection = {}
    for modality in (m for m in MODALITIES if m in modalities):
        held = [n for n in available if n.partition("/")[0] == modality]
        names = [full_name(modality, n) for n in requested.get(modality, [])]
        if not names:
            default = defaults.get(modality)
            if not default:
                raise CacheError(
                    f"{where} holds no {modality} features (no {modality} feature set); extract one with "
                    f"{extract_hint(modality, cache)} or leave {modality} out of --modalities."
                )
            names = [default]
        for name in names:
            if name not in available:
                listed = ", ".join(n.partition("/")[2] for n in held) or "none"
                raise UnknownFeatureSetError(
                    f"{where} has no feature set {name} (its {modality} sets: {listed}); extract it with "
                    f"{extract_hint(modality, cache)} or choose one of those."
                )
        out[modality] = names
    return out


def default_sets(sets: Mapping[str, Any]) -> dict[str, str]:
    """Each modality's first set in `sets` order: the default for in-memory splits (a cache
    says its own with `CacheInfo.default_sets()`)."""
    out: dict[str, str] = {}
    for name in sets:
        out.setdefault(name.partition("/")[0], name)
    return out


# --- fingerprints ---------------------------------------------------------------------------


def is_composite(fingerprint: Any) -> bool:
    return isinstance(fingerprint, dict) and isinstance(fingerprint.get("sets"), dict) and "features" in fingerprint


def selection_of(fingerprint: Any) -> Selection | None:
    """The sets a composite fingerprint (a composed split's, or a checkpoint's) names; None for old ones."""
    if not is_composite(fingerprint):
        return None
    return {m: list(fingerprint["features"][m]) for m in MODALITIES if fingerprint["features"].get(m)}


def recorded_pooling(set_fingerprint: Any) -> str | None:
    """The pooling a text set's encoder was trained for, when its fingerprint records it."""
    if not isinstance(set_fingerprint, dict):
        return None
    for holder in (set_fingerprint, set_fingerprint.get("text_encoder"), set_fingerprint.get("encoder")):
        if isinstance(holder, dict):
            for key in ("text_pooling", "pooling"):
                if holder.get(key) in ("cls", "mean"):
                    return holder[key]
    return None


def composite_fingerprint(
    rows: dict[str, Any], selection: Mapping[str, Sequence[str]], set_fingerprints: Mapping[str, Any]
) -> dict[str, Any]:
    """{"rows": the cache's own fingerprint, "features": {modality: names}, "sets": {name: its
    fingerprint}, "text_pooling": the one text set's recorded pooling (when it records one)}."""
    names = [n for m in MODALITIES for n in selection.get(m, [])]
    out: dict[str, Any] = {
        "rows": rows,
        "features": {m: list(selection[m]) for m in MODALITIES if selection.get(m)},
        "sets": {n: set_fingerprints[n] for n in names},
    }
    texts = list(selection.get("text", []))
    pooling = recorded_pooling(set_fingerprints[texts[0]]) if len(texts) == 1 else None
    if pooling:
        out["text_pooling"] = pooling
    return out


def describe_fingerprint_difference(expected: dict[str, Any], found: dict[str, Any]) -> str:
    """Like `emo.cache.fingerprint.describe_difference`, but per set for composite fingerprints
    (`audio/whisper-base: weights ('ab..' vs 'cd..')`), so the sentence names what changed."""
    from emo.cache.fingerprint import describe_difference

    if not (is_composite(expected) and is_composite(found)):
        return describe_difference(expected, found)
    parts = []
    if expected["features"] != found["features"]:
        parts.append(f"feature sets ({format_features(found['features'])} vs {format_features(expected['features'])})")
    for name in sorted(set(expected["sets"]) & set(found["sets"])):
        if expected["sets"][name] != found["sets"][name]:
            parts.append(f"{name}: {describe_difference(expected['sets'][name] or {}, found['sets'][name] or {})}")
    if expected.get("rows") != found.get("rows"):
        parts.append(f"rows: {describe_difference(expected.get('rows') or {}, found.get('rows') or {})}")
    if not parts and expected.get("text_pooling") != found.get("text_pooling"):
        parts.append(f"text_pooling ({found.get('text_pooling')!r} vs {expected.get('text_pooling')!r})")
    return "; ".join(parts[:3]) + (f" and {len(parts) - 3} more" if len(parts) > 3 else "")


def require_same_fingerprint(expected: dict[str, Any], found: dict[str, Any], what: str) -> None:
    """`emo.cache.require_same` that names the differing set of composite fingerprints."""
    from emo.cache.fingerprint import fingerprint_digest
    from emo.fuse.checkpoint import plain

    if fingerprint_digest(plain(expected)) != fingerprint_digest(plain(found)):
        raise CacheError(
            f"{what} was made with different encoders or preprocessing: "
            f"{describe_fingerprint_difference(plain(expected), plain(found))}."
        )
