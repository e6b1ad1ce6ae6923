"""Typed, immutable records: the backbone's input window and its results, all with integer-millisecond spans.

One class per kind of finding (a caption is not a transcript segment with optional fields).
Derive new records with :func:`dataclasses.replace`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from onepass.operators.spans import Span

if TYPE_CHECKING:  # patchify imports torch; a window record must not (decode workers stay light)
    from onepass.operators.patchify import Patches

__all__ = ["Window", "Caption", "Segment", "SpeakerTurn", "Answer", "WindowResult"]


@dataclass(frozen=True, eq=False)
class Window:
    """Model-ready inputs of one window of one source (times relative to the source).

    ``audio_before`` / ``audio_after``: audio frames just before and after the window's own (the
    40 ms grid continues through them), for requests that follow a speech region across the
    window's edges (:func:`onepass.model.analyse.speech_windows`); never part of a window request."""

    source_id: str
    span: Span
    frame_ms: tuple[int, ...]
    patches: tuple[Patches, ...]
    audio: np.ndarray  # [n, 640] float32
    audio_start_ms: int
    audio_before: np.ndarray = field(default_factory=lambda: np.zeros((0, 640), np.float32))
    audio_after: np.ndarray = field(default_factory=lambda: np.zeros((0, 640), np.float32))

    @property
    def has_video(self) -> bool:
        return bool(self.frame_ms)

    @property
    def has_audio(self) -> bool:
        return self.audio.shape[0] > 0


@dataclass(frozen=True)
class Caption:
    """What is seen in the kept frame at ``frame_ms``; ``span`` runs to the next kept frame."""

    span: Span
    frame_ms: int
    text: str
    confidence: float | None = None  # mean token log-probability of the text it came from (0: certain)


@dataclass(frozen=True)
class Segment:
    """A stretch of speech with its words; ``speaker`` is filled by diarization (else None)."""

    span: Span
    text: str
    speaker: str | None = None
    confidence: float | None = None  # mean token log-probability of the text it came from (0: certain)


@dataclass(frozen=True)
class SpeakerTurn:
    span: Span
    speaker: str


@dataclass(frozen=True)
class Answer:
    """``supported`` False: the checkpoint does not answer this question (its onepass.json lists
    the ones it does); the row says so instead of carrying a made-up answer."""

    span: Span
    question: str
    text: str
    confidence: float | None = None
    supported: bool = True


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
