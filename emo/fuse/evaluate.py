"""`run_eval`: score a trained run on a cached split and write its report; never prints.

The report answers what MELD papers are compared on (weighted F1 first, then accuracy,
macro F1, per-class scores, the confusion matrix) plus two things a fusion model owes its
user: how the ensemble weighted its heads (and, for a `layers` set, which of the encoder's
layers the head used: `emo.fuse.layer_mix`), and how much each modality matters - the drop
in weighted F1 when that modality is hidden at eval time, as if every clip lacked it. A
model trained without modality dropout never saw a hidden modality, so that number then
describes input unlike its training; the report carries a warning saying so.

The run's checkpoint records the cache fingerprint - for a run trained on feature sets, the
sets it used and each one's fingerprint - so scoring it on features made differently, or on
a cache that lacks one of its sets, is refused in one sentence. Files are written by
`emo.fuse.eval_report`; what people see in a terminal is drawn by `emo.commands.evaluate`
from the returned report. Several runs, or an `emo ensemble` folder, are scored the same way
as one model whose probabilities are the mean of theirs (`emo.fuse.ensemble`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from emo import atomic
from emo.cache.fingerprint import fingerprint_digest
from emo.device import resolve_device
from emo.errors import CacheError, UsageError, require_path
from emo.fuse.checkpoint import plain
from emo.fuse.ensemble import (
    Ensemble,
    Member,
    ensemble_logits,
    is_ensemble,
    member_logits,
    member_split,
    open_members,
)
from emo.fuse.tensors import TensorSplit
from emo.fuse.scoring import primary_head, score
from emo.fuse.eval_report import DEFINITIONS, write_report
from emo.fuse.eval_request import given_cache
from emo.fuse.feature_cache import load_raw, require_run_sets
from emo.fuse.feature_sets import describe_fingerprint_difference, format_features
from emo.fuse.layer_mix import mix_report
from emo.fuse.predictions import eval_rows, model_inputs, model_split, utterance_texts
from emo.fuse.run_folder import holds_run

ENSEMBLE_METRICS = ("weighted_f1", "accuracy", "macro_f1")
ENSEMBLE_DEFINITION = (
    "The scores are those of the members' mean class probabilities (argmax for the prediction, its log for the "
    "loss); ensemble.members holds each member's own scores on the same rows, members_mean their mean and gain "
    "the ensemble's score minus that mean."
)


def resolve_cache(payload: dict[str, Any], run_dir: Path, cache: Path | None) -> Path:
    """The cache to score on: the one given, else the one the run was trained from."""
    if cache is not None:
        return given_cache(cache, run_dir)
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
    run_dir: Path | str | Sequence[Path | str],
    split: str = "test",
    cache: Path | str | None = None,
    device: str = "auto",
    write: bool = True,
    out: Path | str | None = None,
) -> dict[str, Any]:
    """Score `run_dir`'s checkpoint on `split` of its cache (or `cache`) and return the report.

    `run_dir` may also be an ensemble folder (`emo ensemble`) or several runs: the mean of
    their class probabilities is scored as one model's (`emo.fuse.ensemble`), and the report
    gains `ensemble` (each member's own score, their mean and the ensemble's gain over it).
    With `write`, the report goes into the run directory (the ensemble folder; `out` when
    given, which several runs need) under names that say which cache and split it scored
    (see `emo.fuse.eval_report.report_stem`), so scoring the same run on another cache never
    overwrites an earlier report; `report["files"]` lists them.
    """
    from emo.cache import open_cache

    runs = [run_dir] if isinstance(run_dir, (str, Path)) else list(run_dir)
    folder = report_folder(runs, Path(out) if out is not None else None) if write else None
    ensemble = open_members(runs, "cpu")  # finished, compatible members, before any other work
    torch_device = resolve_device(device)
    for member in ensemble.members:
        member.model.to(torch_device)
    first = ensemble.first
    run_dir, model, payload = first.run_dir, first.model, first.payload
    cache_path = resolve_cache(payload, run_dir, Path(cache) if cache is not None else None)
    info = open_cache(cache_path)
    selection = require_run_sets(payload, info, cache_path, run_dir)  # None: a run from before feature sets
    if selection is None:
        require_matching_cache(payload, info.fingerprint, cache_path, run_dir)
    modalities = model.config.modalities
    # verify=True: every shard's checksum is checked, so a flipped byte is refused, not scored
    features = load_raw(cache_path, split, [selection], modalities, verify=True)
    inputs = model_inputs(payload, features, modalities)  # the run's sets, composed as in training
    if selection is not None:  # the sets' own fingerprints were checked above; this adds rows and pooling
        require_matching_cache(payload, inputs.fingerprint, cache_path, run_dir)
    data = model_split(model, payload, inputs, torch_device)  # as in training, speaker ids included
    datas = [data] + [member_split(m, features, torch_device) for m in ensemble.members[1:]]
    each = [member_logits(m, d) for m, d in zip(ensemble.members, datas)]
    logits = ensemble_logits(each)  # one run's own logits, or the log of the members' mean probabilities
    report = evaluate_members(list(zip(ensemble.members, datas)), logits=logits)
    single = len(ensemble) == 1
    warnings = [w for m in ensemble.members for w in importance_warnings(m.payload["fit_config"], modalities)]
    report.update(
        {
            "run": ensemble.label,
            "split": split,
            "cache": str(cache_path.resolve()),
            "fingerprint_digest": payload["fingerprint_digest"],
            "checkpoint_epoch": payload["epoch"] if single else [m.payload["epoch"] for m in ensemble.members],
            "fusion": "+".join(_unique(m.model.config.fusion for m in ensemble.members)),
            "features": format_features(selection) if selection else "",
            "definitions": dict(DEFINITIONS, **({} if single else {"ensemble": ENSEMBLE_DEFINITION})),
            "warnings": _unique(warnings),
        }
    )
    if not single:
        report["ensemble"] = ensemble_section(ensemble, each, datas, report["headline"])
    texts = row_texts(features) or utterance_texts(cache_path / "config.toml", split)
    rows = eval_rows(logits, features, modalities, data.present.cpu().numpy(), texts)
    if write:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic.disk_full_as_error(folder):  # the report's files land together or not at all
            paths = write_report(report, folder, predictions=rows)
        report["files"] = {kind: str(path) for kind, path in paths.items()}
    report["predictions"] = rows  # not in the JSON report: one row per utterance, in its own files
    return report


def report_folder(runs: list[Path | str], out: Path | None) -> Path:
    """Where the report goes: `out`, else the run's folder (or the ensemble folder). Several
    runs need `out`, and `out` may not be a file, a cache, or another run's or ensemble's
    folder (whose own reports share the report names); checked before any work."""
    from emo.cache.layout import is_cache_folder

    given = [Path(r) for r in runs]
    own = given[0] if given[0].is_dir() else given[0].parent
    if out is None:
        if len(given) > 1:
            raise UsageError(
                "Several --run are scored as one ensemble whose report needs a folder of its own; pass --out DIR "
                "(or build an ensemble folder with `emo ensemble RUN RUN --out DIR` and evaluate that)."
            )
        return own
    if len(given) == 1 and out.resolve() == own.resolve():
        return out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a folder for the report.")
    if out.is_dir() and (is_cache_folder(out) or holds_run(out) or is_ensemble(out)):
        what = "a feature cache" if is_cache_folder(out) else "a run" if holds_run(out) else "an ensemble"
        raise UsageError(f"--out {out} holds {what}, whose own reports share these names; pass another folder.")
    return out


def _unique(values) -> list:
    return list(dict.fromkeys(values))


def ensemble_section(ensemble: Ensemble, each: list, datas: list, headline: dict[str, Any]) -> dict[str, Any]:
    """Each member's own score on the split (the main head), their mean, and how much the
    ensemble gains over that mean (the question an ensemble answers: is it worth the runs?)."""
    main = headline["head"]
    members = []
    for member, logits, data in zip(ensemble.members, each, datas):
        scores = score(logits, data)[main]
        members.append(
            {
                "name": member.name,
                "run": member.source,
                "seed": member.payload["fit_config"].get("seed"),
                "checkpoint_epoch": member.payload["epoch"],
                **{k: scores[k] for k in ENSEMBLE_METRICS},
            }
        )
        if mix_report(member.model):
            members[-1]["layer_mix"] = mix_report(member.model)
    mean = {k: sum(m[k] for m in members) / len(members) for k in ENSEMBLE_METRICS}
    return {
        "head": main,
        "members": members,
        "members_mean": mean,
        "gain": {k: headline[k] - mean[k] for k in ENSEMBLE_METRICS},
    }


def row_texts(features) -> dict[tuple[int, int], str]:
    """(dialogue, utterance) -> text from the cache's own row table, when it holds any."""
    if not features.text or not any(features.text):
        return {}
    return {(int(d), int(u)): t for d, u, t in zip(features.dialogue_id, features.utterance_id, features.text)}


def measures_importance(modalities: Sequence[str]) -> bool:
    """Modality importance is measured for a run of several modalities only: hiding the one
    modality of a text-only run leaves no input at all, so its "drop" would say nothing."""
    return len(modalities) > 1


def importance_warnings(fit_config: dict[str, Any], modalities: tuple[str, ...]) -> list[str]:
    """Say when modality importance measures the model on input it never saw in training.

    Hiding a modality at eval time is only like something the model learned from when
    training hid modalities too (modality dropout). Without it, the drop mixes "this
    modality carries signal" with "this input is out of distribution"; the reader must know.
    """
    if not measures_importance(modalities) or float(fit_config.get("modality_dropout", 0.0) or 0.0) > 0:
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
    member = Member(
        "model", Path("."), "", model, {"fit_config": {"eval_batch_size": batch_size, "precision": precision}}
    )
    return evaluate_members([(member, data)], logits=logits)


def evaluate_members(parts: list[tuple[Member, TensorSplit]], logits: dict[str, Any] | None = None) -> dict[str, Any]:
    """`evaluate_model` for an ensemble's members, each with its split as it reads it: the
    mean of their probabilities is scored, with each modality hidden from all of them for
    its importance; fusion weights are the members' mean. One member is exactly one model."""
    model, data = parts[0][0].model, parts[0][1]
    heads = model.config.heads
    main = primary_head(heads)
    if logits is None:
        logits = ensemble_logits([member_logits(m, d) for m, d in parts])
    scores = score(logits, data, detailed=True)
    importance = {}  # {} for a single-modality run (`measures_importance`)
    for modality in model.config.modalities if measures_importance(model.config.modalities) else ():
        hidden = score(ensemble_logits([member_logits(m, d, hide=(modality,)) for m, d in parts]), data)[main]
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
        "fusion_weights": mean_weights([m.model.fusion_weights() for m, _ in parts]),
        # per layers set: its learned layer weights, or the fixed choice (an ensemble's: per member, in "ensemble")
        "layer_mix": mix_report(model) if len(parts) == 1 else {},
        "modality_importance": importance,
        "missing": {m: int((~present[:, i]).sum()) for i, m in enumerate(model.config.modalities)},
    }


def mean_weights(weights: list[dict[str, float]]) -> dict[str, float]:
    """The members' fusion weights, averaged key by key (one member's unchanged)."""
    if len(weights) == 1:
        return weights[0]
    return {k: sum(w[k] for w in weights if k in w) / sum(k in w for w in weights) for k in weights[0]}
