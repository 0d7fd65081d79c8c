"""report.html: one predict run as a page that opens in any browser, with no server, no
network and no file beside it but the media it plays.

Per input: the media (a `<video>` or `<audio>` linked by a path relative to the report,
so it plays from disk; a click on a row seeks it to that utterance), its timeline PNG
embedded as base64, and a table of every utterance: time, transcript and where the words
came from (asr: speech recognition, worth checking; given: --transcript; none), the
predicted emotion and each emotion's probability. Inputs that were skipped or predicted
with less are listed at the end. Everything the page shows is escaped; the only script is
the few lines that seek.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from urllib.parse import quote

from emo.labels import EMOTIONS
from emo.predict.timeline import colour

AUDIO_SUFFIXES = (".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus", ".wma")
SOURCES = {
    "asr": "speech recognition: check it, and pass --transcript FILE where it is wrong",
    "given": "from --transcript",
    "none": "no words (no audio or no speech)",
}
STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1240px; color: #111; padding: 0 12px; }
h1 { font-size: 24px; } h2 { font-size: 19px; margin-top: 36px; }
img.timeline { width: 100%; max-width: 1200px; border: 1px solid #ddd; }
video { width: 640px; max-width: 100%; max-height: 360px; background: #000; } audio { width: 640px; }
table { border-collapse: collapse; width: 100%; margin-top: 12px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 6px; text-align: left; vertical-align: top; }
th { vertical-align: bottom; } th.num { text-align: right; } th.group { text-align: center; border-bottom-color: #999; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr[data-start] { cursor: pointer; } tr[data-start]:hover { background: #f2f6fb; }
.emotion { padding: 1px 6px; border-radius: 3px; white-space: nowrap; }
.asr { color: #8a4b00; } .bar { display: inline-block; height: 9px; vertical-align: middle; margin-right: 4px; }
.problems li { margin: 4px 0; }
"""
SEEK = """
document.querySelectorAll("tr[data-start]").forEach(function (row) {
  row.addEventListener("click", function () {
    var media = document.getElementById(row.dataset.media);
    if (!media) { return; }
    media.currentTime = parseFloat(row.dataset.start);
    media.play();
  });
});
"""


def media_link(file: str, out: Path) -> str:
    """`file` as a URL relative to the folder `out` (absolute `file://` when none exists)."""
    target = Path(file).resolve()
    try:
        relative = os.path.relpath(target, Path(out).resolve())
    except ValueError:  # another drive: no relative path
        return target.as_uri()
    return quote(Path(relative).as_posix())


def render_report(result, out: Path, timelines: dict[str, bytes]) -> str:
    """The page for `result` (a PredictResult) written into folder `out`; `timelines` maps
    an input to its timeline PNG's bytes."""
    e = html.escape
    n_seg, n_in = len(result.segments), len(result.inputs)
    title = f"emo predict: {n_seg} utterance{'s' * (n_seg != 1)} in {n_in} input{'s' * (n_in != 1)}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    guessed = sum(s.transcript_source == "asr" for s in result.segments)
    if guessed:
        parts.append(
            f"<p class=asr>Transcripts from speech recognition (source <b>asr</b>): {guessed} of {n_seg} "
            f"utterance{'s' * (n_seg != 1)}; check them, and where they are wrong pass <code>--transcript FILE</code> "
            "or a larger <code>--asr-model</code>.</p>"
        )
    by_file: dict[str, list] = {}
    for s in result.segments:
        by_file.setdefault(s.file, []).append(s)
    for index, (file, segments) in enumerate(by_file.items()):
        parts += _input_section(index, file, segments, out, timelines.get(file), result.heads)
    if result.problems:
        parts.append("<h2>Inputs skipped or predicted with less</h2><ul class=problems>")
        for p in result.problems:
            parts.append(f"<li><b>{'skipped' if p.skipped else 'note'}</b> ({e(p.reason)}): {e(p.message)}</li>")
        parts.append("</ul>")
    parts += [f"<script>{SEEK}</script>", "</body></html>", ""]
    return "\n".join(parts)


def _input_section(index: int, file: str, segments, out: Path, png: bytes | None, heads) -> list[str]:
    e = html.escape
    media = f"media-{index}"
    tag = "audio" if Path(file).suffix.lower() in AUDIO_SUFFIXES else "video"
    parts = [
        f"<h2>{e(Path(file).name)}</h2>",
        f'<{tag} id="{media}" controls preload="metadata" src="{e(media_link(file, out))}"></{tag}>',
        f"<p>{e(file)}: click a row to play from that utterance.</p>",
    ]
    if png is not None:
        encoded = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<img class=timeline alt="emotion timeline of {e(Path(file).name)}" src="data:image/png;base64,{encoded}">'
        )
    sentiment = "sentiment" in heads
    header = ["#", "start", "end", "transcript", "source", "emotion"] + (["sentiment"] if sentiment else [])
    parts.append(
        "<table><thead><tr>"
        + "".join(f'<th rowspan="2">{e(h)}</th>' for h in header)
        + f'<th colspan="{len(EMOTIONS)}" class="group">probability of each emotion</th></tr><tr>'
        + "".join(f'<th class="num">{e(emotion)}</th>' for emotion in EMOTIONS)
        + "</tr></thead><tbody>"
    )
    for s in segments:
        source = s.transcript_source
        cells = [
            f'<td class="num">{s.segment}</td>',
            f'<td class="num">{_clock(s.start)}</td>',
            f'<td class="num">{_clock(s.end)}</td>',
            f"<td>{e(s.transcript) or '<i>(no words)</i>'}</td>",
            f'<td class="{e(source)}" title="{e(SOURCES.get(source, source))}">{e(source)}</td>',
            f'<td><span class="emotion" style="background:{colour(s.emotion)}">{e(s.emotion)}</span></td>',
        ]
        if sentiment:
            cells.append(f"<td>{e(s.sentiment or '')}</td>")
        for emotion in EMOTIONS:
            p = float(s.probabilities.get(emotion, 0.0))
            bar = f'<span class="bar" style="width:{round(40 * p)}px;background:{colour(emotion)}"></span>'
            cells.append(f'<td class="num">{bar}{p:.0%}</td>')
        parts.append(f'<tr data-media="{media}" data-start="{s.start:.3f}">' + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    return parts


def _clock(seconds: float) -> str:
    minutes, rest = divmod(float(seconds), 60.0)
    return f"{int(minutes)}:{rest:04.1f}"
