"""Issue 6, requirement 1: broken clips of every kind never stop `emo extract`, every failure
is recorded with its reason and the modality it cost, `emo cache info` shows them, and
`emo fit` trains on the rest with presence masks. Unlabeled videos are ignored and counted.

One synthetic MELD-layout dataset (real h264/AAC files written with PyAV) holds every kind
the generator knows, half of train broken; the real `emo` entry point runs in a child
process on tiny encoders loaded through the real transformers / open_clip paths.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from extract_fixtures import tiny_bert, tiny_clip  # noqa: F401  (session fixtures)
from reliability_fixtures import BROKEN_SYNTH, emo, extract_args, extract_config
from synthetic_features import default_inputs

pytestmark = pytest.mark.slow

LOST = {"no_audio": "audio", "no_video": "visual"}  # every other reason costs audio+visual


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from emo.data.synth import BROKEN_KINDS, SynthConfig, generate

    report = generate(tmp_path_factory.mktemp("broken") / "meld", SynthConfig(**BROKEN_SYNTH))
    train = report.split_clips("train")
    assert {c.broken for c in train if c.broken} == set(BROKEN_KINDS), "every broken kind is in train"
    for split in ("train", "dev", "test"):
        clips = report.split_clips(split)
        assert sum(1 for c in clips if c.broken) >= 0.1 * len(clips)
    return report


@pytest.fixture(scope="module")
def extracted(dataset, tiny_bert, tiny_clip, tmp_path_factory):  # noqa: F811
    cache = tmp_path_factory.mktemp("broken-cache") / "cache"
    result = emo(*extract_args(dataset.out_dir, cache, tiny_bert, tiny_clip, split="all"))
    assert result.returncode == 0, result.describe()
    assert "Traceback" not in result.stderr
    return cache, result


def test_extraction_completes_and_every_failure_is_in_the_manifest(dataset, extracted):
    cache, _ = extracted
    manifest = json.loads((cache / "manifest.json").read_text())
    for split in ("train", "dev", "test"):
        clips = {(c.dialogue_id, c.utterance_id): c for c in dataset.split_clips(split)}
        state = manifest["splits"][split]
        assert state["complete"] and state["rows"] == len(clips) == state["expected_rows"]
        items = state["failures"]["items"]
        recorded = {(f["dialogue_id"], f["utterance_id"]): f for f in items}
        assert len(recorded) == len(items), "one failure record per failed clip"
        expected = {key: c for key, c in clips.items() if c.expected_reason is not None}
        assert set(recorded) == set(expected), split
        for key, clip in expected.items():
            failure = recorded[key]
            assert failure["reason"] == clip.expected_reason, (split, clip.broken, failure)
            assert failure["modality"] == LOST.get(clip.expected_reason, "audio+visual"), (clip.broken, failure)
            assert failure["clip"] == clip.path.name and failure.get("message"), failure
        by_reason = Counter(c.expected_reason for c in expected.values())
        assert state["failures"]["by_reason"] == dict(by_reason)
    assert manifest["totals"]["failures"] == sum(1 for c in dataset.clips if c.expected_reason is not None)


def test_every_good_clip_is_extracted_exactly_once(dataset, extracted):
    from emo.cache import load_split, verify_cache

    cache, _ = extracted
    assert verify_cache(cache) == []  # checksums and no key stored twice
    for split in ("train", "dev", "test"):
        features = default_inputs(load_split(cache, split))  # each modality's set as the model reads it
        clips = {(c.dialogue_id, c.utterance_id): c for c in dataset.split_clips(split)}
        keys = list(zip(features.dialogue_id.tolist(), features.utterance_id.tolist()))
        assert len(keys) == len(set(keys)) == len(clips), "every CSV row once, no duplicates"
        assert keys == sorted(clips)
        assert features.has_text.all()
        for i, key in enumerate(keys):
            clip = clips[key]
            reason = clip.expected_reason
            lost = set() if reason is None else set(LOST.get(reason, "audio+visual").split("+"))
            assert bool(features.has_audio[i]) == ("audio" not in lost), (split, clip.broken)
            assert bool(features.has_visual[i]) == ("visual" not in lost), (split, clip.broken)
            if "visual" not in lost:
                assert features.visual_mask[i].all() and np.abs(features.visual[i].astype(np.float32)).sum() > 0
            else:
                assert not features.visual_mask[i].any() and not features.visual[i].any()
            if "audio" not in lost:
                assert features.mel_index[i, 0, 1] > 0
            else:
                assert (features.mel_index[i, :, 1] == 0).all()
            assert features.failure[i] == (reason or ""), (clip.broken, features.failure[i])
            # Too-long clips (and a clip whose audio outlasts its video) are cut at
            # --max-duration while decoding and flagged, not failed.
            assert bool(features.truncated[i]) == (clip.broken in ("too_long", "audio_longer")), clip.broken
            if clip.broken in ("too_long", "audio_longer"):
                assert features.mel_index[i, 0, 1] <= 2 * 100 + 2  # 2 s at a 10 ms hop


def test_unlabeled_videos_are_ignored_and_counted(dataset, extracted):
    from emo.cache import load_split, open_cache

    cache, result = extracted
    info = open_cache(cache)
    for split in ("train", "dev", "test"):
        assert info.splits[split].ignored_videos == BROKEN_SYNTH["unlabeled_videos"]
        features = load_split(cache, split, modalities=("text",))
        keys = set(zip(features.dialogue_id.tolist(), features.utterance_id.tolist()))
        for path in dataset.unlabeled:
            if path.parent == dataset.clip_dirs[split]:
                dialogue, utterance = path.stem.removeprefix("dia").split("_utt")
                assert (int(dialogue), int(utterance)) not in keys
    assert "unlabeled" in result.stdout  # the end-of-run table (on stdout) has the column


def test_cache_info_shows_failures_by_reason(dataset, extracted):
    cache, _ = extracted
    shown = emo("cache", "info", str(cache))
    assert shown.returncode == 0, shown.describe()
    out = shown.stdout
    assert "Failures by reason" in out
    rows = [line for line in out.splitlines() if "│" in line or "|" in line]
    for split in ("train", "dev", "test"):
        counts = Counter(
            (c.expected_reason, LOST.get(c.expected_reason, "audio+visual"))
            for c in dataset.split_clips(split)
            if c.expected_reason is not None
        )
        for (reason, modality), count in counts.items():
            cells = [split, reason, modality, str(count)]
            assert any(
                [cell.strip() for cell in line.replace("|", "│").split("│") if cell.strip()] == cells for line in rows
            ), f"no row {cells} in\n{out}"
    as_json = emo("cache", "info", str(cache), "--json")
    assert as_json.returncode == 0, as_json.describe()
    manifest = json.loads(as_json.stdout)
    assert manifest["splits"]["train"]["failures"]["by_reason"] == {
        "empty": 1,
        "unreadable": 2,
        "no_audio": 1,
        "no_video": 1,
        "missing": 1,
    }


def test_fit_trains_on_the_rest_with_presence_masks(extracted, tmp_path):
    import torch

    from emo.cache import load_split
    from emo.fuse.tensors import TensorSplit

    cache, _ = extracted
    run = tmp_path / "run"
    result = emo(
        "fit",
        "--cache",
        str(cache),
        "--out",
        str(run),
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--lr",
        "1e-3",
    )
    assert result.returncode == 0, result.describe()
    payload = torch.load(run / "model.pt", weights_only=True, map_location="cpu")
    assert payload["fit_config"]["modalities"] == ["text", "audio", "visual"]
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == 2
    losses = [v for row in epochs for k, v in row.items() if "loss" in k and isinstance(v, (int, float))]
    assert losses and all(math.isfinite(v) for v in losses), epochs

    # The masks the trainer uses are the cache's presence flags: failed modalities are hidden.
    loaded = load_split(cache, "train")
    data = TensorSplit(default_inputs(loaded), ("text", "audio", "visual"))
    present = data.present.numpy()
    flags = {modality: item.present for item in loaded.sets.values() for modality in [item.modality]}
    assert (present[:, 0] == flags["text"]).all()
    assert (present[:, 1] == flags["audio"]).all()
    assert (present[:, 2] == flags["visual"]).all()
    assert not present[:, 1:].all(), "some clips lost audio or video"


def test_extract_on_a_folder_of_only_broken_clips_still_completes(tiny_bert, tiny_clip, tmp_path):  # noqa: F811
    """Nothing decodable at all: every row is kept (text only), every clip is a failure
    (in-process: the command line itself is covered above)."""
    from emo.cache import load_split
    from emo.data.synth import SynthConfig, generate
    from emo.extract.pipeline.run import run_extract

    config = dict(
        BROKEN_SYNTH,
        train_clips=8,
        dev_clips=0,
        test_clips=0,
        broken_fraction=1.0,
        broken_kinds=("zero_byte", "truncated", "missing", "not_video"),
        unlabeled_videos=0,
    )
    report = generate(tmp_path / "meld", SynthConfig(**config))
    cache = tmp_path / "cache"
    summary = run_extract(extract_config(report.out_dir, cache, tiny_bert, tiny_clip))
    assert summary.splits["train"].complete
    assert sum(summary.splits["train"].failures_by_reason.values()) == 8
    features = default_inputs(load_split(cache, "train"))
    assert len(features) == 8 and features.has_text.all()
    assert not features.has_audio.any() and not features.has_visual.any()
