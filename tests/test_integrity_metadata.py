"""Issue 18, defect 4: damaged cache metadata never gives a silent wrong answer.

A real cache made by the real `emo extract` (two audio sets, so a vanished default has
another set to be silently replaced by) has one metadata file damaged at a time - set.json
deleted, emptied, truncated, its `dim` or `n_mels` edited; cache.json edited; split.json
edited - and then, through the real `emo` entry point: `emo cache verify` exits 1 naming
the file, `emo fit` refuses in one sentence and writes nothing, `emo cache info` shows the
damage; re-running the extraction that made the set repairs it in place (every shard kept
byte for byte, the default set unchanged) and verify passes again. A cache written before
the digests existed still loads, is verified with a warning and sealed by `emo cache upgrade`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from reliability_fixtures import assert_clean_error, emo, emo_many

MEL, MEL24 = "audio/mel", "audio/mel24"


def extract_config(root: Path, cache: Path, **overrides):
    from emo.extract.config import ExtractConfig

    values = dict(
        data_root=root,
        cache=cache,
        split="all",
        modalities=("audio",),
        shard_size=8,
        workers=0,
        max_duration=3.0,
        device="cpu",
        threads=1,
    )
    return ExtractConfig(**{**values, **overrides})


def extract(config) -> list[str]:
    """Run the real extraction in this process; the progress messages it gave."""
    from emo.extract.pipeline.run import run_extract
    from emo.progress import Message

    events = []
    run_extract(config, progress=events.append)
    return [e.text for e in events if isinstance(e, Message)]


@pytest.fixture(scope="module")
def made(synth_root, tmp_path_factory):
    """(cache, the config of each set's extraction): audio/mel first (the default), then audio/mel24."""
    cache = tmp_path_factory.mktemp("integrity") / "cache"
    configs = {
        MEL: extract_config(synth_root, cache),
        MEL24: extract_config(synth_root, cache, n_mels=24, name="mel24"),
    }
    for config in configs.values():
        extract(config)
    return cache, configs


def shard_digests(cache: Path) -> dict[str, str]:
    return {
        p.relative_to(cache).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(cache.rglob("shard-*"))
        if p.is_file()
    }


def edit_json(path: Path, change) -> None:
    """A hand edit: the JSON changed, its digest left as it was."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=1))


SET_JSON = f"sets/{MEL}/set.json"
DAMAGE = {
    "set.json deleted": (SET_JSON, lambda p: p.unlink()),
    "set.json emptied": (SET_JSON, lambda p: p.write_text("")),
    "set.json truncated": (SET_JSON, lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
    "set.json dim edited": (SET_JSON, lambda p: edit_json(p, lambda d: d.update(dim=41))),
    "set.json n_mels edited": (SET_JSON, lambda p: edit_json(p, lambda d: d["fingerprint"]["audio"].update(n_mels=24))),
    "cache.json edited": ("cache.json", lambda p: edit_json(p, lambda d: d.update(format="zarr"))),
    "split.json edited": (
        "train/split.json",
        lambda p: edit_json(p, lambda d: d.update(total_rows=d["total_rows"] - 1)),
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_metadata_is_named_refused_shown_and_repaired_by_the_same_extract(made, case, tmp_path):
    from emo.cache import load_split, open_cache, verify_cache

    base, configs = made
    cache = tmp_path / "cache"
    shutil.copytree(base, cache)
    kept = shard_digests(cache)
    file, damage = DAMAGE[case]
    damage(cache / file)

    out = tmp_path / "run"
    verify, info, fit = emo_many(
        [
            ("cache", "verify", str(cache)),
            ("cache", "info", str(cache)),
            (
                "fit",
                "--cache",
                str(cache),
                "--out",
                str(out),
                "--modalities",
                "audio",
                "--epochs",
                "1",
                "--device",
                "cpu",
            ),
        ],
        parallel=3,
    )
    sentence = assert_clean_error(verify, 1, mentions=(file,))
    assert "emo extract" in sentence, sentence
    assert_clean_error(fit, 1, mentions=(file, "damaged"))
    assert not out.exists(), "a refused fit writes nothing under --out"
    if file == "cache.json":  # the whole cache is untrusted: info says so in its one sentence
        assert_clean_error(info, 1, mentions=(file, "damaged"))
    else:
        assert info.returncode == 0, info.describe()
        assert f"{file} " in info.stdout and "damaged" in info.stdout, info.describe()
        if file == SET_JSON:  # shown as a damaged set, never hidden
            assert f"{MEL} (damaged)" in info.stdout, info.describe()

    # The extraction that made the set (any, for cache.json and split.json) repairs it in place.
    said = extract(dataclasses.replace(configs[MEL], cache=cache))
    assert not any("already in the cache" in text for text in said), said
    assert any(text.startswith(f"Repaired {file}") for text in said), said
    assert verify_cache(cache) == []
    assert shard_digests(cache) == kept, "every shard is kept byte for byte"
    repaired = open_cache(cache)
    assert repaired.damage == [] and repaired.sets[MEL].dim == 40
    assert repaired.default_sets() == {"audio": MEL}, "the repaired set is the default it was"
    assert load_split(cache, "train").sets[MEL].dim == 40
    ok = emo("cache", "verify", str(cache))
    assert ok.returncode == 0 and "match their checksums" in ok.stdout and "warning" not in ok.stderr, ok.describe()


def test_a_damaged_set_is_never_replaced_but_another_can_be_named(made, tmp_path):
    from emo.cache import load_split, open_cache
    from emo.errors import CacheError
    from emo.fuse.feature_cache import select_for_fit

    cache = tmp_path / "cache"
    shutil.copytree(made[0], cache)
    (cache / SET_JSON).unlink()
    info = open_cache(cache)
    assert MEL not in info.sets and MEL in info.damaged_sets
    for features in ("", "audio=mel"):  # the default (which was audio/mel), or audio/mel by name
        with pytest.raises(CacheError, match=f"sets/{MEL}/set.json is missing"):
            select_for_fit(info, features, ("audio",), cache)
    with pytest.raises(CacheError, match="set.json is missing"):
        load_split(cache, "train")
    with pytest.raises(CacheError, match="set.json is missing"):
        load_split(cache, "train", sets=[MEL])
    # Naming the sound set is a choice, not a fallback; other modalities are not concerned.
    assert select_for_fit(info, "audio=mel24", ("audio",), cache) == {"audio": [MEL24]}
    assert list(load_split(cache, "train", sets=[MEL24]).sets) == [MEL24]
    assert len(load_split(cache, "train", modalities=())) == 24


def test_shards_made_differently_behind_a_damaged_set_json_are_refused_unless_overwritten(made, tmp_path):
    from emo.cache import open_cache, verify_cache
    from emo.errors import CacheError

    base, configs = made
    cache = tmp_path / "cache"
    shutil.copytree(base, cache)
    (cache / SET_JSON).unlink()
    other = dataclasses.replace(configs[MEL], cache=cache, n_mels=32)
    with pytest.raises(CacheError, match=r"audio/mel .* is damaged .*made differently.*--overwrite.*--name"):
        extract(other)
    extract(dataclasses.replace(other, overwrite=True))
    assert open_cache(cache).sets[MEL].dim == 32 and verify_cache(cache) == []


def test_a_cache_written_before_the_digests_still_loads_and_upgrade_seals_it(made, tmp_path):
    from emo.cache import load_split, verify_cache
    from emo.cache.metadata import unsealed_files

    cache = tmp_path / "cache"
    shutil.copytree(made[0], cache)
    metadata = [cache / "cache.json", *cache.glob("*/split.json"), *cache.glob("sets/*/*/set.json")]
    assert len(metadata) == 6
    for path in metadata:  # exactly what the previous release wrote: the same JSON, no digest
        data = json.loads(path.read_text())
        assert data.pop("digest")
        path.write_text(json.dumps(data, indent=1) + "\n")
    assert len(unsealed_files(cache)) == 6
    assert verify_cache(cache) == [] and load_split(cache, "train").sets[MEL].dim == 40
    verify = emo("cache", "verify", str(cache))
    assert verify.returncode == 0 and "no digest" in verify.stderr and "emo cache upgrade" in verify.stderr, (
        verify.describe()
    )
    upgrade = emo("cache", "upgrade", str(cache))
    assert upgrade.returncode == 0 and "added the digest to 6 metadata files" in upgrade.stdout, upgrade.describe()
    assert unsealed_files(cache) == [] and verify_cache(cache) == []
    edit_json(cache / SET_JSON, lambda d: d.update(dim=41))  # now a hand edit is caught
    assert any(p.startswith(f"{SET_JSON} does not match its digest") for p in verify_cache(cache))


def test_a_hand_edited_shard_sidecar_unfinishes_its_shard_until_the_same_extract_redoes_it(made, tmp_path):
    """A shard's sidecar is sealed too: it decides whether the shard counts as finished, and
    its `failures` and `present` records feed every report, so an edit is caught, not believed."""
    from emo.cache import verify_cache

    base, configs = made
    cache = tmp_path / "cache"
    shutil.copytree(base, cache)
    sidecar = cache / "sets" / MEL / "train" / "shard-00000.json"
    edit_json(sidecar, lambda d: d.update(failures=[]))
    verify = emo("cache", "verify", str(cache))
    assert_clean_error(verify, 1, mentions=("shard-00000",))
    assert "damaged or edited" in verify.stderr + verify.stdout, verify.describe()

    said = extract(dataclasses.replace(configs[MEL], cache=cache))
    assert verify_cache(cache) == [], said
    assert "digest" in json.loads(sidecar.read_text())
