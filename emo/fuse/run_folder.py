"""A run folder: what `emo fit` and every `emo ablate` cell write, and nothing half-written.

    RUN/model.pt        best-on-dev checkpoint (weights, resolved config, cache fingerprint)
    RUN/config.toml     the resolved fit config (`emo fit --config RUN/config.toml` repeats it)
    RUN/metrics.jsonl   one JSON line per epoch, appended as training goes (`tail -f` shows life)
    RUN/curves.png      loss and dev metrics per epoch
    RUN/summary.json    written last: its presence means the run finished

`run_folder` creates the folder only when training is about to start and removes what
this run wrote if it fails or is interrupted, so a failed command leaves nothing behind
and a finished run is exactly the folder that holds summary.json.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from emo import atomic
from emo.config import config_to_dict, save_config
from emo.errors import UsageError
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
    """True when `folder` has a run's checkpoint or metrics (finished or not)."""
    return (Path(folder) / CHECKPOINT_NAME).exists() or (Path(folder) / METRICS_NAME).exists()


def is_finished(folder: Path) -> bool:
    return (Path(folder) / SUMMARY_NAME).is_file() and (Path(folder) / CHECKPOINT_NAME).is_file()


def remove_run_files(folder: Path) -> None:
    for name in RUN_FILES:
        (Path(folder) / name).unlink(missing_ok=True)


@contextlib.contextmanager
def run_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """The run folder for one fit; on any failure (Ctrl-C included) what it wrote is removed."""
    out = Path(out)
    if holds_run(out):
        if not overwrite:
            raise UsageError(f"{out} already holds a run; choose another --out or pass --overwrite.")
        remove_run_files(out)
    existed = out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield out
    except BaseException:
        if existed:
            remove_run_files(out)
        else:
            shutil.rmtree(out, ignore_errors=True)
        raise


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
            self.checkpoint_path, model, self.resolved, self.fingerprint, self.digest, epoch, dev_scores,
            extra={"cache_path": self.cache_path},
        )  # fmt: skip

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
