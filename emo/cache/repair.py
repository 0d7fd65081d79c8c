"""How re-running `emo extract` repairs damaged metadata, and how `emo cache upgrade` seals old metadata.

Each damaged file (`emo.cache.metadata`) is rewritten from evidence that is itself checked,
never from the damaged file:
- cache.json only says the format and the row table's fingerprint, and every shard's
  sidecar repeats both: `repaired_cache_meta` rewrites it when the sidecars agree with
  the writer (exactly what a fresh run would write); when they disagree it hands back what
  the sidecars say, so the writer refuses the cache as made differently (or, with
  --overwrite, replaces it) as it would any other.
- split.json is the run's own plan: `CacheWriter.finalize` reads a damaged one as absent
  and writes it anew from the annotations.
- set.json is the spec of the encoder the re-run loads: `repair_set_meta` keeps the set's
  shards when their sidecars record that spec's digest (that encoder made them) and
  rewrites set.json; shards made otherwise are refused unless --overwrite replaces the
  set. The rewritten `created`, which decides each modality's default set, is when the
  set's first shard was written: set.json is written just before it, so the order among
  sets, and with it the default, stays what it was.
Shards themselves are never trusted on a repair's word: each finished one still has to
match its sidecar, and `emo cache verify` re-checks every checksum.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emo.cache import layout
from emo.cache.fingerprint import fingerprint_digest
from emo.cache.metadata import (
    DamagedMetadataError,
    damaged_sets,
    existing_cache_meta,
    load_sealed,
    now_iso,
    set_folders,
    split_names,
    unsealed_files,
    write_sealed,
)
from emo.cache.schema import SCHEMA_VERSION
from emo.cache.sets import SetSpec
from emo.errors import CacheError


def _sidecars(folder: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(folder.glob("shard-*.json")) if folder.is_dir() else []:
        try:
            data = layout.read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            out.append(data)
    return out


def _folder_sidecars(folder: Path) -> list[dict[str, Any]]:
    """The sidecars of every split of a set's folder."""
    return (
        [s for split in sorted(folder.iterdir()) if split.is_dir() for s in _sidecars(split)] if folder.is_dir() else []
    )


def repaired_cache_meta(root: Path, fmt: str, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """`existing_cache_meta` for a writer of format `fmt` and row fingerprint `fingerprint`.

    A damaged cache.json is rewritten here when every sidecar on disk agrees with this
    writer; otherwise what the sidecars say comes back (nothing is written), for the
    writer's usual "made differently" refusal or --overwrite."""
    from emo.cache.records import create_cache

    try:
        return existing_cache_meta(root)
    except DamagedMetadataError:
        pass
    rows = [s for split in split_names(root) for s in _sidecars(root / split)]
    sets = [s for folder in set_folders(root) for s in _folder_sidecars(folder)]
    formats = {s.get("format") for s in rows + sets}
    digests = {s.get("fingerprint_digest") for s in rows}
    digest = fingerprint_digest(fingerprint)
    if formats <= {fmt} and digests <= {digest}:
        return create_cache(root, fmt, fingerprint, None)
    found = sorted(str(f) for f in formats if f != fmt) or [fmt]
    return {
        "schema_version": SCHEMA_VERSION,
        "format": found[0],
        "fingerprint": {},
        "fingerprint_digest": sorted(str(d) for d in digests - {digest} or {digest})[0],
    }


def repair_set_meta(root: Path, spec: SetSpec, digest: str, overwrite: bool, config: Any = None) -> bool:
    """Repair the damaged set.json of `spec`'s set, if it has one, for a writer registering
    that set; True when set.json was rewritten.

    Its shards' sidecars all recording `digest` means this very spec made them: set.json
    (and the set's config.toml) are rewritten and every shard is kept. Shards made
    otherwise are refused in one sentence, or with --overwrite the damaged set.json is
    removed and the writer extracts the set again (writing a new one with its first shard)."""
    from emo.cache.records import save_config, set_meta

    damage = damaged_sets(root).get(spec.name)
    if damage is None:
        return False
    folder = layout.set_dir(root, spec.name)
    sidecars = _folder_sidecars(folder)
    if {s.get("fingerprint_digest") for s in sidecars} <= {digest}:
        written = sorted(str(s["written"]) for s in sidecars if s.get("written"))
        # set.json is written just before the set's first shard: its time keeps the sets' order (and defaults).
        write_sealed(folder / layout.SET_FILE, set_meta(spec, digest, written[0] if written else now_iso()))
        if config is not None:
            save_config(config, folder / layout.CONFIG_FILE)
        return True
    if not overwrite:
        raise CacheError(
            f"Feature set {spec.name} in {root} is damaged ({damage.file} {damage.problem}) and its shards were "
            "made differently than this run would make them; pass --overwrite to replace that set, or choose "
            "another name with --name."
        )
    layout.remove_path(folder / layout.SET_FILE)
    return False


def seal_old_metadata(root: str | Path) -> list[str]:
    """Add the digest to every sound metadata file written by an emo from before the seal
    (`emo cache upgrade` on a version-2 cache); returns their relative names."""
    root = Path(root)
    names = unsealed_files(root)
    for name in names:
        content, problem, _ = load_sealed(root / name)
        if problem is None and content is not None:
            write_sealed(root / name, content)
    return names
