"""What a synthetic dataset contains, decided before any file is written.

`plan_split` turns a `SynthConfig` into a split's rows: MELD-like ids (Utterance_ID gaps,
skipped Dialogue_IDs), labels drawn from MELD's train distribution, the cue each modality
carries, durations, both of MELD's time formats, and which rows are broken how. It writes
nothing, so tests can check the statistics of thousands of rows in milliseconds, and
`emo.data.synth_media` only has to render what the plan says. The per-row CSV text and
the MELD-exact CSV serialisation (`csv_text`) live here too, because they are part of the
plan, not of the media.

Everything is drawn from generators seeded by (seed, split, row), so a row's content does
not depend on how many rows come before it in another run or in what order clips are
written.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emo.data.meld import CLIP_DIRS, COLUMNS, SPLITS, format_time
from emo.errors import UsageError
from emo.labels import EMOTIONS

if TYPE_CHECKING:
    from emo.data.synth_config import SynthConfig

# What `emo.extract.media.decode.decode_clip` does with each kind: the ClipError reason it
# raises, or None where the clip decodes (cut at max_duration, `truncated=True`).
EXPECTED_REASON: dict[str, str | None] = {
    "zero_byte": "empty",
    "truncated": "unreadable",
    "no_audio": "no_audio",
    "no_video": "no_video",
    "missing": "missing",
    "too_long": None,
    "not_video": "unreadable",
    "audio_longer": None,
}

# MELD train emotion counts (neutral, joy, surprise, anger, sadness, disgust, fear).
MELD_TRAIN_COUNTS: tuple[int, ...] = (4710, 1743, 1205, 1109, 683, 271, 268)

# The text cue: two of the emotion's words in an otherwise label-free sentence.
WORDS: dict[str, tuple[str, ...]] = {
    "neutral": ("okay", "so", "well", "sure", "alright", "fine", "yeah", "right"),
    "joy": ("great", "awesome", "love", "wonderful", "happy", "fantastic", "yay", "amazing"),
    "surprise": ("wow", "really", "whoa", "seriously", "unbelievable", "no way", "oh my god", "what"),
    "anger": ("hate", "stupid", "furious", "shut up", "damn", "ridiculous", "idiot", "enough"),
    "sadness": ("sorry", "miss", "cry", "lonely", "sad", "lost", "hurts", "alone"),
    "disgust": ("gross", "ew", "disgusting", "yuck", "nasty", "sick", "revolting", "eww"),
    "fear": ("scared", "afraid", "terrified", "help", "nervous", "panic", "creepy", "worried"),
}
# No opener or filler uses an emotion word: the text's cue is only the two words it carries.
_OPENERS = ("I’m", "You know,", "Hey,", "Listen,", "Look,", "Honestly,", "Oh,", "I mean,", "We’re", "That’s")
_FILLER = (
    "the coffee",
    "this apartment",
    "Central Perk",
    "the dinosaur",
    "my sandwich",
    "today",
    "just",
    "the couch",
    "your sweater",
    "the duck",
    "that guy",
    "the turkey",
    "Vegas",
    "the museum",
    "don’t know",
    "I think",
    "you guys",
    "it’s like",
    "the chick",
    "the foosball table",
)
_SPEAKERS = ("Joey", "Chandler", "Monica", "Rachel", "Ross", "Phoebe", "Gunther", "Janice", "The Interviewer")


@dataclass
class SynthClip:
    """One CSV row and what was (or will be) written for it."""

    split: str
    dialogue_id: int
    utterance_id: int
    path: Path
    emotion: str
    text_cue: str  # the emotion whose words the text carries
    audio_cue: str  # the emotion whose pitch/rhythm the audio carries
    visual_cue: str  # the emotion whose colour the frames carry
    duration: float
    broken: str | None = None  # one of BROKEN_KINDS, or None for a good clip
    row: dict[str, str] = field(default_factory=dict, repr=False)  # the CSV row, column -> text

    @property
    def expected_reason(self) -> str | None:
        """The ClipError reason decoding this clip raises (None: it decodes)."""
        return EXPECTED_REASON[self.broken] if self.broken else None


def pick_cue(rng: np.random.Generator, emotion: str, strength: float) -> str:
    """The true emotion with probability `strength`, otherwise a different one."""
    if rng.random() < strength:
        return emotion
    others = [e for e in EMOTIONS if e != emotion]
    return others[int(rng.integers(len(others)))]


def utterance_text(rng: np.random.Generator, cue: str) -> str:
    """A Friends-flavoured line carrying two of the cue emotion's words."""
    words = WORDS[cue]
    first, second = (words[int(i)] for i in rng.choice(len(words), size=2, replace=False))
    opener = _OPENERS[int(rng.integers(len(_OPENERS)))]
    filler = _FILLER[int(rng.integers(len(_FILLER)))]
    punct = (".", "!", "?", "…")[int(rng.integers(4))]
    templates = (
        f"{opener} {first}, {filler} {second}{punct}",
        f"{first.capitalize()}! {opener} {filler} {second}{punct}",
        f"{opener} {filler}, {first} {second}{punct}",
    )
    return templates[int(rng.integers(len(templates)))]


def sentiment_of(emotion: str, rng: np.random.Generator) -> str:
    """MELD's sentiment column, consistent with the emotion (surprise goes either way)."""
    if emotion == "neutral":
        return "neutral"
    if emotion == "joy":
        return "positive"
    if emotion == "surprise":
        return "positive" if rng.random() < 0.5 else "negative"
    return "negative"


def _broken_rows(config: "SynthConfig", n: int, rng: np.random.Generator) -> dict[int, str]:
    """Row index -> broken kind, cycling through `config.broken_kinds`."""
    n_broken = int(round(config.broken_fraction * n)) if config.broken_kinds else 0
    if not n_broken:
        return {}
    rows = sorted(int(i) for i in rng.choice(n, size=min(n_broken, n), replace=False))
    kinds = config.broken_kinds * (n_broken // max(1, len(config.broken_kinds)) + 1)
    return dict(zip(rows, kinds))


def plan_split(config: "SynthConfig", split: str, out_dir: str | Path = ".") -> list[SynthClip]:
    """A split's rows without writing anything: ids with MELD-like gaps, labels, cues, times,
    broken kinds. `generate` writes exactly this plan; tests use it to check statistics."""
    if split not in SPLITS:
        raise UsageError(f"Unknown split '{split}'; use one of {', '.join(SPLITS)}.")
    split_index = SPLITS.index(split)
    clip_dir = Path(out_dir) / CLIP_DIRS[split]
    n = config.clips_for(split)
    rng = np.random.default_rng([config.seed, split_index, 0])
    prior = np.array(MELD_TRAIN_COUNTS, dtype=float)
    prior /= prior.sum()
    emotions = [EMOTIONS[int(i)] for i in rng.choice(len(EMOTIONS), size=n, p=prior)]
    broken_by_row = _broken_rows(config, n, rng)

    clips: list[SynthClip] = []
    dialogue_id = -1
    utterance_id = 0
    remaining_in_dialogue = 0
    sr_no = 0
    clock = 0.0
    season = episode = 1
    short_hours = False
    speakers: tuple[str, str] = ("Joey", "Chandler")
    for row_index in range(n):
        if remaining_in_dialogue == 0:
            dialogue_id += 2 if rng.random() < 0.05 else 1  # MELD skips a few dialogue ids
            remaining_in_dialogue = int(rng.integers(1, 9))
            utterance_id = 0
            season, episode = int(rng.integers(1, 10)), int(rng.integers(1, 25))
            clock = float(rng.uniform(30, 1200))
            short_hours = bool(rng.random() < 0.25)  # MELD mixes H:MM:SS and HH:MM:SS
            pair = rng.choice(len(_SPEAKERS), size=2, replace=False)
            speakers = (_SPEAKERS[int(pair[0])], _SPEAKERS[int(pair[1])])
        elif rng.random() < 0.06:
            utterance_id += 1  # an Utterance_ID gap, as in 72 train dialogues
            sr_no += 1
        kind = broken_by_row.get(row_index)
        clip_rng = np.random.default_rng([config.seed, split_index, 1, row_index])
        duration = round(float(clip_rng.uniform(config.min_duration, config.max_duration)), 3)
        if kind == "too_long":
            duration = float(config.long_duration)
        emotion = emotions[row_index]
        clip = SynthClip(
            split=split,
            dialogue_id=dialogue_id,
            utterance_id=utterance_id,
            path=clip_dir / f"dia{dialogue_id}_utt{utterance_id}.mp4",
            emotion=emotion,
            text_cue=pick_cue(clip_rng, emotion, config.text_cue),
            audio_cue=pick_cue(clip_rng, emotion, config.audio_cue),
            visual_cue=pick_cue(clip_rng, emotion, config.visual_cue),
            duration=duration,
            broken=kind,
        )
        sr_no += 1
        start = clock + float(clip_rng.uniform(0.05, 0.6))
        end = start + duration
        clock = end
        sentiment = sentiment_of(emotion, clip_rng)
        clip.row = {
            "Sr No.": str(sr_no),
            "Utterance": utterance_text(clip_rng, clip.text_cue),
            "Speaker": speakers[utterance_id % 2],
            "Emotion": emotion,
            "Sentiment": sentiment,
            "Dialogue_ID": str(dialogue_id),
            "Utterance_ID": str(utterance_id),
            "Season": str(season),
            "Episode": str(episode),
            "StartTime": format_time(start, short_hours),
            "EndTime": format_time(end, short_hours),
        }
        clips.append(clip)
        utterance_id += 1
        remaining_in_dialogue -= 1
    return clips


def csv_text(clips: list[SynthClip]) -> str:
    """The CSV exactly as MELD writes it: the 11 columns, quoted where needed, CRLF."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(c.row for c in clips)
    return buffer.getvalue()
