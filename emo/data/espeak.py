"""Real spoken dialogue for tests and benchmarks: espeak-ng speaks each line in its
speaker's voice, and the lines become one h264 + AAC video with a pause between turns
(`emo.data.synth_media.write_clip`; each speaker has a colour on screen).

    lines = [("en-us", "I found the keys in the kitchen"), ("en-gb", "Thank you so much")]
    turns = speak_dialogue(lines, "dialogue.mp4")   # [(start, end, text), ...] in seconds

espeak-ng is a system program (`apt-get install espeak-ng`); `espeak_available()` says
whether it is there, so callers can skip with a reason.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from emo.errors import UsageError

VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-us+f3", "en-gb+f4")
COLOURS = ((200, 60, 60), (60, 120, 200), (60, 170, 90), (210, 170, 40), (150, 80, 180), (90, 90, 90))


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: str = "en-us", speed: int = 160) -> tuple[np.ndarray, int]:
    """float32 mono samples of `text` spoken by espeak-ng, and their sample rate."""
    if not espeak_available():
        raise UsageError("espeak-ng is not installed; install it (apt-get install espeak-ng) to synthesise speech.")
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(target), text],
            capture_output=True,
            check=True,
            timeout=60,
        )
        data = target.read_bytes()
    with wave.open(io.BytesIO(data)) as handle:
        rate = handle.getframerate()
        data = np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16)
    return data.astype(np.float32) / 32768.0, rate


def speak_dialogue(
    lines: list[tuple[str, str]],
    path: str | Path,
    pause: float = 1.2,
    fps: int = 8,
    size: tuple[int, int] = (64, 48),
    lead: float = 0.5,
) -> list[tuple[float, float, str]]:
    """Write `lines` ((voice, text) each) as one video at `path`; returns each line's
    (start, end, text) in seconds. `pause` seconds of silence separate turns."""
    voices = {voice: i for i, voice in enumerate(dict.fromkeys(v for v, _ in lines))}
    pieces, turns, speakers = [], [], []
    rate = None
    clock = lead
    for voice, text in lines:
        samples, rate = speak(text, voice)
        turns.append((clock, clock + len(samples) / rate, text))
        speakers.append(voices[voice])
        pieces.append(samples)
        clock += len(samples) / rate + pause
    rate = rate or 22050
    audio = np.zeros(int(round((clock - pause + lead) * rate)), dtype=np.float32)
    for (start, _, _), samples in zip(turns, pieces):
        first = int(round(start * rate))
        audio[first : first + len(samples)] = samples[: len(audio) - first]
    frames = np.zeros((int(np.ceil(len(audio) / rate * fps)), size[1], size[0], 3), dtype=np.uint8)
    for (start, end, _), who in zip(turns, speakers):
        frames[int(start * fps) : int(np.ceil(end * fps))] = COLOURS[who % len(COLOURS)]
    from emo.data.synth_media import write_clip

    write_clip(path, frames, audio[None, :], fps=fps, sample_rate=rate)
    return turns
