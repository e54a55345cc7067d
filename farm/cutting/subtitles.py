"""Subtitles on the film's timeline: SRT and WebVTT beside the film, ASS for ffmpeg and libass.

Each scene's narration is shown for its slot on the timeline (timeline.py), to
the millisecond of its frames. The text is written as given, escaped for each
format:

- SRT: as is (a reader may still take ``<i>`` for a tag: that is the format).
- WebVTT: ``&``, ``<`` and ``>`` as character references.
- ASS for the soft track (ffmpeg's mov_text encoder reads ASS events): only
  ``{\\`` (an override block) and ``\\n`` / ``\\N`` / ``\\h`` (line breaks, hard
  space) mean anything there; a word joiner (U+2060, invisible) after the
  backslash keeps them literal.
- ASS for burning in (libass): libass also takes any ``{...}`` for a comment,
  so braces become ``\\{`` and ``\\}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from farm.cutting.timeline import Timeline

WORD_JOINER = "\u2060"


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float
    text: str  # lines joined by "\n"


def clean_text(text: str) -> str:
    """A narration as subtitle lines: no blank lines (they end a cue), no cue arrows."""
    lines = [" ".join(line.split()) for line in text.strip().splitlines()]
    # Any run of dashes before ">" becomes "->": replacing "-->" alone would make "--->" a new "-->".
    return "\n".join(re.sub(r"-{2,}>", "->", line) for line in lines if line)


def cues(narrations: Sequence[str], timeline: Timeline) -> list[Cue]:
    return [Cue(timeline.seconds(start), timeline.seconds(end), clean_text(text))
            for text, (start, end) in zip(narrations, timeline.slots())]


def clock(seconds: float, sep: str = ",") -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"


def srt_time(seconds: float) -> str:
    return clock(seconds, ",")


def make_srt(items: Sequence[Cue]) -> str:
    return "\n".join(f"{n}\n{srt_time(c.start)} --> {srt_time(c.end)}\n{c.text}\n"
                     for n, c in enumerate(items, start=1))


def vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def make_vtt(items: Sequence[Cue]) -> str:
    blocks = [f"{n}\n{clock(c.start, '.')} --> {clock(c.end, '.')}\n{vtt_escape(c.text)}\n"
              for n, c in enumerate(items, start=1)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def ass_time(seconds: float) -> str:
    centis = round(seconds * 100)
    hours, centis = divmod(centis, 360_000)
    minutes, centis = divmod(centis, 6000)
    secs, centis = divmod(centis, 100)
    return f"{hours}:{minutes:02d}:{secs:02d}.{centis:02d}"


def ass_escape_soft(text: str) -> str:
    """For ffmpeg's ASS reader: keep ``{\\`` and ``\\n \\N \\h`` literal; lines joined by ``\\N``."""
    text = re.sub(r"\\(?=[nNh])", "\\\\" + WORD_JOINER, text)
    text = text.replace("{\\", "{" + WORD_JOINER + "\\")
    return text.replace("\n", "\\N")


def ass_escape_burn(text: str) -> str:
    """For libass: braces escaped, backslash sequences broken, lines joined by ``\\N``."""
    text = re.sub(r"\\(?=[nNh{}])", "\\\\" + WORD_JOINER, text)
    text = text.replace("{", "\\{").replace("}", "\\}")
    return text.replace("\n", "\\N")


def make_ass(items: Sequence[Cue], size: int, burn: bool) -> str:
    """An ASS script at the film's resolution: white text, black outline, bottom centre."""
    font = max(8, round(size / 16))
    escape = ass_escape_burn if burn else ass_escape_soft
    lines = [
        "[Script Info]", "ScriptType: v4.00+", f"PlayResX: {size}", f"PlayResY: {size}", "WrapStyle: 0", "",
        "[V4+ Styles]",
        "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, "
        "Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, "
        "MarginL, MarginR, MarginV, Encoding",
        f"Style: Default,DejaVu Sans,{font},&H00FFFFFF,&H000000FF,&H00000000,&H80000000,0,0,0,0,100,100,0,0,1,"
        f"{max(1, font // 12)},0,2,{font // 2},{font // 2},{font // 2},1",
        "",
        "[Events]",
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text",
    ]
    for c in items:
        lines.append(f"Dialogue: 0,{ass_time(c.start)},{ass_time(c.end)},Default,,0,0,0,,{escape(c.text)}")
    return "\n".join(lines) + "\n"


def clip_cues(items: Sequence[Cue], start: float, end: float) -> list[Cue]:
    """The cues showing between ``start`` and ``end``, on a clock that starts at ``start``."""
    return [Cue(max(c.start, start) - start, min(c.end, end) - start, c.text)
            for c in items if c.end > start and c.start < end]


def unescape_soft(text: str) -> str:
    """What a player shows of a soft track's text (the inverse of ass_escape_soft, less line breaks)."""
    return text.replace(WORD_JOINER, "")
