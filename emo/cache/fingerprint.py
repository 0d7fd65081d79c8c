"""Fingerprints: what made a cache, so incompatible artifacts are never mixed.

A fingerprint is a small JSON-able dict naming every encoder (id and revision or weight
hash) and every preprocessing parameter that changes the cached numbers. Its digest is
stored in the cache manifest and in every checkpoint trained from the cache; comparing
digests is how `emo` refuses to resume extraction into, or train/evaluate against, a
cache made differently.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from emo.errors import CacheError


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    """A stable short hash of a fingerprint (key order does not matter)."""
    blob = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def describe_difference(expected: dict[str, Any], found: dict[str, Any]) -> str:
    """Name the first few settings whose values differ, for the error sentence: the leaves, by
    dotted path (`text.max_length (64 vs 128)`), not whole nested dicts a user must compare by eye."""
    diffs = list(_differences(expected, found))
    parts = [f"{path} ({was!r} vs {wanted!r})" for path, wanted, was in diffs[:3]]
    more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
    return ", ".join(parts) + more


def _differences(expected: dict[str, Any], found: dict[str, Any], prefix: str = ""):
    """(dotted path, expected value, found value) for each differing leaf, in key order."""
    for key in sorted(set(expected) | set(found), key=str):
        wanted, was = expected.get(key), found.get(key)
        if wanted == was:
            continue
        if isinstance(wanted, dict) and isinstance(was, dict):
            yield from _differences(wanted, was, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", wanted, was


def require_same(expected: dict[str, Any], found: dict[str, Any], what: str) -> None:
    """Raise one clear sentence when two fingerprints differ."""
    if fingerprint_digest(expected) != fingerprint_digest(found):
        raise CacheError(
            f"{what} was made with different encoders or preprocessing: {describe_difference(expected, found)}."
        )
