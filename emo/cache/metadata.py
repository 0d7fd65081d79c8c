"""The metadata files readers trust - cache.json, `<split>/split.json`, `sets/<m>/<n>/set.json` -
written sealed, read back checked, and damage described in one sentence.

Why a seal: these small JSON files decide what the cached numbers mean (the cache's
format, a split's row count, a set's kind, dim and fingerprint), and a hand edit or a bad
disk block changes them without any shard checksum noticing: an edited `dim` or `n_mels`
was believed, and a deleted or truncated set.json made its set vanish, so `emo fit`
silently trained on another set of that modality. Each is therefore written by
`write_sealed` with a `"digest"` field (SHA-256 of the canonical JSON - sorted keys, no
spaces - of everything else; self-describing, so no second file can drift from it), and
every reader goes through this module: a file that is empty, truncated, not JSON, or
whose digest does not match is `Damage`, and so is a set folder holding shards but no
readable set.json. Readers then refuse (`DamagedMetadataError`, exit 1, naming the file
and the `emo extract` that rewrites it), `emo cache verify` reports it, `emo cache info`
shows it, and re-running that extraction repairs it (`emo.cache.repair`).

Caches written before the seal (no `"digest"` anywhere) still load: a file without one is
accepted as it is - a stripped digest cannot be told from a missing one, the price of
reading those caches without re-extracting - `emo cache verify` warns about it
(`unsealed_files`) and `emo cache upgrade` seals it in place.

Not sealed, and why: manifest.json is derived (see `emo.cache.manifest`): no reader trusts
it, and the processes of one run each rewrite it, so it may lag the disk without being
wrong. config.toml (the cache's and each set's) never describes the numbers to a reader:
`emo predict` rebuilds a set's encoder from it and refuses it unless the rebuilt
fingerprint equals the one the run recorded from the sealed set.json. Shard sidecars
carry the SHA-256 of their data, which `emo cache verify` recomputes.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emo.cache import layout
from emo.cache.launches import is_launcher_dir, last_launch
from emo.cache.schema import SCHEMA_VERSION
from emo.cache.sealed import (  # noqa: F401 - re-exported: readers import the seal from here
    DIGEST_KEY,
    DIGEST_PROBLEM,
    content_digest,
    load_sealed,
    sealed,
    write_sealed,
)
from emo.errors import CacheError, UsageError
from emo.labels import MODALITIES

_SET_KEYS = {"name": str, "modality": str, "kind": str, "dim": int, "fingerprint_digest": str}


class MissingCacheError(CacheError, UsageError):
    """The cache path the user gave does not exist (exit 2, like any path that is not there)."""


class NotACacheError(CacheError, UsageError):
    """The path the user gave as a cache is a file, or a folder that is not a cache (exit 2: the
    wrong path was given)."""


class OldCacheError(CacheError):
    """A cache written by an older emo (cache version 1), which `emo cache upgrade` converts."""


class DamagedMetadataError(CacheError):
    """A metadata file a reader trusts is missing, unreadable or fails its digest (exit 1)."""


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# --- damage, in words ----------------------------------------------------------------------


@dataclass(frozen=True)
class Damage:
    """One damaged metadata file: which, what is wrong, what it makes unusable, the fix."""

    root: Path
    file: str  # relative to the cache, e.g. sets/audio/mel/set.json
    problem: str  # "is missing", DIGEST_PROBLEM, ...
    subject: str  # "feature set audio/mel", "split 'train'", "" for cache.json (the whole cache)
    repair: str  # the command that rewrites it

    @property
    def set_name(self) -> str | None:
        return self.subject.removeprefix("feature set ") if self.subject.startswith("feature set ") else None

    @property
    def line(self) -> str:
        """`verify`'s line (no final stop): the file, the problem, the repair."""
        so = f", so {self.subject} cannot be used" if self.subject else ""
        return f"{self.file} {self.problem}{so}; {self.repair}"

    @property
    def sentence(self) -> str:
        """The refusal of a reader (fit, eval, load_split, info)."""
        return f"Feature cache {self.root} is damaged: {self.line} (then check it with `emo cache verify {self.root}`)."

    def error(self) -> DamagedMetadataError:
        return DamagedMetadataError(self.sentence)


def cache_damage(root: Path, problem: str) -> Damage:
    return Damage(
        Path(root),
        layout.CACHE_FILE,
        problem,
        "",
        "re-run the same `emo extract` into this cache to rewrite it (finished shards are kept)",
    )


def split_damage(root: Path, split: str, problem: str) -> Damage:
    return Damage(
        Path(root),
        f"{split}/{layout.SPLIT_FILE}",
        problem,
        f"split '{split}'",
        f"re-run the same `emo extract --split {split}` to rewrite it (finished shards are kept)",
    )


def set_damage(root: Path, name: str, problem: str) -> Damage:
    folder = f"{layout.SETS_DIR}/{name}"
    options = (
        f" (its options are in {folder}/{layout.CONFIG_FILE})"
        if (Path(root) / folder / layout.CONFIG_FILE).is_file()
        else ""
    )
    return Damage(
        Path(root),
        f"{folder}/{layout.SET_FILE}",
        problem,
        f"feature set {name}",
        f"re-run the `emo extract` that made it{options} to rewrite it (its finished shards are kept)",
    )


# --- cache.json ----------------------------------------------------------------------------


def upgrade_hint(root: Path) -> str:
    return (
        f"Feature cache {root} was written by an older emo (cache version 1); convert it once with "
        f"`emo cache upgrade {root}` (nothing is re-extracted)."
    )


def _annotation_csvs(root: Path) -> list[str]:
    """MELD annotation CSVs in `root` (or its train/dev/test sub-folders): a dataset folder, not a cache."""
    found = sorted(p.name for p in root.glob("*_sent_emo.csv"))
    return found or sorted(p.name for p in root.glob("*/*_sent_emo.csv"))


def read_cache_meta(root: Path) -> dict[str, Any]:
    """cache.json of the cache at `root` (without its digest), or one clear sentence saying
    why there is none or why it cannot be trusted."""
    root = Path(root)
    if not root.exists():
        raise MissingCacheError(f"Feature cache {root} does not exist; create it with `emo extract --cache {root}`.")
    if not root.is_dir():
        raise NotACacheError(f"Feature cache {root} is a file, not a cache folder; pass the folder emo extract wrote.")
    meta_path = root / layout.CACHE_FILE
    if not meta_path.is_file():
        launch = last_launch(root)
        if launch is not None and not existing_content(root):  # launched, no shard written yet: unfinished, exit 1
            raise CacheError(
                f"Feature cache {root} is incomplete: {launch['title']} was launched into it and has not written a "
                f"shard yet; follow it with `emo cache status {root}` and run this command once the cache is complete."
            )
        csvs = _annotation_csvs(root)
        if csvs:
            raise NotACacheError(
                f"{root} is a dataset folder (it holds {csvs[0]}), not an emo feature cache; extract it first "
                f"with `emo extract --split all --data-root {root} --cache CACHE` and pass that CACHE."
            )
        raise NotACacheError(
            f"{root} is not an emo feature cache (it has no {layout.CACHE_FILE}); "
            f"create one with `emo extract --cache {root}`."
        )
    meta, problem, _ = load_sealed(meta_path)
    version = meta.get("schema_version") if meta is not None else None
    if problem is None and (not isinstance(version, int) or meta.get("format") not in layout.FORMATS):
        problem = "is not a valid emo cache description"
    if problem is not None or meta is None:
        raise cache_damage(root, problem or "is damaged").error()
    if version < SCHEMA_VERSION:
        raise OldCacheError(upgrade_hint(root))
    if version > SCHEMA_VERSION:
        raise CacheError(
            f"Feature cache {root} uses cache schema {version}, newer than this emo understands "
            f"({SCHEMA_VERSION}); upgrade emo."
        )
    return meta


def existing_cache_meta(root: Path) -> dict[str, Any] | None:
    """cache.json of the cache at `root`; None where there is no cache yet (a missing or
    empty folder, or one holding only launcher files); one sentence for any other folder."""
    if not root.exists():
        return None
    if (root / layout.CACHE_FILE).exists():
        return read_cache_meta(root)
    if existing_content(root):
        csvs = _annotation_csvs(root)
        held = f" (it is a dataset folder: it holds {csvs[0]})" if csvs else ""
        raise NotACacheError(
            f"{root} is not empty and is not an emo feature cache{held}; choose a new or empty folder with --cache."
        )
    return None


def existing_content(root: Path) -> list[str]:
    """What a folder holds besides hidden files and launcher folders: a cache not started yet holds nothing."""
    return [p.name for p in Path(root).iterdir() if not p.name.startswith(".") and not is_launcher_dir(p)]


# --- split.json ----------------------------------------------------------------------------


def plan_and_damage(root: Path, split: str) -> tuple[dict[str, Any], Damage | None]:
    """The split's plan (split.json: expected rows and shards; {} when none is written yet
    or it is damaged) and its damage, if any. A damaged plan reads as no plan, so the
    split counts as unfinished everywhere and `emo extract` rewrites it."""
    path = Path(root) / split / layout.SPLIT_FILE
    if not path.exists():
        return {}, None
    plan, problem, _ = load_sealed(path)
    if problem is not None or plan is None:
        return {}, split_damage(root, split, problem or "is damaged")
    return plan, None


def read_plan(root: Path, split: str) -> dict[str, Any]:
    """The split's plan, {} when none is written yet or it is damaged."""
    return plan_and_damage(root, split)[0]


# --- set.json ------------------------------------------------------------------------------


def set_folders(root: Path) -> list[Path]:
    """Every feature set's folder (`sets/<modality>/<name>`, never a hidden leftover)."""
    base = Path(root) / layout.SETS_DIR
    if not base.is_dir():
        return []
    return [
        folder
        for modality in sorted(base.iterdir())
        if modality.is_dir() and modality.name in MODALITIES
        for folder in sorted(modality.iterdir())
        if folder.is_dir() and not folder.name.startswith(".")
    ]


def _has_shards(folder: Path) -> bool:
    return any(layout.parse_shard_name(p.name) for split in folder.iterdir() if split.is_dir() for p in split.iterdir())


def _set_problem(meta: dict[str, Any], name: str) -> str | None:
    if meta.get("name") != name:
        return f"names feature set {meta.get('name')}, not {name} (was its folder renamed or copied?)"
    for key, kind in _SET_KEYS.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            return f"has no valid '{key}'"
    layers = meta.get("layers")
    if meta["kind"] == "layers" and not (
        isinstance(layers, list) and layers and all(isinstance(i, int) and not isinstance(i, bool) for i in layers)
    ):
        return "has no valid 'layers'"
    return None


def scan_sets(root: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Damage]]:
    """(set.json of every sound feature set by full name, oldest first; the damage of every
    set folder that holds a set.json that cannot be trusted, or shards but no set.json).

    A folder with neither is a run killed between making it and writing set.json: nothing."""
    found, damaged = [], {}
    for folder in set_folders(root):
        name = f"{folder.parent.name}/{folder.name}"
        path = folder / layout.SET_FILE
        if not path.exists() and not _has_shards(folder):
            continue
        meta, problem, _ = load_sealed(path)
        if problem == "is missing":
            problem = "is missing (the set's folder holds shards but no set.json)"
        if problem is None and meta is not None:
            problem = _set_problem(meta, name)
        if problem is not None or meta is None:
            damaged[name] = set_damage(root, name, problem or "is damaged")
        else:
            found.append(meta)
    found.sort(key=lambda m: (str(m.get("created", "")), m["name"]))
    return {m["name"]: m for m in found}, damaged


def list_sets(root: Path) -> dict[str, dict[str, Any]]:
    """set.json of every sound feature set in the cache, by full name, oldest first (the
    damaged ones are `damaged_sets`: no reader may treat them as absent)."""
    return scan_sets(root)[0]


def damaged_sets(root: Path) -> dict[str, Damage]:
    return scan_sets(root)[1]


def default_sets(sets: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each modality's default set: the first one extracted (the seed design's, in a cache
    made by a plain `emo extract`)."""
    defaults: dict[str, str] = {}
    for name, meta in sets.items():
        defaults.setdefault(str(meta.get("modality")), name)
    return defaults


# --- the whole cache ----------------------------------------------------------------------


def split_names(root: Path) -> list[str]:
    """Folders of `root` that hold a split plan, a sidecar or a shard."""
    splits = []
    for child in sorted(Path(root).iterdir()):
        if not child.is_dir() or child.name.startswith(".") or is_launcher_dir(child) or child.name == layout.SETS_DIR:
            continue
        if (child / layout.SPLIT_FILE).exists() or any(layout.parse_shard_name(p.name) for p in child.iterdir()):
            splits.append(child.name)
    return splits


def metadata_damage(root: Path) -> list[Damage]:
    """Every damaged metadata file of the cache at `root`: cache.json, each split.json, each set.json."""
    root = Path(root)
    if not (root / layout.CACHE_FILE).exists():
        return []
    out = []
    _, problem, _ = load_sealed(root / layout.CACHE_FILE)
    if problem is not None:
        out.append(cache_damage(root, problem))
    out += [d for d in (plan_and_damage(root, split)[1] for split in split_names(root)) if d is not None]
    out += list(damaged_sets(root).values())
    return out


def unsealed_files(root: Path) -> list[str]:
    """Metadata files (relative names) that are sound but carry no digest: written by an
    emo from before the seal; `emo cache upgrade` seals them."""
    root = Path(root)
    paths = [root / layout.CACHE_FILE] + [root / s / layout.SPLIT_FILE for s in split_names(root)]
    paths += [f / layout.SET_FILE for f in set_folders(root)]
    out = []
    for path in paths:
        data, problem, is_sealed = load_sealed(path) if path.is_file() else (None, "is missing", False)
        if problem is None and not is_sealed:
            out.append(path.relative_to(root).as_posix())
    return out
