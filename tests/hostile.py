"""A corpus of hostile inputs, generated (nothing committed). Each entry: (path, expected) with
expected 'ok', 'error', 'partial', 'refused' (partial with no rows: every stream out of the stated
limits) or 'either' (a damaged file may still yield part of its content)."""

from __future__ import annotations

import os
import subprocess
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from conftest import tool
from synth import tone, write_audio_only, write_clip


def _pcm(path: Path, rate: int, channels: int, codec: str, seconds: float, layout: str) -> Path:
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=rate)
        s.layout = layout
        n, pos, total = 1024, 0, int(seconds * rate)
        fmt = s.codec_context.format.name
        while pos < total:
            k = min(n, total - pos)
            t = (np.arange(pos, pos + k) / rate).astype(np.float32)
            data = np.tile(0.3 * np.sin(2 * np.pi * 440 * t), (channels, 1)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, pos, Fraction(1, rate)
            frame = av.AudioResampler(format=fmt, layout=layout, rate=rate).resample(frame)[0]
            for p in s.encode(frame):
                out.mux(p)
            pos += k
        for p in s.encode(None):
            out.mux(p)
    return path


def _lossless_video(path: Path, width: int, height: int, frames: int = 10, codec: str = "ffv1") -> Path:
    with av.open(str(path), "w") as out:
        v = out.add_stream(codec, rate=5)
        v.width, v.height = width, height
        v.pix_fmt = "yuv420p" if codec == "ffv1" and width % 2 == 0 and height % 2 == 0 else ("yuv444p" if codec == "ffv1" else "rgb24")
        for i in range(frames):
            img = np.full((height, width, 3), (i * 20) % 255, np.uint8)
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in v.encode(None):
            out.mux(p)
    return path


def build(root: Path, malformed_dir: Path) -> list[tuple[str, str]]:
    root.mkdir(parents=True, exist_ok=True)
    cases: list[tuple[str, str]] = []
    add = lambda p, e: cases.append((str(p), e))  # noqa: E731
    speech = np.concatenate([tone(1.0, start_s=0.2), np.zeros(8000, np.float32)])
    good = write_clip(root / "good.mp4", [40 * i for i in range(75)], Fraction(1, 1000), audio=tone(3.0, start_s=0.5))
    data = good.read_bytes()
    add(good, "ok")
    for frac in (0.002, 0.05, 0.5, 0.9):  # inside the header ... late in the stream
        p = root / f"truncated_{int(frac * 1000):03d}.mp4"
        p.write_bytes(data[: max(1, int(len(data) * frac))])
        add(p, "either" if frac >= 0.5 else "error")
    ts = write_clip(root / "good.ts", [40 * i for i in range(75)], Fraction(1, 1000), audio=tone(3.0))
    tsdata = ts.read_bytes()
    add(ts, "ok")
    p = root / "truncated_mid.ts"
    p.write_bytes(tsdata[: len(tsdata) // 2])
    add(p, "ok")
    (root / "zero.mp4").write_bytes(b"")
    add(root / "zero.mp4", "error")
    (root / "random.mp4").write_bytes(np.random.default_rng(0).bytes(20000))
    add(root / "random.mp4", "error")
    (root / "text.mkv").write_text("this is a text file, not a matroska file\n" * 50)
    add(root / "text.mkv", "error")
    (root / "subtitles_only.mkv").write_text("1\n00:00:01,000 --> 00:00:02,000\nhello\n\n2\n00:00:03,000 --> 00:00:04,000\nworld\n")
    add(root / "subtitles_only.mkv", "error")  # a container with no audio or video stream
    add(write_audio_only(root / "audio_only.wav", speech), "ok")
    add(write_clip(root / "video_only.mp4", [40 * i for i in range(50)], Fraction(1, 1000)), "ok")
    add(_lossless_video(root / "one_pixel.nut", 1, 1, codec="png"), "ok")
    add(_lossless_video(root / "odd_641x359.nut", 641, 359, codec="png"), "ok")
    # a header claiming 20000x20000 (1.2 GB a frame) over a few bytes: FFmpeg itself will not open it
    (root / "huge_header.y4m").write_bytes(b"YUV4MPEG2 W20000 H20000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(1000))
    add(root / "huge_header.y4m", "error")
    # a WAV whose header claims 3 Hz (its 2 s of samples would be 3 hours): its audio is not read,
    # the row says why, nothing else is left (found by the fuzz campaign; the ffmpeg CLI decodes it)
    wav3 = bytearray(write_audio_only(root / "rate_3hz.wav", speech).read_bytes())
    wav3[24:28] = (3).to_bytes(4, "little")
    (root / "rate_3hz.wav").write_bytes(bytes(wav3))
    add(root / "rate_3hz.wav", "refused")
    ffmpeg = tool("ffmpeg")
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(good), "-c", "copy", "-metadata:s:v:0", "rotate=90",
                    str(root / "rotated_phone.mp4")], check=True)
    add(root / "rotated_phone.mp4", "ok")
    # recordings cut short whose index survives (moov first; Matroska): they decode up to the cut
    long = write_clip(root / "long_src.mp4", [40 * i for i in range(250)], Fraction(1, 1000), audio=tone(10.0, start_s=0.5))
    for name, args in (("cut_faststart.mp4", ["-movflags", "+faststart"]), ("cut.mkv", [])):
        whole = root / f"whole_{name}"
        subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(long), "-c", "copy", *args, str(whole)], check=True)
        data = whole.read_bytes()
        (root / name).write_bytes(data[: len(data) // 2])
        whole.unlink()
        add(root / name, "partial")
    long.unlink()
    add(write_clip(root / "vfr.mp4", sorted({*range(0, 2000, 20), *range(2000, 5000, 200)}), Fraction(1, 1000)), "ok")
    add(write_clip(root / "late_start.mp4", [5000 + 40 * i for i in range(50)], Fraction(1, 1000)), "ok")
    add(write_clip(root / "pts_jump.mp4", [40 * i for i in range(25)] + [20000 + 40 * i for i in range(25)], Fraction(1, 1000)), "ok")
    add(_pcm(root / "a_8k.wav", 8000, 1, "pcm_s16le", 2, "mono"), "ok")
    add(_pcm(root / "a_44k.wav", 44100, 1, "pcm_s16le", 2, "mono"), "ok")
    add(_pcm(root / "a_48k_stereo.wav", 48000, 2, "pcm_s16le", 2, "stereo"), "ok")
    add(_pcm(root / "a_5.1.wav", 48000, 6, "pcm_s16le", 2, "5.1"), "ok")
    add(_pcm(root / "a_24bit.wav", 48000, 1, "pcm_s24le", 2, "mono"), "ok")
    add(write_clip(root / "short_0.3s.mp4", [40 * i for i in range(8)], Fraction(1, 1000), audio=tone(0.3)), "ok")
    add(_pcm(root / "two_hours.wav", 8000, 1, "pcm_u8", 7200, "mono"), "ok")
    (root / "dir one").mkdir(exist_ok=True)
    (root / "dir two").mkdir(exist_ok=True)
    add(write_clip(root / "dir one" / "same name.mp4", [40 * i for i in range(30)], Fraction(1, 1000)), "ok")
    add(write_clip(root / "dir two" / "same name.mp4", [40 * i for i in range(30)], Fraction(1, 1000)), "ok")
    add(write_clip(root / "ünïcødé 名前 clip.mp4", [40 * i for i in range(30)], Fraction(1, 1000)), "ok")
    unreadable = write_clip(root / "unreadable.mp4", [40 * i for i in range(30)], Fraction(1, 1000))
    os.chmod(unreadable, 0)
    add(unreadable, "ok" if os.geteuid() == 0 else "error")  # root reads it anyway
    os.symlink(root / "does_not_exist.mp4", root / "broken_link.mp4")
    add(root / "broken_link.mp4", "error")
    (root / "folder.mp4").mkdir()
    add(root / "folder.mp4", "error")
    # found by benchmarks/fuzz_inputs.py (issue 29): each crashed onepass where FFmpeg plays the file
    tagged = root / "bad_utf8_tag.mp4"  # a metadata string that is not UTF-8 ("cannot open: 'utf-8' codec ...")
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(good), "-c", "copy", "-metadata", "title=onepassTITLE", str(tagged)], check=True)
    tagged.write_bytes(tagged.read_bytes().replace(b"onepassTITLE", b"onepass\xc2\xffTLE"))
    add(tagged, "ok")
    with wave.open(str(root / "nine_channels.wav"), "wb") as w:  # a channel count FFmpeg has no layout for
        w.setnchannels(9), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((np.tile(tone(1.0)[:, None], (1, 9)) * 20000).astype("<i2").tobytes())
    add(root / "nine_channels.wav", "ok")
    rates = [_pcm(root / f"part_{r}.mp3", r, 1, "libmp3lame", 1.5, "mono") for r in (44100, 22050)]
    (root / "rate_changes.mp3").write_bytes(b"".join(p.read_bytes() for p in rates))  # the resampler's setup changes midway
    for p in rates:
        p.unlink()
    add(root / "rate_changes.mp3", "ok")
    for wav in sorted((malformed_dir / "malformed").glob("*.wav")):  # pocketsphinx's malformed WAVs
        add(wav, "either")
    return cases
