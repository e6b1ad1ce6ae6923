"""Synthetic media for tests, written with PyAV: every frame carries its own index as a bit
pattern of black/white blocks, so a test can read back WHICH frame was picked."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BITS = 12
BLOCK = 16


def index_image(i: int, height: int = 96, width: int = 256) -> np.ndarray:
    img = np.full((height, width, 3), 128, dtype=np.uint8)
    for b in range(BITS):
        value = 255 if (i >> b) & 1 else 0
        img[16 : 16 + BLOCK * 2, b * (width // BITS) : b * (width // BITS) + BLOCK] = value
    return img


def read_index(rgb: np.ndarray, height: int = 96, width: int = 256) -> int:
    """Inverse of index_image (works on a frame of the same size)."""
    i = 0
    for b in range(BITS):
        x = b * (width // BITS) + BLOCK // 2
        if rgb[16 + BLOCK, x].mean() > 128:
            i |= 1 << b
    return i


def write_clip(
    path: Path,
    pts_ticks: list[int],
    time_base: Fraction,
    *,
    rate: Fraction | int = 25,
    bframes: int = 3,
    gop: int = 50,
    audio: np.ndarray | None = None,
    audio_rate: int = 16000,
    audio_codec: str = "aac",
    height: int = 96,
    width: int = 256,
) -> Path:
    """H.264 (+ optional audio) with the given frame pts (in time_base ticks)."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=rate)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.time_base = time_base
        v.codec_context.time_base = time_base
        v.options = {"bf": str(bframes), "g": str(gop), "crf": "18", "preset": "ultrafast" if bframes == 0 else "fast"}
        a = None
        if audio is not None:
            a = out.add_stream(audio_codec, rate=audio_rate)
            a.layout = "mono"
        for i, pts in enumerate(pts_ticks):
            frame = av.VideoFrame.from_ndarray(index_image(i, height, width), format="rgb24")
            frame.pts = pts
            frame.time_base = time_base
            for packet in v.encode(frame):
                out.mux(packet)
        for packet in v.encode(None):
            out.mux(packet)
        if a is not None:
            write_audio_stream(out, a, audio, audio_rate)
    return path


def write_audio_stream(out, stream, wave: np.ndarray, rate: int) -> None:
    fmt = stream.codec_context.format.name if stream.codec_context.format else "fltp"
    n = stream.codec_context.frame_size or 1024
    pos = 0
    while pos < len(wave):
        chunk = wave[pos : pos + n].astype(np.float32)
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = pos
        frame.time_base = Fraction(1, rate)
        if fmt != "fltp":
            frame = av.AudioResampler(format=fmt, layout="mono", rate=rate).resample(frame)[0]
        for packet in stream.encode(frame):
            out.mux(packet)
        pos += n
    for packet in stream.encode(None):
        out.mux(packet)


def write_audio_only(path: Path, wave: np.ndarray, rate: int = 16000, codec: str = "pcm_s16le") -> Path:
    with av.open(str(path), "w") as out:
        a = out.add_stream(codec, rate=rate)
        a.layout = "mono"
        write_audio_stream(out, a, wave, rate)
    return path


def tone(duration_s: float, *, rate: int = 16000, start_s: float = 0.0, freq_hz: float = 1000.0, amp: float = 0.5) -> np.ndarray:
    """Silence until start_s, then a sine tone to the end."""
    t = np.arange(int(round(duration_s * rate))) / rate
    wave = amp * np.sin(2 * np.pi * freq_hz * t)
    wave[t < start_s] = 0.0
    return wave.astype(np.float32)


def espeak(text: str, voice: str = "en-us", pitch: int = 50, speed: int = 160) -> np.ndarray:
    """Speak ``text`` with the project's own eSpeak NG (espeakng-loader: no Debian package);
    16 kHz mono float32. The library calls en-gb "en"."""
    from onepass.model.training.speech import Espeak

    return Espeak.get().say(text, voice.replace("en-gb+", "en+"), pitch, speed)


def load_16k(path) -> np.ndarray:
    out = []
    resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
    with av.open(str(path)) as c:
        for frame in c.decode(audio=0):
            out += [o.to_ndarray().reshape(-1) for o in resampler.resample(frame)]
    out += [o.to_ndarray().reshape(-1) for o in resampler.resample(None)]
    return np.concatenate(out).astype(np.float32)


def track_position(t_ms: int) -> tuple[float, float, float]:
    """A drone's straight flight: latitude, longitude, absolute altitude at ``t_ms``."""
    return 47.3775 + 1e-5 * t_ms / 1000, 8.5416 + 2e-5 * t_ms / 1000, 500.0 + 0.5 * t_ms / 1000


def write_dji_srt(path: Path, duration_ms: int, step_ms: int = 100, skip: tuple[int, int] | None = None) -> Path:
    """A DJI-style telemetry subtitle file (FrameCnt, DiffTime, [latitude: ...] [longitude: ...]
    [rel_alt: ... abs_alt: ...]) along :func:`track_position`, one cue every ``step_ms``; cues in
    ``skip`` = (from_ms, to_ms) are left out (a GPS outage)."""
    cues = []
    for k, t in enumerate(range(0, duration_ms, step_ms)):
        if skip and skip[0] <= t < skip[1]:
            continue
        lat, lon, alt = track_position(t)
        clock = lambda ms: f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"  # noqa: E731
        cues.append(f"{k + 1}\n{clock(t)} --> {clock(t + step_ms)}\n<font size=\"28\">FrameCnt: {k + 1}, DiffTime: {step_ms}ms\n"
                    f"2026-05-20 14:01:02.{t % 1000:03d}\n[iso: 100] [shutter: 1/1000.0] [fnum: 2.8] [ev: 0] [latitude: {lat:.6f}] "
                    f"[longitude: {lon:.6f}] [rel_alt: {alt - 450:.3f} abs_alt: {alt:.3f}] </font>\n")
    path.write_text("\n".join(cues), encoding="utf-8")
    return path
