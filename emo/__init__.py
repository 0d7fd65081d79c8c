"""emo: multimodal emotion recognition for conversational video.

Frozen encoders run once (`emo.extract`) into a feature cache (`emo.cache`); small heads
train from that cache in seconds (`emo.fuse`). Data flows one way:
media -> extract -> cache -> fuse -> reports.
"""

import os

__version__ = "0.1.0"  # `emo --version`; equal to [project] version in pyproject.toml (tests/test_cli.py checks)

# emo runs many small torch ops (training heads, per-frame encoders) next to decoding worker
# processes. With OpenMP's default busy-wait, idle torch threads spin on cores the workers
# need; on a shared or 2-core CPU that made epochs and frame encoding 5-10x slower in our
# measurements, while a passive wait costs nothing on an idle machine. It only takes effect
# if set before torch loads OpenMP, and a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# The Python API, loaded on first use (module __getattr__): `import emo` stays light and the
# CLI fast, while `from emo import Predictor` or `emo.load_split(...)` just work.
_LAZY = {
    "Predictor": ("emo.predict.api", "Predictor"),
    "load_split": ("emo.cache.load", "load_split"),
    "open_cache": ("emo.cache.describe", "open_cache"),
    "run_fit": ("emo.fuse.train", "run_fit"),
    "run_eval": ("emo.fuse.evaluate", "run_eval"),
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'emo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
