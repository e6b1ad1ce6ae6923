"""Windowing: which frame and which 40 ms of audio go to which window (no Ray), and the Ray path
(decode task -> patchify / audio-frame actor pools -> refs) giving byte-identical windows."""

from __future__ import annotations

import os
import queue
import threading
import time
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onepass.operators.decode import AudioChunk, MediaReader, VideoFrame
from onepass.pipeline.windows import MIN_TAIL_MS, AudioPart, FramePart, WindowSpec, cut_windows, iter_windows
from synth import tone, write_clip


class FakeReader:
    """A reader whose items are given: video frames at ``frame_ms`` and audio chunks of the given
    sizes starting at ``origin_ms``, interleaved by time as a demuxer would."""

    def __init__(self, frame_ms: list[int], origin_ms: int | None, chunk_sizes: list[int]):
        self.info = SimpleNamespace(has_video=bool(frame_ms), has_audio=origin_ms is not None)
        self.samples = np.arange(sum(chunk_sizes), dtype=np.float32) + 1
        items, pos = [], 0
        for n in chunk_sizes:
            items.append((origin_ms + pos // 16, 1, AudioChunk(origin_ms + pos // 16, self.samples[pos: pos + n])))
            pos += n
        items += [(t, 0, VideoFrame(t, i, np.zeros((2, 2, 3), np.uint8))) for i, t in enumerate(frame_ms)]
        self._items = [it for *_, it in sorted(items, key=lambda x: (x[0], x[1]))]

    def items(self):
        return iter(self._items)


def check(parts, reader: FakeReader, frame_ms: list[int], origin_ms: int | None, width: int):
    specs = [p for p in parts if isinstance(p, WindowSpec)]
    assert [s.index for s in specs] == sorted({s.index for s in specs})  # in order, once each
    seen_frames, audio_parts, done = [], {}, set()
    for p in parts:
        if isinstance(p, FramePart):
            assert p.index not in done and p.frame_ms // width == p.index
            seen_frames.append(p.frame_ms)
        elif isinstance(p, AudioPart):
            assert p.index not in done
            audio_parts[p.index] = p.samples
        else:
            done.add(p.index)
            assert p.span.start_ms == p.index * width and p.span.start_ms < p.span.end_ms <= (p.index + 1) * width
            assert all(p.span.start_ms <= t < p.span.end_ms for t in p.frame_ms)
            n = audio_parts[p.index].size if p.index in audio_parts else 0
            assert p.audio_frames == -(-n // 640)
            if p.audio_frames:  # every audio frame starts inside its window, on the 40 ms grid
                assert p.index * width <= p.audio_start_ms and p.audio_start_ms + 40 * (p.audio_frames - 1) < (p.index + 1) * width
                assert (p.audio_start_ms - origin_ms) % 40 == 0
    assert seen_frames == frame_ms  # each frame handed out once, as decoded
    assert sorted(t for s in specs for t in s.frame_ms) == frame_ms
    if origin_ms is not None:  # all samples, in order, none twice; only a short audio-only tail may go
        got = np.concatenate([audio_parts[k] for k in sorted(audio_parts)]) if audio_parts else np.zeros(0)
        assert np.array_equal(got, reader.samples[: got.size])
        missing_ms = (reader.samples.size - got.size) * 1000 // 16000
        assert missing_ms < MIN_TAIL_MS + 40


@settings(max_examples=150, deadline=None)
@given(
    frames=st.lists(st.integers(0, 40_000), max_size=40, unique=True).map(sorted),
    origin=st.one_of(st.none(), st.integers(0, 3000)),
    chunks=st.lists(st.integers(1, 9000), max_size=60),
    window_s=st.sampled_from([1, 5, 10]),
)
def test_cut_windows_assigns_every_frame_and_sample_once(frames, origin, chunks, window_s):
    if origin is not None and not chunks:
        origin = None
    reader = FakeReader(frames, origin, chunks if origin is not None else [])
    parts = list(cut_windows(reader, "s", window_s=window_s))
    check(parts, reader, frames, origin, window_s * 1000)


@settings(max_examples=100, deadline=None)
@given(
    frames=st.lists(st.integers(0, 40_000), max_size=40, unique=True).map(sorted),
    origin=st.integers(0, 3000),
    chunks=st.lists(st.integers(1, 9000), min_size=1, max_size=60),
    window_s=st.sampled_from([1, 5, 10]),
    context=st.sampled_from([(1000, 5000), (40, 40), (0, 3000), (2000, 0)]),
)
def test_audio_context_is_the_neighbours_audio_and_leaves_windows_as_they_were(frames, origin, chunks, window_s, context):
    """With context, each AudioPart is [context before, the window's own samples, context after]:
    the own part and every spec field are those of a pass without context, and the context is
    the source's samples just before and after (whole 40 ms frames), as far as they exist."""
    plain = list(cut_windows(FakeReader(frames, origin, chunks), "s", window_s=window_s))
    reader = FakeReader(frames, origin, chunks)
    parts = list(cut_windows(reader, "s", window_s=window_s, context_ms=context))
    b_max, a_max = -(-context[0] // 40), -(-context[1] // 40)
    own_plain = {p.index: p.samples for p in plain if isinstance(p, AudioPart)}
    audio = {p.index: p.samples for p in parts if isinstance(p, AudioPart)}
    specs = [p for p in parts if isinstance(p, WindowSpec)]
    assert [(s.index, s.span, s.frame_ms, s.audio_start_ms, s.audio_frames) for s in specs] == \
        [(s.index, s.span, s.frame_ms, s.audio_start_ms, s.audio_frames) for s in plain if isinstance(s, WindowSpec)]
    total = reader.samples.size
    for k, spec in enumerate(specs):
        if not spec.audio_frames:
            assert spec.index not in audio and spec.audio_before == spec.audio_after == 0
            continue
        got, b, n, a = audio[spec.index], spec.audio_before, spec.audio_frames, spec.audio_after
        lo = (spec.audio_start_ms - origin) // 40
        own = own_plain[spec.index]
        assert b == min(b_max, lo)
        np.testing.assert_array_equal(got[: b * 640], reader.samples[(lo - b) * 640 : lo * 640])
        np.testing.assert_array_equal(got[b * 640 : b * 640 + own.size], own)
        after = got[b * 640 + own.size :]
        assert -(-after.size // 640) == a <= a_max
        np.testing.assert_array_equal(after, reader.samples[lo * 640 + own.size : lo * 640 + own.size + after.size])
        whole_own = own.size == n * 640
        if whole_own and k + 1 < len(specs) and (lo + n + a_max) * 640 <= total:
            assert a == a_max  # a window that is not the last waits for its whole after-context


def test_a_window_is_handed_out_once_both_streams_pass_its_end():
    reader = FakeReader([0, 1000, 2000, 3000], 0, [8000] * 8)  # 4 s of audio in 0.5 s chunks
    order = []
    for p in cut_windows(reader, "s", window_s=2):
        order.append(type(p).__name__ + (f"@{p.frame_ms}" if isinstance(p, FramePart) else f"#{p.index}"))
    # window 0 closes when both the frame at 2000 ms and audio up to 2000 ms are in
    assert order.index("WindowSpec#0") > order.index("FramePart@2000")
    assert order.index("WindowSpec#0") < order.index("FramePart@3000")
    assert order[-2:] == ["AudioPart#1", "WindowSpec#1"]


def test_a_silent_audio_stream_does_not_hold_frames_until_the_end():
    """An audio stream that never delivers: windows still close, one window behind the video."""
    reader = FakeReader([1000 * i for i in range(30)], None, [])
    reader.info.has_audio = True
    order = [p for p in cut_windows(reader, "s", window_s=5)]
    first_spec = next(i for i, p in enumerate(order) if isinstance(p, WindowSpec))
    assert sum(isinstance(p, FramePart) for p in order[:first_spec]) <= 11


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("win") / "clip.mp4"
    return write_clip(path, [40 * i for i in range(300)], Fraction(1, 1000), audio=tone(11.3))


def test_iter_windows_on_a_real_clip(clip):
    with MediaReader(clip) as media:
        windows = list(iter_windows(media, "c", window_s=5))
    assert [w.span.start_ms for w in windows] == [0, 5000, 10000]
    assert [len(w.frame_ms) for w in windows] == [5, 5, 2]
    assert all(len(w.patches) == len(w.frame_ms) for w in windows)
    with MediaReader(clip) as media:
        samples = sum(len(it.samples) for it in media.items() if isinstance(it, AudioChunk))
    assert sum(w.audio.shape[0] for w in windows) == -(-samples // 640)


def test_ray_pools_deliver_the_same_windows_as_in_process(clip, tmp_path, monkeypatch):
    """decode task -> header/payload protocol -> patchify and audio-frame pools -> refs: the
    arrays the backbone receives equal those made in one process, byte for byte, and the driver
    never fetches a frame or a window's samples."""
    from onepass.pipeline.ray_env import local_ray_env

    local_ray_env()
    import ray

    from onepass.pipeline.config import RunConfig
    from onepass.pipeline.messages import Finished, Opened, WindowRefs
    from onepass.pipeline.ray_stages import WORKER_ENV, DecodeFollower, OperatorPools, assemble, start_decode, start_ray
    from onepass.pipeline.sources import Source

    before = {k: os.environ.get(k) for k in WORKER_ENV}
    start_ray(None)
    cfg = RunConfig(output=tmp_path, window_s=5, patch_actors=2)
    pools = OperatorPools(cfg)
    feed: queue.Queue = queue.Queue()
    fetched, real_get = [], ray.get
    monkeypatch.setattr(ray, "get", lambda ref, **kw: fetched.append(real_get(ref, **kw)) or fetched[-1])
    task = start_decode(Source(id="c", location=str(clip)), cfg)
    DecodeFollower(pools, feed.put, 5000, live=False).follow(task, threading.Event(), time.monotonic() + 600)
    monkeypatch.setattr(ray, "get", real_get)
    assert fetched and not any(isinstance(x, (FramePart, AudioPart)) for x in fetched)
    messages = [feed.get() for _ in range(feed.qsize())]
    assert isinstance(messages[0], Opened) and isinstance(messages[-1], Finished)
    got = []
    for m in messages:
        if isinstance(m, WindowRefs):
            got += assemble([m.spec], [m.layout], ray.get(m.refs))
    with MediaReader(clip) as media:
        want = list(iter_windows(media, "c", window_s=5))
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
        assert (g.span, g.frame_ms, g.audio_start_ms) == (w.span, w.frame_ms, w.audio_start_ms)
        assert np.array_equal(g.audio, w.audio)
        assert all(np.array_equal(a.cells, b.cells) and np.array_equal(a.positions, b.positions) for a, b in zip(g.patches, w.patches))
    # the pools' workers run one thread each (WORKER_ENV, handed to the raylet), the driver's own
    # environment is left as it was
    env = ray.get(pools.patchifiers[0].__ray_call__.remote(lambda self: {k: os.environ.get(k) for k in WORKER_ENV}))
    assert env == WORKER_ENV and all(os.environ.get(k) == before[k] for k in WORKER_ENV), (env, before)
