"""Shared fixtures: the real data folder (read in place, never copied) and one small
synthetic MELD-layout dataset per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# ../shared/data next to the repository; EMO_SHARED_DATA points elsewhere (or nowhere, to
# check that everything that needs it skips cleanly).
SHARED_DATA = Path(os.environ.get("EMO_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


# Said by every real-data skip, so a clone that is not beside shared/ learns how to run them.
REAL_DATA_HINT = "set EMO_SHARED_DATA=/path/to/shared/data (the folder holding meld/ and clips/) to run it"
REAL_DATA_SKIP = "real-data test skipped"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real MELD CSVs and one real clip); tests needing it skip without it."""
    if not (SHARED_DATA / "meld").is_dir():
        pytest.skip(f"{REAL_DATA_SKIP}: real MELD data folder {SHARED_DATA} is absent; {REAL_DATA_HINT}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_clip(shared_data: Path) -> Path:
    clip = shared_data / "clips" / "dia1_utt0.mp4"
    if not clip.is_file():
        pytest.skip(f"{REAL_DATA_SKIP}: real MELD clip {clip} is absent; {REAL_DATA_HINT}")
    return clip


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line at the end when real-data tests were skipped: easy to miss among passes."""
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if REAL_DATA_SKIP in str(getattr(report, "longrepr", ""))
    ]
    if skipped:
        terminalreporter.write_line(
            f"emo: {len(skipped)} real-data tests skipped because {SHARED_DATA} is absent; {REAL_DATA_HINT}."
        )


# Small enough to write in about a second, big enough that train holds one clip of every
# broken kind (24 rows / 3 = 8 broken = one per kind) and 16 good ones. The too_long clip and the
# audio_longer clip's audio last `long_duration` = 8 s: decode with max_duration below
# that (e.g. 5) to see them cut. dev and test (6 rows) hold a zero_byte and a truncated clip
# each, and 4 good ones.
SYNTH_TEST_CONFIG = dict(
    train_clips=24,
    dev_clips=6,
    test_clips=6,
    min_duration=0.6,
    max_duration=1.2,
    width=64,
    height=48,
    fps=8,
    sample_rate=22050,
    audio_channels=2,
    seed=7,
    broken_fraction=1 / 3,
    long_duration=8.0,
    unlabeled_videos=1,
)


@pytest.fixture(scope="session")
def synth_report(tmp_path_factory):
    """The `emo.data.synth.SynthReport` of the session's synthetic dataset."""
    from emo.data.synth import SynthConfig, generate

    return generate(tmp_path_factory.mktemp("synth") / "meld", SynthConfig(**SYNTH_TEST_CONFIG))


@pytest.fixture(scope="session")
def synth_root(synth_report) -> Path:
    """Folder of a small synthetic dataset in the MELD release layout (see SYNTH_TEST_CONFIG)."""
    return synth_report.out_dir
