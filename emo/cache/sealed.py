"""Sealed JSON: a file that carries the SHA-256 of its own content, so an edit is caught.

The cache's metadata (cache.json, split.json, set.json) and every shard's sidecar are
written by `write_sealed`/`sealed` with a `"digest"` field: the SHA-256 of the canonical
JSON (sorted keys, no spaces) of everything else. Self-describing, so no second file can
drift from it. `load_sealed` reads one back and says what is wrong with it, if anything;
`emo.cache.metadata` decides what that damage means for the cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from emo import atomic

DIGEST_KEY = "digest"
DIGEST_PROBLEM = "does not match its digest (it was edited or damaged after emo wrote it)"


def content_digest(content: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of `content` without its own digest field."""
    rest = {k: v for k, v in content.items() if k != DIGEST_KEY}
    blob = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def sealed(content: dict[str, Any], default: Callable[[Any], Any] = str) -> dict[str, Any]:
    """`content` as JSON will hold it, plus its digest (any old digest is replaced);
    `default` turns what JSON cannot hold into what it can (as `json.dumps` takes it)."""
    plain = json.loads(json.dumps({k: v for k, v in content.items() if k != DIGEST_KEY}, default=default))
    return {**plain, DIGEST_KEY: content_digest(plain)}


def write_sealed(path: Path, content: dict[str, Any]) -> dict[str, Any]:
    """The one way emo writes cache.json, split.json and set.json: sealed, atomically, durably."""
    data = sealed(content)
    atomic.write_json(path, data, durable=True)
    return {k: v for k, v in data.items() if k != DIGEST_KEY}


def load_sealed(path: Path) -> tuple[dict[str, Any] | None, str | None, bool]:
    """(content without its digest, what is wrong with the file or None, whether it is sealed)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, "is missing", False
    except UnicodeDecodeError:
        return None, "is not valid JSON (its bytes were overwritten)", False
    except OSError as error:
        return None, f"cannot be read ({error.strerror or error})", False
    if not text.strip():
        return None, "is empty", False
    try:
        data = json.loads(text)
    except ValueError:
        return None, "is not valid JSON (it was truncated or overwritten)", False
    if not isinstance(data, dict):
        return None, "is not a JSON object", False
    if DIGEST_KEY not in data:
        return data, None, False
    recorded = data.pop(DIGEST_KEY)
    if recorded != content_digest(data):
        return None, DIGEST_PROBLEM, True
    return data, None, True
