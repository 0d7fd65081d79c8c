"""Writing a feature cache shard by shard, so extraction can be killed and resumed anywhere.

`emo.extract` computes the features; this module owns how they reach the disk. Each
shard is written under a temporary name, flushed, renamed into place, and only then gets
its sidecar - so "sidecar present and matching" means "finished", and a re-run skips
exactly the finished shards. Processes writing disjoint shards (`--num-shards N
--shard-index i`) never touch the same file, so they need no locks.

Two ways in: `write_clips` takes per-clip results (`emo.cache.clips.ClipRecord`) and
builds the shard's columns itself, which is how extraction writes, so the packing of
ragged mel spectrograms, presence flags and failure records lives next to the reader
that relies on it; `write_shard` takes ready-made columns (tests and benchmarks that
fabricate caches without media).

Nothing reaches the disk before there is something to keep: with `defer_create=True` the
constructor only checks that an existing cache is compatible, and the cache folder,
cache.json and config.toml are made just before the first shard is written, so a run
that fails before finishing any work leaves nothing behind.

Overwrite semantics: `overwrite=True` on a cache made with a different fingerprint or
format wipes the whole cache (every split would otherwise be inconsistent with the new
fingerprint), when the first shard is written if creation is deferred. On a cache with the same fingerprint it wipes nothing up front: every shard
this writer is asked about counts as unfinished and is replaced atomically when
rewritten, and `finalize(..., expected_shards=K)` removes shards numbered K or above left
from an earlier, larger run. That keeps `--overwrite` safe with N concurrent processes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from emo import atomic
from emo.cache import layout, storage
from emo.cache.clips import ClipRecord, ShardSpec, build_columns
from emo.cache.fingerprint import describe_difference, fingerprint_digest
from emo.cache.manifest import now_iso, read_cache_meta, read_sidecar, sidecar_problem, write_manifest
from emo.cache.schema import SCHEMA_VERSION, describe_arrays, modalities_of, normalize_rows
from emo.errors import CacheError, ConfigError


class CacheWriter:
    """Create or reopen the cache at `root` for writing shards made with `fingerprint`.

    `config` (a config dataclass or a plain dict) is saved as `config.toml` when the cache
    is created. `compression` is "none" (default, fastest to load) or "fast" (HDF5 LZF /
    Zarr Blosc-LZ4; see bench/cache_load.py for what it buys). `defer_create=True` checks
    an existing cache now but creates (or, with `overwrite`, replaces) it only when the
    first shard or split plan is written.
    """

    def __init__(
        self,
        root: str | Path,
        fingerprint: dict[str, Any],
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
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        self.digest = fingerprint_digest(self.fingerprint)
        self.fmt = fmt
        self.overwrite = overwrite
        self.compression = compression
        self._rewritten: dict[str, set[int]] = {}  # shards this writer wrote (overwrite mode)
        self._config = config
        self._ready = False

        if self.root.exists() and not self.root.is_dir():
            raise CacheError(f"Cache path {self.root} is a file; choose a folder with --cache.")
        existing = self._existing_meta()
        if existing is not None and self._differs(existing) and not overwrite:
            raise CacheError(self._mismatch_sentence(existing))
        if not defer_create:
            self._make_ready()

    def _make_ready(self) -> None:
        """Replace a different cache (overwrite), create a missing one, clean dead temporaries."""
        if self._ready:
            return
        existing = self._existing_meta()  # again: another process may have created it meanwhile
        if existing is not None and self._differs(existing):
            if not self.overwrite:
                raise CacheError(self._mismatch_sentence(existing))
            self._wipe()
            existing = None
        if existing is None:
            self._create(self._config)
        elif self._config is not None and not (self.root / layout.CONFIG_FILE).exists():
            # A run killed between cache.json and config.toml: the resumed run saves it.
            _save_config(self._config, self.root / layout.CONFIG_FILE)
        self._clean_dead_temps()
        self._ready = True

    # -- opening --------------------------------------------------------------------------

    def _existing_meta(self) -> dict[str, Any] | None:
        if not self.root.exists():
            return None
        if (self.root / layout.CACHE_FILE).exists():
            return read_cache_meta(self.root)
        leftovers = [
            p.name for p in self.root.iterdir() if not p.name.startswith(".") and p.name not in layout.LAUNCHER_DIRS
        ]
        if leftovers:
            raise CacheError(
                f"{self.root} is not empty and is not an emo feature cache; choose a new or empty folder with --cache."
            )
        return None

    def _differs(self, existing: dict[str, Any]) -> bool:
        return existing["fingerprint_digest"] != self.digest or existing["format"] != self.fmt

    def _mismatch_sentence(self, existing: dict[str, Any]) -> str:
        if existing["format"] != self.fmt:
            what = f"it is stored as {existing['format']}, not {self.fmt}"
        else:
            what = "its fingerprint differs: " + describe_difference(self.fingerprint, existing.get("fingerprint", {}))
        return (
            f"Feature cache {self.root} was made differently ({what}); "
            "pass --overwrite to replace it or choose another --cache."
        )

    def _wipe(self) -> None:
        """Remove everything emo put in the cache folder (and nothing else)."""
        for child in list(self.root.iterdir()):
            name = child.name
            ours = name in (layout.CACHE_FILE, layout.MANIFEST_FILE, layout.CONFIG_FILE) or name.startswith(
                (f".{layout.CACHE_FILE}", f".{layout.MANIFEST_FILE}", f".{layout.CONFIG_FILE}")
            )
            if child.is_dir() and not name.startswith("."):
                entries = list(child.iterdir())
                ours = all(
                    layout.parse_shard_name(p.name) or layout.parse_temp_name(p.name) or p.name == layout.SPLIT_FILE
                    or p.name.startswith(f".{layout.SPLIT_FILE}")
                    for p in entries
                )
            if ours:
                layout.remove_path(child)

    def _create(self, config: Any) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CacheError(
                f"Cannot create the feature cache {self.root} ({error.strerror or error}); choose another --cache."
            ) from None
        from emo import __version__

        meta = {
            "schema_version": SCHEMA_VERSION,
            "format": self.fmt,
            "fingerprint": self.fingerprint,
            "fingerprint_digest": self.digest,
            "emo_version": __version__,
            "created": now_iso(),
        }
        atomic.write_json(self.root / layout.CACHE_FILE, meta, durable=True)
        if config is not None:
            _save_config(config, self.root / layout.CONFIG_FILE)
        # Another process may have created the cache at the same moment with a different
        # fingerprint; whichever rename won, check we agree with it.
        winner = read_cache_meta(self.root)
        if self._differs(winner):
            raise CacheError(self._mismatch_sentence(winner))

    def _clean_dead_temps(self) -> None:
        """Delete temporaries left by killed processes on this machine; never a live one."""
        host = atomic.this_host()
        folders = [self.root] + [
            p for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name not in layout.LAUNCHER_DIRS
        ]
        for folder in folders:
            for child in folder.iterdir():
                parsed = layout.parse_any_temp(child.name)
                if parsed and parsed[1] == host and not layout.pid_alive(parsed[2]):
                    layout.remove_path(child)

    # -- writing --------------------------------------------------------------------------

    def split_dir(self, split: str) -> Path:
        return self.root / layout.check_split_name(split)

    def shard_done(self, split: str, shard_index: int) -> bool:
        """True if the shard's data and matching sidecar are both in place (and this writer
        was not asked to overwrite)."""
        if self.overwrite and shard_index not in self._rewritten.get(split, set()):
            return False
        split_dir = self.split_dir(split)
        return sidecar_problem(split_dir, read_sidecar(split_dir, shard_index), self.fmt, self.digest) is None

    def write_clips(
        self,
        split: str,
        shard_index: int,
        clips: Sequence[ClipRecord],
        spec: ShardSpec,
        stats: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write one shard made of per-clip results atomically and return its sidecar.

        `clips` are the shard's rows in order; `spec` names the modalities every row holds
        (a clip that lost one gets zeros and a False presence flag). Failure records come
        from each clip's `failures`. `stats` (e.g. per-stage seconds) go to the sidecar.
        """
        columns, failures = build_columns(clips, spec)
        return self.write_shard(split, shard_index, columns, failures, stats)

    def write_shard(
        self,
        split: str,
        shard_index: int,
        rows: dict[str, Any],
        failures: list[dict[str, Any]] | None = None,
        stats: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write one shard atomically and return its sidecar.

        `rows` maps column names (see `emo.cache.schema.COLUMNS`) to arrays or string
        lists; `mel_index` starts are relative to this shard's `mel`. `failures` holds one
        dict per failed clip or modality, with at least `reason` (and ideally `modality`,
        `dialogue_id`, `utterance_id`, `message`). `stats` (e.g. per-stage seconds) is
        stored in the sidecar and summed by the manifest.
        """
        if int(shard_index) < 0:
            raise ValueError("shard_index must be >= 0")
        shard_index = int(shard_index)
        arrays = normalize_rows(rows)
        failures = [_clean_failure(f) for f in (failures or [])]
        self._make_ready()
        split_dir = self.split_dir(split)
        split_dir.mkdir(parents=True, exist_ok=True)
        data_name = layout.shard_data_name(shard_index, self.fmt)
        final = split_dir / data_name
        sidecar_path = split_dir / layout.sidecar_name(shard_index)

        # A previous attempt at this shard index (same owner, by construction) may have
        # left a temporary; it is garbage now.
        for child in split_dir.iterdir():
            parsed = layout.parse_temp_name(child.name)
            if parsed and parsed[0] == shard_index:
                layout.remove_path(child)

        started = time.perf_counter()
        tmp = split_dir / atomic.temp_name(data_name)
        attrs = {
            "emo_schema_version": SCHEMA_VERSION,
            "fingerprint_digest": self.digest,
            "split": split,
            "shard_index": shard_index,
        }
        storage.write_arrays(tmp, self.fmt, arrays, attrs, self.compression)
        layout.fsync_path(tmp)
        written = time.perf_counter()
        files = layout.checksum_files(tmp)
        hashed = time.perf_counter()

        # Unfinished first (drop the old sidecar), then swap the data, then finish.
        layout.remove_path(sidecar_path)
        if final.is_dir():
            trash = split_dir / atomic.temp_name(data_name + ".old")
            final.rename(trash)
            layout.remove_path(trash)
        tmp.replace(final)
        atomic.fsync_dir(split_dir)

        n = len(arrays["emotion"])
        keys = list(zip(arrays["dialogue_id"].tolist(), arrays["utterance_id"].tolist()))
        sidecar = {
            "schema_version": SCHEMA_VERSION,
            "format": self.fmt,
            "fingerprint_digest": self.digest,
            "split": split,
            "shard_index": shard_index,
            "file": data_name,
            "rows": n,
            "mel_rows": int(arrays["mel"].shape[0]) if "mel" in arrays else 0,
            "first_key": list(keys[0]) if keys else None,
            "last_key": list(keys[-1]) if keys else None,
            "modalities": list(modalities_of(arrays)),
            "arrays": describe_arrays(arrays),
            "compression": self.compression,
            "files": files,
            "sha256": layout.combined_sha256(files),
            "failures": failures,
            "stats": dict(stats or {}, write_s=round(written - started, 4), checksum_s=round(hashed - written, 4)),
            "written": now_iso(),
        }
        atomic.write_json(sidecar_path, sidecar, durable=True)
        self._rewritten.setdefault(split, set()).add(shard_index)
        return sidecar

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
        split is complete once all `expected_shards` shards (or `total_rows` rows) exist.
        `ignored_videos` counts clips on disk with no annotation row (e.g. MELD's
        unlabeled videos), reported by `emo cache info`.
        """
        self._make_ready()
        split_dir = self.split_dir(split)
        split_dir.mkdir(parents=True, exist_ok=True)
        plan_path = split_dir / layout.SPLIT_FILE
        plan: dict[str, Any] = {}
        if plan_path.is_file():
            try:
                plan = layout.read_json(plan_path)
            except (OSError, ValueError):
                plan = {}
        plan["split"] = split
        if total_rows is not None:
            plan["total_rows"] = int(total_rows)
        if expected_shards is not None:
            plan["expected_shards"] = int(expected_shards)
            for child in split_dir.iterdir():
                parsed = layout.parse_shard_name(child.name)
                if parsed and parsed[0] >= int(expected_shards):
                    layout.remove_path(child)
        plan["ignored_videos"] = int(ignored_videos or plan.get("ignored_videos", 0) or 0)
        if extra:
            plan["extra"] = {**plan.get("extra", {}), **json.loads(json.dumps(extra, default=_json_safe))}
        plan["updated"] = now_iso()
        atomic.write_json(plan_path, plan, durable=True)
        return write_manifest(self.root)


def _json_safe(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _clean_failure(failure: dict[str, Any]) -> dict[str, Any]:
    if "reason" not in failure:
        raise ValueError(f"failure record {failure!r} has no 'reason'")
    return json.loads(json.dumps(failure, default=_json_safe))


def _save_config(config: Any, path: Path) -> None:
    """config.toml in `emo.config.save_config`'s layout (an `[extract]` section that
    `--config` loads back), written atomically under a per-process temporary name because
    several processes of one run may create the cache at the same moment."""
    from emo.config import config_to_dict

    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = config_to_dict(config)
    if not isinstance(config, dict):
        raise TypeError("config must be a dataclass instance or a dict")
    lines = ["[extract]"]
    for key, value in config.items():
        if value is None:
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    atomic.write_text(path, "\n".join(lines) + "\n", durable=True)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))
