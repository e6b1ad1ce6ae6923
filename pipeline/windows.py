"""Cut a decoded source into backbone windows (no Ray): kept frames + 40 ms audio frames."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from onepass.model.runner import Window
from onepass.operators.audio import FRAME_MS, AudioFramer
from onepass.operators.decode import AudioChunk, MediaReader, VideoFrame
from onepass.operators.patchify import Patches, patchify
from onepass.operators.spans import Span

__all__ = ["iter_windows", "LiveFrame"]

MIN_TAIL_MS = 1000


@dataclass(frozen=True, eq=False)
class LiveFrame:
    """A kept frame handed on at once (live mode), for the backbone's streaming prefill."""

    source_id: str
    window_start_ms: int
    frame_ms: int
    patches: Patches
    decoded_at: float  # time.time() when it left the decoder


def iter_windows(reader: MediaReader, source_id: str, *, window_s: int = 30, budget: int = 70,
                 live: bool = False) -> Iterator[Window | LiveFrame]:
    """Windows [k*W, (k+1)*W) in order; each is emitted once both streams have passed its end.

    ``live``: every kept frame is also yielded at once as a :class:`LiveFrame`, and the window
    that follows carries its frame times but not their patches (they are already in the
    backbone's cache)."""
    width = window_s * 1000
    framer = AudioFramer()
    frames: dict[int, list] = {}  # window index -> [(frame_ms, patches)]
    audio: dict[int, list] = {}  # window index -> [(start_ms array, frames array)]
    has_v, has_a = reader.info.has_video, reader.info.has_audio
    video_ms = audio_ms = -1
    next_k = 0

    def take_audio(chunk):
        for start, frame in zip(chunk.start_ms, chunk.frames):
            audio.setdefault(int(start) // width, []).append((int(start), frame))

    def build(k: int) -> Window:
        fr = frames.pop(k, [])
        au = audio.pop(k, [])
        audio_start = au[0][0] if au else k * width
        audio_arr = np.stack([a for _, a in au]) if au else np.zeros((0, 640), np.float32)
        end = max([k * width + 1] + [t + 1 for t, _ in fr] + [t + FRAME_MS for t, _ in au])
        return Window(source_id, Span(k * width, min(end, (k + 1) * width)), tuple(t for t, _ in fr),
                      () if live else tuple(p for _, p in fr), audio_arr, audio_start)

    for item in reader.items():
        if isinstance(item, VideoFrame):
            k = item.frame_ms // width
            patches = patchify(item.rgb, budget, video=True)
            if live:
                yield LiveFrame(source_id, k * width, item.frame_ms, patches, time.time())
            frames.setdefault(k, []).append((item.frame_ms, None if live else patches))
            video_ms = item.frame_ms
        elif isinstance(item, AudioChunk):
            take_audio(framer.push(item.samples, item.start_ms))
            audio_ms = item.start_ms + len(item.samples) * 1000 // 16000
        done_until = min(video_ms if has_v else 1 << 62, audio_ms if has_a else 1 << 62)
        while (next_k + 1) * width <= done_until:
            if next_k in frames or next_k in audio:
                yield build(next_k)
            next_k += 1
    take_audio(framer.close())
    for k in sorted(set(frames) | set(audio)):
        if k not in frames and len(audio.get(k, ())) * FRAME_MS < MIN_TAIL_MS and k > 0:
            audio.pop(k)  # a sliver of trailing audio (codec padding) is not a window
            continue
        yield build(k)
