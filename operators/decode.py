"""Streaming decode with PyAV: 1-FPS RGB frames at exact times and 16 kHz mono audio.

One pass over the container demuxes video and audio together, so the same code reads files,
URLs and live streams. Nothing is accumulated: :meth:`MediaReader.items` is a generator and
memory stays flat in the source's length.

Frame picking. For each sampling instant ``t_k = t_0 + k * 1000 / fps`` ms (``t_0`` = first
video frame's pts), the first decoded frame whose pts >= t_k is kept; when a gap in the video
covers several instants the frame is kept once. Times are exact rationals until the one
conversion to integer ms (:func:`onepass.operators.spans.ms_from_pts`). Frames not kept are
never converted to RGB.

Modes:
- ``exact``: every frame is decoded; the rule above holds to the frame.
- ``fast`` (default): the decoder skips frames that no other frame references
  (``skip_frame=NONREF``; in H.264 with B-frames about half of all frames), so the kept frame
  may lag ``t_k`` by a few frame intervals (bounded by the run of unreferenced frames: 3 B-frames
  at 25 fps = 120 ms, well under 250 ms); its timestamp is still its own exact pts. At one frame
  a second, a lag of a tenth of a second changes nothing a caption can see, and it roughly halves
  decode time, so it is the default.

Times are relative to the source's origin (``container.start_time``, kept in
``SourceInfo.start_ms``), so a stream whose pts start at 0.54 s yields its first frame at 0 ms.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction

import av
import numpy as np

from .audio import FRAME_MS, RATE_HZ
from .spans import ms_from_pts

_AV_TIME_BASE = Fraction(1, 1_000_000)

__all__ = [
    "AUDIO_RATE_HZ",
    "AudioChunk",
    "DecodeError",
    "DecodeStats",
    "MediaReader",
    "plan_segments",
    "segment_items",
    "SourceInfo",
    "VideoFrame",
    "DECODE_MODES",
]

AUDIO_RATE_HZ = RATE_HZ  # what the model hears
DECODE_MODES = ("fast", "exact")
# Header sanity limits: a header claiming more than this is refused before any decoding.
MAX_PIXELS = 8192 * 8192
MAX_DURATION_MS = 48 * 3600 * 1000


class DecodeError(Exception):
    """A source could not be read. ``source`` names it, ``reason`` says why."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class SourceInfo:
    """What media a source holds, read from its header (no decoding)."""

    source: str
    container: str
    start_ms: int  # media time of the source's origin; output times are relative to it
    duration_ms: int | None  # None for live streams of unknown length
    size_bytes: int | None
    video_codec: str | None = None
    width: int | None = None
    height: int | None = None
    avg_fps: float | None = None
    audio_codec: str | None = None
    sample_rate_hz: int | None = None
    channels: int | None = None

    @property
    def has_video(self) -> bool:
        return self.video_codec is not None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


@dataclass(frozen=True, eq=False)
class VideoFrame:
    """A kept frame. ``rgb`` is (H, W, 3) uint8, rotation already applied."""

    frame_ms: int
    index: int  # k of the sampling instant t_k it was picked for
    rgb: np.ndarray


@dataclass(frozen=True, eq=False)
class AudioChunk:
    """16 kHz mono float32 samples starting at ``start_ms``."""

    start_ms: int
    samples: np.ndarray


@dataclass
class DecodeStats:
    packets: int = 0
    corrupt_packets: int = 0
    video_frames_decoded: int = 0
    frames_kept: int = 0
    audio_samples: int = 0
    errors: list[str] = field(default_factory=list)


def _stream_fps(stream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def _rotate(rgb: np.ndarray, rotation_deg: float) -> np.ndarray:
    """Apply a display-matrix rotation (counter-clockwise degrees, as FFmpeg reports it)."""
    quarter_turns = int(round(rotation_deg / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


class MediaReader:
    """Opens one source and streams its kept frames and audio chunks.

    Usage::

        with MediaReader("clip.mp4", fps=1.0) as media:
            print(media.info)
            for item in media.items():   # VideoFrame | AudioChunk, in demux order
                ...
    """

    def __init__(
        self,
        source: str | os.PathLike,
        *,
        fps: float = 1.0,
        mode: str = "fast",
        video: bool = True,
        audio: bool = True,
        audio_stream: int = 0,
        open_timeout_s: float | None = 10.0,
        read_timeout_s: float | None = 30.0,
        options: dict[str, str] | None = None,
        threads: int | None = None,
    ):
        if mode not in DECODE_MODES:
            raise ValueError(f"mode must be one of {DECODE_MODES}, got {mode!r}")
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        self.source = os.fspath(source)
        self.fps = fps
        self.mode = mode
        self.want_video = video
        self.want_audio = audio
        self.audio_stream_index = audio_stream
        self.threads = threads  # FFmpeg decoder threads; None: ONEPASS_DECODE_THREADS, else FFmpeg's choice (one per core)
        self.stats = DecodeStats()
        self._container = self._open(open_timeout_s, read_timeout_s, options or {})
        try:
            self._video, self._audio = self._pick_streams()
            self.info = self._read_info()
            self._check_limits()
        except BaseException:
            self._container.close()
            raise

    # -- opening ---------------------------------------------------------------------------
    def _open(self, open_timeout_s, read_timeout_s, options):
        if os.path.isdir(self.source):
            raise DecodeError(self.source, "is a directory, not a media file")
        try:
            timeout = None if open_timeout_s is None else (open_timeout_s, read_timeout_s)
            # a damaged tag must not make a playable file unreadable: undecodable metadata bytes are replaced
            return av.open(self.source, mode="r", options=options, timeout=timeout, metadata_errors="replace")
        except av.FFmpegError as exc:
            raise DecodeError(self.source, f"cannot open: {exc.strerror or exc}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise DecodeError(self.source, f"cannot open: {exc}") from exc

    def _pick_streams(self):
        video = self._container.streams.video[0] if self.want_video and self._container.streams.video else None
        audio = None
        if self.want_audio and self._container.streams.audio:
            streams = self._container.streams.audio
            if self.audio_stream_index >= len(streams):
                raise DecodeError(self.source, f"no audio stream #{self.audio_stream_index} (has {len(streams)})")
            audio = streams[self.audio_stream_index]
        # a stream whose codec FFmpeg cannot identify is as good as absent
        video = video if video is not None and video.codec_context is not None else None
        audio = audio if audio is not None and audio.codec_context is not None else None
        if video is None and audio is None:
            raise DecodeError(self.source, "no video or audio stream")
        threads = self.threads if self.threads is not None else int(os.environ.get("ONEPASS_DECODE_THREADS", "0"))  # 0: FFmpeg's choice
        for stream in (video, audio):
            if stream is not None:
                stream.thread_type = "AUTO"
                stream.thread_count = threads
        if video is not None and self.mode == "fast":
            video.codec_context.skip_frame = "NONREF"
        return video, audio

    def _read_info(self) -> SourceInfo:
        c = self._container
        # the same rounding as every frame's pts (ms_from_pts), so relative times are differences of
        # two rounded instants (AV_TIME_BASE = 1e6)
        start_ms = 0 if c.start_time is None else ms_from_pts(int(c.start_time), _AV_TIME_BASE)
        duration_ms = None if c.duration is None or c.duration <= 0 else int(c.duration) // 1000
        try:
            size = os.path.getsize(self.source)
        except OSError:
            size = None
        v, a = self._video, self._audio
        return SourceInfo(
            source=self.source,
            container=c.format.name,
            start_ms=start_ms,
            duration_ms=duration_ms,
            size_bytes=size,
            video_codec=v.codec_context.name if v is not None else None,
            width=v.codec_context.width if v is not None else None,
            height=v.codec_context.height if v is not None else None,
            avg_fps=_stream_fps(v) if v is not None else None,
            audio_codec=a.codec_context.name if a is not None else None,
            sample_rate_hz=a.codec_context.sample_rate if a is not None else None,
            channels=a.codec_context.channels if a is not None else None,
        )

    def _check_limits(self) -> None:
        """What no real recording has (a damaged header's claims, or a decompression bomb) is not
        read: a stream out of bounds is dropped, with the reason in ``stats.errors`` (the source
        ends partial, with no rows if nothing is left); a duration claimed over 48 h is taken as
        unknown (the file is read to its real end). FFmpeg may still play such a file: onepass
        says what it did not read, instead of failing the file."""
        info = self.info
        if info.duration_ms is not None and info.duration_ms > MAX_DURATION_MS:
            self.stats.errors.append(f"claimed duration {info.duration_ms} ms exceeds the 48 h limit: ignored")
            self.info = info = replace(info, duration_ms=None)
        video_bad = audio_bad = None
        if info.has_video:
            if not info.width or not info.height:
                video_bad = "video stream has no frame size"
            elif info.width * info.height > MAX_PIXELS:
                video_bad = f"video frame {info.width}x{info.height} exceeds the {MAX_PIXELS}-pixel limit"
        if info.has_audio and info.sample_rate_hz is not None and not 1000 <= info.sample_rate_hz <= 768_000:
            audio_bad = f"audio sample rate {info.sample_rate_hz} Hz is not plausible"
        if video_bad:
            self.stats.errors.append(f"{video_bad}: its video was not read")
            self._video = None
            self.info = replace(info, video_codec=None, width=None, height=None, avg_fps=None)
        if audio_bad:
            self.stats.errors.append(f"{audio_bad}: its audio was not read")
            self._audio = None
            self.info = replace(self.info, audio_codec=None, sample_rate_hz=None, channels=None)

    # -- streaming -------------------------------------------------------------------------
    def items(self) -> Iterator[VideoFrame | AudioChunk]:
        """Kept frames and audio chunks in demux order (each stream's own items in time order)."""
        streams = [s for s in (self._video, self._audio) if s is not None]
        if not streams:  # every stream was refused by a limit (_check_limits says which)
            return
        picker = _FramePicker(self.fps, self.info.start_ms) if self._video is not None else None
        audio_out = _AudioOut(self.info.start_ms) if self._audio is not None else None
        packets = self._container.demux(streams)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.FFmpegError as exc:  # a demux error mid-file: keep what we have
                self.stats.errors.append(f"demux stopped: {exc}")
                break
            self.stats.packets += 1
            for frame in self._decode(packet):
                if packet.stream is self._video:
                    self.stats.video_frames_decoded += 1
                    kept = picker.offer(frame)
                    if kept is not None:
                        self.stats.frames_kept += 1
                        yield kept
                else:
                    for chunk in audio_out.push(frame):
                        self.stats.audio_samples += len(chunk.samples)
                        yield chunk
        if audio_out is not None:
            for chunk in audio_out.flush():
                self.stats.audio_samples += len(chunk.samples)
                yield chunk

    def video_origin(self) -> Fraction | None:
        """``t_0``: the time (s, from the source's origin) of the first decoded video frame, the
        origin of the sampling grid. Decodes from the start until that frame; use a reader of its own."""
        if self._video is None:
            return None
        for packet in self._container.demux(self._video):
            for frame in self._decode(packet):
                if frame.pts is not None:
                    return Fraction(frame.pts) * frame.time_base - Fraction(self.info.start_ms, 1000)
        return None

    def video_segment(self, start_ms: int, end_ms: int | None, t0: Fraction) -> Iterator[VideoFrame]:
        """Exactly the frames :meth:`items` keeps whose ``frame_ms`` lies in [start_ms, end_ms), but
        decoded from a keyframe before ``start_ms`` instead of from the start, so that segments of
        one file can be decoded side by side (``t0``: :meth:`video_origin`).

        Why it is exact: after any frame it keeps, the picker waits for the first instant after
        that frame, whatever came before. The segment's picker keeps the first frame it decodes
        (before ``start_ms``: the seek lands on a keyframe at least 2 s earlier; if the container
        seeks too late it seeks earlier still, down to the start), and from there it is in step
        with a pass from the start; every frame after the keyframe decodes the same. ``end_ms``
        None: to the end."""
        if self._video is None:
            return
        end_ms = math.inf if end_ms is None else end_ms
        margin_ms, fresh = 2000, True
        while True:
            target_ms = start_ms - margin_ms
            if target_ms > 0:
                self._container.seek(int((target_ms + self.info.start_ms) * 1000), backward=True, any_frame=False)
            elif not fresh:
                self._container.seek(0)  # from the start, as items() reads it
            done = yield from self._segment_from_here(start_ms, end_ms, t0, must_start_before=target_ms > 0)
            if done:
                return
            margin_ms, fresh = margin_ms * 4, False  # the seek landed at or after start_ms: go further back

    def _segment_from_here(self, start_ms: int, end_ms: int, t0: Fraction, must_start_before: bool):
        picker = _FramePicker(self.fps, self.info.start_ms)
        first = True
        for packet in self._container.demux(self._video):
            for frame in self._decode(packet):
                if frame.pts is None:
                    continue
                t_s = Fraction(frame.pts) * frame.time_base - picker.origin_s
                t_ms = ms_from_pts(frame.pts, frame.time_base) - int(picker.origin_s * 1000)
                if first:
                    if must_start_before and t_ms >= start_ms:
                        self._video.codec_context.flush_buffers()
                        return False
                    k = max(0, math.floor((t_s - t0) / picker.step_s))  # the instant at or before it: it is kept
                    picker.k, picker.next_s, first = k, t0 + k * picker.step_s, False
                if t_ms >= end_ms:
                    return True
                self.stats.video_frames_decoded += 1
                kept = picker.offer(frame)
                if kept is not None and kept.frame_ms >= start_ms:
                    self.stats.frames_kept += 1
                    yield kept
        return True

    def _decode(self, packet) -> list:
        """A packet's frames; a packet the decoder refuses is counted and skipped."""
        try:
            return packet.decode()
        except av.FFmpegError:
            self.stats.corrupt_packets += 1
            return []

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> MediaReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def plan_segments(duration_ms: int | None, segment_ms: int, most: int, window_ms: int) -> list[tuple[int, int | None]]:
    """[start_ms, end_ms) spans (the last ends None: at the end) that split a file of
    ``duration_ms`` into about ``segment_ms`` pieces, at most ``most``, on window boundaries.
    One span, [0, None), when the file is shorter than two segments, its length is unknown, or
    splitting is off (``segment_ms`` 0)."""
    if not segment_ms or not duration_ms or most < 2 or duration_ms < 2 * segment_ms:
        return [(0, None)]
    n = min(most, duration_ms // segment_ms)
    edges = sorted({round(duration_ms * i / n / window_ms) * window_ms for i in range(1, n)} - {0})
    return list(zip([0, *edges], [*edges, None]))


def _item_ms(item) -> int:
    return item.frame_ms if isinstance(item, VideoFrame) else item.start_ms


def segment_items(reader: MediaReader, start_ms: int, end_ms: int | None, audio_after_ms: int = 0) -> Iterator[VideoFrame | AudioChunk]:
    """What ``reader.items()`` yields for [start_ms, end_ms), in time order: the kept frames
    decoded from a keyframe before ``start_ms`` (:meth:`MediaReader.video_segment`), and the audio
    decoded from the source's start (its sample count sets every chunk's time, and the resampler's
    state) up to ``end_ms`` (and ``audio_after_ms`` more: the last window's context), by readers of
    their own. Their errors land in ``reader.stats``."""
    def sibling(video: bool) -> MediaReader:
        return MediaReader(reader.source, fps=reader.fps, mode=reader.mode, video=video, audio=not video,
                           audio_stream=reader.audio_stream_index, threads=reader.threads)

    video: Iterator = iter(())
    if reader.info.has_video:
        with sibling(video=True) as first:
            t0 = first.video_origin()
        if t0 is not None:
            video = reader.video_segment(start_ms, end_ms, t0)
    if not reader.info.has_audio:
        yield from video
        return
    with sibling(video=False) as heard:
        audio = heard.items()
        if end_ms is not None:  # every 40 ms frame that starts before end_ms is whole
            audio = itertools.takewhile(lambda chunk: chunk.start_ms < end_ms + audio_after_ms + 2 * FRAME_MS, audio)
        yield from heapq.merge(video, audio, key=_item_ms)
        reader.stats.corrupt_packets += heard.stats.corrupt_packets
        reader.stats.errors.extend(heard.stats.errors)


class _FramePicker:
    """Keeps the first frame at or after each sampling instant; converts only kept frames."""

    def __init__(self, fps: float, origin_ms: int):
        self.step_s = 1 / Fraction(fps).limit_denominator(1_000_000)
        self.origin_s = Fraction(origin_ms, 1000)
        self.next_s: Fraction | None = None
        self.k = 0
        self.last_s: Fraction | None = None

    def offer(self, frame) -> VideoFrame | None:
        if frame.pts is None:
            return None
        t_s = Fraction(frame.pts) * frame.time_base - self.origin_s
        if self.next_s is None:
            self.next_s = t_s  # t_0 = first video frame's pts
        if t_s < self.next_s:
            return None
        k = self.k
        # advance past every instant this frame covers (a gap may cover several)
        skipped = math.floor((t_s - self.next_s) / self.step_s) + 1
        self.k += skipped
        self.next_s += skipped * self.step_s
        rgb = _rotate(frame.to_ndarray(format="rgb24"), frame.rotation or 0)
        frame_ms = ms_from_pts(frame.pts, frame.time_base) - int(self.origin_s * 1000)
        return VideoFrame(frame_ms=frame_ms, index=k + skipped - 1, rgb=rgb)


_SCALE = {"u8": (128.0, 128.0), "s16": (0.0, 32768.0), "s32": (0.0, 2.0**31), "s64": (0.0, 2.0**63)}


def _mono(frame) -> av.AudioFrame:
    """A frame of any channel count as one float channel (the mean), at the same rate."""
    a = frame.to_ndarray()
    n = frame.layout.nb_channels
    if not frame.format.is_planar:
        a = a.reshape(-1, n).T
    offset, scale = _SCALE.get(frame.format.name.rstrip("p"), (0.0, 1.0))
    mono = ((a.astype(np.float32) - offset) / scale).mean(axis=0, keepdims=True)
    out = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono, dtype=np.float32), format="flt", layout="mono")
    out.sample_rate = frame.sample_rate
    return out


class _AudioOut:
    """Resamples to 16 kHz mono float32; chunk times count samples from the first pts."""

    def __init__(self, origin_ms: int):
        self.origin_ms = origin_ms
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE_HZ)
        self.first_ms: int | None = None
        self.samples_out = 0
        self._shape: tuple | None = None  # the (format, layout, rate) the resampler was set up for
        self._downmix = False  # channels averaged here before resampling (a layout FFmpeg cannot mix)

    def _chunks(self, frames) -> Iterator[AudioChunk]:
        for out in frames:
            samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            if samples.size == 0:
                continue
            start_ms = self.first_ms + self.samples_out * 1000 // AUDIO_RATE_HZ
            self.samples_out += samples.size
            yield AudioChunk(start_ms=start_ms, samples=samples)

    def push(self, frame) -> Iterator[AudioChunk]:
        if self.first_ms is None:
            pts_ms = ms_from_pts(frame.pts, frame.time_base) if frame.pts is not None else self.origin_ms
            self.first_ms = max(0, pts_ms - self.origin_ms)
        frame.pts = None  # the resampler need not reorder; we count samples ourselves
        shape = (frame.format.name, frame.layout.name, frame.sample_rate)
        if shape != self._shape:  # a stream whose rate or layout changes midway (or a damaged
            if self._shape is not None:  # header says so): drain, then resample from the new shape
                yield from self._chunks(self.resampler.resample(None))
                self.resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE_HZ)
            self._shape = shape
        if self._downmix:
            frame = _mono(frame)
        try:
            yield from self._chunks(self.resampler.resample(frame))
        except (av.FFmpegError, ValueError):
            if self._downmix or frame.layout.nb_channels <= 2:
                raise
            # a channel count FFmpeg cannot lay out (9 unordered channels): average them ourselves
            self._downmix = True
            self.resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE_HZ)
            yield from self._chunks(self.resampler.resample(_mono(frame)))

    def flush(self) -> Iterator[AudioChunk]:
        if self.first_ms is None:
            return
        yield from self._chunks(self.resampler.resample(None))
