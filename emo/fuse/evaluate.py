"""`run_eval`: score a trained run on a cached split and write its report; never prints.

The report answers what MELD papers are compared on (weighted F1 first, then accuracy,
macro F1, per-class scores, the confusion matrix) plus two things a fusion model owes its
user: how the ensemble weighted its heads, and how much each modality matters - the drop
in weighted F1 when that modality is hidden at eval time, as if every clip lacked it. A
model trained without modality dropout never saw a hidden modality, so that number then
describes input unlike its training; the report carries a warning saying so.

The run's checkpoint records the cache fingerprint - for a run trained on feature sets, the
sets it used and each one's fingerprint - so scoring it on features made differently, or on
a cache that lacks one of its sets, is refused in one sentence. Files are written by
`emo.fuse.eval_report`; what people see in a terminal is drawn by `emo.commands.evaluate`
from the returned report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emo import atomic
from emo.cache.fingerprint import fingerprint_digest
from emo.device import resolve_device
from emo.errors import CacheError, UsageError, require_path
from emo.fuse.checkpoint import load_checkpoint, plain
from emo.fuse.tensors import TensorSplit
from emo.fuse.scoring import predict, primary_head, score
from emo.fuse.eval_report import DEFINITIONS, write_report
from emo.fuse.feature_cache import load_raw, require_run_sets
from emo.fuse.feature_sets import describe_fingerprint_difference, format_features
from emo.fuse.predictions import eval_rows, model_inputs, model_split, utterance_texts
from emo.fuse.run_folder import require_finished


def resolve_cache(payload: dict[str, Any], run_dir: Path, cache: Path | None) -> Path:
    """The cache to score on: the one given, else the one the run was trained from."""
    if cache is not None:
        return require_path(cache, "Cache", f"pass the feature cache to score run {run_dir} on with --cache DIR")
    recorded = payload.get("cache_path") or payload["fit_config"].get("cache")
    if not recorded:
        raise UsageError(f"Run {run_dir} does not record its cache; pass --cache DIR.")
    return require_path(recorded, "Cache", f"run {run_dir} was trained on it; pass --cache DIR to score it on a copy")


def require_matching_cache(payload: dict[str, Any], fingerprint: dict[str, Any], cache: Path, run_dir: Path) -> None:
    """One sentence when the cache was not made the way the run's training cache was."""
    digest = fingerprint_digest(plain(fingerprint))
    if digest != payload["fingerprint_digest"]:
        raise CacheError(
            f"Cache {cache} (fingerprint {digest}) was made with different encoders or preprocessing than run "
            f"{run_dir} was trained on (fingerprint {payload['fingerprint_digest']}): "
            f"{describe_fingerprint_difference(payload['fingerprint'], plain(fingerprint))}."
        )


def run_eval(
    run_dir: Path | str,
    split: str = "test",
    cache: Path | str | None = None,
    device: str = "auto",
    write: bool = True,
) -> dict[str, Any]:
    """Score `run_dir`'s checkpoint on `split` of its cache (or `cache`) and return the report.

    With `write`, the report goes into the run directory under names that say which cache
    and split it scored (see `emo.fuse.eval_report.report_stem`), so scoring the same run
    on another cache never overwrites an earlier report; `report["files"]` lists them.
    """
    from emo.cache import open_cache

    run_dir = Path(run_dir)
    require_finished(run_dir)
    torch_device = resolve_device(device)
    model, payload = load_checkpoint(run_dir, torch_device)
    cache_path = resolve_cache(payload, run_dir, Path(cache) if cache is not None else None)
    info = open_cache(cache_path)
    selection = require_run_sets(payload, info, cache_path, run_dir)  # None: a run from before feature sets
    if selection is None:
        require_matching_cache(payload, info.fingerprint, cache_path, run_dir)
    fit = payload["fit_config"]
    modalities = model.config.modalities
    # verify=True: every shard's checksum is checked, so a flipped byte is refused, not scored
    features = load_raw(cache_path, split, [selection], modalities, verify=True)
    inputs = model_inputs(payload, features, modalities)  # the run's sets, composed as in training
    if selection is not None:  # the sets' own fingerprints were checked above; this adds rows and pooling
        require_matching_cache(payload, inputs.fingerprint, cache_path, run_dir)
    data = model_split(model, payload, inputs, torch_device)  # as in training, speaker ids included
    batch_size, precision = int(fit.get("eval_batch_size", 256)), fit.get("precision", "fp32")
    logits = predict(model, data, batch_size, precision=precision)
    report = evaluate_model(model, data, batch_size, precision, logits=logits)
    report.update(
        {
            "run": str(run_dir),
            "split": split,
            "cache": str(cache_path.resolve()),
            "fingerprint_digest": payload["fingerprint_digest"],
            "checkpoint_epoch": payload["epoch"],
            "fusion": model.config.fusion,
            "features": format_features(selection) if selection else "",
            "definitions": dict(DEFINITIONS),
            "warnings": importance_warnings(fit, modalities),
        }
    )
    texts = row_texts(features) or utterance_texts(cache_path / "config.toml", split)
    rows = eval_rows(logits, features, modalities, data.present.cpu().numpy(), texts)
    if write:
        folder = run_dir if run_dir.is_dir() else run_dir.parent
        with atomic.disk_full_as_error(folder):  # the report's files land together or not at all
            paths = write_report(report, folder, predictions=rows)
        report["files"] = {kind: str(path) for kind, path in paths.items()}
    report["predictions"] = rows  # not in the JSON report: one row per utterance, in its own files
    return report


def row_texts(features) -> dict[tuple[int, int], str]:
    """(dialogue, utterance) -> text from the cache's own row table, when it holds any."""
    if not features.text or not any(features.text):
        return {}
    return {(int(d), int(u)): t for d, u, t in zip(features.dialogue_id, features.utterance_id, features.text)}


def importance_warnings(fit_config: dict[str, Any], modalities: tuple[str, ...]) -> list[str]:
    """Say when modality importance measures the model on input it never saw in training.

    Hiding a modality at eval time is only like something the model learned from when
    training hid modalities too (modality dropout). Without it, the drop mixes "this
    modality carries signal" with "this input is out of distribution"; the reader must know.
    """
    if not modalities or float(fit_config.get("modality_dropout", 0.0) or 0.0) > 0:
        return []
    return [
        "The model was trained with modality_dropout 0, so it never saw a hidden modality: its modality "
        "importance measures input unlike anything it was trained on, not only what each modality adds "
        "(train with emo fit --modality-dropout 0.2 for a model that has learned to do without one)."
    ]


def evaluate_model(
    model, data: TensorSplit, batch_size: int = 256, precision: str = "fp32", logits: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every metric of the report for an in-memory model and split (no files touched);
    `logits` are the model's on `data` when the caller already has them."""
    heads = model.config.heads
    main = primary_head(heads)
    if logits is None:
        logits = predict(model, data, batch_size, precision=precision)
    scores = score(logits, data, detailed=True)
    importance = {}
    for modality in model.config.modalities:
        hidden = score(predict(model, data, batch_size, hide=(modality,), precision=precision), data)[main]
        importance[modality] = {
            "weighted_f1_without": hidden["weighted_f1"],
            "drop": scores[main]["weighted_f1"] - hidden["weighted_f1"],
        }
    present = data.present.cpu()
    return {
        "rows": len(data),
        "modalities": list(model.config.modalities),
        "heads": list(heads),
        "headline": {
            "head": main,
            "weighted_f1": scores[main]["weighted_f1"],
            "accuracy": scores[main]["accuracy"],
            "macro_f1": scores[main]["macro_f1"],
            "loss": scores[main]["loss"],
        },
        "metrics": scores,
        "fusion_weights": model.fusion_weights(),
        "modality_importance": importance,
        "missing": {m: int((~present[:, i]).sum()) for i, m in enumerate(model.config.modalities)},
    }
