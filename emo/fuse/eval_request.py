"""What an `emo eval` asks for, checked before torch loads: `check_eval`.

Scoring a run loads torch and the run's checkpoint, which takes seconds; a typo in --split,
--run, --cache or --device must not wait for that. Each rule keeps its one home (the device
names in `emo.device`, a run folder's in `emo.fuse.checkpoint` and `emo.fuse.run_folder`, a
cache's splits in `emo.cache`); `check_eval` only applies them early, and `run_eval` applies
them again where it always did, so what is refused and the sentence saying so cannot differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from emo.errors import require_path


def given_cache(cache: Path | str, run_dir: Path | str) -> Path:
    """The cache named by --cache, once it is known to exist (one sentence otherwise)."""
    return require_path(cache, "Cache", f"pass the feature cache to score run {run_dir} on with --cache DIR")


def check_eval(runs: Sequence[Path | str], split: str, cache: Path | str | None, device: str) -> None:
    """Refuse, torch-free, what `run_eval` would refuse about the request itself: an unknown
    device, a run that is not there or not a finished run, a --cache that is not there, and a
    split the scored cache does not hold (that cache: --cache, else the one a single plain
    run records). What needs the checkpoint (matching encoders, ensemble members) stays with
    `run_eval`."""
    from emo.cache import open_cache
    from emo.cache.load import require_split
    from emo.device import check_device_name
    from emo.fuse.checkpoint import require_run
    from emo.fuse.ensemble import is_ensemble
    from emo.fuse.run_folder import recorded_cache, require_finished

    check_device_name(device)
    paths = [Path(r) for r in runs]
    for path in paths:
        if not is_ensemble(path):
            require_finished(path)
            require_run(path)
    if cache is not None:
        scored = given_cache(cache, paths[0] if paths else "")
    elif len(paths) == 1 and not is_ensemble(paths[0]):
        scored = recorded_cache(paths[0])
        if scored is None or not scored.exists():
            return  # run_eval says what is wrong with a run's own record
    else:
        return
    open_cache(scored)  # a folder that is not a cache is refused in its own sentence
    require_split(scored, split)
