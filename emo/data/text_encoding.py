"""Bytes to text for annotation CSVs: the encodings MELD has shipped, and the ones to refuse.

The current MELD CSVs are UTF-8; the first release's are cp1252 read as latin-1 (mojibake
that `repair_text` undoes with ftfy's encoding repairs only). A UTF-16/32 or binary file is
refused up front (`require_8bit_text`), since read as cp1252 it would only fail later as a
"missing column".
"""

from __future__ import annotations

import codecs
from functools import lru_cache
from pathlib import Path

from emo.errors import DataError


def repair_text(text: str) -> str:
    """Undo first-release mojibake (C1 controls for cp1252 punctuation, UTF-8 read as
    latin-1) without touching anything else; plain ASCII passes straight through."""
    if text.isascii():
        return text
    import ftfy

    fixed = ftfy.fix_text(text, ftfy_config())
    return fixed.replace("\u00a0", " ")


@lru_cache(maxsize=1)
def ftfy_config():
    """ftfy's encoding repairs only: no quote uncurling, no normalisation, no HTML unescaping."""
    import ftfy

    return ftfy.TextFixerConfig(
        unescape_html=False,
        remove_terminal_escapes=False,
        fix_encoding=True,
        restore_byte_a0=True,
        replace_lossy_sequences=True,
        decode_inconsistent_utf8=True,
        fix_c1_controls=True,
        fix_latin_ligatures=False,
        fix_character_width=False,
        uncurl_quotes=False,
        fix_line_breaks=False,
        fix_surrogates=True,
        remove_control_chars=False,
        normalization=None,
    )


def require_8bit_text(raw: bytes, path: Path) -> None:
    """Refuse UTF-16/32 and binary files up front: read as cp1252 they would fail later as a missing column."""
    utf32, utf16 = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE), (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    kind = (
        "is UTF-32 text"
        if raw.startswith(utf32)
        else "is UTF-16 text"
        if raw.startswith(utf16)
        else "holds NUL bytes (UTF-16 without a byte-order mark, or not text)"
        if b"\x00" in raw
        else ""
    )
    if kind:
        raise DataError(f"Annotation file {path} {kind}, not UTF-8 or cp1252; save it as UTF-8 (e.g. 'CSV UTF-8').")


def decode_bytes(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Raw cp1252 bytes (0x92 for ’); 5 bytes are undefined in cp1252, latin-1 keeps them.
        try:
            return raw.decode("cp1252")
        except UnicodeDecodeError:
            return raw.decode("latin-1")
