"""Run the whole pipeline on a small SYNTHETIC dataset: synth -> extract -> fit -> eval -> ablate.

Needs no data and no network: it writes a small synthetic dataset in MELD's layout (real
mp4 files whose words, tone and colour carry a noisy cue of the emotion - not MELD, and
the numbers say nothing about MELD), extracts it with the pip-shipped offline encoders
(MiniLM-L6 text, EfficientNet-Lite0 frames, log-mel audio), trains the fusion head,
scores the test split against the majority-class baseline, runs a small ablation over
modality subsets, and prints where every artifact is. A few minutes on 2 CPU cores;
--quick is a smaller run (under a minute) for tests and a first look. Re-running reuses
what is already in --out (the encoders are not even loaded when the cache is complete).
Every size, cue strength and fit option is a DemoConfig key (--set key=value, --config
FILE with a [demo] section); the resolved config is saved as OUT/demo.toml.
Example: emo demo --out emo-demo --set epochs=30
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

import typer

from emo.errors import CacheError, ConfigError, UsageError

CONFIG_NAME = "demo.toml"


@dataclass
class DemoConfig:
    """The demo's sizes and options. Defaults are the full demo; `quick` swaps in QUICK
    below the TOML file and the command line, so either can still change any key."""

    out: Path = Path("emo-demo")  # folder for the demo's data, cache and runs
    quick: bool = False  # the smaller setting (QUICK) for tests and a first look
    device: str = "auto"  # auto, cpu or cuda: extraction, fit, eval and ablation
    # the synthetic dataset (emo synth)
    train_clips: int = 400
    dev_clips: int = 100
    test_clips: int = 150
    width: int = 96  # frame size; the image encoder resizes to 224 anyway, so small is fast
    height: int = 72
    text_cue: float = 0.7  # chance each modality carries the true emotion's cue (emo synth: 0.6)
    audio_cue: float = 0.7
    visual_cue: float = 0.7
    seed: int = 0  # dataset, fit and ablation seed
    # extraction (emo extract --preset offline)
    frames: int = 2  # frames per clip through the image encoder (the synthetic cue is a static colour)
    workers: int = 1  # decoding processes beside the encoder process
    # the fit (emo fit) and the ablation (emo ablate)
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 32
    text_feature: str = "mean"
    class_weights: str = "none"
    ablate_modalities: tuple[str, ...] = ("all-subsets",)
    ablate_seeds: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.ablate_modalities, str):
            self.ablate_modalities = tuple(m.strip() for m in self.ablate_modalities.split(",") if m.strip())
        self.ablate_modalities = tuple(self.ablate_modalities)
        self.out = Path(self.out)

    def validate(self) -> None:
        """Every sub-config is built and checked here, so a bad value fails before any work."""
        minimum = {"train_clips": 20, "dev_clips": 5, "test_clips": 5}
        for key, least in minimum.items():
            if getattr(self, key) < least:
                raise ConfigError(f"{key} must be at least {least} for the demo to train and score; got {getattr(self, key)}.")
        self.synth_config().validate()
        self.extract_config().validate()
        self.fit_config(Path("cache"), Path("runs")).validate()
        ablate, base = self.ablate_configs(Path("cache"), Path("runs"))
        ablate.validate()
        base.validate()

    # The sub-configs the demo runs with; everything not named here keeps the verbs' defaults.

    def synth_config(self):
        from emo.data.synth import SynthConfig

        return SynthConfig(
            train_clips=self.train_clips, dev_clips=self.dev_clips, test_clips=self.test_clips,
            width=self.width, height=self.height, fps=8, min_duration=1.0, max_duration=2.5, sample_rate=16000,
            seed=self.seed, text_cue=self.text_cue, audio_cue=self.audio_cue, visual_cue=self.visual_cue,
        )  # fmt: skip

    def extract_config(self, data: Path | None = None, cache: Path | None = None, overwrite: bool = False):
        from emo.extract.config import ExtractConfig

        return ExtractConfig(
            data_root=data or Path("data"), cache=cache or Path("cache"), split="all", preset="offline", frames=self.frames, device=self.device,
            workers=self.workers, batch_size=32, shard_size=64, seed=self.seed, overwrite=overwrite,
        )  # fmt: skip

    def fit_options(self) -> dict[str, Any]:
        return dict(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, text_feature=self.text_feature,
                    class_weights=self.class_weights, seed=self.seed, device=self.device)  # fmt: skip

    def fit_config(self, cache: Path, out: Path):
        from emo.fuse.config import FitConfig

        return FitConfig(cache=cache, out=out, overwrite=True, **self.fit_options())

    def ablate_configs(self, cache: Path, out: Path):
        from emo.fuse.ablate import resolve_configs

        return resolve_configs(
            None,
            dict(cache=cache, out=out, modalities=list(self.ablate_modalities), fusion="ensemble",
                 seeds=self.ablate_seeds, overwrite=True, **self.fit_options()),
        )  # fmt: skip

    def data_key(self) -> dict[str, Any]:
        """What the dataset on disk depends on."""
        from emo.config import config_to_dict

        return config_to_dict(self.synth_config())

    def cache_key(self) -> dict[str, Any]:
        """What the feature cache depends on (the dataset included); the device is left out
        because a cache made on another device is caught by its fingerprint instead."""
        from emo.config import config_to_dict

        extract = config_to_dict(self.extract_config())
        for key in ("data_root", "cache", "device", "workers", "overwrite"):
            extract.pop(key)
        return {"data": self.data_key(), "extract": extract}


# The quick setting: about 4x fewer clips, one frame per clip, four ablation cells.
QUICK: dict[str, Any] = dict(
    train_clips=120,
    dev_clips=40,
    test_clips=60,
    width=64,
    height=48,
    frames=1,
    epochs=20,
    ablate_modalities=("text", "audio", "visual", "text+audio+visual"),
    ablate_seeds=1,
)

# Why the demo departs from a verb's default, shown at the start of every demo.
REASONS: dict[str, str] = {
    "text_cue": "stronger cues than emo synth's default, so a few hundred clips show clear learning",
    "audio_cue": "",
    "visual_cue": "",
    "lr": "the seed's 1e-4 is tuned for MELD's 10k clips; a demo-sized train split needs bigger steps",
    "epochs": "a few hundred clips give few steps per epoch",
    "text_feature": "MiniLM-L6 is a mean-pooling sentence encoder (its CLS vector is untrained)",
    "frames": "the synthetic visual cue is a static colour: more frames only cost time",
    "seeds": "fewer replicates keep the demo within a few minutes",
}


def command(
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the demo's data, cache and runs (default emo-demo)."),
    quick: bool = typer.Option(False, "--quick", help="A smaller, faster setting (for tests and a first look)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with any DemoConfig key ([demo] or top level)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override any DemoConfig key: --set key=value (repeatable)."),
) -> None:
    from rich.console import Console

    from emo.config import parse_set_pairs

    overrides: dict[str, Any] = dict(parse_set_pairs(set_))
    overrides.update({k: v for k, v in dict(out=out, device=device).items() if v is not None})
    if quick:
        overrides["quick"] = True
    resolved = resolve_demo_config(config, overrides)
    run_demo(resolved, console=Console())


def resolve_demo_config(toml_path: Path | None = None, overrides: dict[str, Any] | None = None) -> DemoConfig:
    """Defaults < QUICK (when quick) < TOML file < overrides, checked as a whole."""
    from emo.config import build_config, read_toml

    known = {f.name for f in dataclasses.fields(DemoConfig)}
    file_values: dict[str, Any] = {}
    if toml_path is not None:
        data = read_toml(Path(toml_path))
        if isinstance(data.get("demo"), dict):
            data = data["demo"]
        for key, value in data.items():
            key = key.replace("-", "_")
            if key not in known:
                raise ConfigError(f"Unknown config key '{key}' in {toml_path}; known keys are: {', '.join(sorted(known))}.")
            file_values[key] = value
    overrides = {k.replace("-", "_"): v for k, v in (overrides or {}).items() if v is not None}
    quick = overrides.get("quick", file_values.get("quick", False))
    quick = quick if isinstance(quick, bool) else str(quick).lower() in ("true", "1", "yes", "on")
    values: dict[str, Any] = dict(QUICK) if quick else {}
    values.update(file_values)
    values.update(overrides)
    return build_config(DemoConfig, None, values)


def run_demo(config: DemoConfig | Path | None = None, quick: bool = False, device: str | None = None,
             console=None) -> dict[str, Path]:  # fmt: skip
    """The demo as a function (the command's body); returns the artifact paths.

    `run_demo(Path("out"), quick=True)` is kept as a shorthand for tests and notebooks.
    """
    from rich.console import Console

    from emo.config import save_config
    from emo.device import resolve_device

    if not isinstance(config, DemoConfig):
        overrides: dict[str, Any] = {"quick": quick, "device": device}
        if config is not None:
            overrides["out"] = config
        config = resolve_demo_config(None, overrides)
    config.validate()
    resolve_device(config.device)  # an unusable --device fails here, before any data is written
    console = console or Console()
    out = config.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder; choose another --out.")
    data, cache, runs = out / "data", out / "cache", out / "runs"
    fit_dir, ablate_dir = runs / "fit", runs / "ablate"
    started = time.perf_counter()
    _intro(console, config)

    previous = _previous_config(out)
    rebuild_data = previous is None or previous.data_key() != config.data_key() or not _dataset_complete(data)
    rebuild_cache = rebuild_data or previous is None or previous.cache_key() != config.cache_key()
    if rebuild_cache:
        # Removed before anything is rebuilt, so an interrupted demo never pairs a new
        # dataset with features (or ablation cells) made from an old one.
        _remove_own(cache, marker="cache.json")
        _remove_own(ablate_dir, marker="ablate.toml")
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / CONFIG_NAME, section="demo")

    # 1. data
    step = _Steps(console, 5)
    step("Writing the synthetic dataset (MELD layout, real h264/AAC mp4 files)")
    if not rebuild_data:
        console.print(f"  reusing the dataset already in {data}")
    else:
        from rich.progress import Progress

        from emo.data.synth import generate

        total = config.train_clips + config.dev_clips + config.test_clips
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("  writing clips", total=total)
            generate(data, config.synth_config(), overwrite=(data / "synth_manifest.json").is_file(),
                     progress=lambda done, total: progress.update(task, completed=done, total=total))  # fmt: skip
        console.print(f"  {config.train_clips}/{config.dev_clips}/{config.test_clips} train/dev/test clips in {data}")

    # 2. features
    step("Extracting features once with the offline encoders (MiniLM-L6 text, EfficientNet-Lite0 frames, log-mel)")
    from emo.extract.pipeline import run_extract

    try:
        run_extract(config.extract_config(data, cache), console=console)
    except CacheError as error:
        # The demo's own cache, made another way (e.g. on another device): rebuild it.
        console.print(f"  {error} Re-extracting the demo's cache.")
        _remove_own(ablate_dir, marker="ablate.toml")
        run_extract(config.extract_config(data, cache, overwrite=True), console=console)

    # 3. fit
    step(f"Training the fusion head (mel-CNN + early/late ensemble, {config.epochs} epochs)")
    from emo.fuse.train import run_fit

    result = run_fit(config.fit_config(cache, fit_dir), console=console)

    # 4. eval
    step("Scoring the test split (MELD's metrics, confusion matrix, modality importance)")
    from emo.fuse.evaluate import run_eval

    report = run_eval(fit_dir, split="test", console=console, device=config.device)
    baseline = majority_baseline(cache)
    test_wf1 = report["headline"]["weighted_f1"]

    # 5. ablate
    subsets = ", ".join(config.ablate_modalities)
    step(f"Ablation over modality subsets ({subsets}; {config.ablate_seeds} seed(s) each, trained as one model bank)")
    from emo.fuse.ablate import run_ablate

    ablate, base = config.ablate_configs(cache, ablate_dir)
    ablation = run_ablate(ablate, base, console=console)

    artifacts = {
        "demo config": out / CONFIG_NAME,
        "synthetic dataset": data,
        "feature cache": cache,
        "checkpoint": fit_dir / "model.pt",
        "training curves": fit_dir / "curves.png",
        "test report": fit_dir / "eval_test.md",
        "ablation table": ablation.paths["markdown"],
        "ablation chart": ablation.paths["chart"],
        "ablation CSV": ablation.paths["csv"],
    }
    _print_artifacts(console, artifacts)
    _print_outcome(console, config, result, test_wf1, baseline, ablation.rows, time.perf_counter() - started)
    if not (fit_dir / "model.pt").is_file():
        raise UsageError(f"The demo's fit did not write {fit_dir / 'model.pt'}.")
    return artifacts


# --- helpers -------------------------------------------------------------------------------


def majority_baseline(cache: Path) -> dict[str, Any]:
    """Test metrics of always predicting train's most frequent class: the floor a model must beat."""
    import numpy as np

    from emo.cache import load_split
    from emo.fuse.metrics import majority_baseline as baseline
    from emo.labels import EMOTIONS

    train = load_split(cache, "train", modalities=())
    test = load_split(cache, "test", modalities=())
    result = baseline(train.emotion, test.emotion, EMOTIONS)
    result["class"] = EMOTIONS[int(np.bincount(train.emotion, minlength=len(EMOTIONS)).argmax())]
    return result


def _intro(console, config: DemoConfig) -> None:
    from rich.panel import Panel
    from rich.table import Table

    console.print(
        Panel(
            "This demo runs on SYNTHETIC data generated right now, not on MELD: short mp4 clips whose words, "
            "tone and background colour each carry a noisy cue of the emotion (each modality shows the true "
            f"emotion's cue {100 * config.text_cue:.0f}/{100 * config.audio_cue:.0f}/{100 * config.visual_cue:.0f}% "
            "of the time, another emotion's otherwise). The scores below show the pipeline works end to end; "
            "they say nothing about MELD.",
            title="emo demo" + (" (quick)" if config.quick else ""),
        )
    )
    table = Table(title="Demo settings that differ from the defaults of emo synth / fit / ablate", title_justify="left")
    for name in ("setting", "demo", "default", "why"):
        table.add_column(name)
    for key, value, default in _departures(config):
        table.add_row(key, str(value), str(default), REASONS.get(key, ""))
    console.print(table)


def _departures(config: DemoConfig) -> list[tuple[str, Any, Any]]:
    """(key, demo value, verb default) for every option the demo sets differently."""
    from emo.data.synth import SynthConfig
    from emo.fuse.ablate import AblateConfig
    from emo.fuse.config import FitConfig

    rows = []
    synth_default = SynthConfig()
    for key in ("text_cue", "audio_cue", "visual_cue"):
        if getattr(config, key) != getattr(synth_default, key):
            rows.append((key, getattr(config, key), getattr(synth_default, key)))
    fit_default = FitConfig()
    for key, value in config.fit_options().items():
        if key not in ("device", "seed") and value != getattr(fit_default, key):
            rows.append((key, value, getattr(fit_default, key)))
    from emo.extract.config import ExtractConfig

    if config.frames != ExtractConfig().frames:
        rows.append(("frames", config.frames, ExtractConfig().frames))
    if config.ablate_seeds != AblateConfig().seeds:
        rows.append(("seeds", config.ablate_seeds, AblateConfig().seeds))
    return rows


def _previous_config(out: Path) -> DemoConfig | None:
    """The config of the demo run already in `out`, if it left one that still reads."""
    path = out / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        return resolve_demo_config(path)
    except ConfigError:
        return None


def _dataset_complete(data: Path) -> bool:
    import json

    manifest = data / "synth_manifest.json"
    try:
        return bool(json.loads(manifest.read_text(encoding="utf-8")).get("complete"))
    except (OSError, ValueError):
        return False


def _remove_own(folder: Path, marker: str) -> None:
    """Remove a folder an earlier demo wrote (it holds `marker`); refuse anything else."""
    if not folder.exists():
        return
    if not (folder / marker).is_file() and any(folder.iterdir()):
        raise UsageError(f"{folder} holds files the demo did not write; choose another --out.")
    shutil.rmtree(folder)


def _print_artifacts(console, artifacts: dict[str, Path]) -> None:
    from rich.table import Table

    table = Table(title="Where everything is")
    table.add_column("artifact")
    table.add_column("path")
    for name, path in artifacts.items():
        table.add_row(name, str(path) + ("" if Path(path).exists() else "  (missing)"))
    console.print(table)


def _print_outcome(console, config, result, test_wf1, baseline, rows, seconds: float) -> None:
    floor = baseline["weighted_f1"]
    lines = [f"Done in {seconds:.0f} s on synthetic data."]
    if test_wf1 is not None:
        lines.append(
            f"Test weighted F1 of the fitted head: {100 * test_wf1:.1f} (best dev epoch {result.best_epoch}), "
            f"against {100 * floor:.1f} for always predicting '{baseline['class']}' (the majority class)."
        )
        if test_wf1 < floor + 0.05:
            lines.append(
                "[yellow]That is not clearly above the majority baseline: try more clips or epochs "
                "(--set train_clips=800 --set epochs=30).[/yellow]"
            )
    scored = [r for r in rows if r.get("test_wf1_mean") == r.get("test_wf1_mean")]
    if scored:
        cells = ", ".join(f"{r['modalities']} {100 * r['test_wf1_mean']:.1f}" for r in scored)
        lines.append(f"Ablation, test weighted F1 by modality subset: {cells}.")
    lines.append("Next: emo extract --data-root MELD.Raw --cache cache/meld --split all, then emo fit / emo ablate.")
    console.print(" ".join(lines))


class _Steps:
    def __init__(self, console, total: int):
        self.console, self.total, self.n, self.started = console, total, 0, time.perf_counter()

    def __call__(self, title: str) -> None:
        self.n += 1
        elapsed = time.perf_counter() - self.started
        self.console.rule(f"[bold]{self.n}/{self.total}[/bold] [dim]({elapsed:.0f} s)[/dim] {title}", align="left")
