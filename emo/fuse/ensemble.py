"""Seed ensembles: several finished runs read as one model whose class probabilities are
the mean of theirs.

Runs of one `emo fit` command that differ only in their seed disagree by a point or two
of weighted F1 (MELD's text rows: ± 0.3-1.8); averaging their probabilities removes much
of that noise for the price of a few more forward passes, and is the usual last step of
MELD systems. `emo eval --run A --run B`, an ensemble folder (`emo ensemble`, written by
`emo.fuse.ensemble_folder`), each `emo ablate` cell with several seeds and `emo predict`
all read members through `open_members` and average through `ensemble_logits`, so the
four cannot average differently.

Members must be finished runs trained on the same cache fingerprint and feature sets
(each set's fingerprint included: one digest covers them), for the same task and
modalities; anything else is refused in one sentence, since an average of models that
read different inputs or predict different labels answers no question. The average is
handed on as logits, `log(mean p)`: softmax gives the mean back, cross-entropy becomes
the ensemble's own log loss and argmax its prediction, so every scorer and writer of a
single run works on it unchanged. An ensemble of one is that run, untouched: its logits
pass through as they are, so single-run reports stay byte for byte what they were.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from emo.errors import EmoError, UsageError
from emo.fuse.checkpoint import load_checkpoint
from emo.fuse.feature_sets import describe_fingerprint_difference
from emo.fuse.predictions import model_inputs, model_split, softmax
from emo.fuse.run_folder import require_finished

ENSEMBLE_RECORD = "ensemble.json"  # written last: an ensemble folder is finished when it exists
ENSEMBLE_CONFIG = "ensemble.toml"
MEMBERS_FOLDER = "members"
FORMAT = "emo.fuse.ensemble/1"


@dataclass
class Member:
    """One run of an ensemble: `run_dir` is where its checkpoint is read, `source` the run
    it came from (the same folder, unless it was copied into an ensemble folder)."""

    name: str
    run_dir: Path
    source: str
    model: Any
    payload: dict[str, Any]

    @property
    def batch_size(self) -> int:
        return int(self.payload["fit_config"].get("eval_batch_size", 256))

    @property
    def precision(self) -> str:
        return self.payload["fit_config"].get("precision", "fp32")


@dataclass
class Ensemble:
    """Members read as one model; `folder` is the ensemble folder they came from, if any."""

    members: list[Member]
    label: str  # what reports call it: the run, the ensemble folder, or "A + B + C"
    folder: Path | None = None

    @property
    def first(self) -> Member:
        return self.members[0]

    def __len__(self) -> int:
        return len(self.members)


def is_ensemble(path: Path | str) -> bool:
    """True for a finished ensemble folder (`emo ensemble` writes its record last)."""
    return (Path(path) / ENSEMBLE_RECORD).is_file()


def read_record(folder: Path) -> dict[str, Any]:
    """An ensemble folder's record, checked to name member folders that are there."""
    path = Path(folder) / ENSEMBLE_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        names = [str(m["name"]) for m in record["members"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise EmoError(f"{path} is damaged; build the ensemble again with emo ensemble and --overwrite.") from None
    if record.get("format") != FORMAT or not names:
        raise EmoError(f"{path} is not an emo ensemble record; build it with emo ensemble RUN RUN --out DIR.")
    return record


def open_members(runs: Sequence[Path | str], device: Any = "cpu") -> Ensemble:
    """The runs to average, loaded on `device` and checked to be finished and compatible.

    `runs` is one run, one ensemble folder (its copied members), or several runs; an
    ensemble folder among several runs is refused (give its members' runs instead)."""
    paths = [Path(r) for r in runs]
    if not paths:
        raise UsageError("No run given; pass --run RUN (repeatable) or an ensemble folder.")
    if len(paths) == 1 and is_ensemble(paths[0]):
        folder = paths[0]
        record = read_record(folder)
        for m in record["members"]:  # a folder emo wrote: a missing file is damage (exit 1), not a typo
            missing = [
                n for n in ("model.pt", "summary.json") if not (folder / MEMBERS_FOLDER / m["name"] / n).is_file()
            ]
            if missing:
                raise EmoError(
                    f"Ensemble {folder} is damaged: {MEMBERS_FOLDER}/{m['name']} has no {' or '.join(missing)}; build "
                    "it again with emo ensemble and --overwrite."
                )
        members = [
            _load(m["name"], folder / MEMBERS_FOLDER / m["name"], str(m.get("source", "")), device)
            for m in record["members"]
        ]
        require_compatible(members)
        return Ensemble(members, str(folder), folder)
    for path in paths:
        if len(paths) > 1 and is_ensemble(path):
            raise UsageError(
                f"{path} is an ensemble folder; give it alone, or give the runs it was built from one by one."
            )
    seen: dict[Path, Path] = {}
    for path in paths:
        key = path.resolve()
        if key in seen:
            raise UsageError(f"Run {path} is given twice (as {seen[key]} too); give each run once.")
        seen[key] = path
    members = [_load(path.name or str(path), path, str(path), device) for path in paths]
    require_compatible(members)
    return Ensemble(members, " + ".join(str(p) for p in paths))


def _load(name: str, run_dir: Path, source: str, device: Any) -> Member:
    require_finished(run_dir)
    model, payload = load_checkpoint(run_dir, device)
    return Member(name, Path(run_dir), source or str(run_dir), model, payload)


def _difference(a: Member, b: Member) -> str:
    """Why two members cannot be averaged ('' when they can)."""
    task_a, task_b = a.payload["fit_config"].get("task", "emotion"), b.payload["fit_config"].get("task", "emotion")
    if tuple(a.model.config.heads) != tuple(b.model.config.heads):
        return (
            f"the first predicts {' and '.join(a.model.config.heads)} (task {task_a}), the second "
            f"{' and '.join(b.model.config.heads)} (task {task_b})"
        )
    if tuple(a.model.config.modalities) != tuple(b.model.config.modalities):
        return (
            f"the first reads {'+'.join(a.model.config.modalities)}, the second {'+'.join(b.model.config.modalities)}"
        )
    if a.payload["fingerprint_digest"] != b.payload["fingerprint_digest"]:
        what = describe_fingerprint_difference(b.payload["fingerprint"], a.payload["fingerprint"])
        return (
            f"they were trained on different caches or feature sets (fingerprint {a.payload['fingerprint_digest']} "
            f"vs {b.payload['fingerprint_digest']}: {what})"
        )
    return ""


def require_compatible(members: Sequence[Member]) -> None:
    """One sentence (exit 1) when a member cannot be averaged with the first."""
    first = members[0]
    for other in members[1:]:
        why = _difference(first, other)
        if why:
            raise EmoError(
                f"Runs {first.source} and {other.source} cannot be averaged into one ensemble: {why}; give runs "
                "fitted on the same cache and feature sets for the same task, such as seeds of one emo fit command."
            )


# --- averaging: the one way ----------------------------------------------------------------


def average_probabilities(logits: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per head, the mean over members of each row's class probabilities (float64)."""
    return {head: np.mean([softmax(member[head]) for member in logits], axis=0) for head in logits[0]}


def ensemble_logits(logits: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The members' logits as one model's: one member's unchanged, else `log(mean p)` per
    head (softmax of it is the mean probability; a probability of 0 stays finite)."""
    if len(logits) == 1:
        return dict(logits[0])
    tiny = np.finfo(np.float64).tiny
    return {head: np.log(np.maximum(p, tiny)) for head, p in average_probabilities(logits).items()}


def member_split(member: Member, features, device):
    """Loaded `features` as the `TensorSplit` this member's model reads (its sets, pooling, speakers)."""
    inputs = model_inputs(member.payload, features, member.model.config.modalities)
    return model_split(member.model, member.payload, inputs, device)


def member_logits(member: Member, data, hide: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    from emo.fuse.scoring import predict

    return predict(member.model, data, member.batch_size, hide=hide, precision=member.precision)


def predict_loaded(ensemble: Ensemble, features, device) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Averaged logits per head for every row of loaded `features` (encoded once, read by
    every member) and the first member's bool[N, M] presence flags."""
    datas = [member_split(m, features, device) for m in ensemble.members]
    logits = ensemble_logits([member_logits(m, d) for m, d in zip(ensemble.members, datas)])
    return logits, datas[0].present.cpu().numpy()


def ensemble_scores(
    runs: Sequence[Path | str], splits: Mapping[str, Any], device: Any = "cpu"
) -> dict[str, dict[str, Any]]:
    """{name: scores per head} of the ensemble of `runs` on each loaded split of `splits`
    (what `emo ablate` reports for a cell's seeds)."""
    from emo.fuse.scoring import score

    ensemble = open_members(runs, device)
    out = {}
    for name, features in splits.items():
        datas = [member_split(m, features, device) for m in ensemble.members]
        out[name] = score(ensemble_logits([member_logits(m, d) for m, d in zip(ensemble.members, datas)]), datas[0])
    return out
