"""Which cached feature sets a run trains on, and how they become the trainer's inputs.

A version-2 cache holds any number of feature sets per modality (`emo.cache.sets`); a run
picks some with `--features text=all-MiniLM-L6-v2,audio=mel+whisper-base`. Combining the
sets of one modality is a modelling choice, so it lives here and not in the cache:
`compose` turns the raw sets of a split into the per-modality fields the trainer has
always read (`text_cls`, `visual`, `mel`, `audio_vector`, ...), so `TensorSplit` and the
model need no knowledge of sets, and a split built the old way passes through unchanged.

The composed split's fingerprint names exactly the sets trained on, with each set's own
fingerprint (`composite_fingerprint`), so train/dev compatibility and the checkpoint's
fingerprint digest cover what the model saw - no more, no less: extracting another
encoder into the cache later does not invalidate a run that never used it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from emo.cache.features import SplitFeatures
from emo.errors import CacheError, ConfigError, UsageError
from emo.labels import MODALITIES

Selection = dict[str, list[str]]  # modality -> full set names, concatenated in this order
POOL_CHUNK = 2048  # rows per masked-mean block: keeps float32 temporaries small at MELD size


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


def composite_fingerprint(rows: dict[str, Any], selection: Mapping[str, Sequence[str]],
                          set_fingerprints: Mapping[str, Any]) -> dict[str, Any]:
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


# --- compose ---------------------------------------------------------------------------------


def _vector(loaded, want: str) -> np.ndarray | None:
    """A vector set's [N, D] array for `want` (cls/mean), else its `values`, else its only array."""
    arrays = loaded.arrays
    if want in arrays:
        return arrays[want]
    if "values" in arrays:
        return arrays["values"]
    return next(iter(arrays.values())) if len(arrays) == 1 else None


def pooled(loaded) -> tuple[np.ndarray, np.ndarray]:
    """One set as float32 [N, D] plus bool[N] "has features": a vector set as it is, a frames
    set averaged over ITS OWN valid frames (a row without any valid frame has none: its zeros
    are never passed off as a face or a voice)."""
    present = np.asarray(loaded.present, dtype=bool)
    if loaded.kind == "vector":
        values = _vector(loaded, "values")
        if values is None:
            raise ConfigError(f"Feature set {loaded.name} holds several arrays ({', '.join(loaded.arrays)}) and no "
                              f"`values`; it cannot be used as {loaded.modality} input.")
        return np.asarray(values, dtype=np.float32), present
    if loaded.kind != "frames":
        raise ConfigError(
            f"Feature set {loaded.name} is a {loaded.kind} set; only vector and frames sets can be pooled and "
            f"concatenated (a run takes at most one sequence set, the log-mel)."
        )
    values, mask = loaded.arrays["values"], np.asarray(loaded.arrays["mask"], dtype=bool)
    out = np.zeros((values.shape[0], values.shape[2]), dtype=np.float32)
    for lo in range(0, values.shape[0], POOL_CHUNK):
        weights = mask[lo : lo + POOL_CHUNK, :, None].astype(np.float32)
        block = (values[lo : lo + POOL_CHUNK].astype(np.float32) * weights).sum(1)
        out[lo : lo + POOL_CHUNK] = block / np.maximum(weights.sum(1), 1.0)
    return out, present & mask.any(1)


def _concat(parts: list[np.ndarray | None], dtype=np.float16) -> np.ndarray | None:
    if any(p is None for p in parts) or not parts:
        return None
    if len(parts) == 1:
        return parts[0] if parts[0].dtype == dtype else parts[0].astype(dtype)
    return np.concatenate([np.asarray(p, dtype=dtype) for p in parts], axis=1)


def _all(flags: list[np.ndarray], n: int) -> np.ndarray:
    out = np.ones(n, dtype=bool)
    for f in flags:
        out &= np.asarray(f, dtype=bool)
    return out


def _compose_text(out: SplitFeatures, sets: list) -> None:
    wrong = [s for s in sets if s.kind != "vector"]
    if wrong:
        raise ConfigError(f"Text feature set {wrong[0].name} is a {wrong[0].kind} set; text sets must be vectors.")
    out.text_cls = _concat([_vector(s, "cls") for s in sets])
    out.text_mean = _concat([_vector(s, "mean") for s in sets])
    out.has_text = _all([s.present for s in sets], len(out))


def _pooled_together(sets: list) -> tuple[np.ndarray, np.ndarray]:
    """Several vector/frames sets as one vector per row, and where the row has any of them.

    Each set is pooled over its own valid frames; where a row lacks a set (no face in any
    frame, say) that set's part is zeros and a presence column per set (at the end) says
    so, so the head tells "no face" from a face with zero features and still uses the
    other sets. One set alone is just its pooled values."""
    parts = [pooled(s) for s in sets]
    if len(parts) == 1:
        return _concat([parts[0][0]]), parts[0][1]
    values = [np.where(ok[:, None], v, 0.0) for v, ok in parts]
    flags = [ok[:, None].astype(np.float32) for _, ok in parts]
    present = np.zeros(len(parts[0][1]), dtype=bool)
    for _, ok in parts:
        present |= ok
    return _concat(values + flags), present


def _compose_visual(out: SplitFeatures, sets: list) -> None:
    if len(sets) == 1 and sets[0].kind == "frames":  # as extracted: frame sampling keeps working
        only = sets[0]
        present = np.asarray(only.present, dtype=bool)
        out.visual = only.arrays["values"]
        out.visual_mask = np.asarray(only.arrays["mask"], dtype=bool) & present[:, None]
        out.has_visual = present & out.visual_mask.any(1)
        return
    values, ok = _pooled_together(sets)
    out.visual = values[:, None, :]
    out.visual_mask = ok[:, None].copy()
    out.has_visual = ok


def _compose_audio(out: SplitFeatures, sets: list) -> None:
    n = len(out)
    sequences = [s for s in sets if s.kind == "sequence"]
    others = [s for s in sets if s.kind != "sequence"]
    if len(sequences) > 1:
        raise ConfigError(
            f"A run takes at most one audio sequence set (the log-mel for the mel CNN); "
            f"{' and '.join(s.name for s in sequences)} are both sequences."
        )
    flags = []
    if sequences:
        out.mel, out.mel_index = sequences[0].arrays["values"], sequences[0].arrays["index"]
        flags.append(sequences[0].present)
    if others:
        out.audio_vector, any_vector = _pooled_together(others)
        flags.append(any_vector)
    out.has_audio = _all(flags, n)  # the log-mel (the mel CNN needs it) and at least one of the others


def _failures(features: SplitFeatures, sets: list) -> list[str]:
    """Per row, every distinct failure reason of the selected sets (comma-joined, as the cache
    writes them); a loaded but unselected set's failures are not this run's."""
    reasons: list[list[str]] = [[] for _ in range(len(features))]
    rows = {(int(d), int(u)): i for i, (d, u) in enumerate(zip(features.dialogue_id, features.utterance_id))}
    for loaded in sets:
        for record in loaded.failures or []:
            i = rows.get((int(record.get("dialogue_id", -1)), int(record.get("utterance_id", -1))))
            reason = str(record.get("reason") or record.get("message") or "")
            if i is not None and reason and reason not in reasons[i]:
                reasons[i].append(reason)
    return [",".join(r) for r in reasons]


COMPOSERS = {"text": _compose_text, "audio": _compose_audio, "visual": _compose_visual}


def compose(features: SplitFeatures, selection: Mapping[str, Sequence[str]]) -> SplitFeatures:
    """A split with the per-modality fields filled from `selection`'s sets (see the module
    docstring); `sets` of the result is empty and its fingerprint is the composite one.

    Text: vector sets, `cls`/`mean` arrays (or `values` for both), concatenated along D;
    present where every text set is. Visual: one frames set as it is; several sets (or a
    vector set) pooled each over its own valid frames and concatenated with a presence
    column per set, as one frame, present where any set is. Audio: a sequence set feeds the
    mel CNN, the other sets are pooled and concatenated (as for visual) into
    `audio_vector`; both together feed both, present where the log-mel and any other set are.
    A split without sets (built the old way) is returned unchanged.
    """
    if not features.sets:
        return features
    names = [n for m in MODALITIES for n in selection.get(m, [])]
    missing = [n for n in names if n not in features.sets]
    if missing:
        held = ", ".join(features.sets) or "none"
        modality = missing[0].partition("/")[0]
        raise CacheError(
            f"The cache's '{features.split}' split has no feature set {missing[0]} (it has {held}); "
            f"extract it with {extract_hint(modality, features.extra.get('cache'), missing[0].partition('/')[2])}."
        )
    n = len(features)
    out = dataclasses.replace(
        features, sets={}, extra=dict(features.extra), text_cls=None, text_mean=None, visual=None,
        visual_mask=None, mel=None, mel_index=None, audio_vector=None,
        has_text=np.zeros(n, dtype=bool), has_audio=np.zeros(n, dtype=bool), has_visual=np.zeros(n, dtype=bool),
    )  # fmt: skip
    chosen = [features.sets[name] for name in names]
    for modality in MODALITIES:
        if selection.get(modality):
            COMPOSERS[modality](out, [features.sets[name] for name in selection[modality]])
    truncated = np.zeros(n, dtype=bool)  # the selected sets' only: a loaded but unused set's cut clip is not ours
    for loaded in chosen:
        truncated = truncated | np.asarray(loaded.truncated, dtype=bool)
    out.truncated = truncated
    out.failure = _failures(features, chosen)
    out.fingerprint = composite_fingerprint(
        features.fingerprint, selection, {name: features.sets[name].fingerprint for name in names}
    )
    return out
