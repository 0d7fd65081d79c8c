"""Issue 19: fusion heads and launchers are registries, and a new one is one file.

tests/toy_head.py ("toy-mean") and tests/toy_launcher.py ("toy") are such files, loaded the
way a user's would be, through EMO_PLUGINS: every place that names heads or launchers -
config validation, the ablation grid, help texts, model building, `emo extract`'s options,
the cache's launcher folders, `emo cache status` - reads the registry, so they work with no
other change. The built-in heads give the same seeded weights as before the registry
(tests/test_fuse_train.py, test_ablate.py and the check below).
"""

from __future__ import annotations

import emo.fuse  # noqa: F401, I001 - first: sets OpenMP's passive wait policy before torch loads
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emo import plugins
from emo.errors import ConfigError, UsageError
from extract_fixtures import assert_same_split, tiny_bert, tiny_config  # noqa: F401  (session fixture)
from reliability_fixtures import Result, assert_clean_error, child_env, emo_argv, synthetic_feature_cache

TESTS = Path(__file__).resolve().parent
TOY_HEAD, TOY_LAUNCHER = str(TESTS / "toy_head.py"), str(TESTS / "toy_launcher.py")


def emo(*args: str, plugin: str | None = None, timeout: float = 300) -> Result:
    env = child_env(**({"EMO_PLUGINS": plugin} if plugin else {}))
    done = subprocess.run(emo_argv(*args), capture_output=True, text=True, env=env, timeout=timeout)
    return Result(tuple(args), done.returncode, done.stdout, done.stderr)


@pytest.fixture
def toy_head(monkeypatch):
    """tests/toy_head.py registered for this test only (the registry is restored after it)."""
    from emo.fuse import heads

    monkeypatch.setattr(heads, "_HEADS", dict(heads._HEADS))
    monkeypatch.setattr(plugins, "_loaded", set())
    monkeypatch.setenv(plugins.ENV, TOY_HEAD)
    monkeypatch.delitem(sys.modules, "emo_plugin_toy_head", raising=False)
    yield heads
    sys.modules.pop("emo_plugin_toy_head", None)


# ------------------------------------------------------------------------ fusion heads


def test_every_place_that_names_fusion_heads_reads_the_registry(toy_head):
    from emo.fuse.ablate_grid import AblateConfig
    from emo.fuse.config import FitConfig
    from emo.fuse.model import FusionModel, ModelConfig

    assert toy_head.head_names() == ("early", "late", "ensemble", "toy-mean")
    assert toy_head.fusion_help() == "early, late, ensemble or toy-mean"
    FitConfig(fusion="toy-mean").validate()
    AblateConfig(fusion=("early", "toy-mean")).validate()
    with pytest.raises(ConfigError, match="one of early, late, ensemble, toy-mean; got 'mean'"):
        FitConfig(fusion="mean").validate()
    with pytest.raises(ConfigError, match="early, late, ensemble and/or toy-mean; got early, mean"):
        AblateConfig(fusion=("early", "mean")).validate()
    model = FusionModel(
        ModelConfig(modalities=("text", "visual"), text_dim=8, visual_dim=4, proj_dim=6, fusion="toy-mean")
    )
    assert [k for k in model.state_dict() if not k.startswith("encoders.")] == ["out.weight", "out.bias"]
    present = torch.tensor([[True, False], [True, True]])
    out = model(present, text=torch.randn(2, 8), visual=torch.randn(2, 4))["emotion"]
    assert out.shape == (2, 7) and model.fusion_weights() == {"toy-mean": 1.0}


def test_a_second_head_under_a_taken_name_is_refused(toy_head):
    with pytest.raises(UsageError, match="Two fusion heads are registered as 'early'"):
        toy_head.register_head("early", "not the seed's", target=torch.nn.Identity)


def test_built_in_heads_keep_their_checkpoint_keys_and_parameter_order():
    """Before the registry the heads' modules sat on the model itself; they still do, so old
    checkpoints load and the optimiser and gradient clipping see the same parameter order
    (the ensemble's two mixing scalars first), which keeps seeded fits bit-identical."""
    from emo.fuse.model import FusionModel, ModelConfig

    names = [n for n, _ in FusionModel(ModelConfig(text_dim=8, visual_dim=4, proj_dim=6)).named_parameters()]
    assert names[:3] == ["early_logit", "late_logit", "encoders.text.weight"]
    assert names[-1] == "late.heads.2.2.bias" and any(n.startswith("early.net.") for n in names)
    for fusion in ("early", "late"):
        keys = FusionModel(ModelConfig(text_dim=8, visual_dim=4, proj_dim=6, fusion=fusion)).state_dict()
        assert {k.split(".")[0] for k in keys} == {"encoders", fusion}
    overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)  # .to() makes new Parameters
    try:
        model = FusionModel(ModelConfig(text_dim=8, visual_dim=4, proj_dim=6)).to(torch.float64).eval()
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(overwrite)
    assert model.head.early_logit is model.early_logit and model.head.early_logit.dtype == torch.float64
    assert not model.head.training and not model.early.training


def test_fit_and_eval_a_plugin_head_through_the_cli(tmp_path):
    cache = synthetic_feature_cache(tmp_path / "cache")
    run = tmp_path / "run"
    helped = emo("fit", "-h", plugin=TOY_HEAD)
    assert "ensemble or toy-mean" in re.sub(r"\s+", " ", helped.stdout).replace("- ", "-"), helped.describe()
    fitted = emo(
        "fit",
        "--cache",
        str(cache),
        "--out",
        str(run),
        "--fusion",
        "toy-mean",
        "--epochs",
        "2",
        "--device",
        "cpu",
        plugin=TOY_HEAD,
    )
    assert fitted.returncode == 0, fitted.describe()
    payload = torch.load(run / "model.pt", weights_only=True)
    assert payload["model_config"]["fusion"] == "toy-mean" and "out.weight" in payload["state_dict"]
    scored = emo("eval", "--run", str(run), "--split", "test", "--device", "cpu", plugin=TOY_HEAD)
    assert scored.returncode == 0, scored.describe()
    report = json.loads(next(run.glob("eval-*-test.json")).read_text())
    assert report["fusion_weights"] == {"toy-mean": 1.0}

    assert_clean_error(
        emo("eval", "--run", str(run), "--split", "test", "--device", "cpu"), 2, mentions=("toy-mean", "EMO_PLUGINS")
    )
    assert_clean_error(
        emo("fit", "--cache", str(cache), "--out", str(tmp_path / "r2"), "--fusion", "toy-mean"),
        2,
        mentions=("early, late, ensemble", "toy-mean"),
    )
    broken = emo("fit", "--cache", str(cache), "--out", str(tmp_path / "r3"), plugin=str(tmp_path / "nope.py"))
    assert_clean_error(broken, 2, mentions=("EMO_PLUGINS", "nope.py"))
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


# --------------------------------------------------------------------------- launchers


def test_a_plugin_launcher_brings_its_options_and_its_words(synth_root, tmp_path):
    base = ["extract", "--split", "train", "--data-root", str(synth_root), "--cache", str(tmp_path / "c")]
    helped = emo("extract", "-h", plugin=TOY_LAUNCHER)
    assert "--toy-order" in helped.stdout and "toy: each task in turn" in re.sub(r"\s+", " ", helped.stdout), (
        helped.describe()
    )
    assert "--toy-order" not in emo("extract", "-h").stdout  # only with the plugin loaded
    assert_clean_error(emo(*base, "--toy-order", "reverse", plugin=TOY_LAUNCHER), 2, mentions=("--launcher toy",))
    assert_clean_error(
        emo(*base, "--launcher", "toy", "--slurm-time", "5", plugin=TOY_LAUNCHER),
        2,
        mentions=("--slurm-time needs --launcher slurm",),
    )
    assert_clean_error(
        emo(*base, "--launcher", "toy", "--toy-order", "up", plugin=TOY_LAUNCHER), 2, mentions=("--toy-order",)
    )
    assert_clean_error(emo(*base, "--launcher", "toy"), 2, mentions=("Unknown launcher 'toy'", "local, slurm"))
    assert not (tmp_path / "c").exists()


def test_a_plugin_launcher_fills_the_same_cache_as_a_local_run(synth_root, tiny_bert, tmp_path):  # noqa: F811
    from emo.cache import load_split
    from emo.extract.pipeline.run import run_extract

    local = tmp_path / "local"
    run_extract(tiny_config(synth_root, local, tiny_bert, None, modalities=("text",), shard_size=4))
    cache = tmp_path / "toy"
    argv = [
        "extract",
        "--split",
        "train",
        "--data-root",
        str(synth_root),
        "--cache",
        str(cache),
        "--modalities",
        "text",
        "--text-model",
        str(tiny_bert),
        "--shard-size",
        "4",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--max-duration",
        "2",
        "--set",
        "threads=1",
        "--num-shards",
        "2",
        "--launcher",
        "toy",
    ]
    result = emo(*argv, "--toy-order", "reverse", plugin=TOY_LAUNCHER)
    assert result.returncode == 0, result.describe()
    assert "Ran toy launch" in result.stdout and "2 tasks (--shard-index 0-1 of --num-shards 2)" in result.stdout
    assert f"{cache} is complete (train: 6 shards)" in result.stdout and "Time per stage" in result.stdout
    assert_same_split(load_split(local, "train"), load_split(cache, "train"))
    logs = sorted((cache / "toy").glob("*.log"))
    assert len(logs) == 2 and all("Loading the encoders" in log.read_text() for log in logs)
    assert (cache / "toy" / ".emo-launcher").is_file()  # the cache's mark: a launcher's folder, never a split

    status = emo("cache", "status", str(cache), plugin=TOY_LAUNCHER)
    assert status.returncode == 0 and "last launch toy launch" in status.stdout, status.describe()
    verified = emo("cache", "verify", str(cache))  # no plugin needed to read the cache
    assert verified.returncode == 0, verified.describe()
    again = emo(*argv, plugin=TOY_LAUNCHER)
    assert again.returncode == 0 and "nothing to do: all 6 shards are already in" in again.stdout, again.describe()


def test_the_cache_knows_any_launcher_folder_by_its_mark(tmp_path):
    """A cache folder holding only a launcher's folder is a launch that wrote nothing yet,
    whatever the launcher is called; before the mark only `slurm/` was known, and a `toy/`
    folder made it "not an emo feature cache"."""
    from emo.cache import cache_status
    from emo.cache.launches import launcher_folder, write_launch

    cache = tmp_path / "cache"
    folder = launcher_folder(cache, "toy", "toy")
    write_launch(folder, {"launcher": "toy", "title": "toy launch 77", "job_id": "77", "num_shards": 2})
    assert not cache_status(cache).started
    out = tmp_path / "run"
    sentence = assert_clean_error(
        emo("fit", "--cache", str(cache), "--out", str(out)),
        1,
        mentions=("toy launch 77 was launched into it", f"emo cache status {cache}"),
    )
    assert "not an emo feature cache" not in sentence and not out.exists()
    status = emo("cache", "status", str(cache))
    assert status.returncode == 0 and "last launch toy launch 77" in status.stdout, status.describe()
    (cache / "train").mkdir()
    (cache / "train" / "x").write_text("data", encoding="utf-8")
    with pytest.raises(UsageError, match="cannot keep its files there"):
        launcher_folder(cache, "train", "toy")
