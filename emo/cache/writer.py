"""Writing a feature cache shard by shard, so extraction can be killed and resumed anywhere.

`emo.extract` computes the features; this module owns how they reach the disk. A split
has one row table and any number of feature sets (`emo.cache.sets`); each is written in
shards numbered alike. Each shard is written under a temporary name, flushed, read back,
renamed into place, and only then gets its sidecar (`emo.cache.shard_files`) - so "sidecar
present and matching" means "finished", and a re-run skips exactly the finished shards,
per set. Processes writing disjoint shards (`--num-shards N --shard-index i`) never touch
the same file; `lock` (`emo.cache.locks`) refuses a second run that would write the same
shards or the same set with other settings. Adding a set never opens another set's files.

Two ways in: `write_clips` takes per-clip results (`emo.cache.clips.ClipRecord`) and
builds the shards' columns itself, which is how extraction writes, so the packing of
ragged sequences, presence flags and failure records lives next to the reader that
relies on it; `write_set` and `write_rows` take one shard's ready-made columns (how
`emo cache upgrade` files an older cache's shards).

Nothing reaches the disk before there is something to keep: with `defer_create=True` the
constructor only checks that an existing cache is compatible, and the cache folder,
cache.json, config.toml and set.json files are made just before the first shard is
written, so a run that fails before finishing any work leaves nothing behind.

Overwrite semantics: a set registered with a fingerprint that differs from the one on
disk is refused in one sentence, or with `overwrite=True` that set alone is removed
(when the first shard is written) and rebuilt; other sets and the row table stay. With
`overwrite=True` every shard this writer is asked about counts as unfinished and is
replaced atomically when rewritten, and `finalize(..., expected_shards=K)` removes shards
numbered K or above left from an earlier, larger run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from emo.cache import layout, locks, storage
from emo.cache.clips import ClipRecord, build_row_columns, build_set_columns
from emo.cache.fingerprint import describe_difference, fingerprint_digest
from emo.cache.manifest import list_sets, now_iso, read_plan, read_sidecar, sidecar_problem, write_manifest
from emo.cache.metadata import NotACacheError, write_sealed
from emo.cache.repair import repair_set_meta, repaired_cache_meta
from emo.cache.digests import ROWS_FINGERPRINT, rows_sha256, set_digest, texts_sha256
from emo.cache.records import clean_failure, create_cache, json_safe, save_config, set_meta
from emo.cache.schema import SCHEMA_VERSION, describe_arrays, normalize_rows, normalize_set
from emo.cache.shard_files import reports_disk_full, write_shard_files
from emo.cache.sets import SetSpec
from emo.errors import CacheError, ConfigError


class CacheWriter:
    """Create or reopen the cache at `root` for writing row tables and feature sets.

    `config` (a config dataclass or a plain dict) is saved as `config.toml` (and beside
    each set this writer creates). `compression` is "none" (default, fastest to load) or
    "fast" (HDF5 LZF / Zarr Blosc-LZ4; see bench/cache_load.py). `defer_create=True` checks an existing
    cache now but creates it only when the first shard or split plan is written.
    """

    def __init__(
        self,
        root: str | Path,
        fmt: str = "h5",
        config: Any = None,
        overwrite: bool = False,
        compression: str = "none",
        defer_create: bool = False,
    ) -> None:
        if fmt not in layout.FORMATS:
            raise ConfigError(f"Cache format {fmt!r} is not one of {', '.join(layout.FORMATS)}.")
        if compression not in storage.COMPRESSIONS:
            raise ConfigError(f"Cache compression {compression!r} is not one of {', '.join(storage.COMPRESSIONS)}.")
        self.root = Path(root)
        self.fingerprint = dict(ROWS_FINGERPRINT)
        self.digest = fingerprint_digest(self.fingerprint)
        self.fmt = fmt
        self.overwrite = overwrite
        self.compression = compression
        self.sets: dict[str, SetSpec] = {}  # registered this run, by full name
        self.set_digests: dict[str, str] = {}
        self._replace: set[str] = set()  # sets to remove before their first shard (overwrite)
        self._created_sets: set[str] = set()
        self._rewritten: dict[tuple[str, str | None], set[int]] = {}  # shards written (overwrite mode)
        self._config = config
        self._ready = False
        self._held: locks.WriterLocks | None = None  # see `lock`

        if self.root.exists() and not self.root.is_dir():
            raise NotACacheError(f"Cache path {self.root} is a file; choose a folder with --cache.")
        existing = repaired_cache_meta(self.root, fmt, self.fingerprint)  # a damaged cache.json is rewritten
        if existing is not None and self._differs(existing) and not overwrite:
            raise CacheError(self._mismatch_sentence(existing))
        if not defer_create:
            self._make_ready()

    @reports_disk_full(lambda self: self.root)
    def _make_ready(self) -> None:
        """Replace a cache of another format (overwrite), create a missing one, clean dead temporaries."""
        if self._ready:
            return
        existing = repaired_cache_meta(self.root, self.fmt, self.fingerprint)  # again: another process may have made it
        if existing is not None and self._differs(existing):
            if not self.overwrite:
                raise CacheError(self._mismatch_sentence(existing))
            layout.wipe_cache(self.root)
            existing = None
        if existing is None:
            self._create(self._config)
        elif self._config is not None and not (self.root / layout.CONFIG_FILE).exists():
            # A run killed between cache.json and config.toml: the resumed run saves it.
            save_config(self._config, self.root / layout.CONFIG_FILE)
        layout.clean_dead_temps(self.root)
        self._ready = True

    def _differs(self, existing: dict[str, Any]) -> bool:
        return existing["fingerprint_digest"] != self.digest or existing["format"] != self.fmt

    def _mismatch_sentence(self, existing: dict[str, Any]) -> str:
        if existing["format"] != self.fmt:
            what = f"it is stored as {existing['format']}, not {self.fmt}"
        else:
            what = "its layout differs: " + describe_difference(self.fingerprint, existing.get("fingerprint", {}))
        return (
            f"Feature cache {self.root} was made differently ({what}); "
            "pass --overwrite to replace it or choose another --cache."
        )

    def _create(self, config: Any) -> None:
        winner = create_cache(self.root, self.fmt, self.fingerprint, config)
        # Another process may have created the cache at the same moment with a different
        # format; whichever rename won, check we agree with it.
        if self._differs(winner):
            raise CacheError(self._mismatch_sentence(winner))

    # -- feature sets ---------------------------------------------------------------------

    def add_set(self, spec: SetSpec) -> str:
        """Register a set this writer will write; returns its digest.

        A set of the same name already in the cache must have been made the same way,
        else one sentence says how it differs and what to do (another `--name`, or
        `--overwrite` to replace that set alone). Nothing is written yet.
        """
        digest = set_digest(spec)
        existing = self.check_set(spec)
        if existing is not None and existing.get("fingerprint_digest") != digest:
            self._replace.add(spec.name)
        if existing is None:  # a damaged set.json is rewritten when its shards are this spec's (emo.cache.repair)
            repair_set_meta(self.root, spec, digest, self.overwrite, self._config)
        self.sets[spec.name] = spec
        self.set_digests[spec.name] = digest
        return digest

    def check_set(self, spec: SetSpec) -> dict | None:
        """The record of the cache's set named like `spec` (None when there is none), after one
        sentence when it was made differently and this writer may not replace it. Reads only:
        `emo extract` asks with the encoders' planned specs before it loads any model."""
        existing = list_sets(self.root).get(spec.name) if self.root.is_dir() else None
        if existing is not None and existing.get("fingerprint_digest") != set_digest(spec) and not self.overwrite:
            old = {
                k: existing.get(k)
                for k in ("kind", "dim", "arrays", "frames", "views", "layers", "encoder", "fingerprint")
            }
            new = {k: v for k, v in spec.describe().items() if k in old}
            raise CacheError(
                f"Feature set {spec.name} in {self.root} was made differently "
                f"({describe_difference(new, old)}); choose another name with --name, or pass --overwrite "
                "to replace that set."
            )
        return existing

    @reports_disk_full(lambda self, name: layout.set_dir(self.root, name))
    def _set_ready(self, name: str) -> None:
        """Replace (overwrite) or create the set's folder and set.json before its first shard."""
        if name in self._created_sets:
            return
        self._make_ready()
        folder = layout.set_dir(self.root, name)
        if name in self._replace:
            layout.remove_path(folder)
            self._replace.discard(name)
        folder.mkdir(parents=True, exist_ok=True)
        meta_path = folder / layout.SET_FILE
        if not meta_path.is_file():
            write_sealed(meta_path, set_meta(self.sets[name], self.set_digests[name], now_iso()))
            if self._config is not None:
                save_config(self._config, folder / layout.CONFIG_FILE)
        self._created_sets.add(name)

    def lock(self, specs: Sequence[SetSpec], splits: Sequence[str], num_shards: int = 1, shard_index: int = 0):
        """Hold the writer locks of these sets and the row table for `splits` (shards k with
        k % num_shards == shard_index) until `.release()` (`emo.cache.locks`): a run writing
        them with other settings, or the same shards, is refused in one sentence."""
        digests = {spec.name: set_digest(spec) for spec in specs}
        scope = locks.Scope(tuple(splits), num_shards, shard_index)
        self._held = locks.acquire(self.root, {**digests, None: self.digest}, scope)
        return self._held

    # -- writing --------------------------------------------------------------------------

    def split_dir(self, split: str) -> Path:
        return layout.part_dir(self.root, split)

    def part_done(self, split: str, shard_index: int, set_name: str | None = None) -> bool:
        """True if the row table's (or the set's) shard and its matching sidecar are in
        place (and this writer was not asked to overwrite it)."""
        if self.overwrite and shard_index not in self._rewritten.get((split, set_name), set()):
            return False
        if set_name is not None and set_name in self._replace:
            return False
        folder = layout.part_dir(self.root, split, set_name)
        digest = self.digest if set_name is None else self.set_digests[set_name]
        return sidecar_problem(folder, read_sidecar(folder, shard_index), self.fmt, digest) is None

    def shard_done(self, split: str, shard_index: int) -> bool:
        """The row table's shard and every registered set's shard are finished."""
        return self.part_done(split, shard_index) and all(
            self.part_done(split, shard_index, name) for name in self.sets
        )

    def write_clips(
        self,
        split: str,
        shard_index: int,
        clips: Sequence[ClipRecord],
        sets: Sequence[str] | None = None,
        stats: dict[str, Any] | None = None,
    ) -> None:
        """Write one shard's `sets` (default: every registered set), then its row table
        (unless finished), each atomically, from per-clip results.

        The row table goes last: in a cache being made, its sidecar then says the whole
        shard is done, so a run killed in between redoes the shard, never a half of it."""
        ends = [[int(c.dialogue_id), int(c.utterance_id)] for c in (clips[0], clips[-1])] if clips else None
        for name in self.sets if sets is None else sets:
            arrays, failures = build_set_columns(clips, self.sets[name])
            self.write_set(split, name, shard_index, arrays, failures, stats, keys=ends)
        rows = normalize_rows(build_row_columns(clips))
        if not self._rows_hold(split, shard_index, rows):
            self.write_rows(split, shard_index, rows, stats)

    def _rows_hold(self, split: str, shard_index: int, rows: dict[str, Any]) -> bool:
        """The row table's shard is finished and holds exactly these rows: it is kept as it
        is (also with overwrite, which replaces sets; the rows are the annotations)."""
        folder = self.split_dir(split)
        sidecar = read_sidecar(folder, shard_index)
        return sidecar_problem(folder, sidecar, self.fmt, self.digest) is None and (
            sidecar.get("rows_sha256") == rows_sha256(rows) and sidecar.get("texts_sha256") == texts_sha256(rows)
        )

    def write_rows(self, split: str, shard_index: int, rows: dict[str, Any], stats: dict[str, Any] | None = None):
        """Write one row-table shard atomically and return its sidecar."""
        arrays = normalize_rows(rows)
        self._make_ready()
        extra = {"rows_sha256": rows_sha256(arrays), "texts_sha256": texts_sha256(arrays)}
        return self._write_part(split, None, int(shard_index), arrays, [], stats, extra, self.digest)

    def write_set(
        self,
        split: str,
        name: str,
        shard_index: int,
        arrays: dict[str, Any],
        failures: list[dict[str, Any]] | None = None,
        stats: dict[str, Any] | None = None,
        keys: tuple[list[int], list[int]] | None = None,
    ) -> dict[str, Any]:
        """Write one shard of a registered set atomically and return its sidecar. Its rows
        must be the row table's shard of the same index: checked here when that is already
        written, else on load against `keys` (its first and last (dialogue, utterance))."""
        spec = self.sets[name]
        arrays = normalize_set(spec, arrays)
        failures = [clean_failure(f) for f in (failures or [])]
        self._set_ready(name)
        # The row table's shard, when it is finished and stays (with overwrite, it is rewritten after).
        rows_side = (
            read_sidecar(self.split_dir(split), int(shard_index)) if self.part_done(split, shard_index) else None
        )
        n = len(arrays["present"])
        if rows_side is not None and int(rows_side.get("rows", -1)) != n:
            raise ValueError(f"{name} shard {shard_index} has {n} rows, the row table's has {rows_side.get('rows')}")
        extra = {
            "set": name,
            "present": int(np.count_nonzero(arrays["present"])),
            "first_key": rows_side.get("first_key") if rows_side else (keys[0] if keys else None),
            "last_key": rows_side.get("last_key") if rows_side else (keys[-1] if keys else None),
        }
        return self._write_part(split, name, int(shard_index), arrays, failures, stats, extra, self.set_digests[name])

    def _write_part(self, split, set_name, shard_index, arrays, failures, stats, extra, digest) -> dict[str, Any]:
        """One shard and its sidecar, verified on disk before either gets its name (`emo.cache.shard_files`)."""
        if shard_index < 0:
            raise ValueError("shard_index must be >= 0")
        attrs = {
            "emo_schema_version": SCHEMA_VERSION,
            "fingerprint_digest": digest,
            "split": split,
            "shard_index": shard_index,
            "set": set_name or "",
        }

        def describe(files: dict[str, Any], timings: dict[str, float]) -> dict[str, Any]:
            sidecar: dict[str, Any] = {
                "schema_version": SCHEMA_VERSION,
                "format": self.fmt,
                "fingerprint_digest": digest,
                "split": split,
                "shard_index": shard_index,
                "file": layout.shard_data_name(shard_index, self.fmt),
                "rows": len(arrays["present"] if set_name else arrays["emotion"]),
            }
            if set_name is None:
                keys = list(zip(arrays["dialogue_id"].tolist(), arrays["utterance_id"].tolist()))
                sidecar["first_key"] = list(keys[0]) if keys else None
                sidecar["last_key"] = list(keys[-1]) if keys else None
            sidecar.update(extra)
            sidecar.update(
                {
                    "arrays": describe_arrays(arrays),
                    "compression": self.compression,
                    "files": files,
                    "sha256": layout.combined_sha256(files),
                    "failures": failures,
                    "stats": dict(stats or {}, **timings),
                    "written": now_iso(),
                }
            )
            return sidecar

        if self._held is not None:
            self._held.check()  # another process took this run's lock over: write nothing more
        folder = layout.part_dir(self.root, split, set_name)
        sidecar = write_shard_files(folder, shard_index, self.fmt, arrays, attrs, self.compression, describe)
        self._rewritten.setdefault((split, set_name), set()).add(shard_index)
        return sidecar

    @reports_disk_full(lambda self, split, *args, **kwargs: layout.part_dir(self.root, split))
    def finalize(
        self,
        split: str,
        total_rows: int | None = None,
        ignored_videos: int = 0,
        extra: dict[str, Any] | None = None,
        expected_shards: int | None = None,
    ) -> dict[str, Any]:
        """Record the split's plan and rebuild `manifest.json`; returns the manifest.

        Every process of a multi-process run may call this (with the same totals); the
        split (or a set of it) is complete once all `expected_shards` shards (or
        `total_rows` rows) exist. `ignored_videos` counts clips on disk with no annotation
        row (e.g. MELD's unlabeled videos), reported by `emo cache info`.
        """
        self._make_ready()
        split_dir = self.split_dir(split)
        split_dir.mkdir(parents=True, exist_ok=True)
        plan = read_plan(self.root, split)  # {} when damaged: rewritten from this run's totals
        plan["split"] = split
        if total_rows is not None:
            plan["total_rows"] = int(total_rows)
        if expected_shards is not None:
            plan["expected_shards"] = int(expected_shards)
            folders = [split_dir] + [layout.part_dir(self.root, split, name) for name in self.sets]
            for folder in folders:
                for child in folder.iterdir() if folder.is_dir() else []:
                    parsed = layout.parse_shard_name(child.name)
                    if parsed and parsed[0] >= int(expected_shards):
                        layout.remove_path(child)
        plan["ignored_videos"] = int(ignored_videos or plan.get("ignored_videos", 0) or 0)
        if extra:
            plan["extra"] = {**plan.get("extra", {}), **json.loads(json.dumps(extra, default=json_safe))}
        plan["updated"] = now_iso()
        write_sealed(split_dir / layout.SPLIT_FILE, plan)
        return write_manifest(self.root)
