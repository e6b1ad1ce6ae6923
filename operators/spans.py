"""The time model: integer milliseconds everywhere inside onepass.

PyAV timestamps (``pts * time_base``) are converted to milliseconds exactly once, in
:mod:`onepass.operators.decode`. Kept frames (1 s apart at 1 FPS) and audio frames (40 ms)
both sit on the integer-millisecond grid, so equality and ordering are exact. Seconds as
floats appear only in writers (SRT, WebVTT, RTTM).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

__all__ = ["Span", "ms_from_pts", "ms_to_clock", "ms_to_clock_tenths"]


@dataclass(frozen=True, order=True, slots=True)
class Span:
    """A half-open time interval ``[start_ms, end_ms)`` in integer milliseconds."""

    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if not isinstance(self.start_ms, int) or not isinstance(self.end_ms, int):
            raise TypeError(f"Span times must be int milliseconds, got {self.start_ms!r}, {self.end_ms!r}")
        if self.end_ms < self.start_ms:
            raise ValueError(f"Span ends before it starts: [{self.start_ms}, {self.end_ms})")

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms

    def overlaps(self, other: Span) -> bool:
        """True when the two spans share at least one millisecond."""
        return max(self.start_ms, other.start_ms) < min(self.end_ms, other.end_ms)

    def intersect(self, other: Span) -> Span | None:
        """The common part, or None when the spans do not overlap."""
        start, end = max(self.start_ms, other.start_ms), min(self.end_ms, other.end_ms)
        return Span(start, end) if start < end else None

    def contains(self, t_ms: int) -> bool:
        return self.start_ms <= t_ms < self.end_ms

    def shift(self, delta_ms: int) -> Span:
        return Span(self.start_ms + delta_ms, self.end_ms + delta_ms)

    def clip(self, bounds: Span) -> Span:
        """This span cut to ``bounds``; an empty span at the nearest edge if they do not overlap."""
        start = min(max(self.start_ms, bounds.start_ms), bounds.end_ms)
        end = min(max(self.end_ms, start), bounds.end_ms)
        return Span(start, end)


def ms_from_pts(pts: int, time_base: Fraction) -> int:
    """Exact presentation time in ms, rounded half up: ``pts * time_base * 1000``."""
    value = Fraction(pts) * Fraction(time_base) * 1000
    return int((value + Fraction(1, 2)).__floor__())


def ms_to_clock(t_ms: int) -> str:
    """``MM:SS`` with both fields truncated, as the Gemma 4 video processor writes frame stamps."""
    seconds = t_ms // 1000
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def ms_to_clock_tenths(t_ms: int) -> str:
    """``MM:SS.d`` (tenths truncated): the transcript format's times, and the report's."""
    return f"{ms_to_clock(t_ms)}.{(t_ms % 1000) // 100}"

