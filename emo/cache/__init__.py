"""The feature cache: the only code that knows how features are laid out on disk.

`emo.extract` writes shards through `CacheWriter`; `emo.fuse` reads whole splits through
`load_split`; `emo cache info|verify|status` use `open_cache`, `verify_cache` and `cache_status`. See
`emo.cache.layout` for the folder layout and `emo.cache.schema` for the arrays.

Writing (one process per `--shard-index`, or one for all)::

    writer = CacheWriter(cache_dir, fingerprint, fmt="h5", config=extract_config, defer_create=True)
    spec = ShardSpec(modalities=("text", "audio"), text_dim=384, n_mels=40)
    for index, clips in my_shards:         # clips: one ClipRecord per annotated row
        if writer.shard_done("train", index):
            continue                       # resume: finished shards are skipped
        writer.write_clips("train", index, clips, spec, stats)   # atomic
    writer.finalize("train", total_rows=len(utterances), expected_shards=num_shards,
                    ignored_videos=len(unlabeled))

`write_shard("train", index, columns, failures, stats)` takes ready-made columns instead
(for tests and benchmarks that fabricate caches).

Reading::

    features = load_split(cache_dir, "train", modalities=("text", "audio"))
"""

from emo.cache.clips import ClipFailure, ClipRecord, ShardSpec
from emo.cache.features import SplitFeatures
from emo.cache.fingerprint import fingerprint_digest, require_same
from emo.cache.manifest import MissingCacheError
from emo.cache.reader import CacheInfo, ShardInfo, SplitInfo, UnknownSplitError, load_split, open_cache
from emo.cache.schema import COLUMNS, MODALITY_COLUMNS, SCHEMA_VERSION
from emo.cache.status import CacheStatus, SplitStatus, cache_status
from emo.cache.verify import verify_cache
from emo.cache.writer import CacheWriter

__all__ = [
    "COLUMNS",
    "MODALITY_COLUMNS",
    "SCHEMA_VERSION",
    "CacheInfo",
    "CacheStatus",
    "CacheWriter",
    "ClipFailure",
    "ClipRecord",
    "MissingCacheError",
    "ShardInfo",
    "ShardSpec",
    "SplitFeatures",
    "SplitInfo",
    "SplitStatus",
    "UnknownSplitError",
    "cache_status",
    "fingerprint_digest",
    "load_split",
    "open_cache",
    "require_same",
    "verify_cache",
]
