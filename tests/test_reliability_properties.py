"""Issue 6, requirement 7: property tests (hypothesis) for the CSV reader and the time parser.

tests/test_meld.py already checks that well-formed files round-trip (official and
first-release encodings) and that `format_time`/`parse_time` round-trip. These are the
complementary properties, about *hostile* input: arbitrary bytes, one damaged cell, a
file cut anywhere, reordered rows, and times built from their parts.
"""

from __future__ import annotations

import csv
import io
import random

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from emo.data.meld import COLUMNS, MeldSplit, parse_time, read_annotations
from emo.errors import DataError
from emo.labels import EMOTIONS, SENTIMENTS

FIXTURE = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

# ----------------------------------------------------------------------------- time parser


@st.composite
def time_parts(draw):
    return (
        draw(st.integers(0, 99)),
        draw(st.integers(0, 59)),
        draw(st.integers(0, 59)),
        draw(st.text(alphabet="0123456789", min_size=1, max_size=3)),
    )


def _spell(hours: int, minutes: int, seconds: int, fraction: str, short: bool, sep: str, pad: tuple[str, str]) -> str:
    hour = str(hours) if short else f"{hours:02d}"
    return f"{pad[0]}{hour}:{minutes:02d}:{seconds:02d}{sep}{fraction}{pad[1]}"


_pads = st.tuples(st.sampled_from(["", " ", "\t", "  "]), st.sampled_from(["", " ", "\r", "\n"]))


@given(parts=time_parts(), short=st.booleans(), sep=st.sampled_from([",", "."]), pad=_pads)
def test_parse_time_is_exact_arithmetic_on_every_spelling(parts, short, sep, pad):
    """Any legal spelling (H or HH, comma or dot, 1-3 fraction digits, surrounding blanks)
    means hours*3600 + minutes*60 + seconds + fraction as a decimal fraction, exactly."""
    hours, minutes, seconds, fraction = parts
    text = _spell(hours, minutes, seconds, fraction, short, sep, pad)
    expected = hours * 3600 + minutes * 60 + seconds + int(fraction) / 10 ** len(fraction)
    assert parse_time(text) == pytest.approx(expected, abs=1e-9)
    # Spelling never matters: the same instant written the other ways gives the same float.
    assert parse_time(_spell(hours, minutes, seconds, fraction, not short, "," if sep == "." else ".", ("", ""))) == (
        parse_time(text)
    )


@given(a=time_parts(), b=time_parts())
def test_parse_time_preserves_order(a, b):
    """Later times in the episode never parse to smaller numbers (so durations are >= 0
    exactly when the CSV says end >= start)."""

    def key(parts):
        h, m, s, f = parts
        return (h, m, s, int(f) / 10 ** len(f))

    ta, tb = parse_time(_spell(*a, False, ",", ("", ""))), parse_time(_spell(*b, False, ",", ("", "")))
    if key(a) < key(b):
        assert ta < tb
    elif key(a) == key(b):
        assert ta == tb


@given(parts=time_parts(), bad=st.sampled_from(["minutes", "seconds", "fraction", "separator", "hours"]))
def test_parse_time_rejects_out_of_range_parts(parts, bad):
    hours, minutes, seconds, fraction = parts
    if bad == "minutes":
        text = f"{hours:02d}:{60 + minutes}:{seconds:02d},{fraction}"
    elif bad == "seconds":
        text = f"{hours:02d}:{minutes:02d}:{60 + seconds % 40},{fraction}"
    elif bad == "fraction":
        text = f"{hours:02d}:{minutes:02d}:{seconds:02d},{fraction.ljust(4, '0')}"
    elif bad == "separator":
        text = f"{hours:02d}:{minutes:02d}:{seconds:02d};{fraction}"
    else:
        text = f"{100 + hours}:{minutes:02d}:{seconds:02d},{fraction}"
    with pytest.raises(ValueError):
        parse_time(text)


# ----------------------------------------------------------------------------- CSV reader

_ROW = ["1", "Hello there.", "Joey", "joy", "positive", "0", "0", "1", "1", "00:00:01,000", "0:00:02,500"]


def _rows(n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    keys = rng.sample([(d, u) for d in range(40) for u in range(8)], n)
    rows = []
    for i, (dialogue, utterance) in enumerate(keys):
        start = rng.randrange(0, 3600 * 1000)
        rows.append(
            [
                str(i + 1),
                rng.choice(["Hi.", "Oh, my God!", "Pivot, pivot…", "It’s “fine”.", "Line\nbreak"]),
                rng.choice(["Ross", "Rachel", "Mr. Heckles"]),
                rng.choice(EMOTIONS),
                rng.choice(SENTIMENTS),
                str(dialogue),
                str(utterance),
                str(rng.randint(1, 10)),
                str(rng.randint(1, 25)),
                f"{start // 3600000:02d}:{start // 60000 % 60:02d}:{start // 1000 % 60:02d},{start % 1000:03d}",
                f"{start // 3600000}:{start // 60000 % 60:02d}:{start // 1000 % 60:02d},{start % 1000:03d}",
            ]
        )
    return rows


def _csv(rows: list[list[str]], header=COLUMNS) -> bytes:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\r\n").writerows([list(header), *rows])
    return buffer.getvalue().encode("utf-8")


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURE)
@given(raw=st.binary(max_size=600) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
@example(raw=b"\x00\x00")
@example(raw=_csv([_ROW])[:-3] + b"\x00")
@example(raw=("\ufeff" + ",".join(COLUMNS) + "\r\n" + ",".join(_ROW)).encode("utf-8"))
@example(raw=b'"' + b"x" * 200_000)
def test_any_bytes_give_utterances_or_one_data_error(tmp_path, raw):
    """The reader never crashes on a file: it returns typed rows or raises DataError whose
    message names the file."""
    path = tmp_path / "train_sent_emo.csv"
    path.write_bytes(raw)
    try:
        rows = read_annotations(path)
    except DataError as error:
        assert str(path) in str(error) and "\n" not in str(error).strip()
        return
    assert rows and all(u.emotion in EMOTIONS and u.sentiment in SENTIMENTS for u in rows)


@settings(max_examples=120, deadline=None, suppress_health_check=FIXTURE)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 6), data=st.data())
def test_one_damaged_cell_is_named_by_row_and_column(tmp_path, seed, n, data):
    rows = _rows(n, seed)
    r = data.draw(st.integers(0, n - 1), label="row")
    c = data.draw(
        st.sampled_from([i for i, name in enumerate(COLUMNS) if name not in ("Utterance", "Speaker")]), label="column"
    )
    value = data.draw(st.text(max_size=12).filter(lambda v: "\x00" not in v), label="value")
    original = rows[r][c]
    rows[r][c] = value
    path = tmp_path / "train_sent_emo.csv"
    path.write_bytes(_csv(rows))
    try:
        parsed = read_annotations(path)
    except DataError as error:
        message = str(error)
        assert str(path) in message
        # The damaged cell is the one named (a duplicate key is named on the later row).
        assert f"column '{COLUMNS[c]}'" in message or "already appears" in message, message
        assert f"row {r + 2}" in message or "already appears" in message, message
        return
    # Accepted: the new value must mean something legal for that column.
    assert len(parsed) == n
    if COLUMNS[c] in ("Emotion", "Sentiment"):
        assert value.strip().lower() in (EMOTIONS if COLUMNS[c] == "Emotion" else SENTIMENTS)
    elif COLUMNS[c] in ("StartTime", "EndTime"):
        parse_time(value)  # does not raise
    else:
        assert int(value.strip()) >= 0, (original, value)


@settings(max_examples=80, deadline=None, suppress_health_check=FIXTURE)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 6), cut=st.floats(0, 1, exclude_max=True))
def test_a_file_cut_anywhere_is_refused_or_gives_a_prefix(tmp_path, seed, n, cut):
    """A half-downloaded CSV never yields invented rows: the rows it gives are the file's
    first rows, all but possibly the last exactly as written."""
    rows = _rows(n, seed)
    whole = _csv(rows)
    path = tmp_path / "train_sent_emo.csv"
    path.write_bytes(whole)
    full = read_annotations(path)
    data = whole[: int(len(whole) * cut)]
    path.write_bytes(data)
    try:
        parsed = read_annotations(path)
    except DataError:
        return
    assert 1 <= len(parsed) <= n
    assert parsed[:-1] == full[: len(parsed) - 1]
    assert parsed[-1].key == full[len(parsed) - 1].key


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURE)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 8), order=st.randoms(use_true_random=False))
def test_row_order_never_changes_a_split_or_its_context(tmp_path, seed, n, order):
    rows = _rows(n, seed)
    path = tmp_path / "train_sent_emo.csv"
    path.write_bytes(_csv(rows))
    reference = MeldSplit("train", path, None, read_annotations(path))
    shuffled = list(rows)
    order.shuffle(shuffled)
    path.write_bytes(_csv(shuffled))
    split = MeldSplit("train", path, None, read_annotations(path))
    assert split.utterances == reference.utterances
    for u in split.utterances:
        assert split.context(u, 3) == reference.context(u, 3)
        assert all(c.dialogue_id == u.dialogue_id and c.utterance_id < u.utterance_id for c in split.context(u, 3))


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURE)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 5), drop=st.sampled_from(COLUMNS))
def test_a_missing_column_is_named_whatever_the_rows(tmp_path, seed, n, drop):
    rows = _rows(n, seed)
    keep = [i for i, name in enumerate(COLUMNS) if name != drop]
    path = tmp_path / "train_sent_emo.csv"
    path.write_bytes(_csv([[row[i] for i in keep] for row in rows], header=[COLUMNS[i] for i in keep]))
    with pytest.raises(DataError, match=f"missing column '{drop}'"):
        read_annotations(path)
