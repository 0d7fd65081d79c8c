"""The feature cache: the only code that knows how features are laid out on disk.

A cache holds, per split, one row table and any number of named feature sets
(`emo.cache.sets`). `emo.extract` writes shards through `CacheWriter`; `emo.fuse` reads
splits through `load_split`; `emo cache info|verify|status|rm|upgrade` use `open_cache`,
`verify_cache`, `cache_status`, `remove_set` and `upgrade_cache`. See `emo.cache.layout`
for the folder layout and `emo.cache.schema` for the arrays.

Writing (one process per `--shard-index`, or one for all)::

    writer = CacheWriter(cache_dir, fmt="h5", config=extract_config, defer_create=True)
    writer.add_set(SetSpec("audio/whisper-base", "vector", 512, "whisper-base", fingerprint))
    for index, clips in my_shards:         # clips: one ClipRecord per annotated row
        if writer.shard_done("train", index):
            continue                       # resume: finished shards are skipped, per set
        writer.write_clips("train", index, clips)   # row table (once) + every added set, atomic
    writer.finalize("train", total_rows=len(utterances), expected_shards=num_shards,
                    ignored_videos=len(unlabeled))

`write_rows` and `write_set` write one shard of the row table or of one set from ready-made
columns (`emo.cache.schema`), which is how `emo cache upgrade` converts an older cache.

Reading (a `LoadedSplit`: the row table plus each set's arrays, as stored)::

    split = load_split(cache_dir, "train", sets=["text/all-MiniLM-L6-v2", "audio/mel"])
"""

from emo.cache.clips import ClipFailure, ClipRecord
from emo.cache.fingerprint import fingerprint_digest, require_same
from emo.cache.manifest import MissingCacheError, OldCacheError
from emo.cache.metadata import DamagedMetadataError
from emo.cache.load import LoadedSplit, load_split
from emo.cache.describe import CacheInfo, SetInfo, ShardInfo, SplitInfo, UnknownSplitError, open_cache, set_config_path
from emo.cache.schema import SCHEMA_VERSION
from emo.cache.sets import KINDS, LoadedSet, SetSpec
from emo.cache.status import CacheStatus, SplitStatus, cache_status
from emo.cache.verify import verify_cache
from emo.cache.writer import CacheWriter

__all__ = [
    "KINDS",
    "SCHEMA_VERSION",
    "CacheInfo",
    "CacheStatus",
    "CacheWriter",
    "ClipFailure",
    "ClipRecord",
    "DamagedMetadataError",
    "LoadedSet",
    "LoadedSplit",
    "MissingCacheError",
    "OldCacheError",
    "SetInfo",
    "SetSpec",
    "ShardInfo",
    "SplitInfo",
    "SplitStatus",
    "UnknownSplitError",
    "cache_status",
    "fingerprint_digest",
    "load_split",
    "open_cache",
    "require_same",
    "set_config_path",
    "verify_cache",
]
