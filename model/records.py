"""Typed, immutable results of the backbone, all with integer-millisecond spans.

One class per kind of finding (a caption is not a transcript segment with optional fields).
Derive new records with :func:`dataclasses.replace`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onepass.operators.spans import Span

__all__ = ["Caption", "Segment", "SpeakerTurn", "Answer", "WindowResult"]


@dataclass(frozen=True)
class Caption:
    """What is seen in the kept frame at ``frame_ms``; ``span`` runs to the next kept frame."""

    span: Span
    frame_ms: int
    text: str


@dataclass(frozen=True)
class Segment:
    """A stretch of speech with its words; ``speaker`` is filled by diarization (else None)."""

    span: Span
    text: str
    speaker: str | None = None


@dataclass(frozen=True)
class SpeakerTurn:
    span: Span
    speaker: str


@dataclass(frozen=True)
class Answer:
    span: Span
    question: str
    text: str


@dataclass(frozen=True, eq=False)
class WindowResult:
    """Everything the backbone found in one window of one source.

    ``speech`` holds (span, embedding) pairs: speech regions with a speaker embedding pooled
    from the backbone's hidden states, linked across windows by :mod:`onepass.model.speakers`.
    """

    source_id: str
    span: Span
    captions: tuple[Caption, ...] = ()
    segments: tuple[Segment, ...] = ()
    answers: tuple[Answer, ...] = ()
    speech: tuple[tuple[Span, np.ndarray], ...] = ()
    raw: tuple[tuple[str, str], ...] = ()  # (task, generated text) for debugging
