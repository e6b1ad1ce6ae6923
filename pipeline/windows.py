"""Cut a decoded source into backbone windows (no Ray).

:func:`cut_windows` is the one place that decides which frame and which 40 ms of audio belong to
which window, and when a window is complete. It hands out raw parts as they are decoded:

* :class:`FramePart` - a kept RGB frame, the moment it is decoded (live streams prefill it at once);
* :class:`AudioPart` - a window's samples, cut on the 40 ms frame grid, once the window is complete
  (with ``context_ms``: also the audio just before and after it, for requests that follow speech
  across the window's edges);
* :class:`WindowSpec` - the window is complete: its span, frame times and audio start.

Who patchifies and frames the parts is the caller's business: :func:`iter_windows` does it in
this process (tests, benchmarks, the no-Ray baseline); the Ray pipeline sends the parts to its
patchify and audio-frame actor pools and the backbone receives the results by reference.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from onepass.model.records import Window
from onepass.operators.audio import FRAME_MS, FRAME_SAMPLES, frame_audio
from onepass.operators.decode import AudioChunk, MediaReader, VideoFrame
from onepass.operators.spans import Span

__all__ = ["FramePart", "AudioPart", "WindowSpec", "cut_windows", "iter_windows", "MIN_TAIL_MS", "CONTEXT_MS"]

MIN_TAIL_MS = 1000  # an audio-only last window shorter than this is codec padding, not a window
# Audio context around each window of a file (before, after): a speech region that starts in a
# window and runs past its end is asked whole by that window (the domain's longest utterance is
# ~4 s; 1 s before tells a window which regions began in the previous one). Live streams: none.
CONTEXT_MS = (1000, 5000)


@dataclass(frozen=True, eq=False)
class FramePart:
    index: int  # window index k: the window is [k*W, (k+1)*W)
    frame_ms: int
    rgb: np.ndarray  # (H, W, 3) uint8
    decoded_at: float  # time.time() when it left the decoder


@dataclass(frozen=True, eq=False)
class AudioPart:
    """Samples of every 40 ms frame that starts inside window ``index``; a multiple of 640 samples
    except for the stream's last part, whose last frame is zero-padded by :func:`frame_audio`."""

    index: int
    samples: np.ndarray  # float32, 16 kHz mono: context before, the window's own, context after


@dataclass(frozen=True)
class WindowSpec:
    """A complete window, without its arrays: what the backbone needs to rebuild a :class:`Window`."""

    source_id: str
    index: int
    span: Span
    frame_ms: tuple[int, ...]
    audio_start_ms: int
    audio_frames: int  # the window's own
    audio_before: int = 0  # context frames before them (in the AudioPart's samples)
    audio_after: int = 0  # and after

    def window(self, patches: tuple = (), audio: np.ndarray | None = None) -> Window:
        """``audio``: the AudioPart's samples framed: context before, own frames, context after."""
        if audio is None:
            audio = np.zeros((0, FRAME_SAMPLES), np.float32)
        b, n = self.audio_before, self.audio_frames
        if audio.shape[0] != b + n + self.audio_after:
            raise ValueError(f"{self.source_id} window {self.index}: {audio.shape[0]} audio frames, expected "
                             f"{b} + {n} + {self.audio_after}")
        return Window(self.source_id, self.span, self.frame_ms, tuple(patches), audio[b : b + n], self.audio_start_ms,
                      audio[:b], audio[b + n :])


class _Samples:
    """Audio samples on the 40 ms grid of the first chunk's start (frame i starts at origin + 40 i)."""

    def __init__(self) -> None:
        self.origin_ms: int | None = None
        self.chunks: list[np.ndarray] = []
        self.first = 0  # absolute index of the first sample still held
        self.total = 0  # samples received

    def push(self, chunk: AudioChunk) -> None:
        if self.origin_ms is None:
            self.origin_ms = int(chunk.start_ms)
        samples = np.asarray(chunk.samples, np.float32).reshape(-1)
        self.chunks.append(samples)
        self.total += samples.size

    def first_frame(self, k: int, width: int) -> int:
        """Index of the first 40 ms frame starting at or after k*W."""
        if self.origin_ms is None:
            return 0
        return max(0, -(-(k * width - self.origin_ms) // FRAME_MS))

    def _buf(self) -> np.ndarray:
        if len(self.chunks) > 1:
            self.chunks = [np.concatenate(self.chunks)]
        return self.chunks[0] if self.chunks else np.zeros(0, np.float32)

    def peek(self, lo: int, hi: int) -> np.ndarray:
        """A copy of samples [lo, hi) (absolute indices), as far as they are held."""
        buf = self._buf()
        lo, hi = max(lo, self.first), min(hi, self.first + buf.size)
        return buf[lo - self.first: hi - self.first].copy() if hi > lo else np.zeros(0, np.float32)

    def free(self, before: int) -> None:
        """Forget the samples before absolute index ``before`` (as far as they have arrived: the
        index of a sample still to come is where the held ones end)."""
        buf = self._buf()
        before = min(before, self.first + buf.size)
        if before > self.first:
            rest = buf[before - self.first:]
            self.chunks, self.first = ([rest] if rest.size else []), before

    def take(self, lo: int, hi: int) -> np.ndarray:
        """Samples [lo, hi) (absolute indices, lo >= everything taken before); frees what precedes hi."""
        out = self.peek(lo, hi)
        self.free(hi)
        return out


def cut_windows(reader: MediaReader, source_id: str, *, window_s: int = 30, segment: tuple[int, int | None] | None = None,
                items: Iterator[VideoFrame | AudioChunk] | None = None,
                context_ms: tuple[int, int] = (0, 0)) -> Iterator[FramePart | AudioPart | WindowSpec]:
    """Windows [k*W, (k+1)*W) in order. Each frame is handed out as it is decoded; a window's
    audio and its spec once both streams have passed the window's end.

    ``segment`` (first_k, end_k): only windows first_k <= k < end_k (end_k None: to the end), cut
    from ``items``: the segment's frames (MediaReader.video_segment) and the source's audio from
    its start, merged in time order (segment_items). A non-final segment's video counts as passed
    its end when its frames run out. The windows are exactly those of a pass over the whole source
    (with ``context_ms``, the segment's audio must reach that far past its end: segment_items).

    ``context_ms`` (before, after): each AudioPart also carries up to that much audio before and
    after the window's own (whole 40 ms frames of the same grid; WindowSpec.audio_before/after
    count them), and a window waits for its after-context before it is complete."""
    width = window_s * 1000
    ctx_before, ctx_after = (-(-ms // FRAME_MS) for ms in context_ms)
    has_v, has_a = reader.info.has_video, reader.info.has_audio
    first_k, end_k = segment or (0, None)
    frames: dict[int, list[int]] = {}
    audio = _Samples()
    video_ms = -1
    next_k = first_k

    def complete(k: int) -> bool:
        if has_v and video_ms < (k + 1) * width:
            return False
        if has_a and (audio.origin_ms is None or audio.total < FRAME_SAMPLES * (audio.first_frame(k + 1, width) + ctx_after)):
            # audio lags: wait for it, but not for a whole window more of video (a silent or
            # broken audio stream must not hold every decoded frame until the end)
            return has_v and video_ms >= (k + 2) * width + ctx_after * FRAME_MS
        return True

    def emit(k: int, last: bool = False) -> Iterator[AudioPart | WindowSpec]:
        lo = audio.first_frame(k, width)
        hi = -(-audio.total // FRAME_SAMPLES) if last else audio.first_frame(k + 1, width)
        before = after = np.zeros(0, np.float32)
        if audio.origin_ms is not None:
            samples = audio.peek(lo * FRAME_SAMPLES, hi * FRAME_SAMPLES)
            if samples.size and ctx_before:
                before = audio.peek(max(0, lo - ctx_before) * FRAME_SAMPLES, lo * FRAME_SAMPLES)
            if samples.size and ctx_after and not last and samples.size == (hi - lo) * FRAME_SAMPLES:
                after = audio.peek(hi * FRAME_SAMPLES, (hi + ctx_after) * FRAME_SAMPLES)
            audio.free(max(0, hi - ctx_before) * FRAME_SAMPLES)
        else:
            samples = np.zeros(0, np.float32)
        fr = frames.pop(k, [])
        n_audio = -(-samples.size // FRAME_SAMPLES)
        if not fr and not n_audio:
            return
        if last and not fr and k > 0 and n_audio * FRAME_MS < MIN_TAIL_MS:
            return
        audio_start = (audio.origin_ms or 0) + FRAME_MS * lo if n_audio else k * width
        end = max([k * width + 1] + [t + 1 for t in fr] + ([audio_start + FRAME_MS * n_audio] if n_audio else []))
        n_before, n_after = before.size // FRAME_SAMPLES, -(-after.size // FRAME_SAMPLES)
        if n_audio:
            yield AudioPart(k, np.concatenate([before, samples, after]) if n_before or n_after else samples)
        else:
            n_before = n_after = 0
        yield WindowSpec(source_id, k, Span(k * width, min(end, (k + 1) * width)), tuple(fr), audio_start, n_audio,
                         n_before, n_after)

    for item in reader.items() if items is None else items:
        if isinstance(item, VideoFrame):
            k = item.frame_ms // width
            frames.setdefault(k, []).append(item.frame_ms)
            video_ms = item.frame_ms
            yield FramePart(k, item.frame_ms, item.rgb, time.time())
        elif isinstance(item, AudioChunk):
            audio.push(item)
            if next_k == first_k > 0 and audio.first < (drop := max(0, audio.first_frame(first_k, width) - ctx_before) * FRAME_SAMPLES):
                audio.free(drop)  # samples of the windows before the segment are not kept (but its context)
        while (end_k is None or next_k < end_k) and complete(next_k):
            yield from emit(next_k)
            next_k += 1
    if end_k is not None:  # a segment before the last: its windows end where the next segment's begin
        video_ms = max(video_ms, end_k * width)
        while next_k < end_k:
            yield from emit(next_k)
            next_k += 1
        return
    last_k = max([next_k - 1, *frames])
    if audio.origin_ms is not None and audio.total:
        last_k = max(last_k, (audio.origin_ms + FRAME_MS * (-(-audio.total // FRAME_SAMPLES) - 1)) // width)
    for k in range(next_k, last_k + 1):
        yield from emit(k, last=k == last_k)


def iter_windows(reader: MediaReader, source_id: str, *, window_s: int = 30, budget: int = 70,
                 context_ms: tuple[int, int] = (0, 0)) -> Iterator[Window]:
    """Model-ready windows, patchified and framed in this process (no Ray)."""
    from onepass.operators.patchify import patchify  # imports torch: only where patches are made

    patches: dict[int, list] = {}
    audio: dict[int, np.ndarray] = {}
    for part in cut_windows(reader, source_id, window_s=window_s, context_ms=context_ms):
        if isinstance(part, FramePart):
            patches.setdefault(part.index, []).append(patchify(part.rgb, budget, video=True))
        elif isinstance(part, AudioPart):
            audio[part.index] = frame_audio(part.samples)[0]
        else:
            yield part.window(tuple(patches.pop(part.index, [])), audio.pop(part.index, None))
