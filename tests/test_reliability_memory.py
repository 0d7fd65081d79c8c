"""Issue 6, requirement 5: memory stays bounded on a 10-minute clip, because the maximum
duration is enforced while decoding (decoding stops there), not by trimming afterwards.

Each decode runs in a fresh child process that reports its own peak RSS growth (the
kernel's VmHWM, reset after imports and a warm-up, minus the RSS at that moment), so the numbers do not mix with
the test runner's. A control decode of the same long clip with a limit above its length
shows the measurement does see a full decode (~10 minutes of 16 kHz float32 audio is
~38 MB before any copies) - without it, "bounded" could pass for the wrong reason.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from reliability_fixtures import child_env

pytestmark = pytest.mark.slow

LONG_SECONDS = 600.0
LIMIT = 4.0
MB = 1 << 20

PROBE = r"""
import json, sys
import numpy as np
from emo.extract.media.decode import decode_clip
from emo.extract.pipeline.prepare import ClipJob, prepare_clip
from emo.extract.media.mel import MelParams

path, limit, through = sys.argv[1], float(sys.argv[2]), sys.argv[3]
def peak():
    # VmHWM: this process's peak resident set since the last reset below.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
def current():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
# Warm up every code path on a few frames so lazily allocated codec state is not counted.
decode_clip(path, num_frames=2, max_duration=0.5)
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # reset the peak to the current RSS (Linux >= 4.0): imports are not counted
before = current()
if through == "decode":
    clip = decode_clip(path, num_frames=8, sample_rate=16000, max_duration=limit)
    info = {"audio_seconds": len(clip.audio) / 16000, "frames": int(clip.frames.shape[0]),
            "truncated": bool(clip.truncated), "source_duration": clip.source_duration}
else:
    import dataclasses
    fields = {f.name for f in dataclasses.fields(ClipJob)}
    values = dict(row=0, key="dia0_utt0", path=path, video=True, audio=True, frames=8, sample_rate=16000,
                  max_duration=limit, frame_prep=None, ffmpeg_resize=False, mel=MelParams(), audio_views=0, seed=0)
    job = ClipJob(**{k: v for k, v in values.items() if k in fields})
    prepared = prepare_clip(job)
    assert not prepared.failures, prepared.failures
    info = {"mel_frames": int(prepared.mel[0].shape[0]), "truncated": bool(prepared.truncated)}
info["growth"] = peak() - before
print(json.dumps(info))
"""


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A 10-minute low-resolution clip (2 fps, 32x24, mono 8 kHz) and a short one."""
    from emo.data.synth import write_clip

    root = tmp_path_factory.mktemp("memory")
    out = {}
    rng = np.random.default_rng(0)
    for name, seconds in (("long", LONG_SECONDS), ("short", LIMIT)):
        fps, rate = 2, 8000
        n = int(seconds * fps)
        frames = np.empty((n, 24, 32, 3), dtype=np.uint8)
        frames[:] = rng.integers(0, 255, size=(1, 1, 1, 3), dtype=np.uint8)
        frames[:, :, :, 0] = (np.arange(n) % 256)[:, None, None]
        t = np.arange(int(seconds * rate)) / rate
        audio = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None, :]
        out[name] = write_clip(root / f"{name}.mp4", frames, audio, fps=fps, sample_rate=rate)
    return out


def probe(path, limit: float, through: str = "decode") -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), str(limit), through],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_decoding_a_ten_minute_clip_with_a_small_max_duration_uses_no_more_memory_than_a_short_clip(clips):
    short = probe(clips["short"], LIMIT)
    bounded = probe(clips["long"], LIMIT)
    full = probe(clips["long"], LONG_SECONDS + 60)

    assert bounded["truncated"] and not short["truncated"]
    assert bounded["audio_seconds"] == pytest.approx(LIMIT, abs=0.05)
    assert bounded["source_duration"] == pytest.approx(LONG_SECONDS, abs=1.0)
    assert full["audio_seconds"] == pytest.approx(LONG_SECONDS, abs=0.5), "the control really decodes it all"
    # The control shows what an unbounded decode costs, so the bound is measurable ...
    assert full["growth"] > bounded["growth"] + 30 * MB, (short, bounded, full)
    # ... and the bounded decode of the 10-minute clip costs what a 4-second clip costs.
    assert bounded["growth"] <= short["growth"] + 8 * MB, (short, bounded, full)


def test_the_extraction_worker_path_is_bounded_too(clips):
    """decode + mel as the extraction workers run them (prepare_clip)."""
    short = probe(clips["short"], LIMIT, through="prepare")
    bounded = probe(clips["long"], LIMIT, through="prepare")
    assert bounded["truncated"]
    assert abs(bounded["mel_frames"] - short["mel_frames"]) <= 3  # both cover LIMIT seconds
    assert bounded["growth"] <= short["growth"] + 8 * MB, (short, bounded)
