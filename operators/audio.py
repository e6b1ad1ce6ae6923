"""16 kHz mono audio -> Gemma 4 Unified audio frames (640 samples = 40 ms, one soft token each).

No normalisation, no mel: the model's own embedder RMS-normalises each raw frame. The batch
function matches the reference feature extractor exactly (zero-pad to a multiple of 640,
mask True for every real frame, the partly padded last one included). The streaming
:class:`AudioFramer` emits only full frames while a stream is live and the zero-padded last
frame only at :meth:`AudioFramer.close`.

Also here: a small energy-based voice-activity detector used to cut speech regions for
speaker embeddings (numpy only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spans import Span

__all__ = [
    "FRAME_MS",
    "FRAME_SAMPLES",
    "AudioFrames",
    "AudioFramer",
    "frame_audio",
    "pad_audio_frames",
    "speech_spans",
]

RATE_HZ = 16_000
FRAME_SAMPLES = 640
FRAME_MS = FRAME_SAMPLES * 1000 // RATE_HZ  # 40


@dataclass(frozen=True, eq=False)
class AudioFrames:
    """frames: [n, 640] float32; start_ms: [n] int64 (frame i starts at start_ms[i])."""

    frames: np.ndarray
    start_ms: np.ndarray

    def __len__(self) -> int:
        return self.frames.shape[0]


def frame_audio(wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference framing of one waveform: ([ceil(N/640), 640] float32, [n] bool mask, all True)."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    n = -(-wave.size // FRAME_SAMPLES)
    frames = np.zeros((n, FRAME_SAMPLES), dtype=np.float32)
    frames.reshape(-1)[: wave.size] = wave
    return frames, np.ones(n, dtype=bool)


def pad_audio_frames(items: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Batch [n_i, 640] frame arrays with all-zero right padding: ([B, T, 640], [B, T] bool)."""
    longest = max((f.shape[0] for f in items), default=0)
    batch = np.zeros((len(items), longest, FRAME_SAMPLES), dtype=np.float32)
    mask = np.zeros((len(items), longest), dtype=bool)
    for i, frames in enumerate(items):
        batch[i, : frames.shape[0]] = frames
        mask[i, : frames.shape[0]] = True
    return batch, mask


class AudioFramer:
    """Streams 40 ms frames out of audio chunks that arrive in time order.

    The first pushed chunk fixes the time origin; frame i starts at ``origin + 40 * i`` ms, so
    frames stay on the 40 ms grid whatever the chunk sizes.
    """

    def __init__(self) -> None:
        self._origin_ms: int | None = None
        self._pending = np.zeros(0, dtype=np.float32)
        self._emitted = 0

    def push(self, samples: np.ndarray, start_ms: int) -> AudioFrames:
        """Add samples; return the full frames now available (possibly none)."""
        if self._origin_ms is None:
            self._origin_ms = int(start_ms)
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        buffer = np.concatenate([self._pending, samples]) if self._pending.size else samples
        n = buffer.size // FRAME_SAMPLES
        self._pending = buffer[n * FRAME_SAMPLES :].copy()
        return self._take(buffer[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES))

    def close(self) -> AudioFrames:
        """End of stream: the zero-padded last frame, if any samples are left."""
        if self._pending.size == 0:
            return self._take(np.zeros((0, FRAME_SAMPLES), dtype=np.float32))
        last = np.zeros((1, FRAME_SAMPLES), dtype=np.float32)
        last[0, : self._pending.size] = self._pending
        self._pending = np.zeros(0, dtype=np.float32)
        return self._take(last)

    def _take(self, frames: np.ndarray) -> AudioFrames:
        origin = self._origin_ms or 0
        idx = np.arange(self._emitted, self._emitted + frames.shape[0], dtype=np.int64)
        self._emitted += frames.shape[0]
        return AudioFrames(frames=np.ascontiguousarray(frames, dtype=np.float32), start_ms=origin + FRAME_MS * idx)


def speech_spans(
    frames: np.ndarray,
    start_ms: int,
    *,
    threshold_db: float = -30.0,
    floor_db: float = -55.0,
    min_speech_ms: int = 200,
    min_gap_ms: int = 280,
) -> list[Span]:
    """Speech regions of consecutive 40 ms frames by energy.

    A frame is speech when its level is above ``threshold_db`` relative to the loudest frame and
    above the absolute ``floor_db`` (dBFS). Gaps shorter than ``min_gap_ms`` are bridged and
    regions shorter than ``min_speech_ms`` dropped. Spans are on the 40 ms grid.
    """
    if frames.shape[0] == 0:
        return []
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1)) + 1e-10
    level_db = 20 * np.log10(rms)
    active = (level_db > level_db.max() + threshold_db) & (level_db > floor_db)
    spans: list[Span] = []
    i, n = 0, active.size
    while i < n:
        if not active[i]:
            i += 1
            continue
        j = i
        while j < n and active[j]:
            j += 1
        span = Span(start_ms + i * FRAME_MS, start_ms + j * FRAME_MS)
        if spans and span.start_ms - spans[-1].end_ms < min_gap_ms:
            spans[-1] = Span(spans[-1].start_ms, span.end_ms)
        else:
            spans.append(span)
        i = j
    return [s for s in spans if s.duration_ms >= min_speech_ms]
