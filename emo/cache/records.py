"""What the writer records besides arrays: cache.json, set.json, failure records, config.toml.

Kept apart from `emo.cache.writer` so that the shard-writing logic there stays readable;
`emo cache upgrade` uses the same helpers, so an upgraded cache records exactly what a
fresh extraction would. What identifies a set or a shard's rows is `emo.cache.digests`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from emo import atomic
from emo.cache import layout
from emo.cache.fingerprint import fingerprint_digest
from emo.cache.manifest import now_iso, read_cache_meta
from emo.cache.metadata import write_sealed
from emo.cache.schema import SCHEMA_VERSION
from emo.cache.sets import SetSpec
from emo.errors import CacheError


def create_cache(root: Path, fmt: str, fingerprint: dict[str, Any], config: Any) -> dict[str, Any]:
    """Make the cache folder with its cache.json (and config.toml); returns the cache.json
    now on disk, which another process creating the same cache may have written."""
    from emo import __version__

    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CacheError(
            f"Cannot create the feature cache {root} ({error.strerror or error}); choose another --cache."
        ) from None
    meta = {
        "schema_version": SCHEMA_VERSION,
        "format": fmt,
        "fingerprint": fingerprint,
        "fingerprint_digest": fingerprint_digest(fingerprint),
        "emo_version": __version__,
        "created": now_iso(),
    }
    write_sealed(root / layout.CACHE_FILE, meta)
    if config is not None:
        save_config(config, root / layout.CONFIG_FILE)
    return read_cache_meta(root)


def set_meta(spec: SetSpec, digest: str, created: str) -> dict[str, Any]:
    """set.json's content (sealed by `emo.cache.metadata.write_sealed`): what a reader
    needs to know about a set, its digest and when it was created (which orders the sets)."""
    return {**spec.describe(), "fingerprint_digest": digest, "schema_version": SCHEMA_VERSION, "created": created}


def json_safe(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def clean_failure(failure: dict[str, Any]) -> dict[str, Any]:
    if "reason" not in failure:
        raise ValueError(f"failure record {failure!r} has no 'reason'")
    return json.loads(json.dumps(failure, default=json_safe))


def save_config(config: Any, path: Path) -> None:
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
