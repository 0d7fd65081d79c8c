"""Caches fabricated from ready-made columns, for tests and benchmarks that need no media.

`V1Writer` is a `CacheWriter` that also takes version-1 style columns (`text_cls`,
`text_mean`, `visual`/`visual_mask`, `mel`/`mel_index` beside the labels) and files them
as the seed's three feature sets through the writer's public API (`add_set`,
`write_set`, `write_rows`), translated by the same `emo.cache.legacy.split_v1_columns`
that `emo cache upgrade` uses. It lives here, not in `emo.cache`, because only tests and
benchmarks write caches that way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from emo.cache import CacheWriter
from emo.cache.legacy import split_v1_columns


class V1Writer(CacheWriter):
    """`CacheWriter` plus `write_shard(split, index, columns, failures, stats)`; the seed
    sets are named and fingerprinted from `fingerprint` (a version-1 cache-wide one)."""

    def __init__(self, root: str | Path, fingerprint: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.v1_fingerprint = json.loads(json.dumps(fingerprint or {}, default=str))

    def write_shard(
        self,
        split: str,
        shard_index: int,
        rows: dict[str, Any],
        failures: list[dict[str, Any]] | None = None,
        stats: dict[str, Any] | None = None,
    ) -> None:
        """The row table plus the seed's sets of one shard, sets first and the row table last
        (as `write_clips` orders them: a killed run redoes the whole shard)."""
        row_columns, sets = split_v1_columns(rows, self.v1_fingerprint, list(failures or []))
        for spec, _, _ in sets:
            if spec.name not in self.sets:
                self.add_set(spec)
        ids = list(
            zip(np.asarray(row_columns["dialogue_id"]).tolist(), np.asarray(row_columns["utterance_id"]).tolist())
        )
        keys = (list(ids[0]), list(ids[-1])) if ids else None
        for spec, arrays, set_failures in sets:
            self.write_set(split, spec.name, shard_index, arrays, set_failures, stats, keys=keys)
        self.write_rows(split, shard_index, row_columns, stats)
