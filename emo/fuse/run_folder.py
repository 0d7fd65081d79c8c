"""A run folder: what `emo fit` and every `emo ablate` cell write, and nothing half-written.

    RUN/model.pt        best-on-dev checkpoint (weights, resolved config, cache fingerprint)
    RUN/config.toml     the resolved fit config (`emo fit --config RUN/config.toml` repeats it)
    RUN/metrics.jsonl   one JSON line per epoch, appended as training goes (`tail -f` shows life)
    RUN/curves.png      loss and dev metrics per epoch
    RUN/summary.json    written last: its presence means the run finished

`run_folder` builds the run in a hidden folder beside RUN (`.RUN.tmp-HOST-PID`, the name
`emo.atomic` gives every temporary, so a later fit removes what a killed one left) and
renames it into place only when summary.json is written. So a folder named RUN is always
a finished run: a failed or interrupted fit (Ctrl-C, SIGKILL, a full disk, a diverged
loss) leaves nothing, and `--overwrite` keeps the old run until the new one is complete.
Readers (`emo eval`, `emo predict`) refuse a folder that lacks summary.json or model.pt
(`require_finished`): runs from before this layout, killed mid-fit, look like that.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from emo import atomic
from emo.config import config_to_dict, save_config
from emo.errors import EmoError, UsageError
from emo.fuse.checkpoint import CHECKPOINT_NAME, save_checkpoint

if TYPE_CHECKING:
    from emo.fuse.config import FitConfig
    from emo.fuse.model import FusionModel

METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.toml"
CURVES_NAME = "curves.png"
SUMMARY_NAME = "summary.json"
RUN_FILES = (CHECKPOINT_NAME, METRICS_NAME, CURVES_NAME, SUMMARY_NAME, CONFIG_NAME)


def holds_run(folder: Path) -> bool:
    """True when `folder` has any of a run's files (finished or not); a feature cache (which
    has a config.toml too) never does, so it is neither read nor replaced as a run."""
    from emo.cache.layout import is_cache_folder

    return not is_cache_folder(folder) and any((Path(folder) / name).exists() for name in RUN_FILES)


def is_finished(folder: Path) -> bool:
    return (Path(folder) / SUMMARY_NAME).is_file() and (Path(folder) / CHECKPOINT_NAME).is_file()


def require_finished(run_dir: Path) -> None:
    """One sentence for a folder that a fit started but never finished (exit 1).

    Folders that hold no run at all are left to `load_checkpoint`'s own sentences."""
    run_dir = Path(run_dir)
    if run_dir.is_dir() and holds_run(run_dir) and not is_finished(run_dir):
        missing = " or ".join(name for name in (SUMMARY_NAME, CHECKPOINT_NAME) if not (run_dir / name).is_file())
        raise EmoError(
            f"{run_dir} is not a finished run (it has no {missing}: its emo fit was interrupted or failed); "
            "run emo fit again, with --overwrite to replace it."
        )


def recorded_cache(run_dir: Path) -> Path | None:
    """The cache a finished run was trained from, as its summary.json records it (the very
    path its checkpoint holds), read without torch; None when there is none to read."""
    try:
        recorded = json.loads((Path(run_dir) / SUMMARY_NAME).read_text(encoding="utf-8")).get("cache")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(recorded) if isinstance(recorded, str) and recorded else None


def is_run_file(name: str) -> bool:
    """A file a run folder holds: the run's own, its eval reports, an ablation cell's
    result.json, or a temporary of one of these."""
    name = atomic.final_name(name)
    return name in RUN_FILES or name == "result.json" or name.startswith("eval-")


def check_destination(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, an --out that is a file, holds a run (without `overwrite`)
    or holds anything else: a fit replaces a run folder whole, so never a folder of other files."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a folder for the run.")
    others = sorted(p.name for p in out.iterdir() if not is_run_file(p.name)) if out.is_dir() else []
    if others:
        raise UsageError(
            f"{out} holds other files than a run ({', '.join(others[:3])}); choose a new or empty folder for --out."
        )
    if holds_run(out) and not overwrite:
        what = "a run" if is_finished(out) else "an unfinished run"
        raise UsageError(f"{out} already holds {what}; choose another --out or pass --overwrite.")


@contextlib.contextmanager
def run_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield the hidden folder one fit writes into; it becomes `out` only when the block
    succeeds (an earlier run there is replaced then). On any failure (Ctrl-C included) it
    is removed, and a full disk becomes one sentence (`DiskFullError`)."""
    out = Path(out)
    check_destination(out, overwrite)
    with atomic.disk_full_as_error(out), atomic.atomic_folder(out) as building:
        yield building


class RunWriter:
    """Writes one run's files as training goes; every file lands atomically."""

    def __init__(self, out: Path, config: "FitConfig", fingerprint: dict[str, Any], digest: str):
        self.out = Path(out)
        self.config, self.fingerprint, self.digest = config, fingerprint, digest
        self.checkpoint_path = self.out / CHECKPOINT_NAME
        self.cache_path = str(Path(config.cache).resolve()) if config.cache is not None else None
        self.resolved = config_to_dict(config)
        save_config(config, self.out / CONFIG_NAME, section="fit")
        atomic.write_text(self.out / METRICS_NAME, "")

    def checkpoint(self, model: "FusionModel", epoch: int, dev_scores: dict[str, Any]) -> None:
        save_checkpoint(
            self.checkpoint_path,
            model,
            self.resolved,
            self.fingerprint,
            self.digest,
            epoch,
            dev_scores,
            extra={"cache_path": self.cache_path},
        )

    def epoch(self, row: dict[str, Any]) -> None:
        # appended, not rewritten: a line is small and a torn last line is easy to spot
        with (self.out / METRICS_NAME).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def finish(self, history: list[dict[str, Any]], head: str, outcome: dict[str, Any]) -> None:
        """Curves, then summary.json last: `outcome` holds best_epoch, best_dev, test and timings."""
        from emo.fuse.plots import plot_curves

        atomic.write_with(self.out / CURVES_NAME, lambda tmp: plot_curves(history, head, tmp))
        summary = {**outcome, "cache": self.cache_path, "fingerprint_digest": self.digest}
        atomic.write_json(self.out / SUMMARY_NAME, summary, indent=2)
