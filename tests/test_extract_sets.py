"""`emo extract` into an existing cache, through the real pipeline: sets are added, named,
refused or replaced without touching the row table or any other set's files."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from emo.errors import CacheError
from extract_fixtures import tiny_bert, tiny_clip, tiny_config  # noqa: F401


def run(config, progress=None):
    from emo.extract.pipeline.run import run_extract

    return run_extract(config, progress=progress)


def digests(root: Path, exclude: str = "") -> dict[str, str]:
    """sha256 of every shard and sidecar in the cache (not the derived manifest or split
    plans, which a finished run rewrites), optionally outside one set's folder."""
    out = {}
    for path in sorted(root.rglob("shard-*")):
        if path.is_file() and not (exclude and exclude in path.as_posix()):
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def text_cache(synth_root, tiny_bert, tmp_path):
    """A text-only cache of the synthetic train split, cut into shards of 4 rows."""
    config = tiny_config(synth_root, tmp_path / "cache", tiny_bert, None, modalities=("text",), shard_size=4)
    run(config)
    return config


def test_a_second_extract_adds_a_set_and_leaves_every_other_file_byte_for_byte(text_cache):
    from emo.cache import load_split, open_cache
    from emo.progress import Message

    before = digests(text_cache.cache)
    assert before and all(not name.startswith("sets/audio") for name in before)
    # Another modality, with the default shard size: the cache's own (4) is adopted and said.
    events = []
    audio = dataclasses.replace(text_cache, modalities=("audio",), shard_size=256)
    summary = run(audio, progress=events.append)
    assert summary.sets == ["audio/mel"] and summary.splits["train"].complete
    assert any(isinstance(e, Message) and "shard size 4 (not 256)" in e.text for e in events)
    after = digests(text_cache.cache)
    assert {k: v for k, v in after.items() if k in before} == before, "no earlier file changed"
    assert all(name.startswith("sets/audio/mel/") for name in set(after) - set(before))
    info = open_cache(text_cache.cache)
    assert sorted(item.modality for item in info.sets.values()) == ["audio", "text"] and "audio/mel" in info.sets
    features = load_split(text_cache.cache, "train")
    assert features.modalities == ("text", "audio") and "audio/mel" in features.sets


def test_a_text_set_made_differently_is_refused_before_any_encoder_loads(text_cache):
    """The encoders' identities come from their files, so the refusal costs no model load
    (tens of seconds for a real text encoder on a CPU)."""
    events = []
    shorter = dataclasses.replace(text_cache, text_max_length=text_cache.text_max_length // 2)
    with pytest.raises(CacheError, match=r"Feature set text/\S+ .* made differently .*--name.*--overwrite"):
        run(shorter, progress=events.append)
    said = [getattr(event, "text", "") for event in events]
    assert not any(text.startswith("Loading the encoders") for text in said), said


def test_a_same_named_set_made_differently_is_refused_then_named_or_replaced(text_cache):
    from emo.cache import load_split, open_cache

    mel = dataclasses.replace(text_cache, modalities=("audio",))
    run(mel)
    other_bands = dataclasses.replace(mel, n_mels=24)
    with pytest.raises(CacheError, match=r"Feature set audio/mel .* made differently .*--name.*--overwrite"):
        run(other_bands)
    # Under another name, both stay.
    run(dataclasses.replace(other_bands, name="mel24"))
    features = load_split(text_cache.cache, "train", sets=["audio/mel", "audio/mel24"])
    assert features.sets["audio/mel"].dim == 40 and features.sets["audio/mel24"].dim == 24
    # --overwrite replaces that set alone.
    text_files = digests(text_cache.cache, exclude="sets/audio")
    run(dataclasses.replace(other_bands, overwrite=True))
    assert open_cache(text_cache.cache).sets["audio/mel"].dim == 24
    assert digests(text_cache.cache, exclude="sets/audio") == text_files
    assert np.array_equal(
        load_split(text_cache.cache, "train", sets=["audio/mel24"]).sets["audio/mel24"].arrays["index"],
        load_split(text_cache.cache, "train", sets=["audio/mel"]).sets["audio/mel"].arrays["index"],
    )
