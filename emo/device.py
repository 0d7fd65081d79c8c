"""Device choice and seeding, shared by extraction and training.

`auto` uses a GPU when one is present and never requires it; seeding covers Python,
numpy and torch so the same seed gives the same metrics on CPU.
"""

from __future__ import annotations

import os
import random

from emo.errors import UsageError


def resolve_device(name: str = "auto"):
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"Device '{name}' was asked for but no CUDA GPU is available; use --device auto or cpu.")
        return torch.device(name)
    raise UsageError(f"Unknown device '{name}'; use auto, cpu or cuda.")


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
