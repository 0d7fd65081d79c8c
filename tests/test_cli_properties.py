"""Issue 18 ("Nothing lost, ever"): the command line's promise, as a property over every verb.

For every verb (synth, extract, fit, eval, ablate, predict, demo, cache info/verify/status/
rm/upgrade) and generated bad values - missing paths, files for folders and folders for
files, traversal and non-ASCII names, negative / NaN / inf / huge / non-numeric numbers,
unknown `--set` keys, CSVs and TOML in the wrong encoding, conflicting options - the
command ends in one sentence (`emo: error: ...`), never a traceback, with the README's
exit status (2 usage, 1 data or work), and leaves no file under any output path given.
Runs go through `emo.cli.run` in this process (the console script's code path minus the
interpreter start), so hundreds take seconds; a few real subprocess runs check the entry
point. tests/test_reliability_bad_input.py holds the older fixed subprocess matrix.
"""

from __future__ import annotations

import codecs
import dataclasses
import importlib
import io
import os
import re
import traceback
import uuid
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emo.data.meld import COLUMNS
from reliability_fixtures import Result, assert_clean_error, emo_many, synthetic_feature_cache, write_csv

USAGE, DATA = 2, 1
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GOOD_ROWS = [
    ["1", "Hello there.", "Joey", "joy", "positive", "0", "0", "1", "1", "00:00:01,000", "0:00:02,500"],
    ["2", "Oh. My. God.", "Janice", "surprise", "positive", "0", "1", "1", "1", "00:00:03,000", "00:00:04,100"],
]


def run_in_process(*argv: str) -> Result:
    """`emo ARGV` through `emo.cli.run`; an escaping exception becomes the traceback a user would see."""
    from emo.cli import app, run

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = run(app, list(argv))
        except BaseException:  # noqa: BLE001 - exactly what the property forbids
            err.write(traceback.format_exc())
            code = -1
    return Result(tuple(argv), code, out.getvalue(), err.getvalue())


def files_under(path: Path) -> list[Path]:
    """Every file at or under `path` (hidden temporaries included)."""
    return [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []


def check(argv: tuple[str, ...], code: int, outputs: tuple[Path, ...] = (), mentions: tuple[str, ...] = ()) -> str:
    result = run_in_process(*argv)
    sentence = assert_clean_error(result, code, mentions=mentions)
    for out in outputs:
        assert not files_under(out), f"{files_under(out)} left behind\n{result.describe()}"
    return sentence


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Inputs for every verb: a MELD-layout folder, a feature cache, a trained run, a file,
    CSVs and a TOML in the wrong encodings, and caches that an extraction is still writing."""
    from emo.fuse.config import FitConfig
    from emo.fuse.train import run_fit

    root = tmp_path_factory.mktemp("cli-properties")
    w: dict[str, Path] = {"root": root}
    w["data"] = root / "data"
    write_csv(w["data"] / "train_sent_emo.csv", list(COLUMNS), GOOD_ROWS)
    w["file"], w["clip"], w["toml16"] = root / "a_file", root / "clip.mp4", root / "fit16.toml"
    w["file"].write_text("not a folder\n", encoding="utf-8")
    w["clip"].write_bytes(b"")
    w["toml16"].write_bytes("epochs = 1\n".encode("utf-16"))
    text = w["data"].joinpath("train_sent_emo.csv").read_text(encoding="utf-8")
    for name, raw in {
        "utf16": text.encode("utf-16"),  # with a byte-order mark, as Excel's "Unicode text"
        "utf16le": text.encode("utf-16-le"),  # without one
        "utf32": text.encode("utf-32"),
        "binary": codecs.BOM_UTF8 + bytes(range(256)) * 4,
    }.items():
        (root / name).mkdir()
        (root / name / "train_sent_emo.csv").write_bytes(raw)
    w["cache"], w["run"] = synthetic_feature_cache(root / "cache"), root / "run"
    run_fit(FitConfig(cache=w["cache"], out=w["run"], epochs=1, device="cpu"))
    return w


def fresh(world, stem: str) -> Path:
    return world["root"] / "out" / f"{stem}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------- bad numbers

INT_BAD = ["-1", "-1000", "abc", "", "1.5", "1e3", "nan", "inf", str(10**30), str(-(10**30))]
FLOAT_BAD = ["nan", "inf", "-inf", "abc", "", "-1", "1e400"]
# (verb, option, kind): every numeric option of every verb; each is given one bad value.
NUMERIC_OPTIONS = [
    *[
        ("synth", f"--{o}", "int")
        for o in (
            "clips",
            "train-clips",
            "dev-clips",
            "test-clips",
            "width",
            "height",
            "fps",
            "sample-rate",
            "audio-channels",
            "seed",
            "unlabeled-videos",
        )
    ],
    *[
        ("synth", f"--{o}", "float")
        for o in (
            "min-duration",
            "max-duration",
            "text-cue",
            "audio-cue",
            "visual-cue",
            "broken-fraction",
            "long-duration",
        )
    ],
    *[
        ("extract", f"--{o}", "int")
        for o in (
            "frames",
            "context",
            "shard-size",
            "batch-size",
            "workers",
            "num-shards",
            "shard-index",
            "audio-views",
        )
    ],
    ("extract", "--max-duration", "float"),
    *[("fit", f"--{o}", "int") for o in ("epochs", "batch-size", "seed")],
    *[("fit", f"--{o}", "float") for o in ("lr", "modality-dropout")],
    *[("ablate", f"--{o}", "int") for o in ("seeds", "epochs")],
    ("demo", "--set epochs", "int"),
    ("demo", "--set train_clips", "int"),
]


def verb_argv(world, verb: str, out: Path) -> tuple[str, ...]:
    """A command of `verb` that would be valid, writing to `out`."""
    if verb == "synth":
        return ("synth", str(out))
    if verb == "extract":
        return (
            "extract",
            "--split",
            "train",
            "--data-root",
            str(world["data"]),
            "--cache",
            str(out),
            "--modalities",
            "text",
            "--preset",
            "offline",
            "--device",
            "cpu",
            "--workers",
            "0",
        )
    if verb == "fit":
        return ("fit", "--cache", str(world["cache"]), "--out", str(out), "--device", "cpu")
    if verb == "ablate":
        return ("ablate", "--cache", str(world["cache"]), "--out", str(out), "--modalities", "text", "--device", "cpu")
    if verb == "demo":
        return ("demo", "--quick", "--out", str(out))
    raise AssertionError(verb)


@PROPERTY
@given(option=st.sampled_from(NUMERIC_OPTIONS), data=st.data())
def test_a_bad_number_is_one_usage_sentence_and_writes_nothing(world, option, data):
    verb, flag, kind = option
    value = data.draw(st.sampled_from(INT_BAD if kind == "int" else FLOAT_BAD), label="value")
    out = fresh(world, verb)
    given_as = (*flag.split()[:1], f"{flag.split()[1]}={value}") if flag.startswith("--set ") else (flag, value)
    check((*verb_argv(world, verb, out), *given_as), USAGE, outputs=(out,))


# ------------------------------------------------------------------------- bad paths

PATH_CASES = {
    # kind -> (verb, where the bad path goes); each command is otherwise valid
    "missing": [
        ("extract", "--data-root"),
        ("extract", "--config"),
        ("fit", "--cache"),
        ("fit", "--config"),
        ("eval", "--run"),
        ("eval", "--cache"),
        ("ablate", "--cache"),
        ("ablate", "--config"),
        ("predict", "RUN"),
        ("predict", "INPUT"),
        ("predict", "--transcript"),
        ("demo", "--config"),
        ("synth", "--config"),
        *[("cache", v) for v in ("info", "verify", "status", "rm", "upgrade")],
    ],
    "file": [
        ("extract", "--data-root"),
        ("extract", "--cache"),
        ("fit", "--cache"),
        ("fit", "--out"),
        ("eval", "--cache"),
        ("ablate", "--cache"),
        ("ablate", "--out"),
        ("predict", "--out"),
        ("demo", "--out"),
        ("synth", "OUT"),
        *[("cache", v) for v in ("info", "verify", "status", "rm", "upgrade")],
    ],
    "folder": [
        ("extract", "--config"),
        ("fit", "--config"),
        ("ablate", "--config"),
        ("demo", "--config"),
        ("synth", "--config"),
        ("predict", "--transcript"),
    ],
    "dataset": [
        ("extract", "--cache"),
        ("fit", "--cache"),
        ("eval", "--cache"),
        ("ablate", "--cache"),
        ("eval", "--run"),
        ("predict", "RUN"),
        *[("cache", v) for v in ("info", "verify", "status", "rm", "upgrade")],
    ],
    "cache": [("eval", "--run"), ("predict", "RUN")],
}
# Names a bad path may have: traversal, spaces, non-ASCII, shell-special characters.
NAMES = st.sampled_from(["nope", "../../escape", "my name", "dätä", "日本語", "a;b", "-dash", "x" * 200])


def path_argv(world, verb: str, where: str, bad: Path, out: Path) -> tuple[str, ...]:
    """`verb` with `bad` in place `where` and every other argument valid."""
    w = world
    if verb == "cache":
        return ("cache", where, str(bad), *(("--set", "text/synthetic") if where == "rm" else ()))
    if verb == "predict":
        places = {"RUN": str(w["run"]), "INPUT": str(w["clip"]), "--out": str(out)}
        if where in places:
            places[where] = str(bad)
        extra = ("--transcript", str(bad)) if where == "--transcript" else ()
        return ("predict", places["RUN"], places["INPUT"], "--out", places["--out"], *extra)
    if verb == "eval":
        run, cache = (str(bad), None) if where == "--run" else (str(w["run"]), str(bad))
        return ("eval", "--run", run, "--device", "cpu", *(("--cache", cache) if cache else ()))
    argv = list(verb_argv(w, verb, out))
    if where == "OUT":
        argv[1] = str(bad)
    elif where in argv:
        argv[argv.index(where) + 1] = str(bad)
    else:
        argv += [where, str(bad)]
    return tuple(argv)


@PROPERTY
@given(kind=st.sampled_from(sorted(PATH_CASES)), data=st.data(), name=NAMES)
def test_a_wrong_path_is_one_usage_sentence_and_writes_nothing(world, kind, data, name):
    """A path that is not there, or is the wrong kind of thing, is the user's to fix (exit
    2), on every verb; in particular a file or a dataset folder given as a cache."""
    verb, where = data.draw(st.sampled_from(PATH_CASES[kind]), label="where")
    out = fresh(world, verb)
    bad = {
        "missing": world["root"] / "missing" / name,
        "file": world["file"],
        "folder": world["data"],
        "dataset": world["data"],
        "cache": world["cache"],
    }[kind]
    check(path_argv(world, verb, where, bad, out), USAGE, outputs=(out,))
    assert world["file"].read_text(encoding="utf-8") == "not a folder\n"  # never replaced or written into


# ------------------------------------------------------------------------- names, keys, encodings

_OK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
BAD_SET_NAMES = st.one_of(
    st.sampled_from(
        [
            "../../escape",
            "text=a/b",
            "my name",
            "text=..",
            "text=naïve",
            "..",
            ".hidden",
            "-x",
            "text=a\\b",
            "text=foo,text=bar",
            "audio=x",
            "text=",
            "=x",
            "text=a,",
            "名前",
        ]
    ),
    st.text(min_size=1, max_size=16).filter(lambda s: s.strip() and "=" not in s and not _OK_NAME.fullmatch(s.strip())),
)


@PROPERTY
@given(name=BAD_SET_NAMES)
def test_a_feature_set_name_that_cannot_be_a_folder_is_one_usage_sentence(world, name):
    """Defect 8: `emo extract --name` (traversal, separators, spaces, non-ASCII) was a traceback."""
    out = fresh(world, "extract")
    check((*verb_argv(world, "extract", out), "--name", name), USAGE, outputs=(out,), mentions=("--name",))


KNOWN_KEYS = {
    "synth": "emo.data.synth:SynthConfig",
    "extract": "emo.extract.config:ExtractConfig",
    "fit": "emo.fuse.config:FitConfig",
    "ablate": "emo.fuse.ablate_grid:AblateConfig",
    "demo": "emo.recipes.demo_config:DemoConfig",
}


def known_keys(verb: str) -> set[str]:
    module, name = KNOWN_KEYS[verb].split(":")
    keys = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name))}
    return keys | known_keys("fit") if verb == "ablate" else keys  # ablate also takes every fit key


@PROPERTY
@given(verb=st.sampled_from(sorted(KNOWN_KEYS)), key=st.from_regex(r"[a-z][a-z_-]{0,15}", fullmatch=True))
def test_an_unknown_set_key_is_one_usage_sentence(world, verb, key):
    if key.replace("-", "_") in known_keys(verb):
        return
    out = fresh(world, verb)
    check((*verb_argv(world, verb, out), "--set", f"{key}=1"), USAGE, outputs=(out,), mentions=(key.replace("-", "_"),))


@pytest.mark.parametrize("folder", ["utf16", "utf16le", "utf32", "binary"])
def test_a_csv_that_is_not_utf8_or_cp1252_says_so(world, folder):
    """Defect 9: a UTF-16 CSV was a "missing column"; now its encoding is named (exit 1: data)."""
    out = fresh(world, "extract")
    argv = verb_argv(world, "extract", out)
    argv = (
        argv[: argv.index("--data-root") + 1] + (str(world["root"] / folder),) + argv[argv.index("--data-root") + 2 :]
    )
    sentence = check(argv, DATA, outputs=(out,), mentions=("train_sent_emo.csv", "UTF-8"))
    assert "missing column" not in sentence


def test_a_toml_that_is_not_utf8_says_so(world):
    for verb in ("fit", "extract", "ablate", "synth", "demo"):
        out = fresh(world, verb)
        check(
            (*verb_argv(world, verb, out), "--config", str(world["toml16"])), USAGE, outputs=(out,), mentions=("UTF-8",)
        )


# ------------------------------------------------------------------------- conflicting options (defect 6)

CONFLICTS = {
    "extract: --name names one modality twice": ("extract", ("--name", "text=foo,text=bar"), ("text", "twice")),
    "extract: --set and the option for one key": (
        "extract",
        ("--frames", "2", "--set", "frames=3"),
        ("--frames", "both set"),
    ),
    "extract: --set twice": ("extract", ("--set", "frames=2", "--set", "frames=3"), ("frames", "twice")),
    "extract: --audio-layers with log-mel": (
        "extract",
        ("--modalities", "audio", "--audio-layers", "6,12"),
        ("--audio-layers", "mel"),
    ),
    "extract: --audio-layers with eGeMAPS": (
        "extract",
        ("--modalities", "audio", "--audio-model", "egemaps", "--audio-layers", "all"),
        ("--audio-layers",),
    ),
    "extract: --audio-views with a speech model": (
        "extract",
        ("--modalities", "audio", "--audio-model", "whisper-base", "--audio-views", "2"),
        ("--audio-views",),
    ),
    "extract: --preset offline with --text-model": (
        "extract",
        ("--text-model", "all-mpnet-base-v2"),
        ("--preset offline", "--text-model"),
    ),
    "extract: --preset offline with --visual-model": (
        "extract",
        ("--modalities", "visual", "--visual-model", "mediapipe-face"),
        ("--preset offline", "--visual-model"),
    ),
    # (a data root that is not there: were the refusal lost, nothing could be submitted to a real cluster)
    "extract: one --slurm-arg key twice": (
        "extract",
        (
            "--data-root",
            "/nonexistent/emo-data",
            "--launcher",
            "slurm",
            "--num-shards",
            "2",
            "--slurm-arg",
            "account=a",
            "--slurm-arg",
            "account=b",
        ),
        ("account", "twice"),
    ),
    "fit: --set epochs beside --epochs": ("fit", ("--epochs", "1", "--set", "epochs=abc"), ("--epochs", "both set")),
    "fit: --overwrite and --set overwrite": (
        "fit",
        ("--overwrite", "--set", "overwrite=false"),
        ("--overwrite", "both set"),
    ),
    "fit: --audio-views and --set audio_view_sampling": (
        "fit",
        ("--audio-views", "--set", "audio_view_sampling=false"),
        ("--audio-views", "both set"),
    ),
    "fit: --features for a modality not trained": (
        "fit",
        ("--modalities", "text", "--features", "visual=synthetic"),
        ("--features", "visual"),
    ),
    "fit: --spec-augment without audio": ("fit", ("--modalities", "text", "--spec-augment"), ("--spec-augment",)),
    "fit: --context-direction without a context model": ("fit", ("--context-direction", "past"), ("context model",)),
    "ablate: --epochs beside a --grid epochs axis": (
        "ablate",
        ("--epochs", "2", "--grid", "epochs=1,3"),
        ("epochs", "--grid"),
    ),
    "ablate: --set and the option for one key": (
        "ablate",
        ("--seeds", "1", "--set", "seeds=2"),
        ("--seeds", "both set"),
    ),
    "synth: --clips and --train-clips": ("synth", ("--clips", "4", "--train-clips", "6"), ("--clips", "--train-clips")),
    "synth: --clips and --set train_clips": ("synth", ("--clips", "4", "--set", "train_clips=6"), ("--clips",)),
    "demo: --quick and --set quick=false": ("demo", ("--set", "quick=false"), ("--quick", "both set")),
    "demo: --out and --set out": ("demo", ("--set", "out={root}/a_file/demo"), ("--out", "both set")),
}


@pytest.mark.parametrize("name", sorted(CONFLICTS))
def test_conflicting_options_are_refused_not_silently_ignored(world, name):
    """Defect 6: of two options that set one thing, one used to be silently ignored."""
    verb, extra, mentions = CONFLICTS[name]
    out, extra = fresh(world, verb), tuple(arg.replace("{root}", str(world["root"])) for arg in extra)
    check((*verb_argv(world, verb, out), *extra), USAGE, outputs=(out,), mentions=mentions)


@pytest.mark.parametrize("verb", ["synth", "extract", "fit", "ablate", "demo"])
def test_help_states_what_overrides_what(verb):
    """Defaults < --config < options and --set (an option and --set for one key: refused), said in -h."""
    result = run_in_process(verb, "-h")
    assert result.returncode == 0, result.describe()
    text = " ".join(result.stdout.split())
    assert "options and --set override it" in text and "is refused" in text, text


# ------------------------------------------------------------------------- messages (defects 8, 9)


def test_a_cache_given_as_a_run_is_named_for_what_it_is(world):
    """Defect 9: `emo predict CACHE clip` advised `emo fit --out CACHE`; now a run is asked for (exit 2)."""
    out = fresh(world, "predict")
    for argv in (
        ("predict", str(world["cache"]), str(world["clip"]), "--out", str(out)),
        ("eval", "--run", str(world["cache"]), "--device", "cpu"),
    ):
        sentence = check(argv, USAGE, outputs=(out,), mentions=("feature cache, not a run", "emo fit"))
        assert f"--out {world['cache']}" not in sentence
    assert not files_under(world["cache"] / "model.pt")


def test_an_unknown_language_lists_the_codes_before_any_model_loads(world):
    out = fresh(world, "predict")
    sentence = check(
        ("predict", str(world["run"]), str(world["clip"]), "--out", str(out), "--language", "xx-nosuch"),
        USAGE,
        outputs=(out,),
        mentions=("xx-nosuch", "auto"),
    )
    assert re.search(r"\ben, es\b", sentence), sentence


def _cache_being_written(root: Path, job: str | None) -> Path:
    """A cache whose train shard 1 this (live) process is writing; with `job`, launched by SLURM."""
    from emo import atomic

    cache = synthetic_feature_cache(root)
    for shard in cache.rglob("train/shard-00001.*"):
        (shard.parent / atomic.temp_name(shard.name)).write_bytes(b"")  # being written by os.getpid()
        shard.unlink()
    if job is not None:
        (cache / "slurm").mkdir()
        (cache / "slurm" / "launch.json").write_text(f'{{"job_id": "{job}", "num_shards": 2}}', encoding="utf-8")
    return cache


@pytest.mark.parametrize("job", [None, "4242"])
def test_fit_waits_for_an_extraction_in_progress_instead_of_racing_it(world, job):
    """Defect 9: a split being written (by a SLURM array or any emo extract) got "re-run emo extract
    without --num-shards", racing the writer; now the writer is named, and `emo cache status`."""
    cache = _cache_being_written(world["root"] / f"writing-{job}", job)
    out = fresh(world, "fit")
    sentence = check(
        ("fit", "--cache", str(cache), "--out", str(out), "--device", "cpu"),
        DATA,
        outputs=(out,),
        mentions=("still writing", f"emo cache status {cache}"),
    )
    assert "--num-shards" not in sentence and (job is None or f"SLURM job {job}" in sentence), sentence


def test_fit_on_a_launched_array_that_wrote_nothing_yet_names_the_job(world):
    """Defect 9: a folder holding only the launcher's files was "not an emo feature cache"."""
    cache = world["root"] / "pending"
    (cache / "slurm").mkdir(parents=True)
    (cache / "slurm" / "launch.json").write_text('{"job_id": "31337", "num_shards": 4}', encoding="utf-8")
    out = fresh(world, "fit")
    sentence = check(
        ("fit", "--cache", str(cache), "--out", str(out)),
        DATA,
        outputs=(out,),
        mentions=("SLURM job 31337", f"emo cache status {cache}"),
    )
    assert "not an emo feature cache" not in sentence and "--num-shards" not in sentence


def test_an_interrupted_extraction_still_gets_the_finish_hint(world):  # no live writer, no launch record
    cache = _cache_being_written(world["root"] / "interrupted", None)
    for temporary in cache.rglob(".shard-*"):
        temporary.unlink()
    out = fresh(world, "fit")
    check(("fit", "--cache", str(cache), "--out", str(out)), DATA, outputs=(out,), mentions=("re-run `emo extract",))


# ------------------------------------------------------------------------- the real entry point


def test_the_installed_entry_point_keeps_the_promise(world):
    """A few of the cases above through `python -m emo` in child processes."""
    root, out = world["root"], fresh(world, "sub")
    extract = verb_argv(world, "extract", out)
    cases = [
        ((*extract, "--name", "../../escape"), USAGE, ("--name",)),
        ((*extract, "--name", "text=naïve"), USAGE, ("--name",)),
        (
            (
                "extract",
                "--split",
                "train",
                "--data-root",
                str(world["data"]),
                "--cache",
                str(world["data"]),
                "--modalities",
                "text",
                "--preset",
                "offline",
            ),
            USAGE,
            ("dataset",),
        ),
        (("fit", "--cache", str(world["file"]), "--out", str(out)), USAGE, ("a_file",)),
        (("cache", "rm", str(world["file"]), "--set", "text/x"), USAGE, ("a_file",)),
        (
            ("fit", "--cache", str(world["cache"]), "--out", str(out), "--epochs", "1", "--set", "epochs=abc"),
            USAGE,
            ("--epochs",),
        ),
        (
            ("predict", str(world["run"]), str(world["clip"]), "--out", str(out), "--language", "xx-nosuch"),
            USAGE,
            ("xx-nosuch",),
        ),
        (("synth", str(out), "--clips", str(10**30)), USAGE, ("train_clips",)),
    ]
    results = emo_many([argv for argv, _, _ in cases], parallel=4)
    for (_, code, mentions), result in zip(cases, results):
        assert_clean_error(result, code, mentions=mentions)
    assert not files_under(out) and not (root.parent / "escape").exists()
    assert os.listdir(world["data"]) == ["train_sent_emo.csv"]
