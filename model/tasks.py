"""Task prompts, the output formats they ask for, and robust parsers back to typed records.

Formats (times relative to the window start, as the frame stamps in the prompt are):
- captions:   one line per scene, ``MM:SS MM:SS caption`` (first and last frame stamp it covers)
              or ``MM:SS caption`` for one frame;
- transcript: one line per utterance, ``MM:SS.d MM:SS.d words``.
Parsers never raise: output that does not parse degrades (a transcript without times becomes one
segment over the window's span; a caption without stamps is used for every frame).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from onepass.operators.spans import Span, ms_to_clock, ms_to_clock_tenths

from .records import Answer, Caption, Segment

__all__ = ["TaskSet", "Prompts", "parse_captions", "parse_transcript", "format_captions", "format_transcript", "make_answer",
           "OTHER_SPEECH", "OTHER_SOUND", "OTHER_SCENE", "MARKERS", "UNSUPPORTED", "normalise_markers", "is_marker"]

# What the default model writes for media outside its domain (issue 24): one marker for the whole
# speech region or frame, never a made-up report. Rows keep the marker as their text.
OTHER_SPEECH, OTHER_SOUND, OTHER_SCENE = "[other speech]", "[other sound]", "[other scene]"
MARKERS = (OTHER_SPEECH, OTHER_SOUND, OTHER_SCENE)
UNSUPPORTED = "[unsupported question]"  # an answer row's text for a question the checkpoint does not answer
_MARKER = re.compile(r"\[\s*other\s+(speech|sound|scene)\s*\]")


def normalise_markers(text: str) -> str:
    """A word-level tokenizer decodes ``[other speech]`` as ``[ other speech ]``: close it up."""
    return _MARKER.sub(lambda m: f"[other {m.group(1)}]", text)


def is_marker(text: str) -> bool:
    return normalise_markers(text).strip() in MARKERS


@dataclass(frozen=True)
class TaskSet:
    captions: bool = True
    transcript: bool = True
    diarization: bool = True
    questions: tuple[str, ...] = ()

    @classmethod
    def parse(cls, names: str, questions: tuple[str, ...] = ()) -> TaskSet:
        """From a comma list like ``captions,transcript,diarization``."""
        wanted = {n.strip().lower() for n in names.split(",") if n.strip()}
        known = {"captions", "transcript", "diarization"}
        if wanted - known:
            raise ValueError(f"unknown task(s) {sorted(wanted - known)}; choose from {sorted(known)}")
        return cls("captions" in wanted, "transcript" in wanted, "diarization" in wanted, tuple(questions))


@dataclass(frozen=True)
class Prompts:
    caption: str = "caption each frame with its time"
    transcript: str = "transcribe the speech with start and end times"


_CLOCK = r"(\d{1,3})\s*:\s*(\d{2})"
_CLOCK_D = r"(\d{1,3})\s*:\s*(\d{2})(?:\s*\.\s*(\d))?"
_SEP = r"\s*(?:-->|-|to|–)?\s*"
# A caption entry is one stamp or a stamp range; a transcript entry is a start and an end time.
# Entries are found anywhere (not only at line starts): word-level tokenizers decode without newlines.
_CAPTION_STAMP = re.compile(rf"\[?{_CLOCK}(?:{_SEP}{_CLOCK})?\]?")
_SEGMENT_STAMP = re.compile(rf"\[?{_CLOCK_D}{_SEP}{_CLOCK_D}\]?")


def _sec(m: str, s: str) -> int:
    return (int(m) * 60 + int(s)) * 1000


def _entries(pattern: re.Pattern, text: str) -> tuple[list[tuple[re.Match, str]], str]:
    """(stamp match, text up to the next stamp) for every stamp, and any text before the first."""
    matches = list(pattern.finditer(text))
    entries = []
    for m, nxt in zip(matches, matches[1:] + [None]):
        body = text[m.end() : nxt.start() if nxt else len(text)]
        entries.append((m, body.strip(" \t\n:-–,;")))
    head = text[: matches[0].start()] if matches else text
    return entries, head.strip()


def parse_captions(text: str, frame_ms: list[int], window: Span) -> list[Caption]:
    """One caption per kept frame (``frame_ms`` absolute), from the model's caption entries."""
    if not frame_ms:
        return []
    entries, head = _entries(_CAPTION_STAMP, normalise_markers(text))
    rows: list[tuple[int, int, str]] = []
    for m, body in entries:
        if not body:
            continue
        a = _sec(m.group(1), m.group(2))
        b = _sec(m.group(3), m.group(4)) if m.group(3) else a
        rows.append((min(a, b), max(a, b), " ".join(body.split())))
    fallback = " ".join(head.split()) if not rows else ""
    captions = []
    for k, t in enumerate(frame_ms):
        rel = (t - window.start_ms) // 1000 * 1000  # the stamp the frame carried in the prompt
        covering = [r for r in rows if r[0] <= rel <= r[1]]
        earlier = [r for r in rows if r[0] <= rel]
        caption = (covering[-1][2] if covering else earlier[-1][2] if earlier else fallback).strip()
        if not caption:
            continue
        end = frame_ms[k + 1] if k + 1 < len(frame_ms) else max(window.end_ms, t + 1)
        captions.append(Caption(span=Span(t, max(end, t + 1)), frame_ms=t, text=caption))
    return captions


def parse_transcript(text: str, window: Span) -> list[Segment]:
    """Speech segments with absolute times; malformed output degrades to the window's span."""
    entries, head = _entries(_SEGMENT_STAMP, normalise_markers(text))
    segments = []
    for m, body in entries:
        if not body:
            continue
        g = m.groups()
        a = _sec(g[0], g[1]) + int(g[2] or 0) * 100
        b = _sec(g[3], g[4]) + int(g[5] or 0) * 100
        span = Span(window.start_ms + min(a, b), window.start_ms + max(a, b)).clip(window)
        if span.duration_ms == 0:
            span = Span(span.start_ms, min(span.start_ms + 1000, window.end_ms)) if span.start_ms < window.end_ms else window
        segments.append(Segment(span=span, text=" ".join(body.split())))
    if not segments and head:
        segments.append(Segment(span=window, text=" ".join(head.split())))
    return segments


def make_answer(text: str, question: str, window: Span, confidence: float | None = None) -> list[Answer]:
    text = " ".join(normalise_markers(text).split())
    return [Answer(span=window, question=question, text=text, confidence=confidence)] if text else []


def format_captions(scenes: list[tuple[int, int, str]]) -> str:
    """Training target: [(first stamp ms, last stamp ms, caption)] relative to the window."""
    lines = []
    for a, b, caption in scenes:
        lines.append(f"{ms_to_clock(a)} {caption}" if a == b else f"{ms_to_clock(a)} {ms_to_clock(b)} {caption}")
    return "\n".join(lines)


def format_transcript(utterances: list[tuple[int, int, str]]) -> str:
    """Training target: [(start ms, end ms, words)] relative to the window."""
    return "\n".join(f"{ms_to_clock_tenths(a)} {ms_to_clock_tenths(b)} {words}" for a, b, words in utterances)
