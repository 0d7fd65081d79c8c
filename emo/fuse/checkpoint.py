"""Checkpoints that load with `torch.load(weights_only=True)` and know where they came from.

A checkpoint holds the state_dict plus only plain data (dicts, lists, strings, numbers):
the model shape, the resolved fit config and the cache fingerprint. So loading never
unpickles arbitrary objects, and `emo eval` can rebuild the model and refuse a cache made
with different encoders without any side file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emo import atomic
from emo.errors import CacheError, UsageError
from emo.fuse.heads import head_names

if TYPE_CHECKING:  # torch loads only when a checkpoint is written or read, so a run folder's
    import torch  # checks (emo.fuse.run_folder) answer a command's usage error before it loads

    from emo.fuse.model import FusionModel

CHECKPOINT_NAME = "model.pt"
FORMAT = "emo.fuse.checkpoint/1"


def plain(value: Any) -> Any:
    """A JSON round trip: whatever goes in comes out as dict/list/str/number/bool/None."""
    return json.loads(json.dumps(value, default=str))


def save_checkpoint(
    path: Path,
    model: FusionModel,
    fit_config: dict[str, Any],
    fingerprint: dict[str, Any],
    fingerprint_digest: str,
    epoch: int,
    dev_metrics: dict[str, float],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write atomically (temp file + rename) so an interrupted fit never leaves half a file."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "model_config": model.config.to_dict(),
        "fit_config": plain(fit_config),
        "fingerprint": plain(fingerprint),
        "fingerprint_digest": str(fingerprint_digest),
        "epoch": int(epoch),
        "dev_metrics": plain(dev_metrics),
        **plain(extra or {}),
    }
    return atomic.write_with(path, lambda tmp: _save(payload, tmp))


def _save(payload: dict[str, Any], path: Path) -> None:
    # Through a Python file object, not a file name: torch's own writer reports a full disk
    # as "unexpected pos 576 vs 534", while this way the OSError (ENOSPC, EFBIG) underneath
    # stays attached to the error, and `emo.atomic.is_disk_full` can tell the user so.
    import torch

    with open(path, "wb") as handle:
        torch.save(payload, handle)


def require_run(run_dir: Path) -> Path:
    """The checkpoint file of `run_dir` (a run folder, or the file itself), after one sentence
    for a path that is not there, a feature cache given as a run, or a folder without one.
    Torch-free: `emo eval` and `emo predict` answer these before torch loads."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT_NAME if run_dir.is_dir() else run_dir
    if not run_dir.exists():
        raise UsageError(f"Run directory {run_dir} does not exist.")
    if not path.is_file():
        from emo.cache.layout import is_cache_folder

        if is_cache_folder(run_dir):  # the cache a run is trained from, given where the run belongs
            raise UsageError(
                f"{run_dir} is a feature cache, not a run; give a run folder made by emo fit "
                f"(`emo fit --cache {run_dir} --out runs/NAME` makes one)."
            )
        raise UsageError(
            f"{run_dir} holds no checkpoint ({CHECKPOINT_NAME}); run `emo fit --cache CACHE --out {run_dir}` first."
        )
    return path


def load_checkpoint(run_dir: Path, device: torch.device | str = "cpu") -> tuple[FusionModel, dict[str, Any]]:
    """The model (eval mode, on `device`) and the checkpoint's metadata, from a run directory."""
    path = require_run(run_dir)
    import torch

    from emo.fuse.model import FusionModel, ModelConfig

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: the user's to fix
        raise CacheError(f"Checkpoint {path} cannot be read ({type(error).__name__}); re-run emo fit.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CacheError(f"{path} is not an emo fit checkpoint.")
    config = payload["model_config"]
    fusion = config.get("fusion", "ensemble") if isinstance(config, dict) else None
    if fusion not in head_names():
        raise UsageError(
            f"{path} was trained with the fusion head '{fusion}', which is not registered here; "
            f"load the plugin that provides it (EMO_PLUGINS or an installed package) and run this command again."
        )
    model = FusionModel(ModelConfig.from_dict(config))
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return model, payload
