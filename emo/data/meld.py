"""MELD annotations as typed records, and where each split's clips live.

Why it works this way:
- Clips are keyed by (Dialogue_ID, Utterance_ID), never by row position: Utterance_ID has
  gaps in 72 train, 2 dev and 2 test dialogues, and train has no dialogue 60.
- Two encodings are in the wild. The official CSVs (since 2020-11) are UTF-8 with CRLF. The
  first release was cp1252 text read as latin-1, so C1 control characters stand where
  typographic punctuation belongs (U+0092 for ’, U+0085 for …, U+0097 for —). Every text
  field that is not plain ASCII goes through ftfy's encoding repair (only the encoding
  fixes: quotes are *not* uncurled, nothing is NFC-normalised), and U+00A0 (no-break
  space) becomes a plain space. Files that are not valid UTF-8 at all are read as cp1252.
- Documented difference: after repair the pre-2020 files give exactly the same records as
  the official ones. ftfy alone leaves 5 rows different - the first release kept
  cp1252's no-break space (0xA0) where the 2020 conversion wrote a plain space: train
  dia473_utt3, dia761_utt2, dia761_utt3, dev dia26_utt8, test dia190_utt0 ("Okay?\xa0  That’s").
  A no-break space carries no meaning in a transcript, so it is normalised to a space in
  every file, which makes the two releases agree on every row (tests/test_meld.py checks it).
- Times come as HH:MM:SS,mmm and H:MM:SS,mmm; three rows (train dia437_utt2, test
  dia187_utt2, dia233_utt8) have two-digit fractions ("00:06:47,28"), read as a decimal
  fraction (0.28 s). Implausible but well-formed times (test dia38_utt4 lasts 304.9 s,
  dia155_utt3 0 s) are kept as written: the clips, not the CSV, decide what is decoded.
- A malformed file is the user's to fix, so every problem is one `DataError` sentence
  naming the file, the row (numbered as a spreadsheet shows it: the header is row 1; the
  text-file line is added when a quoted multi-line field makes the two differ) and the column.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from emo.data.text_encoding import decode_bytes, repair_text, require_8bit_text
from emo.errors import DataError, PathNotFoundError, UsageError
from emo.labels import EMOTION_INDEX, EMOTIONS, SENTIMENT_INDEX, SENTIMENTS

SPLITS: tuple[str, ...] = ("train", "dev", "test")

# The official release's clip folder for each split.
CLIP_DIRS: dict[str, str] = {
    "train": "train_splits",
    "dev": "dev_splits_complete",
    "test": "output_repeated_splits_test",
}

# The 11 columns of every MELD CSV, in release order.
COLUMNS: tuple[str, ...] = (
    "Sr No.",
    "Utterance",
    "Speaker",
    "Emotion",
    "Sentiment",
    "Dialogue_ID",
    "Utterance_ID",
    "Season",
    "Episode",
    "StartTime",
    "EndTime",
)

_TIME = re.compile(r"^(\d{1,2}):([0-5]\d):([0-5]\d)[,.](\d{1,3})$")


def csv_name(split: str) -> str:
    return f"{split}_sent_emo.csv"


def parse_time(value: str) -> float:
    """Seconds from an SRT-style time, `HH:MM:SS,mmm` or `H:MM:SS,mmm` (1-3 fraction digits)."""
    match = _TIME.match(value.strip())
    if match is None:
        raise ValueError(f"'{value}' is not a time like HH:MM:SS,mmm")
    hours, minutes, seconds, fraction = match.groups()
    scale = 10 ** len(fraction)
    whole = int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    return (whole * scale + int(fraction)) / scale  # one rounding: 6.887, not 6.8870000000000005


def format_time(seconds: float, short_hours: bool = False) -> str:
    """The inverse of `parse_time` at millisecond precision (`short_hours` drops the leading 0)."""
    millis = int(round(seconds * 1000))
    if millis < 0 or millis >= 100 * 3600 * 1000:
        raise ValueError(f"{seconds} s cannot be written as HH:MM:SS,mmm")
    hours, rest = divmod(millis, 3600 * 1000)
    minutes, rest = divmod(rest, 60 * 1000)
    secs, ms = divmod(rest, 1000)
    hour_text = str(hours) if short_hours else f"{hours:02d}"
    return f"{hour_text}:{minutes:02d}:{secs:02d},{ms:03d}"


@dataclass(frozen=True)
class Utterance:
    """One annotated MELD utterance; `start`/`end` are seconds into the episode."""

    sr_no: int
    dialogue_id: int
    utterance_id: int
    text: str
    speaker: str
    emotion: str
    sentiment: str
    season: int
    episode: int
    start: float
    end: float

    @property
    def key(self) -> tuple[int, int]:
        return (self.dialogue_id, self.utterance_id)

    @property
    def clip_name(self) -> str:
        return f"dia{self.dialogue_id}_utt{self.utterance_id}.mp4"

    @property
    def emotion_index(self) -> int:
        return EMOTION_INDEX[self.emotion]

    @property
    def sentiment_index(self) -> int:
        return SENTIMENT_INDEX[self.sentiment]


def _match_columns(header: list[str], path: Path) -> dict[str, int]:
    """Column name -> position; names are matched ignoring case and surrounding spaces."""
    found = {name.strip().lower(): i for i, name in enumerate(header)}
    positions = {}
    missing = []
    for column in COLUMNS:
        position = found.get(column.lower())
        if position is None:
            missing.append(column)
        else:
            positions[column] = position
    if missing:
        names = ", ".join(f"'{m}'" for m in missing)
        raise DataError(f"{path}, row 1 (header): missing column {names}; a MELD CSV has columns {', '.join(COLUMNS)}.")
    return positions


def read_annotations(csv_path: str | Path) -> list[Utterance]:
    """Every row of one MELD CSV as an `Utterance`, in file order."""
    path = Path(csv_path)
    if not path.is_file():
        raise DataError(f"Annotation file {path} does not exist.")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"Annotation file {path} cannot be read: {error.strerror or error}.") from None
    require_8bit_text(raw, path)
    text = decode_bytes(raw)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise DataError(f"{path}, row 1 (header): not valid CSV ({error}).") from None
    if header is None or not any(cell.strip() for cell in header):
        raise DataError(f"Annotation file {path} is empty; a MELD CSV starts with the header {','.join(COLUMNS)}.")
    positions = _match_columns(header, path)
    width = len(header)

    utterances: list[Utterance] = []
    first_row: dict[tuple[int, int], str] = {}
    number = 1  # the header is row 1
    while True:
        number += 1
        line = reader.line_num + 1
        where = f"row {number}" if line == number else f"row {number} (line {line})"
        try:
            row = next(reader, None)
        except csv.Error as error:
            raise DataError(f"{path}, {where}: not valid CSV ({error}).") from None
        if row is None:
            break
        if not any(cell.strip() for cell in row):
            continue  # blank line (e.g. a trailing newline written twice)
        if len(row) != width:
            hint = "an unquoted comma in the text?" if len(row) > width else "a cut-off row?"
            column = header[-1].strip() if len(row) > width else header[len(row)].strip()
            raise DataError(
                f"{path}, {where}, column '{column}': the row has {len(row)} fields but the header has {width} ({hint})."
            )
        utterance = _parse_row(row, positions, path, where)
        if utterance.key in first_row:
            raise DataError(
                f"{path}, {where}, column 'Utterance_ID': dialogue {utterance.dialogue_id} utterance "
                f"{utterance.utterance_id} already appears on {first_row[utterance.key]}."
            )
        first_row[utterance.key] = where
        utterances.append(utterance)
    if not utterances:
        raise DataError(f"Annotation file {path} has a header but no rows.")
    return utterances


def _parse_row(row: list[str], positions: dict[str, int], path: Path, where: str) -> Utterance:
    def cell(column: str) -> str:
        return row[positions[column]]

    def fail(column: str, problem: str) -> DataError:
        return DataError(f"{path}, {where}, column '{column}': {problem}.")

    def integer(column: str) -> int:
        value = cell(column).strip()
        try:
            number = int(value)
        except ValueError:
            raise fail(column, f"'{value}' is not a whole number") from None
        if number < 0:
            raise fail(column, f"{number} is negative")
        return number

    def label(column: str, names: tuple[str, ...]) -> str:
        value = cell(column).strip().lower()
        if value not in names:
            raise fail(column, f"unknown label '{cell(column).strip()}'; expected one of {', '.join(names)}")
        return value

    def time(column: str) -> float:
        try:
            return parse_time(cell(column))
        except ValueError as error:
            raise fail(column, str(error)) from None

    return Utterance(
        sr_no=integer("Sr No."),
        dialogue_id=integer("Dialogue_ID"),
        utterance_id=integer("Utterance_ID"),
        text=repair_text(cell("Utterance")),
        speaker=repair_text(cell("Speaker")).strip(),
        emotion=label("Emotion", EMOTIONS),
        sentiment=label("Sentiment", SENTIMENTS),
        season=integer("Season"),
        episode=integer("Episode"),
        start=time("StartTime"),
        end=time("EndTime"),
    )


@dataclass
class MeldSplit:
    """One split: its annotations (sorted by key) and the folder its clips live in.

    `clip_dir` is None for a text-only copy of MELD (CSVs without the video release).
    """

    name: str
    csv_path: Path
    clip_dir: Path | None
    utterances: list[Utterance] = field(repr=False)

    def __post_init__(self) -> None:
        self.utterances = sorted(self.utterances, key=lambda u: u.key)

    def __len__(self) -> int:
        return len(self.utterances)

    @cached_property
    def _dialogues(self) -> dict[int, list[Utterance]]:
        dialogues: dict[int, list[Utterance]] = {}
        for utterance in self.utterances:  # already sorted by (dialogue, utterance)
            dialogues.setdefault(utterance.dialogue_id, []).append(utterance)
        return dialogues

    @cached_property
    def _positions(self) -> dict[tuple[int, int], int]:
        return {u.key: i for dialogue in self._dialogues.values() for i, u in enumerate(dialogue)}

    def clip_path(self, utterance: Utterance) -> Path:
        """Where this utterance's clip should be (it may not exist: that is the decoder's
        `missing` error, recorded per clip, not a reason to stop)."""
        if self.clip_dir is None:
            raise DataError(
                f"Split '{self.name}' has no clip folder ({CLIP_DIRS[self.name]}/) next to {self.csv_path}; "
                "only text is available."
            )
        # Check the name, not the resolved file: a clip may be a symlink into another
        # folder (datasets are often linked in), but its name must not climb out.
        name = utterance.clip_name
        if Path(name).name != name or name in (".", ".."):
            raise DataError(f"Clip name {name!r} points outside {self.clip_dir}.")
        return self.clip_dir / name

    def context(self, utterance: Utterance, n: int) -> list[Utterance]:
        """Up to `n` utterances that come before this one in its dialogue, oldest first.

        Order is by Utterance_ID (gaps allowed), so context never depends on row order.
        """
        if n <= 0:
            return []
        dialogue = self._dialogues.get(utterance.dialogue_id, [])
        position = self._positions.get(utterance.key)
        if position is None:
            # Not a row of this split: still answer from the ids that come before it.
            earlier = [u for u in dialogue if u.utterance_id < utterance.utterance_id]
            return earlier[-n:]
        return dialogue[max(0, position - n) : position]

    def unlabeled_videos(self) -> list[Path]:
        """mp4 files in the clip folder that no row names (MELD ships a few; a user's own
        folder may hold many). Hidden files such as macOS '._x.mp4' are not videos."""
        if self.clip_dir is None:
            return []
        named = {u.clip_name for u in self.utterances}
        return sorted(
            p for p in self.clip_dir.glob("*.mp4") if p.name not in named and not p.name.startswith(".") and p.is_file()
        )


def _first_existing(candidates: list[Path], want_dir: bool) -> Path | None:
    for candidate in candidates:
        if candidate.is_dir() if want_dir else candidate.is_file():
            return candidate
    return None


def find_split_files(data_root: str | Path, split: str) -> tuple[Path, Path | None]:
    """(CSV path, clip folder or None) for a split: next to each other in `data_root`, or in
    `data_root/<split>/` (how some copies of MELD.Raw are unpacked)."""
    if split not in SPLITS:
        raise UsageError(f"Unknown split '{split}'; use one of {', '.join(SPLITS)}.")
    root = Path(data_root)
    if root.is_file():
        raise DataError(f"{root} is a file; point at the folder that holds {csv_name(split)}.")
    if not root.is_dir():
        raise PathNotFoundError(
            f"Data folder {root} does not exist; pass --data-root with the folder that holds the MELD CSVs."
        )
    folders = [root, root / split]
    csv_path = _first_existing([f / csv_name(split) for f in folders], want_dir=False)
    if csv_path is None:
        raise PathNotFoundError(
            f"No {csv_name(split)} in {root} or {root / split}; point --data-root at a folder holding the MELD CSVs."
        )
    clip_dir = _first_existing([f / CLIP_DIRS[split] for f in folders], want_dir=True)
    return csv_path, clip_dir


def load_split(data_root: str | Path, split: str) -> MeldSplit:
    """A split's annotations and clip folder from a MELD-layout folder."""
    csv_path, clip_dir = find_split_files(data_root, split)
    return MeldSplit(name=split, csv_path=csv_path, clip_dir=clip_dir, utterances=read_annotations(csv_path))
