"""Seed ensembles (`emo ensemble`, `emo eval --run A --run B`, `emo ablate --seeds N`, `emo predict
ENSEMBLE`): the mean of the members' class probabilities, checked against a mean computed here
from each run's own logits, through the real CLI in a subprocess where it matters."""

from __future__ import annotations

import emo.fuse  # noqa: F401, I001 - first: sets OpenMP's passive wait policy before torch loads
import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from emo.cli import app, run as run_cli
from emo.labels import EMOTIONS
from extract_fixtures import tiny_bert  # noqa: F401  (the session's tiny BERT, for the predict test)
from reliability_fixtures import emo
from synthetic_features import SYNTHETIC_FINGERPRINT, make_synthetic_split, write_synthetic_cache

ROOT = Path(__file__).resolve().parents[1]
SHAPES = dict(text_dim=16, visual_dim=8, frames=2, mean_mel_frames=20, max_mel_frames=40)
SENTENCE = re.compile(r"^emo: error: [^\n]+\.\n$")  # one line
FIT = dict(epochs=2, lr=2e-3, device="cpu", max_mel_frames=40, threads=1)


def one_sentence(err: str, words: str) -> None:
    assert SENTENCE.match(err), err
    assert "Traceback" not in err and words in err, err
    assert len(re.findall(r"\.\s", err.removeprefix("emo: error: "))) == 1, err  # one sentence


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(root, cache, [3 seeds], a task=both run, a run on another cache): small, 2 epochs each."""
    from emo.fuse.config import FitConfig
    from emo.fuse.train import run_fit

    root = tmp_path_factory.mktemp("ensemble")
    splits = [make_synthetic_split(240, "train", seed=1, **SHAPES)] + [
        make_synthetic_split(90, name, seed=s, **SHAPES) for name, s in (("dev", 2), ("test", 3))
    ]
    write_synthetic_cache(root / "cache", splits, shard_rows=128)
    seeds = [root / f"seed-{s}" for s in range(3)]
    for s, out in enumerate(seeds):
        run_fit(FitConfig(cache=root / "cache", out=out, seed=s, **FIT))
    both = root / "both"
    run_fit(FitConfig(cache=root / "cache", out=both, task="both", **FIT))
    other_fp = dict(SYNTHETIC_FINGERPRINT, text_encoder="bert-base-uncased")
    write_synthetic_cache(
        root / "other-cache",
        [
            make_synthetic_split(n, name, seed=s, fingerprint=other_fp, **SHAPES)
            for n, name, s in ((240, "train", 1), (90, "dev", 2), (90, "test", 3))
        ],
        shard_rows=128,
    )
    other = root / "other"
    run_fit(FitConfig(cache=root / "other-cache", out=other, **FIT))
    return root, root / "cache", seeds, both, other


def manual_probabilities(run_dirs, cache: Path, split: str) -> np.ndarray:
    """Each run's own logits (its checkpoint on the cached split), softmaxed, averaged here."""
    from emo import load_split
    from emo.fuse.checkpoint import load_checkpoint
    from emo.fuse.predictions import predict_features

    features = load_split(cache, split)
    probs = []
    for run in run_dirs:
        model, payload = load_checkpoint(run)
        logits = predict_features(model, payload, features, "cpu")[0]["emotion"].astype(np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs.append(e / e.sum(axis=1, keepdims=True))
    return np.mean(probs, axis=0), features


def weighted_f1(features, probs: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(
        f1_score(features.emotion, probs.argmax(1), average="weighted", labels=range(len(EMOTIONS)), zero_division=0)
    )


def report_of(folder: Path) -> tuple[dict, list[dict], str]:
    (path,) = folder.glob("eval-*-test.json")
    report = json.loads(path.read_text())
    rows = [json.loads(line) for line in Path(report["files"]["predictions_jsonl"]).read_text().splitlines()]
    return report, rows, Path(report["files"]["predictions_csv"]).read_text()


def test_an_ensemble_of_three_seeds_equals_the_mean_of_their_probabilities(runs, tmp_path):
    root, cache, seeds, _, _ = runs
    ens = tmp_path / "ens"
    made = emo("ensemble", *seeds, "--out", ens)
    assert made.returncode == 0, made.stderr
    assert "Ensemble of 3 runs written to" in made.stdout and "member-3 <- " in made.stdout
    scored = emo("eval", "--run", ens, "--split", "test", "--device", "cpu")
    assert scored.returncode == 0, scored.stderr
    report, rows, predictions_csv = report_of(ens)

    mean, features = manual_probabilities(seeds, cache, "test")
    got = np.asarray([[row["emotion_probabilities"][e] for e in EMOTIONS] for row in rows])
    assert len(rows) == report["rows"] == 90
    assert np.abs(got - mean).max() < 2e-6  # the JSONL rounds to 6 decimals
    assert [row["emotion"] for row in rows] == [EMOTIONS[i] for i in mean.argmax(1)]
    assert report["metrics"]["emotion"]["weighted_f1"] == pytest.approx(weighted_f1(features, mean), abs=1e-12)
    # each member alone, as `emo eval --run SEED` scores it, and the gain over their mean
    singles = [weighted_f1(features, manual_probabilities([s], cache, "test")[0]) for s in seeds]
    members = report["ensemble"]["members"]
    assert [m["weighted_f1"] for m in members] == pytest.approx(singles, abs=1e-12)
    assert [m["run"] for m in members] == [str(s.resolve()) for s in seeds]
    gain = report["ensemble"]["gain"]["weighted_f1"]
    assert gain == pytest.approx(report["headline"]["weighted_f1"] - sum(singles) / 3, abs=1e-12)
    assert report["checkpoint_epoch"] == [m["checkpoint_epoch"] for m in members]
    text = " ".join(scored.stdout.split())
    assert "member-1 (" in text and f"{100 * members[2]['weighted_f1']:.2f} %" in text
    assert f"{100 * gain:+.2f} points of weighted F1 over the members' mean" in text
    markdown = Path(report["files"]["markdown"]).read_text()
    assert "## Ensemble members" in markdown and "the mean probabilities of 3 runs" in markdown

    # the same runs given one by one: the very same predictions, into --out
    adhoc = tmp_path / "adhoc"
    again = emo("eval", "--run", seeds[0], "--run", seeds[1], "--run", seeds[2], "--out", adhoc, "--device", "cpu")
    assert again.returncode == 0, again.stderr
    assert report_of(adhoc)[2] == predictions_csv
    # several --run without --out: one sentence, nothing written
    refused = emo("eval", "--run", seeds[0], "--run", seeds[1], "--device", "cpu")
    assert refused.returncode == 2
    one_sentence(refused.stderr, "pass --out DIR")


def test_an_ensemble_folder_is_self_contained(runs, tmp_path):
    _, _, seeds, _, _ = runs
    copies = [tmp_path / f"copy-{i}" for i in range(3)]
    for seed, copy in zip(seeds, copies):
        shutil.copytree(seed, copy)
    ens = tmp_path / "ens"
    assert emo("ensemble", *copies, "--out", ens).returncode == 0
    for copy in copies:
        shutil.rmtree(copy)  # the runs are gone; the ensemble keeps what it reads
    members = sorted(p.name for p in (ens / "members").iterdir())
    assert members == ["member-1", "member-2", "member-3"]
    assert sorted(p.name for p in (ens / "members" / "member-1").iterdir()) == [
        "config.toml",
        "model.pt",
        "summary.json",
    ]
    checkpoints = sum((seed / "model.pt").stat().st_size for seed in seeds)
    assert sum(p.stat().st_size for p in ens.rglob("*") if p.is_file()) < checkpoints + 64 * 1024  # small
    record = json.loads((ens / "ensemble.json").read_text())
    assert [m["source"] for m in record["members"]] == [str(c.resolve()) for c in copies]
    assert "runs = [" in (ens / "ensemble.toml").read_text()
    scored = emo("eval", "--run", ens, "--split", "test", "--device", "cpu")
    assert scored.returncode == 0, scored.stderr
    assert report_of(ens)[0]["run"] == str(ens)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    (ens / "members" / "member-2" / "model.pt").unlink()  # damage is named, not taken for a typo
    damaged = emo("eval", "--run", ens, "--device", "cpu")
    assert damaged.returncode == 1
    one_sentence(damaged.stderr, f"Ensemble {ens} is damaged: members/member-2 has no model.pt")


def test_incompatible_or_unfinished_runs_are_refused_in_one_sentence(runs, tmp_path, capsys):
    _, _, seeds, both, other = runs
    out = tmp_path / "ens"
    done = emo("ensemble", seeds[0], both, "--out", out)
    assert done.returncode == 1, done.stderr
    one_sentence(
        done.stderr,
        "cannot be averaged into one ensemble: the first predicts emotion (task emotion), the "
        "second emotion and sentiment (task both)",
    )
    cases = [
        (["ensemble", seeds[0], other], 1, "they were trained on different caches or feature sets"),
        (["eval", "--run", seeds[0], "--run", other, "--out", tmp_path / "adhoc"], 1, "cannot be averaged"),
        (["ensemble", seeds[0]], 2, "An ensemble needs at least two runs, got 1"),
        (["ensemble", seeds[0], tmp_path / "nope"], 2, "does not exist"),
        (["ensemble", seeds[0], seeds[0]], 2, "is given twice"),
    ]
    unfinished = tmp_path / "unfinished"
    shutil.copytree(seeds[1], unfinished)
    (unfinished / "summary.json").unlink()  # as a fit killed before its end would leave it (older layouts)
    cases.append((["ensemble", seeds[0], unfinished], 1, f"{unfinished} is not a finished run"))
    unreadable = tmp_path / "unreadable"  # every path is answered before any checkpoint is read
    shutil.copytree(seeds[2], unreadable)
    (unreadable / "model.pt").write_bytes(b"not a checkpoint")
    cases.append((["ensemble", unreadable, tmp_path / "nope"], 2, f"Run directory {tmp_path / 'nope'} does not exist"))
    for args, code, words in cases:
        argv = [str(a) for a in args] + (["--out", str(out)] if args[0] == "ensemble" else ["--device", "cpu"])
        assert run_cli(app, argv) == code, argv
        one_sentence(capsys.readouterr().err, words)
    assert not out.exists() and not (tmp_path / "adhoc").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_overwrite_rules_are_those_of_a_run(runs, tmp_path, capsys):
    _, _, seeds, _, _ = runs
    out = tmp_path / "ens"
    argv = ["ensemble", str(seeds[0]), str(seeds[1]), str(seeds[2]), "--out", str(out)]
    assert run_cli(app, argv) == 0
    assert run_cli(app, ["eval", "--run", str(out), "--device", "cpu"]) == 0
    before = (out / "ensemble.json").read_text()
    capsys.readouterr()
    assert run_cli(app, argv) == 2  # an ensemble is there: --overwrite or another --out
    one_sentence(capsys.readouterr().err, f"{out} already holds an ensemble; choose another --out or pass --overwrite")
    assert (out / "ensemble.json").read_text() == before
    assert run_cli(app, ["ensemble", str(seeds[0]), str(seeds[1]), "--out", str(out), "--overwrite"]) == 0
    assert len(json.loads((out / "ensemble.json").read_text())["members"]) == 2
    assert not list(out.glob("eval-*")) and not (out / "members" / "member-3").exists()  # replaced as a whole
    capsys.readouterr()
    (tmp_path / "file").write_text("not a folder")
    for target, words in (
        (seeds[2], "holds other files than an ensemble (config.toml, curves.png, metrics.jsonl)"),
        (tmp_path / "file", "is a file; pass a folder for the ensemble"),
        (seeds[2] / "inside", f"lies inside run {seeds[2]}"),
    ):
        assert run_cli(app, ["ensemble", str(seeds[0]), str(seeds[1]), "--out", str(target), "--overwrite"]) == 2
        one_sentence(capsys.readouterr().err, words)
    assert sorted(p.name for p in seeds[2].iterdir()) == [
        "config.toml",
        "curves.png",
        "metrics.jsonl",
        "model.pt",
        "summary.json",
    ]
    # an ensemble folder is not a run: emo fit will not replace it
    assert run_cli(app, ["fit", "--cache", str(runs[1]), "--out", str(out), "--overwrite", "--epochs", "1"]) == 2
    one_sentence(capsys.readouterr().err, "holds other files than a run")


def test_ablate_reports_each_cells_seed_ensemble_beside_mean_and_std(runs, tmp_path):
    _, cache, _, _, _ = runs
    out = tmp_path / "ablate"
    common = [
        "--cache",
        cache,
        "--modalities",
        "text,text+audio",
        "--fusion",
        "early",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--set",
        "max_mel_frames=40",
        "--set",
        "lr=0.002",
    ]
    done = emo("ablate", *common, "--out", out, "--seeds", "3")
    assert done.returncode == 0, done.stderr
    assert "test wF1 ens" in done.stdout
    with open(out / "summary.csv", encoding="utf-8") as handle:
        rows = {row["cell"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"text__early", "text+audio__early"}
    for cell, row in rows.items():
        seeds = [out / "cells" / cell / f"seed-{s}" for s in range(3)]
        for split in ("dev", "test"):
            mean, features = manual_probabilities(seeds, cache, split)
            assert float(row[f"{split}_wf1_ensemble"]) == pytest.approx(weighted_f1(features, mean), abs=1e-12)
            accuracy = float((mean.argmax(1) == features.emotion).mean())
            assert float(row[f"{split}_acc_ensemble"]) == pytest.approx(accuracy, abs=1e-12)
    (first,) = [r for r in json.loads((out / "results.json").read_text()) if r["cell"] == "text__early"]
    assert first["test_wf1_ensemble"] == pytest.approx(float(rows["text__early"]["test_wf1_ensemble"]))
    markdown = (out / "results.md").read_text()
    assert "| dev wF1 ens | test wF1 ens |" in markdown
    assert f"| {100 * first['test_wf1_ensemble']:.2f} |" in markdown
    # one seed: nothing to average, and no ensemble columns
    single = tmp_path / "single"
    argv = ["ablate", "--cache", cache, "--modalities", "text", "--fusion", "early", "--epochs", "1", "--device", "cpu"]
    assert run_cli(app, [str(a) for a in argv + ["--out", single, "--seeds", "1"]]) == 0
    assert (
        "_ensemble" not in (single / "summary.csv").read_text() and "wF1 ens" not in (single / "results.md").read_text()
    )


def test_predict_with_an_ensemble_averages_each_segments_probabilities(synth_root, tiny_bert, tmp_path):
    """A text-only run on a tiny BERT: features are made once for all members, and each segment's
    probabilities are the mean of what each member predicts alone."""
    import emo as emo_api
    from emo.extract.pipeline.run import run_extract
    from emo.fuse.config import FitConfig
    from emo.fuse.train import run_fit
    from extract_fixtures import tiny_config

    cache = tmp_path / "cache"
    run_extract(tiny_config(synth_root, cache, tiny_bert, None, split="all", modalities=("text",)))
    members = [tmp_path / f"seed-{s}" for s in range(2)]
    for s, out in enumerate(members):
        run_fit(FitConfig(cache=cache, out=out, seed=s, modalities=("text",), **FIT))
    ens = tmp_path / "ens"
    assert emo("ensemble", *members, "--out", ens).returncode == 0
    clips = sorted((synth_root / "output_repeated_splits_test").glob("*.mp4"))
    transcript = synth_root / "test_sent_emo.csv"
    out = tmp_path / "predictions"
    done = emo("predict", ens, *clips, "--transcript", transcript, "--out", out, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    got = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert got, done.stdout

    def key(row) -> tuple:
        return (row["file"], row["segment"])

    alone = []
    for member in members:
        with emo_api.Predictor.from_run(member, device="cpu") as predictor:
            alone.append({key(s.to_row()): s.probabilities for s in predictor.predict(clips, transcript).segments})
    with emo_api.Predictor.from_run(ens, device="cpu") as predictor:  # the Python API takes the ensemble too
        assert len(predictor.ensemble) == 2
        api_rows = {key(s.to_row()): s.probabilities for s in predictor.predict(clips, transcript).segments}
    for row in got:
        mean = [np.mean([a[key(row)][e] for a in alone]) for e in EMOTIONS]
        assert np.abs(np.asarray([row["emotion_probabilities"][e] for e in EMOTIONS]) - mean).max() < 2e-6
        assert np.abs(np.asarray([api_rows[key(row)][e] for e in EMOTIONS]) - mean).max() < 2e-6


def test_ensemble_on_a_full_disk_leaves_nothing_and_works_after_freeing_space(runs, tmp_path):
    from disk_fixtures import small_disk

    _, _, seeds, _, _ = runs
    with small_disk(tmp_path, kib=1024) as disk:  # less room than the three checkpoints need
        print("small disk:", disk.method)
        out = disk.path / "ens"

        def ensemble():
            return emo("ensemble", *seeds, "--out", out, timeout=300, preexec=disk.preexec)

        done = ensemble()
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert done.stderr == f"emo: error: Disk full while writing {out}; free space and run the same command again.\n"
        assert [p.name for p in disk.path.iterdir() if p.name != ".filler"] == [], "no ensemble, no temporary"
        disk.grow()
        done = ensemble()
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in out.iterdir()) == ["ensemble.json", "ensemble.toml", "members"]
