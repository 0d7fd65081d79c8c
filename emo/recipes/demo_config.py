"""The demo's configuration: one flat dataclass, and the verb configs it is turned into.

Why the demo has its own config rather than the verbs' ones: a newcomer should change
"more clips" or "more epochs" with one `--set` and not learn four configs first. So
`DemoConfig` holds the few knobs that matter and builds `SynthConfig`, `ExtractConfig`,
`FitConfig` and the ablation configs from them; everything it does not name keeps the
verbs' defaults. Where the demo departs from a verb's default, `departures` says so and
`REASONS` says why, and the command shows both, so the demo never hides a choice.

Resolution order: defaults < QUICK (when `quick`) < TOML file (`[demo]` or top level) <
overrides (`--set`, named options); every value is checked before any work starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from emo.errors import ConfigError

CONFIG_NAME = "demo.toml"  # the resolved config, saved in the demo's folder


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
    text_feature: str = "auto"
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
        from emo.config import require_finite

        require_finite(self)
        minimum = {"train_clips": 20, "dev_clips": 5, "test_clips": 5}
        for key, least in minimum.items():
            if getattr(self, key) < least:
                raise ConfigError(
                    f"{key} must be at least {least} for the demo to train and score; got {getattr(self, key)}."
                )
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
            train_clips=self.train_clips,
            dev_clips=self.dev_clips,
            test_clips=self.test_clips,
            width=self.width,
            height=self.height,
            fps=8,
            min_duration=1.0,
            max_duration=2.5,
            sample_rate=16000,
            seed=self.seed,
            text_cue=self.text_cue,
            audio_cue=self.audio_cue,
            visual_cue=self.visual_cue,
        )

    def extract_config(self, data: Path | None = None, cache: Path | None = None, overwrite: bool = False):
        from emo.extract.config import ExtractConfig

        return ExtractConfig(
            data_root=data or Path("data"),
            cache=cache or Path("cache"),
            split="all",
            preset="offline",
            frames=self.frames,
            device=self.device,
            workers=self.workers,
            batch_size=32,
            shard_size=64,
            seed=self.seed,
            overwrite=overwrite,
        )

    def fit_options(self) -> dict[str, Any]:
        return dict(
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            text_feature=self.text_feature,
            class_weights=self.class_weights,
            seed=self.seed,
            device=self.device,
        )

    def fit_config(self, cache: Path, out: Path):
        from emo.fuse.config import FitConfig

        return FitConfig(cache=cache, out=out, overwrite=True, **self.fit_options())

    def ablate_configs(self, cache: Path, out: Path):
        from emo.fuse.ablate import resolve_configs

        return resolve_configs(
            None,
            dict(
                cache=cache,
                out=out,
                modalities=list(self.ablate_modalities),
                fusion="ensemble",
                seeds=self.ablate_seeds,
                overwrite=True,
                **self.fit_options(),
            ),
        )

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

# Why the demo departs from a verb's default (keys as `departures` names them).
REASONS: dict[str, str] = {
    "text_cue": "stronger cues than emo synth's default, so a few hundred clips show clear learning",
    "audio_cue": "",
    "visual_cue": "",
    "lr": "the seed's 1e-4 is tuned for MELD's 10k clips; a demo-sized train split needs bigger steps",
    "epochs": "a few hundred clips give few steps per epoch",
    "text_feature": "",
    "frames": "the synthetic visual cue is a static colour: more frames only cost time",
    "seeds": "fewer replicates keep the demo within a few minutes",
}


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
                raise ConfigError(
                    f"Unknown config key '{key}' in {toml_path}; known keys are: {', '.join(sorted(known))}."
                )
            file_values[key] = value
    overrides = {k.replace("-", "_"): v for k, v in (overrides or {}).items() if v is not None}
    quick = overrides.get("quick", file_values.get("quick", False))
    quick = quick if isinstance(quick, bool) else str(quick).lower() in ("true", "1", "yes", "on")
    values: dict[str, Any] = dict(QUICK) if quick else {}
    values.update(file_values)
    values.update(overrides)
    return build_config(DemoConfig, None, values)  # which also validates every sub-config


class Departure(NamedTuple):
    """One setting where the demo differs from a verb's default, and why."""

    key: str
    demo: Any
    default: Any
    why: str


def departures(config: DemoConfig) -> list[Departure]:
    """Every option the demo sets differently from the defaults of emo synth / extract / fit / ablate."""
    from emo.data.synth import SynthConfig
    from emo.extract.config import ExtractConfig
    from emo.fuse.ablate import AblateConfig
    from emo.fuse.config import FitConfig

    pairs: list[tuple[str, Any, Any]] = []
    synth_default = SynthConfig()
    for key in ("text_cue", "audio_cue", "visual_cue"):
        pairs.append((key, getattr(config, key), getattr(synth_default, key)))
    fit_default = FitConfig()
    for key, value in config.fit_options().items():
        if key not in ("device", "seed"):
            pairs.append((key, value, getattr(fit_default, key)))
    pairs.append(("frames", config.frames, ExtractConfig().frames))
    pairs.append(("seeds", config.ablate_seeds, AblateConfig().seeds))
    return [Departure(key, value, default, REASONS.get(key, "")) for key, value, default in pairs if value != default]
