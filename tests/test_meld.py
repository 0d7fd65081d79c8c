"""The MELD annotation reader against the real CSVs, both encodings, and malformed files."""

from __future__ import annotations

import collections
import csv
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emo.data import text_encoding
from emo.data.meld import (
    COLUMNS,
    SPLITS,
    Utterance,
    format_time,
    load_split,
    parse_time,
    read_annotations,
    repair_text,
)
from emo.errors import DataError, UsageError
from emo.labels import EMOTIONS, SENTIMENTS

# From ../shared/data/README.md.
REAL_ROWS = {"train": 9989, "dev": 1109, "test": 2610}
REAL_EMOTION_COUNTS = {  # neutral/joy/surprise/anger/sadness/disgust/fear
    "train": (4710, 1743, 1205, 1109, 683, 271, 268),
    "dev": (470, 163, 150, 153, 111, 22, 40),
    "test": (1256, 402, 281, 345, 208, 68, 50),
}
DIALOGUES_WITH_GAPS = {"train": 72, "dev": 2, "test": 2}
# Rows where the first release has a no-break space and the official files a plain space
# (the one difference ftfy alone leaves; see emo.data.meld's docstring).
NBSP_ROWS = {"train": {(473, 3), (761, 2), (761, 3)}, "dev": {(26, 8)}, "test": {(190, 0)}}


@pytest.fixture(scope="module")
def real(shared_data):
    return {split: read_annotations(shared_data / "meld" / f"{split}_sent_emo.csv") for split in SPLITS}


@pytest.mark.parametrize("split", SPLITS)
def test_real_csvs_have_published_rows_and_class_counts(real, split):
    utterances = real[split]
    assert len(utterances) == REAL_ROWS[split]
    counts = collections.Counter(u.emotion for u in utterances)
    assert tuple(counts[e] for e in EMOTIONS) == REAL_EMOTION_COUNTS[split]
    assert all(u.sentiment in SENTIMENTS for u in utterances)
    assert all(EMOTIONS[u.emotion_index] == u.emotion for u in utterances)


def test_real_first_row_is_typed_and_repaired(real):
    first = real["train"][0]
    assert first == Utterance(
        sr_no=1,
        dialogue_id=0,
        utterance_id=0,
        text="also I was the point person on my company’s transition from the KL-5 to GR-6 system.",
        speaker="Chandler",
        emotion="neutral",
        sentiment="neutral",
        season=8,
        episode=21,
        start=16 * 60 + 16.059,
        end=16 * 60 + 21.731,
    )
    assert first.key == (0, 0) and first.clip_name == "dia0_utt0.mp4"


@pytest.mark.parametrize("split", SPLITS)
def test_pre2020_files_repair_to_the_official_utterances(real, shared_data, split):
    old_path = shared_data / "meld" / "pre2020_encoding" / f"{split}_sent_emo.csv"
    raw = old_path.read_text(encoding="utf-8")
    assert "\u0092" in raw and "\r\n" not in raw  # really the mojibake, LF release
    assert read_annotations(old_path) == real[split]


@pytest.mark.parametrize("split", SPLITS)
def test_only_documented_rows_need_more_than_ftfy(shared_data, split):
    """Without the no-break-space step, exactly the rows named in meld.py's docstring differ."""
    import ftfy

    def ftfy_only(path):
        with open(path, encoding="utf-8", newline="") as handle:
            return {
                (int(r["Dialogue_ID"]), int(r["Utterance_ID"])): ftfy.fix_text(
                    r["Utterance"], text_encoding.ftfy_config()
                )
                for r in csv.DictReader(handle)
            }

    new = ftfy_only(shared_data / "meld" / f"{split}_sent_emo.csv")
    old = ftfy_only(shared_data / "meld" / "pre2020_encoding" / f"{split}_sent_emo.csv")
    differing = {key for key in new if new[key] != old[key]}
    assert differing == NBSP_ROWS[split]
    assert all(old[key].replace("\u00a0", " ") == new[key] for key in differing)


@pytest.mark.parametrize("split", SPLITS)
def test_real_key_gaps_are_kept(real, split):
    by_dialogue = collections.defaultdict(list)
    for u in real[split]:
        by_dialogue[u.dialogue_id].append(u.utterance_id)
    gaps = sum(1 for ids in by_dialogue.values() if sorted(ids) != list(range(len(ids))))
    assert gaps == DIALOGUES_WITH_GAPS[split]
    if split == "train":
        assert 60 not in by_dialogue and 59 in by_dialogue and 61 in by_dialogue


def test_real_split_context_follows_utterance_ids_across_gaps(shared_data):
    split = load_split(shared_data / "meld", "train")
    assert split.clip_dir is None  # the shared folder holds the CSVs only
    assert [u.key for u in split.utterances] == sorted(u.key for u in split.utterances)
    gapped = [
        dialogue
        for dialogue in _by_dialogue(split.utterances).values()
        if [u.utterance_id for u in dialogue] != list(range(len(dialogue)))
    ]
    assert len(gapped) == DIALOGUES_WITH_GAPS["train"]
    for dialogue in gapped:
        last = dialogue[-1]
        assert split.context(last, 100) == dialogue[:-1]
        assert split.context(last, 2) == dialogue[-3:-1]
        assert split.context(dialogue[0], 5) == []
    with pytest.raises(DataError, match="no clip folder"):
        split.clip_path(split.utterances[0])


def _by_dialogue(utterances):
    out = collections.defaultdict(list)
    for u in utterances:
        out[u.dialogue_id].append(u)
    return out


def test_real_times_in_both_formats_and_the_odd_ones(real):
    test = {u.key: u for u in real["test"]}
    assert test[(38, 4)].end - test[(38, 4)].start == pytest.approx(304.94, abs=1e-6)
    assert test[(220, 0)].end - test[(220, 0)].start == pytest.approx(235.068, abs=1e-6)
    assert test[(155, 3)].end == test[(155, 3)].start == pytest.approx(12 * 60 + 32.632)  # "0:12:32,632"
    train = {u.key: u for u in real["train"]}
    assert train[(437, 2)].end == pytest.approx(6 * 60 + 47.28)  # "00:06:47,28"


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("00:16:16,059", 976.059),
        ("0:12:32,632", 752.632),
        ("1:02:03,004", 3723.004),
        ("00:06:47,28", 407.28),
        ("00:00:01.5", 1.5),
    ],
)
def test_parse_time_formats(text, seconds):
    assert parse_time(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "12:32,632", "00:61:00,000", "00:00:60,000", "a:00:00,000", "00:00:00,1234", "00:00:00"]
)
def test_parse_time_rejects_malformed(text):
    with pytest.raises(ValueError):
        parse_time(text)


@given(millis=st.integers(min_value=0, max_value=100 * 3600 * 1000 - 1), short=st.booleans())
def test_time_format_round_trips(millis, short):
    text = format_time(millis / 1000, short_hours=short)
    assert round(parse_time(text) * 1000) == millis
    if not short:
        assert len(text.split(":")[0]) == 2


@given(st.text(max_size=20))
def test_parse_time_either_parses_or_raises_value_error(text):
    try:
        value = parse_time(text)
    except ValueError:
        return
    assert value >= 0


# --------------------------------------------------------------------------- property: CSV

_CP1252_PUNCT = "’‘“”…—–"
_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126) | st.sampled_from(list(_CP1252_PUNCT + "\n")),
    max_size=40,
)
_name = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)


@st.composite
def _utterances(draw):
    keys = draw(st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 40)), min_size=1, max_size=12, unique=True))
    out = []
    for i, (dialogue, utterance) in enumerate(keys):
        start = draw(st.integers(0, 10 * 3600 * 1000 - 1))
        end = draw(st.integers(start, 10 * 3600 * 1000 - 1))
        out.append(
            Utterance(
                sr_no=i + 1,
                dialogue_id=dialogue,
                utterance_id=utterance,
                text=draw(_text),
                speaker=draw(_name),
                emotion=draw(st.sampled_from(EMOTIONS)),
                sentiment=draw(st.sampled_from(SENTIMENTS)),
                season=draw(st.integers(1, 10)),
                episode=draw(st.integers(1, 25)),
                start=start / 1000,
                end=end / 1000,
            )
        )
    return out


def _csv_bytes(utterances, *, lineterminator="\r\n", short_hours=False, label_case=str, encode=None) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator=lineterminator)
    writer.writerow(COLUMNS)
    for u in utterances:
        writer.writerow(
            [
                u.sr_no,
                u.text,
                u.speaker,
                label_case(u.emotion),
                label_case(u.sentiment),
                u.dialogue_id,
                u.utterance_id,
                u.season,
                u.episode,
                format_time(u.start, short_hours),
                format_time(u.end, short_hours),
            ]
        )
    text = buffer.getvalue()
    return encode(text) if encode else text.encode("utf-8")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    utterances=_utterances(),
    lineterminator=st.sampled_from(["\r\n", "\n"]),
    short_hours=st.booleans(),
    label_case=st.sampled_from([str, str.upper, str.capitalize]),
)
def test_csv_reader_round_trips_any_official_file(tmp_path, utterances, lineterminator, short_hours, label_case):
    path = tmp_path / "x_sent_emo.csv"
    path.write_bytes(
        _csv_bytes(utterances, lineterminator=lineterminator, short_hours=short_hours, label_case=label_case)
    )
    assert read_annotations(path) == utterances


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(utterances=_utterances(), raw_cp1252=st.booleans())
def test_csv_reader_repairs_first_release_mojibake(tmp_path, utterances, raw_cp1252):
    """cp1252 text read as latin-1 and saved as UTF-8 (the first release), or raw cp1252 bytes."""
    if raw_cp1252:
        encode = lambda text: text.encode("cp1252")  # noqa: E731
    else:
        encode = lambda text: text.encode("cp1252").decode("latin-1").encode("utf-8")  # noqa: E731
    path = tmp_path / "x_sent_emo.csv"
    path.write_bytes(_csv_bytes(utterances, lineterminator="\n", encode=encode))
    assert read_annotations(path) == utterances


def test_repair_text_leaves_good_text_alone():
    for text in ["It’s “fine”… really — yes", "Café, naïve", "plain ASCII 'quotes'", "日本語", "emoji 😀"]:
        assert repair_text(text) == text
    assert repair_text("It\u0092s\u0085") == "It’s…"
    assert repair_text("Itâ€™s") == "It’s"
    assert repair_text("a\u00a0b") == "a b"


# --------------------------------------------------------------------------- errors

HEADER = ",".join(COLUMNS)
GOOD_ROW = '1,Hello there.,Joey,joy,positive,0,0,1,1,"00:00:01,000","0:00:02,500"'


def _write(tmp_path: Path, lines: list[str], name="train_sent_emo.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    return path


def test_good_minimal_file(tmp_path):
    (u,) = read_annotations(_write(tmp_path, [HEADER, GOOD_ROW]))
    assert (u.emotion, u.sentiment, u.start, u.end) == ("joy", "positive", 1.0, 2.5)


@pytest.mark.parametrize(
    "row, column, words",
    [
        ('1,Hi.,Joey,happy,positive,0,0,1,1,"00:00:01,000","00:00:02,000"', "Emotion", "unknown label 'happy'"),
        ('1,Hi.,Joey,joy,good,0,0,1,1,"00:00:01,000","00:00:02,000"', "Sentiment", "unknown label 'good'"),
        ('1,Hi.,Joey,joy,positive,x,0,1,1,"00:00:01,000","00:00:02,000"', "Dialogue_ID", "'x' is not a whole number"),
        ('1,Hi.,Joey,joy,positive,0,-1,1,1,"00:00:01,000","00:00:02,000"', "Utterance_ID", "negative"),
        ('1,Hi.,Joey,joy,positive,0,0,1,1,"00:00:01","00:00:02,000"', "StartTime", "not a time"),
        ('1,Hi.,Joey,joy,positive,0,0,1,1,"00:00:01,000",', "EndTime", "not a time"),
        ("1,Hi.,Joey,joy,positive,0,0,1,1", "StartTime", "9 fields but the header has 11"),
        ('1,Hi, there.,Joey,joy,positive,0,0,1,1,"00:00:01,000","00:00:02,000"', "EndTime", "unquoted comma"),
    ],
)
def test_bad_rows_name_file_line_and_column(tmp_path, row, column, words):
    path = _write(tmp_path, [HEADER, GOOD_ROW, row])
    with pytest.raises(DataError) as info:
        read_annotations(path)
    message = str(info.value)
    assert str(path) in message and "row 3," in message and f"column '{column}'" in message
    assert words in message


def test_multiline_text_rows_are_named_by_row_and_line(tmp_path):
    lines = [
        HEADER,
        '1,"Two\nlines",Joey,joy,positive,0,0,1,1,"00:00:01,000","00:00:02,000"',
        '2,Bad.,Joey,joy,positive,0,1,1,1,"00:00:01,000","later"',
    ]
    with pytest.raises(DataError, match=r"row 3 \(line 4\), column 'EndTime'"):
        read_annotations(_write(tmp_path, lines))


def test_duplicate_key_names_both_rows(tmp_path):
    path = _write(tmp_path, [HEADER, GOOD_ROW, GOOD_ROW.replace("1,Hello", "2,Again", 1)])
    with pytest.raises(DataError, match=r"row 3, column 'Utterance_ID'.*already appears on row 2"):
        read_annotations(path)


def test_missing_column_is_named(tmp_path):
    header = HEADER.replace(",Sentiment", "")
    row = GOOD_ROW.replace(",positive", "")
    with pytest.raises(DataError, match=r"row 1 \(header\): missing column 'Sentiment'"):
        read_annotations(_write(tmp_path, [header, row]))


def test_header_with_other_order_extra_columns_and_case(tmp_path):
    columns = list(reversed(COLUMNS)) + ["Note"]
    values = list(reversed(next(csv.reader([GOOD_ROW])))) + ["extra"]
    buffer = io.StringIO()
    csv.writer(buffer).writerows([[c.upper() for c in columns], values])
    path = tmp_path / "train_sent_emo.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8-sig")  # with a BOM, too
    (u,) = read_annotations(path)
    assert u.text == "Hello there." and u.end == 2.5


@pytest.mark.parametrize(
    "content, words", [(b"", "is empty"), (b"\r\n", "is empty"), ((HEADER + "\r\n").encode(), "no rows")]
)
def test_empty_files_are_errors(tmp_path, content, words):
    path = tmp_path / "dev_sent_emo.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=words):
        read_annotations(path)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_annotations(tmp_path / "nope.csv")


# --------------------------------------------------------------------------- splits


def test_load_split_unknown_split_and_missing_files(tmp_path):
    with pytest.raises(UsageError, match="Unknown split 'val'"):
        load_split(tmp_path, "val")
    # paths the user gave that are not there are usage errors (exit 2), not broken data
    with pytest.raises(UsageError, match="does not exist"):
        load_split(tmp_path / "absent", "train")
    with pytest.raises(UsageError, match="No dev_sent_emo.csv"):
        load_split(tmp_path, "dev")
    csv_file = _write(tmp_path, [HEADER, GOOD_ROW])
    with pytest.raises(DataError, match="is a file; point at the folder"):
        load_split(csv_file, "train")


def test_load_split_finds_nested_layout_and_clips(tmp_path):
    nested = tmp_path / "test"
    nested.mkdir()
    lines = [
        HEADER,
        '1,Second.,Joey,joy,positive,5,3,1,1,"00:00:03,000","00:00:04,000"',
        '2,First.,Ross,anger,negative,5,0,1,1,"00:00:01,000","00:00:02,000"',
        '3,Other.,Ross,fear,negative,2,0,1,1,"00:00:01,000","00:00:02,000"',
        '4,Third.,Joey,sadness,negative,5,7,1,1,"00:00:05,000","00:00:06,000"',
    ]
    _write(nested, lines, "test_sent_emo.csv")
    clips = nested / "output_repeated_splits_test"
    clips.mkdir()
    for name in ("dia5_utt0.mp4", "dia9_utt9.mp4", "._dia5_utt3.mp4", "notes.txt"):
        (clips / name).write_bytes(b"x")
    split = load_split(tmp_path, "test")
    assert split.name == "test" and split.csv_path == nested / "test_sent_emo.csv" and split.clip_dir == clips
    assert [u.key for u in split.utterances] == [(2, 0), (5, 0), (5, 3), (5, 7)]
    by_key = {u.key: u for u in split.utterances}
    assert split.context(by_key[(5, 7)], 5) == [by_key[(5, 0)], by_key[(5, 3)]]
    assert split.context(by_key[(5, 7)], 1) == [by_key[(5, 3)]]
    assert split.context(by_key[(5, 7)], 0) == []
    assert split.context(by_key[(2, 0)], 3) == []
    assert split.clip_path(by_key[(5, 3)]) == clips / "dia5_utt3.mp4"
    assert split.unlabeled_videos() == [clips / "dia9_utt9.mp4"]
