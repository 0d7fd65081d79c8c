"""Issue 6, requirement 6: checkpoints load weights-only, caches hold no pickles, and file
names built from CSV fields cannot escape the data root."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emo.data.meld import COLUMNS, MeldSplit, load_split, read_annotations
from emo.errors import DataError, EmoError
from reliability_fixtures import REPO_ROOT, synthetic_feature_cache, write_csv

ROW = ["1", "Hello there.", "Joey", "joy", "positive", "0", "0", "1", "1", "00:00:01,000", "0:00:02,500"]
DIALOGUE, UTTERANCE = COLUMNS.index("Dialogue_ID"), COLUMNS.index("Utterance_ID")


# ----------------------------------------------------------------------------- checkpoints


def test_every_torch_load_in_emo_is_weights_only():
    """No code path in the package unpickles arbitrary objects from a file."""
    calls = []
    for path in sorted((REPO_ROOT / "emo").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
                owner = node.func.value
                if isinstance(owner, ast.Name) and owner.id == "torch":
                    keywords = {k.arg: k.value for k in node.keywords}
                    safe = (
                        isinstance(keywords.get("weights_only"), ast.Constant)
                        and keywords["weights_only"].value is True
                    )
                    calls.append((f"{path.relative_to(REPO_ROOT)}:{node.lineno}", safe))
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                assert not {"pickle", "dill", "cloudpickle", "joblib"} & set(names), (
                    f"{path.relative_to(REPO_ROOT)}:{node.lineno} imports a pickler"
                )
    assert calls, "the checkpoint loader calls torch.load"
    assert all(safe for _, safe in calls), [where for where, safe in calls if not safe]


class _Payload:
    """Runs code when unpickled: what a malicious 'checkpoint' from the internet would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_malicious_checkpoint_is_refused_without_running_its_code(tmp_path):
    import torch

    from emo.fuse.checkpoint import FORMAT, load_checkpoint

    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"format": FORMAT, "state_dict": {}, "extra": _Payload(marker)}, run / "model.pt")
    assert not marker.exists()
    with pytest.raises(EmoError) as raised:
        load_checkpoint(run)
    assert not marker.exists(), "loading a checkpoint executed code from it"
    assert "model.pt" in str(raised.value)


# ----------------------------------------------------------------------------- caches

_SAFE_ZARR_TYPES = {
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "string",
}


@pytest.mark.parametrize("fmt", ["h5", "zarr"])
def test_caches_hold_no_pickled_objects(tmp_path, fmt):
    import h5py

    cache = synthetic_feature_cache(tmp_path / "cache", fmt=fmt, sizes=(40, 20, 20), shard_rows=16)
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".pkl", ".pickle", ".npy", ".npz", ".pt", ".joblib")]
    for path in files:
        if path.suffix == ".json" or path.name == "zarr.json":
            json.loads(path.read_text(encoding="utf-8"))  # plain JSON, nothing else

    checked = 0
    # Every shard: the row tables' and each feature set's (CACHE/sets/<modality>/<name>/<split>/).
    shards = sorted(cache.rglob(f"shard-*.{fmt}"))
    assert any("sets" not in s.relative_to(cache).parts for s in shards), "no row-table shard found"
    assert {s.relative_to(cache).parts[1] for s in shards if s.relative_to(cache).parts[0] == "sets"} == {
        "text",
        "audio",
        "visual",
    }, "a shard of every modality's feature set"
    if fmt == "h5":
        for shard in shards:
            with h5py.File(shard, "r") as f:

                def visit(name, obj):
                    nonlocal checked
                    if isinstance(obj, h5py.Dataset):
                        dtype = obj.dtype
                        if dtype.kind == "O":
                            assert h5py.check_string_dtype(dtype) is not None, f"{shard}:{name} holds objects"
                        assert dtype.kind in "biufO", f"{shard}:{name} has dtype {dtype}"
                        checked += 1
                    for key, value in obj.attrs.items():
                        assert not (hasattr(value, "dtype") and value.dtype.kind == "O"), f"{shard}:{name}@{key}"

                f.visititems(visit)
                visit("/", f)
    else:
        for meta in cache.rglob("zarr.json"):
            node = json.loads(meta.read_text(encoding="utf-8"))
            if node.get("node_type") != "array":
                continue
            assert node["data_type"] in _SAFE_ZARR_TYPES, (meta, node["data_type"])
            codecs = json.dumps(node.get("codecs", [])).lower()
            assert "pickle" not in codecs and "object" not in codecs, (meta, codecs)
            checked += 1
        assert not list(cache.rglob(".zarray")), "no Zarr v2 metadata (v2 object arrays may pickle)"
    assert checked >= 10

    # And the strings come back as strings through the reader.
    from emo.cache import load_split as load_cache_split

    features = load_cache_split(cache, "train")
    assert features.sets, "the feature sets load too"
    for strings in (features.speaker, features.text):
        assert len(strings) == len(features) and all(isinstance(s, str) for s in strings)
    assert all(isinstance(f["reason"], str) for f in features.extra["failures"])


# ----------------------------------------------------------------------------- paths from CSV fields

HOSTILE_IDS = ["../../x", "/etc/passwd", "1/../../x", "..", "-1", "1e3", "0x10", "3.0", "1 2", "C:\\x", "~", ""]


@pytest.mark.parametrize("column", [DIALOGUE, UTTERANCE])
@pytest.mark.parametrize("value", HOSTILE_IDS)
def test_hostile_ids_in_the_csv_are_rejected(tmp_path, column, value):
    row = list(ROW)
    row[column] = value
    path = write_csv(tmp_path / "train_sent_emo.csv", list(COLUMNS), [row])
    with pytest.raises(DataError) as raised:
        read_annotations(path)
    message = str(raised.value)
    assert COLUMNS[column] in message and "row 2" in message and str(path) in message


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dialogue=st.text(max_size=12), utterance=st.text(max_size=12))
def test_no_csv_field_builds_a_path_outside_the_clip_folder(tmp_path, dialogue, utterance):
    """Whatever the two id fields hold, a row is either refused or names a file directly
    inside its split's clip folder."""
    root = tmp_path / "meld"
    (root / "train_splits").mkdir(parents=True, exist_ok=True)
    row = list(ROW)
    row[DIALOGUE], row[UTTERANCE] = dialogue, utterance
    try:
        write_csv(root / "train_sent_emo.csv", list(COLUMNS), [row])
    except (UnicodeEncodeError, ValueError):
        return  # surrogates cannot even be written to a UTF-8 file
    try:
        split = load_split(root, "train")
    except DataError:
        return
    (utterance_record,) = split.utterances
    clip = split.clip_path(utterance_record)
    assert clip.parent == split.clip_dir
    assert clip.resolve().parent == (root / "train_splits").resolve()
    assert clip.name == f"dia{utterance_record.dialogue_id}_utt{utterance_record.utterance_id}.mp4"


def test_a_clip_that_is_a_symlink_is_read_where_it_points(tmp_path):
    """Users link their clips in from elsewhere (MELD unpacked on another disk): the link's
    *name* comes from the CSV and stays in the clip folder; following it is the user's
    choice, not an escape, so it must not stop extraction."""
    elsewhere = tmp_path / "other-disk" / "dia0_utt0.mp4"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"\x00" * 16)
    root = tmp_path / "meld"
    (root / "train_splits").mkdir(parents=True)
    (root / "train_splits" / "dia0_utt0.mp4").symlink_to(elsewhere)
    write_csv(root / "train_sent_emo.csv", list(COLUMNS), [ROW])
    split: MeldSplit = load_split(root, "train")
    assert split.clip_path(split.utterances[0]) == root / "train_splits" / "dia0_utt0.mp4"
