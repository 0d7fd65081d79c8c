"""Issue 6, requirement 3: one flipped byte in any shard is caught by `emo cache verify`,
which names the shard, and `emo fit` (and `emo eval` / `emo ablate`, which read the same
cache the same way) refuse that cache in one sentence instead of training on wrong numbers.

The byte is flipped inside a feature array's data (found through h5py / the Zarr chunk
files), the case HDF5 and Zarr cannot notice themselves: the file still opens and returns
slightly wrong numbers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reliability_fixtures import assert_clean_error, emo, emo_many, synthetic_feature_cache

pytestmark = pytest.mark.slow

FORMATS = ("h5", "zarr")


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("corruption")
    return {fmt: synthetic_feature_cache(root / fmt, fmt=fmt) for fmt in FORMATS}


def data_files(cache: Path) -> list[tuple[str, Path]]:
    """(label as verify names it, the shard) for every shard of the text feature set
    (`text/<name>/<split>/shard-NNNNN.h5`: the set's own folder under `sets/`)."""
    out = []
    for set_dir in sorted((cache / "sets" / "text").iterdir()):
        for split_dir in sorted(p for p in set_dir.iterdir() if p.is_dir()):
            for shard in sorted(split_dir.glob("shard-*.h5")) + sorted(split_dir.glob("shard-*.zarr")):
                out.append((f"text/{set_dir.name}/{split_dir.name}/{shard.name}", shard))
    return out


def text_cls(split):
    """The CLS vectors of a loaded split's text set."""
    return next(s for s in split.sets.values() if s.modality == "text").arrays["cls"]


def split_of(label: str) -> str:
    return label.split("/")[2]


def flip_byte_in_features(shard: Path) -> tuple[Path, int]:
    """Flip one bit in the middle of the text embedding's stored bytes; returns where."""
    if shard.suffix == ".h5":
        import h5py

        with h5py.File(shard, "r") as f:
            ds = f["cls"]
            offset, size = ds.id.get_offset(), ds.id.get_storage_size()
        assert offset is not None and size > 0, "cls is stored contiguously"
        target, position = shard, offset + size // 2
    else:
        chunks = sorted(p for p in (shard / "cls").rglob("*") if p.is_file() and p.name != "zarr.json")
        assert chunks, f"no chunk files under {shard / 'cls'}"
        target = chunks[0]
        position = target.stat().st_size // 2
    data = bytearray(target.read_bytes())
    data[position] ^= 0x10
    target.write_bytes(bytes(data))
    return target, position


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_flipped_byte_in_any_shard_is_named_by_verify(caches, fmt, tmp_path):
    from emo.cache import load_split, verify_cache

    cache = tmp_path / "cache"
    shutil.copytree(caches[fmt], cache)
    assert verify_cache(cache) == []
    shards = data_files(cache)
    assert len(shards) >= 6, "several shards per split"
    for label, shard in shards:
        split = split_of(label)
        before = text_cls(load_split(cache, split)).copy()
        flip_byte_in_features(shard)
        # The library still reads the shard without complaint, just with other numbers ...
        after = text_cls(load_split(cache, split, verify=False))
        assert (before != after).sum() == 1, "exactly one value changed: the case only a checksum can catch"
        # ... verify names exactly that shard, and nothing else.
        problems = verify_cache(cache)
        assert len(problems) == 1 and label in problems[0], (label, problems)
        flip_byte_in_features(shard)  # flip it back: the next shard is tested on a clean cache
        assert verify_cache(cache) == []


def test_verify_command_names_the_shard_in_one_sentence(caches, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(caches["h5"], cache)
    ok = emo("cache", "verify", str(cache))
    assert ok.returncode == 0, ok.describe()
    label, shard = data_files(cache)[4]
    flip_byte_in_features(shard)
    bad = emo("cache", "verify", str(cache))
    sentence = assert_clean_error(bad, 1, mentions=(label, "checksum"))
    assert "failed verification" in sentence


@pytest.fixture(scope="module")
def corrupt_run(caches, tmp_path_factory):
    """A run trained on the clean cache, and a copy of the cache with one flipped byte in dev."""
    from emo.fuse.config import FitConfig
    from emo.fuse.train import run_fit

    root = tmp_path_factory.mktemp("corrupt-run")
    run = root / "run"
    run_fit(FitConfig(cache=caches["h5"], out=run, epochs=1, device="cpu"))
    cache = root / "cache"
    shutil.copytree(caches["h5"], cache)
    return root, run, cache


@pytest.fixture(scope="module")
def refusals(corrupt_run):
    """fit, eval and ablate on the cache with one flipped byte in a train and a test shard."""
    root, run, cache = corrupt_run
    shards = data_files(cache)
    train_label, train_shard = next((label, shard) for label, shard in shards if split_of(label) == "train")
    test_label, test_shard = next((label, shard) for label, shard in shards if split_of(label) == "test")
    flip_byte_in_features(train_shard)
    flip_byte_in_features(test_shard)
    fit, evaluate, ablate = emo_many(
        [
            ("fit", "--cache", str(cache), "--out", str(root / "refit"), "--epochs", "1", "--device", "cpu"),
            ("eval", "--run", str(run), "--cache", str(cache), "--split", "test", "--device", "cpu"),
            (
                "ablate",
                "--cache",
                str(cache),
                "--out",
                str(root / "ablate"),
                "--modalities",
                "text",
                "--seeds",
                "1",
                "--epochs",
                "1",
                "--device",
                "cpu",
            ),
        ],
        parallel=3,
    )
    return {
        "fit": fit,
        "eval": evaluate,
        "ablate": ablate,
        "train": train_label,
        "test": test_label,
        "root": root,
        "run": run,
    }


def test_fit_refuses_a_corrupt_cache(refusals):
    assert_clean_error(refusals["fit"], 1, mentions=(refusals["train"],))
    assert not (refusals["root"] / "refit" / "model.pt").exists(), "no checkpoint from corrupt features"


def test_eval_refuses_a_corrupt_cache(refusals):
    assert_clean_error(refusals["eval"], 1, mentions=(refusals["test"],))
    assert not list(refusals["run"].glob("eval-*")), "no report from corrupt features"


def test_ablate_refuses_a_corrupt_cache(refusals):
    assert_clean_error(refusals["ablate"], 1, mentions=(refusals["train"],))
    assert not (refusals["root"] / "ablate" / "results.csv").exists()
