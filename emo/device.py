"""Device choice and seeding, shared by extraction and training.

`auto` uses a GPU when one is present and never requires it; seeding covers Python,
numpy and torch so the same seed gives the same metrics on CPU.
"""

from __future__ import annotations

import os
import random

from emo.errors import UsageError


DEVICE_NAMES = ("auto", "cpu", "cuda")


def check_device_name(name: str | None) -> str:
    """`name` lower-cased when it names a device (auto, cpu, cuda or cuda:N); one sentence
    otherwise. Torch-free, so a typo is refused before torch loads; whether a GPU is there
    is `resolve_device`'s question, which only torch can answer."""
    name = (name or "auto").lower()
    if name.split(":")[0] not in DEVICE_NAMES:
        raise UsageError(f"Unknown device '{name}'; use auto, cpu or cuda.")
    return name


def resolve_device(name: str = "auto"):
    name = check_device_name(name)
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"Device '{name}' was asked for but no CUDA GPU is available; use --device auto or cpu.")
        return torch.device(name)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
