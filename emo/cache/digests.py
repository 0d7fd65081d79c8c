"""What identifies a set and a shard's rows: the digests the cache compares, never the arrays.

`set_digest` names a set's identity (name, kind, dim and everything that made its numbers:
two sets with one name are the same set exactly when it matches); `rows_sha256` and
`texts_sha256` name a row-table shard's annotations, so a later extraction can tell
whether its CSVs are the ones the cache was built from; `ROWS_FINGERPRINT` is the row
table's own fingerprint. The writer records them, the reader and `emo extract`'s planner
compare them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from emo.cache.fingerprint import fingerprint_digest
from emo.cache.schema import SCHEMA_VERSION
from emo.cache.sets import SetSpec

# The row table's fingerprint: the rows are the annotations themselves, checked row by row
# (`rows_sha256` in every sidecar), so only the layout version can make two caches differ.
ROWS_FINGERPRINT: dict[str, Any] = {"cache_schema": SCHEMA_VERSION, "rows": "ids, labels, speaker, text"}


def set_digest(spec: SetSpec) -> str:
    """A set's identity: its name, kind, dim and everything that made its numbers."""
    return fingerprint_digest(json.loads(json.dumps(spec.describe(), default=str)))


def rows_sha256(columns: dict[str, Any]) -> str:
    """A digest of a row-table shard's annotations (ids, labels, speakers), so a later run
    can tell whether its CSVs are the ones the cache was built from."""
    digest = hashlib.sha256()
    for name in ("dialogue_id", "utterance_id", "emotion", "sentiment"):
        digest.update(np.ascontiguousarray(np.asarray(columns[name], dtype=np.int64)).tobytes())
    digest.update("\x1f".join(str(v) for v in columns.get("speaker", [])).encode())
    return digest.hexdigest()


def texts_sha256(columns: dict[str, Any]) -> str | None:
    """A digest of the shard's utterance texts; None when it holds none (a cache upgraded
    from version 1, which stored no text, cannot be checked on them)."""
    texts = [str(v) for v in columns.get("text", [])]
    if not any(texts):
        return None
    return hashlib.sha256("\x1f".join(texts).encode()).hexdigest()
