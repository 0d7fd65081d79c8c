"""Per-utterance predictions as rows, and the one writer of prediction files (CSV + JSONL).

`emo eval` writes the rows of the split it scored next to its report, and `emo predict`
writes rows for new media with the same writer, so both files look alike: one row per
utterance, the predicted emotion, the probability of each of the 7 emotions (and of the 3
sentiments when the run trained a sentiment head), the modalities the prediction used and
the utterance's text where it is known.

In the JSONL every row is one JSON object with the probabilities as a dict per head; the
CSV flattens them to one column per class (`p_joy`, `p_sentiment_positive`). Both are
written atomically, so a prediction file that exists is complete.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from emo import atomic
from emo.labels import EMOTIONS, SENTIMENTS

if TYPE_CHECKING:
    from emo.fuse.inputs import ModelInputs

HEAD_LABELS = {"emotion": EMOTIONS, "sentiment": SENTIMENTS}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise probabilities (float64, each row sums to 1)."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def head_columns(logits: dict[str, np.ndarray], row: int) -> dict[str, Any]:
    """`emotion`, `emotion_probabilities` (+ `sentiment`, `sentiment_probabilities`) of one row."""
    out: dict[str, Any] = {}
    for head in ("emotion", "sentiment"):
        if head not in logits:
            continue
        probs = softmax(logits[head][row : row + 1])[0]
        labels = HEAD_LABELS[head]
        out[head] = labels[int(probs.argmax())]
        out[f"{head}_probabilities"] = {label: round(float(p), 6) for label, p in zip(labels, probs)}
    return out


def used_modalities(modalities: Sequence[str], present: np.ndarray) -> list[str]:
    """For each row, the model's modalities it actually had, joined by '+' ('' for none)."""
    return ["+".join(m for m, on in zip(modalities, flags) if on) for flags in np.asarray(present, dtype=bool)]


def eval_rows(
    logits: dict[str, np.ndarray],
    features,
    modalities: Sequence[str],
    present: np.ndarray,
    texts: dict[tuple[int, int], str] | None = None,
) -> list[dict[str, Any]]:
    """One row per utterance of a scored split, in the split's row order."""
    used = used_modalities(modalities, present)
    rows = []
    for i in range(len(features)):
        key = (int(features.dialogue_id[i]), int(features.utterance_id[i]))
        row: dict[str, Any] = {
            "dialogue_id": key[0],
            "utterance_id": key[1],
            "speaker": features.speaker[i],
            "true_emotion": EMOTIONS[int(features.emotion[i])],
            "true_sentiment": SENTIMENTS[int(features.sentiment[i])],
        }
        row.update(head_columns(logits, i))
        row["modalities"] = used[i]
        row["text"] = (texts or {}).get(key, "")
        rows.append(row)
    return rows


def utterance_texts(cache_config: Path, split: str) -> dict[tuple[int, int], str]:
    """(dialogue, utterance) -> text from the CSV the cache was extracted from, when that CSV
    is still where the cache's config.toml says; empty otherwise (the cache stores no text)."""
    from emo.config import read_toml
    from emo.data.meld import load_split
    from emo.errors import EmoError

    try:
        values = read_toml(Path(cache_config))
        values = values.get("extract", values)
        root = Path(str(values.get("data_root", "")))
        if not str(values.get("data_root", "")) or not root.is_dir():
            return {}
        return {u.key: u.text for u in load_split(root, split).utterances}
    except (EmoError, OSError, ValueError, KeyError):
        return {}


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as CSV columns: each probability dict becomes `p_<class>` columns."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if key.endswith("_probabilities") and isinstance(value, dict):
            prefix = "p_" if key == "emotion_probabilities" else f"p_{key[: -len('_probabilities')]}_"
            flat.update({f"{prefix}{label}": value[label] for label in value})
        elif isinstance(value, (list, tuple)):
            flat[key] = "+".join(str(v) for v in value)
        else:
            flat[key] = value
    return flat


def write_predictions(
    rows: Sequence[dict[str, Any]], csv_path: Path, jsonl_path: Path, header: Sequence[str] = ()
) -> dict[str, Path]:
    """Write `rows` as CSV and JSONL (both atomically); returns {"csv": path, "jsonl": path}.
    `header`: the CSV's columns when there are no rows, so an empty result is still a table."""
    flat = [flat_row(r) for r in rows]
    columns: list[str] = [] if flat else list(header)
    for r in flat:
        columns += [k for k in r if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    atomic.write_text(csv_path, buffer.getvalue())
    lines = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
    atomic.write_text(jsonl_path, lines)
    return {"csv": Path(csv_path), "jsonl": Path(jsonl_path)}


def model_inputs(payload: dict[str, Any], features, modalities) -> ModelInputs:
    """Loaded `features` (an `emo.cache.LoadedSplit`: a cache's split, or new media encoded
    set by set) composed as the run chose its sets, and checked to hold what its head reads;
    `payload` is the checkpoint's metadata."""
    from emo.fuse.config import resolve_text_feature
    from emo.fuse.feature_cache import run_selection
    from emo.fuse.inputs import check_compatible, compose

    inputs = compose(features, run_selection(payload, features, modalities))
    text_feature = resolve_text_feature(payload["fit_config"].get("text_feature", "cls"), payload["fingerprint"])
    check_compatible(inputs, modalities, text_feature)
    return inputs


def model_split(model, payload: dict[str, Any], inputs: ModelInputs, device):
    """`inputs` as the `TensorSplit` the run's model reads, set up exactly as in training
    (text pooling, mel cap, speaker ids)."""
    from emo.fuse.config import resolve_text_feature
    from emo.fuse.tensors import TensorSplit

    fit = payload["fit_config"]
    data = TensorSplit(
        inputs,
        model.config.modalities,
        device,
        resolve_text_feature(fit.get("text_feature", "cls"), payload["fingerprint"]),
        int(fit.get("max_mel_frames", 1000)),
    )
    data.use_speakers(str(fit.get("speaker_embedding", "none")), model.config.speakers)
    return data


def predict_features(model, payload: dict[str, Any], features, device) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Logits per head for every row of loaded `features` (rows of one dialogue in
    utterance order are one dialogue for a context head) and the bool[N, M] presence flags."""
    from emo.fuse.scoring import predict

    fit = payload["fit_config"]
    data = model_split(model, payload, model_inputs(payload, features, model.config.modalities), device)
    logits = predict(model, data, int(fit.get("eval_batch_size", 256)), precision=fit.get("precision", "fp32"))
    return logits, data.present.cpu().numpy()
