"""Tiny, randomly initialised encoders saved to disk and loaded back through the real
transformers / open_clip code paths, shared by the tests/test_extract*.py files (which
import the fixtures from here; the synthetic dataset and real-data fixtures come from
tests/conftest.py)."""

from __future__ import annotations

import csv
import inspect
import json
import string
from pathlib import Path

import numpy as np
import pytest


TINY_VIT = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


def _wordpiece_vocab() -> list[str]:
    """Enough WordPiece entries to spell any lower-case English text, one character at a time."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    words = ["the", "i", "you", "what", "okay", "oh", "joey", "ross", "monica", "chandler", "rachel", "phoebe"]
    return specials + chars + [f"##{c}" for c in string.ascii_lowercase + string.digits] + words


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with a real WordPiece tokenizer, saved with save_pretrained."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(_wordpiece_vocab()) + "\n", encoding="utf-8")
    # transformers 5 takes the vocab as `vocab`, 4.x as `vocab_file`.
    key = "vocab" if "vocab" in inspect.signature(BertTokenizer.__init__).parameters else "vocab_file"
    tokenizer = BertTokenizer(**{key: str(vocab_file)})
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(_wordpiece_vocab()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=160,
    )
    torch.manual_seed(0)
    BertModel(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> tuple[Path, Path]:
    """(architecture JSON, checkpoint .pt) for a tiny open_clip ViT, random weights."""
    import open_clip
    import torch

    folder = tmp_path_factory.mktemp("tiny-clip")
    config = folder / "emo-test-tiny-vit.json"
    config.write_text(json.dumps(TINY_VIT), encoding="utf-8")
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model("emo-test-tiny-vit", pretrained=None)
    checkpoint = folder / "tiny-vit.pt"
    torch.save(model.state_dict(), checkpoint)
    return config, checkpoint


def tiny_config(root: Path, cache: Path, tiny_bert: Path, tiny_clip: tuple[Path, Path] | None, **overrides):
    """An ExtractConfig on the tiny encoders, small enough to run in a second or two."""
    from emo.extract.config import ExtractConfig

    values = dict(
        data_root=root,
        cache=cache,
        split="train",
        text_model=str(tiny_bert),
        visual_model=str(tiny_clip[0]) if tiny_clip else "ViT-B-32",
        visual_pretrained=str(tiny_clip[1]) if tiny_clip else "openai",
        frames=4,
        shard_size=4,
        batch_size=6,
        workers=0,
        max_duration=3.0,
        device="cpu",
        # One encoder thread whatever the workers: torch's float rounding depends on the thread
        # count, and tests compare runs with different --workers bit for bit.
        threads=1,
    )
    values.update(overrides)
    return ExtractConfig(**values)


def meld_rows(meld_dir: Path, split: str, keys: list[tuple[int, int]]) -> list[list[str]]:
    """The header and the rows with these (dialogue, utterance) keys, verbatim from a real CSV."""
    with (meld_dir / f"{split}_sent_emo.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    wanted = {(str(d), str(u)) for d, u in keys}
    picked = [row for row in rows[1:] if (row[5], row[6]) in wanted]
    if len(picked) != len(wanted):
        raise LookupError(f"not all of {keys} are in {split}")
    return [rows[0], *picked]


ARRAYS = (
    "dialogue_id",
    "utterance_id",
    "emotion",
    "sentiment",
    "has_text",
    "has_audio",
    "has_visual",
    "truncated",
    "text_cls",
    "text_mean",
    "visual",
    "visual_mask",
    "mel",
    "mel_index",
)


def assert_same_split(a, b) -> None:
    """Two loaded splits hold bit-identical arrays (and the same fingerprint), compared as
    the model reads them (each modality's first set composed)."""
    from synthetic_features import default_inputs

    assert a.fingerprint == b.fingerprint and list(a.sets) == list(b.sets)
    a, b = default_inputs(a), default_inputs(b)
    assert a.speaker == b.speaker and a.failure == b.failure
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert np.array_equal(x, y), name
