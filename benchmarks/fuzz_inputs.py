"""A fuzz campaign on the input path: seeded mutations of valid clips of every container the tests
make, through `onepass run` (the command a user runs) in batches, with every file checked.

Per file: a source row exists; its status is ok, partial or error with a readable reason (no bare
Python exception); a file that the ffmpeg command line decodes (exit 0, at least one frame of its
first video / audio stream) is never an error row. Per batch: the exit code says whether some
failed; the run ends within its time limit (each source has --timeout-s); no process of the run is
left behind; nothing is written beside the inputs or in the working directory; a rerun keeps every
status and redoes no ok source (its committed row is not rewritten).

    python benchmarks/fuzz_inputs.py --files 5000 --seed 0 --work /root/fuzz --json fuzz.json
    python benchmarks/fuzz_inputs.py --only 1234 --seed 0 --work /tmp/f   # one case again

Case i of seed s is the same file on every machine with the same PyAV/FFmpeg build (the seed
clips are encoded again, then mutation i draws from numpy's Generator(PCG64((s, i)))).
The CI slice is tests/test_fuzz.py (100 files)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# -- valid seed clips ------------------------------------------------------------------------------
# (name, suffix, video codec or None, audio codec or None, audio rate, container options)
SEEDS = [
    ("mp4", ".mp4", "libx264", "aac", 16000),
    ("mov", ".mov", "mpeg4", "aac", 44100),
    ("mkv", ".mkv", "libx264", "libopus", 48000),
    ("webm", ".webm", "libvpx", "libopus", 48000),
    ("ts", ".ts", "mpeg2video", "mp2", 48000),
    ("avi", ".avi", "mpeg4", "libmp3lame", 44100),
    ("wav", ".wav", None, "pcm_s16le", 16000),
    ("mp3", ".mp3", None, "libmp3lame", 44100),
    ("ogg", ".ogg", None, "libopus", 48000),
    ("flac", ".flac", None, "flac", 16000),
]


def write_seed(path: Path, vcodec: str | None, acodec: str | None, rate: int, seconds: float = 3.0) -> Path:
    """A small valid clip: 160x96 video at 10 fps (moving bars) and a 440 Hz tone, interleaved."""
    fps = 10
    with av.open(str(path), "w") as out:
        v = a = None
        if vcodec:
            v = out.add_stream(vcodec, rate=fps)
            v.width, v.height, v.pix_fmt = 160, 96, "yuv420p"
            v.options = {"g": "10"} if vcodec != "libx264" else {"g": "10", "preset": "ultrafast", "bf": "2"}
        if acodec:
            a = out.add_stream(acodec, rate=rate)
            a.layout = "mono"
        n_audio = int(seconds * rate)
        block = 1024 if acodec != "libopus" else 960
        apos, vi = 0, 0
        fmt = a.codec_context.format.name if a is not None else None
        resampler = av.AudioResampler(format=fmt, layout="mono", rate=rate) if a is not None else None
        while (v is not None and vi < seconds * fps) or (a is not None and apos < n_audio):
            if v is not None and vi < seconds * fps and (a is None or vi / fps <= apos / rate):
                img = np.zeros((96, 160, 3), np.uint8)
                img[:, (vi * 8) % 160:(vi * 8) % 160 + 16] = (255, 128, 0)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts, frame.time_base = vi, Fraction(1, fps)
                for p in v.encode(frame):
                    out.mux(p)
                vi += 1
            else:
                k = min(block, n_audio - apos)
                t = np.arange(apos, apos + k) / rate
                data = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
                frame = av.AudioFrame.from_ndarray(data, format="flt", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = rate, apos, Fraction(1, rate)
                for f in resampler.resample(frame):
                    for p in a.encode(f):
                        out.mux(p)
                apos += k
        for s in (v, a):
            if s is not None:
                for p in s.encode(None):
                    out.mux(p)
    return path


def make_seeds(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    seeds = {}
    for name, suffix, vcodec, acodec, rate in SEEDS:
        p = write_seed(folder / f"seed{suffix}", vcodec, acodec, rate)
        seeds[name] = p.read_bytes()
    return seeds


# -- mutations -------------------------------------------------------------------------------------
ABSURD_U32 = [0, 1, 7, 8, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFF0]


def _mp4_boxes(data: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> list[tuple[int, bytes]]:
    """(offset, type) of every box of an ISO-BMFF file, descending into the usual containers."""
    containers = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"udta", b"dinf", b"mvex", b"moof", b"traf"}
    end = len(data) if end is None else end
    out, pos = [], start
    while pos + 8 <= end and depth < 8:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size < 8 or pos + size > end:
            break
        out.append((pos, kind))
        if kind in containers:
            out += _mp4_boxes(data, pos + 8, pos + size, depth + 1)
        pos += size
    return out


def _find_all(data: bytes, needle: bytes, limit: int = 200) -> list[int]:
    out, i = [], data.find(needle)
    while i >= 0 and len(out) < limit:
        out.append(i)
        i = data.find(needle, i + 1)
    return out


def _put(buf: bytearray, offset: int, value: bytes) -> None:
    if 0 <= offset and offset + len(value) <= len(buf):
        buf[offset:offset + len(value)] = value


def m_flip(buf: bytearray, rng, container: str) -> str:
    n = int(rng.integers(1, 21))
    for _ in range(n):
        i = int(rng.integers(0, len(buf)))
        buf[i] ^= 1 << int(rng.integers(0, 8))
    return f"flip {n} bits"


def m_flip_header(buf: bytearray, rng, container: str) -> str:
    n = int(rng.integers(1, 9))
    for _ in range(n):
        i = int(rng.integers(0, min(len(buf), 2048)))
        buf[i] = int(rng.integers(0, 256))
    return f"{n} header bytes"


def m_truncate(buf: bytearray, rng, container: str) -> str:
    cut = int(rng.integers(0, len(buf)))
    del buf[cut:]
    return f"truncate at {cut}"


def m_zero(buf: bytearray, rng, container: str) -> str:
    n = int(rng.integers(16, 4097))
    i = int(rng.integers(0, max(1, len(buf) - n)))
    buf[i:i + n] = bytes(len(buf[i:i + n]))
    return f"zero {n} at {i}"


def m_duplicate(buf: bytearray, rng, container: str) -> str:
    n = int(rng.integers(64, 8193))
    src = int(rng.integers(0, max(1, len(buf) - n)))
    dst = int(rng.integers(0, len(buf)))
    block = bytes(buf[src:src + n])
    buf[dst:dst] = block
    return f"duplicate {len(block)} from {src} to {dst}"


def m_sizes(buf: bytearray, rng, container: str) -> str:
    """Absurd sizes in the container's own size fields."""
    value = struct.pack(">I", int(rng.choice(ABSURD_U32)) if rng.random() < 0.7 else int(rng.integers(0, 2**32)))
    if container in ("mp4", "mov"):
        boxes = _mp4_boxes(bytes(buf))
        if not boxes:  # an earlier mutation broke the box tree
            return m_flip_header(buf, rng, container)
        off, kind = boxes[int(rng.integers(0, len(boxes)))]
        _put(buf, off, value)
        return f"box {kind.decode(errors='replace')} size {value.hex()}"
    if container in ("wav", "avi"):  # RIFF chunk sizes (little-endian)
        marks = [m for tag in (b"RIFF", b"LIST", b"data", b"fmt ", b"strh", b"strf", b"movi", b"idx1") for m in _find_all(bytes(buf), tag)]
        off = marks[int(rng.integers(0, len(marks)))] if marks else 0
        _put(buf, off + 4, value[::-1])
        return f"chunk at {off} size {value.hex()}"
    if container in ("mkv", "webm"):  # an EBML size byte after a common element ID
        marks = [m + len(tag) for tag in (b"\x18\x53\x80\x67", b"\x1f\x43\xb6\x75", b"\xa3", b"\xa0", b"\x16\x54\xae\x6b") for m in _find_all(bytes(buf), tag)]
        off = marks[int(rng.integers(0, len(marks)))] if marks else 4
        _put(buf, off, bytes([int(rng.choice([0x01, 0x08, 0xFF, 0x00]))]) + value)
        return f"ebml size at {off}"
    if container == "ogg":  # a page's segment count / lacing values
        marks = _find_all(bytes(buf), b"OggS")
        off = marks[int(rng.integers(0, len(marks)))] if marks else 0
        _put(buf, off + 26, bytes([int(rng.integers(0, 256))]) * int(rng.integers(1, 8)))
        return f"ogg page at {off} lacing"
    i = int(rng.integers(0, max(1, len(buf) - 4)))
    _put(buf, i, value)
    return f"u32 at {i} = {value.hex()}"


def m_params(buf: bytearray, rng, container: str) -> str:
    """Sample rates, channel counts, frame sizes and time scales out of range."""
    data = bytes(buf)
    rate = int(rng.choice([0, 1, 3, 7999, 1_000_000, 0x7FFFFFFF, 0xFFFFFFFF]))
    channels = int(rng.choice([0, 3, 9, 64, 255]))
    if container == "wav":
        if rng.random() < 0.5:
            _put(buf, 22, struct.pack("<H", channels))
            return f"wav channels {channels}"
        _put(buf, 24, struct.pack("<I", rate))
        return f"wav rate {rate}"
    if container in ("mp4", "mov"):
        choices = [(o, k) for o, k in _mp4_boxes(data) if k in (b"mdhd", b"tkhd", b"mvhd", b"stsd")]
        if not choices:
            return m_flip_header(buf, rng, container)
        off, kind = choices[int(rng.integers(0, len(choices)))]
        if kind == b"stsd":  # the sample entry: a video entry's width/height, an audio entry's channels/rate
            entry = off + 16
            fmt = data[entry + 4:entry + 8]
            if fmt in (b"mp4a", b"sowt", b"twos"):
                _put(buf, entry + 24, struct.pack(">H", channels))
                _put(buf, entry + 32, struct.pack(">I", rate))
                return f"mp4a channels {channels} rate {rate}"
            _put(buf, entry + 32, struct.pack(">HH", int(rng.integers(0, 65536)), int(rng.integers(0, 65536))))
            return f"{fmt.decode(errors='replace')} frame size"
        version = data[off + 8]
        timescale_at = off + (28 if version == 1 else 20)
        if kind == b"tkhd":  # width, height (16.16) at the end of the box
            size = struct.unpack(">I", data[off:off + 4])[0]
            _put(buf, off + size - 8, struct.pack(">II", int(rng.integers(0, 2**32)), int(rng.integers(0, 2**32))))
            return "tkhd width/height"
        _put(buf, timescale_at, struct.pack(">I", rate))
        return f"{kind.decode()} timescale {rate}"
    if container in ("mkv", "webm"):
        tags = {b"\xb5\x88": ("rate", struct.pack(">d", float(rng.choice([0.0, -1.0, 1e12, float("nan"), 1.0])))),
                b"\x9f\x81": ("channels", bytes([channels])),
                b"\xb0\x82": ("width", struct.pack(">H", int(rng.integers(0, 65536)))),
                b"\xba\x82": ("height", struct.pack(">H", int(rng.integers(0, 65536)))),
                b"\x2a\xd7\xb1\x83": ("timecode scale", struct.pack(">I", rate)[1:])}
        found = [(t, o) for t in tags for o in _find_all(data, t)]
        if found:
            t, o = found[int(rng.integers(0, len(found)))]
            _put(buf, o + len(t), tags[t][1])
            return f"mkv {tags[t][0]}"
    if container == "ogg":
        for o in _find_all(data, b"OpusHead")[:1]:
            if rng.random() < 0.5:
                _put(buf, o + 9, bytes([channels]))
                return f"opus channels {channels}"
            _put(buf, o + 12, struct.pack("<I", rate))
            return f"opus rate {rate}"
    if container == "flac":
        for o in _find_all(data, b"fLaC")[:1]:  # STREAMINFO: 20-bit rate, 3-bit channels-1
            _put(buf, o + 18, bytes(rng.integers(0, 256, 3, dtype=np.uint8)))
            return "flac streaminfo rate/channels"
    if container == "avi":
        for o in _find_all(data, b"strf")[1:2]:  # the audio WAVEFORMATEX
            _put(buf, o + 10, struct.pack("<HI", channels, rate))
            return f"avi audio channels {channels} rate {rate}"
    if container == "mp3":  # a frame header's sampling-rate / channel-mode bits
        heads = [o for o in _find_all(data, b"\xff\xfb")]
        if heads:
            o = heads[int(rng.integers(0, len(heads)))]
            _put(buf, o + 2, bytes([int(rng.integers(0, 256))]))
            _put(buf, o + 3, bytes([int(rng.integers(0, 256))]))
            return "mp3 frame header"
    return m_flip_header(buf, rng, container)


def m_timestamps(buf: bytearray, rng, container: str) -> str:
    """Timestamps that jump back (or far ahead) in the container's own time fields."""
    data = bytes(buf)
    if container == "ts":  # PES headers with a PTS: rewrite the 33-bit PTS of some
        heads = [o for s in (b"\x00\x00\x01\xe0", b"\x00\x00\x01\xc0") for o in _find_all(data, s, 2000)]
        picked = rng.choice(heads, size=min(len(heads), int(rng.integers(1, 10))), replace=False) if heads else []
        for o in picked:
            pts = int(rng.integers(0, 2**33))
            b = bytes([0x21 | ((pts >> 29) & 0x0E), (pts >> 22) & 0xFF, 0x01 | ((pts >> 14) & 0xFE), (pts >> 7) & 0xFF, 0x01 | ((pts << 1) & 0xFE)])
            _put(buf, int(o) + 9, b)
        return f"ts pts x{len(picked)}"
    if container in ("mp4", "mov"):
        boxes = [(o, k) for o, k in _mp4_boxes(data) if k in (b"stts", b"ctts", b"elst", b"stco")]
        if boxes:
            off, kind = boxes[int(rng.integers(0, len(boxes)))]
            count = struct.unpack(">I", data[off + 12:off + 16])[0]
            step = 8 if kind in (b"stts", b"ctts") else (12 if kind == b"elst" else 4)
            for _ in range(int(rng.integers(1, 6))):
                j = int(rng.integers(0, max(1, min(count, 64))))
                _put(buf, off + 16 + j * step + (4 if step == 8 else 0), struct.pack(">I", int(rng.choice(ABSURD_U32))))
            return f"{kind.decode()} entries"
    if container in ("mkv", "webm"):
        marks = _find_all(data, b"\xe7")  # Cluster Timecode
        if marks:
            for o in rng.choice(marks, size=min(len(marks), 3), replace=False):
                _put(buf, int(o) + 1, bytes([0x84]) + struct.pack(">I", int(rng.integers(0, 2**32))))
            return "cluster timecodes"
    if container == "ogg":
        marks = _find_all(data, b"OggS") or [0]
        for o in rng.choice(marks, size=min(len(marks), 3), replace=False):
            _put(buf, int(o) + 6, struct.pack("<q", int(rng.integers(-2**40, 2**40))))
        return "ogg granule positions"
    return m_duplicate(buf, rng, container)


MUTATIONS = {f.__name__[2:]: f for f in (m_flip, m_flip_header, m_truncate, m_zero, m_duplicate, m_sizes, m_params, m_timestamps)}


def mutate(seed_bytes: bytes, container: str, rng) -> tuple[bytes, str]:
    buf = bytearray(seed_bytes)
    names = list(MUTATIONS)
    k = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
    done = []
    for name in rng.choice(names, size=k, replace=False):
        if len(buf) < 64:
            break
        done.append(f"{name}: {MUTATIONS[str(name)](buf, rng, container)}")
    return bytes(buf), "; ".join(done)


def case(seeds: dict[str, bytes], seed: int, index: int) -> tuple[str, str, bytes, str]:
    """(container, suffix, bytes, description) of case ``index``."""
    rng = np.random.Generator(np.random.PCG64((seed, index)))
    name, suffix = SEEDS[index % len(SEEDS)][:2]
    data, what = mutate(seeds[name], name, rng)
    return name, suffix, data, what


# -- checks ----------------------------------------------------------------------------------------
UNREADABLE = re.compile(r"Traceback|\b[A-Z][A-Za-z]*(Error|Exception)\b|codec can't|index out of range|has no attribute|"
                        r"NoneType|not subscriptable|unsupported operand|division by zero|object is not|unexpected keyword")


# onepass's stated input limits (README, "Bad input"): a stream whose header claims a sample rate
# outside 1-768 kHz or a frame over the pixel limit is not read, even where FFmpeg would decode it
# (a 3 Hz WAV of 96 kB is nine hours of audio: an amplification, not a recording); the source is
# partial with the reason. A duration claimed over 48 h is ignored.
STATED_LIMIT = re.compile(r"is not plausible|-pixel limit|48 h limit")


def readable(message: str | None) -> bool:
    return bool(message) and len(message) > 5 and not UNREADABLE.search(message)


def ffmpeg_decodes(path: Path, timeout_s: float = 120.0) -> bool:
    """The ffmpeg command line decodes it: exit 0 and at least one frame of the first video or
    audio stream (the streams onepass reads)."""
    try:
        r = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0?", "-map", "0:a:0?",
                            "-f", "framecrc", "-"], capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False
    frames = sum(1 for line in r.stdout.splitlines() if line and not line.startswith(b"#"))
    return r.returncode == 0 and frames > 0


def _processes_with(tag: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if tag.encode() in (d / "environ").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class Report:
    files: int = 0
    by_status: dict = field(default_factory=dict)
    by_container: dict = field(default_factory=dict)
    violations: list = field(default_factory=list)
    refused_by_limit: list = field(default_factory=list)  # partial rows: a stream left unread by a stated limit
    messages: dict = field(default_factory=dict)  # error reason (numbers stripped) -> count
    batches: int = 0
    wall_s: float = 0.0


def onepass_cmd() -> list[str]:
    exe = shutil.which("onepass", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    return [exe] if exe else [sys.executable, "-c", "from onepass.pipeline.cli import main; main()"]


def _run(cmd: list[str], cwd: Path, tag: str, limit_s: float) -> tuple[int | None, str, float]:
    env = dict(os.environ, ONEPASS_FUZZ_TAG=tag, PYTHONWARNINGS="ignore")
    t = time.monotonic()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=limit_s)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        rc = None
    return rc, out.decode(errors="replace"), time.monotonic() - t


def run_batch(seeds: dict[str, bytes], seed: int, indices: list[int], work: Path, report: Report, *,
              timeout_s: float = 20.0, workers: int = 2, model: str | None = None, verbose: bool = True) -> None:
    import duckdb

    batch = work / f"batch_{indices[0]:05d}"
    shutil.rmtree(batch, ignore_errors=True)
    inputs, out, cwd = batch / "in", batch / "out", batch / "cwd"
    for d in (inputs, cwd):
        d.mkdir(parents=True)
    cases = {}
    for i in indices:
        name, suffix, data, what = case(seeds, seed, i)
        p = inputs / f"case_{i:05d}{suffix}"
        p.write_bytes(data)
        cases[str(p)] = (i, name, what)
    before = _tree(inputs)
    cmd = [*onepass_cmd(), "run", str(inputs), "-o", str(out), "--tasks", "", "--workers", str(workers),
           "--timeout-s", str(timeout_s)] + (["--model", model] if model else [])
    limit = 120 + timeout_s * len(indices) / max(1, workers)

    def violation(kind: str, detail: str, i: int | None = None) -> None:
        report.violations.append({"seed": seed, "case": i, "batch": indices[0], "kind": kind, "detail": detail[-2000:]})
        if verbose:
            print(f"  VIOLATION {kind} case {i}: {detail[-300:]}", flush=True)

    tag = uuid.uuid4().hex
    rc, log, wall = _run(cmd, cwd, tag, limit)
    report.batches += 1
    if rc is None:
        violation("hang", f"the run passed {limit:.0f} s and was killed\n{log}")
    rows = {}
    if (out / "sources").exists():
        q = f"SELECT path, status, error FROM read_parquet('{out}/sources/*/source.parquet')"
        rows = {r[0]: (r[1], r[2]) for r in duckdb.connect().execute(q).fetchall()}
    failed = False
    for path, (i, name, what) in cases.items():
        report.files += 1
        status, error = rows.get(path, ("missing", None))
        report.by_status[status] = report.by_status.get(status, 0) + 1
        per = report.by_container.setdefault(name, {})
        per[status] = per.get(status, 0) + 1
        if status not in ("ok", "partial", "error"):
            violation("no row", f"{path} ({what}): no source row\n{log[-1500:]}", i)
            continue
        failed |= status != "ok"
        if status != "ok":
            key = re.sub(r"\d+", "N", (error or "")[:90])
            report.messages[key] = report.messages.get(key, 0) + 1
            if not readable(error):
                violation("unreadable", f"{path} ({what}): {error!r}", i)
        if status == "error" and ffmpeg_decodes(Path(path)):
            violation("ffmpeg decodes", f"{path} ({what}): onepass says {error!r}", i)
        if status == "partial" and STATED_LIMIT.search(error or ""):  # streams left unread on purpose (README's limits)
            report.refused_by_limit.append({"case": i, "what": what, "error": error})
    if rc is not None and rc != (1 if failed else 0):
        violation("exit code", f"exit {rc} with {'some' if failed else 'no'} failed sources\n{log[-1500:]}")
    if "Traceback" in log:
        violation("traceback", log[log.index("Traceback"):][:3000])
    ok_rows = {f: f.stat().st_mtime_ns for f in (out / "sources").glob("*/source.parquet")} if (out / "sources").exists() else {}
    # a rerun: every status kept, no ok source redone (its committed row untouched)
    rc2, log2, _ = _run(cmd, cwd, tag, limit)
    if rc2 != rc:
        violation("rerun exit code", f"{rc} then {rc2}\n{log2[-1500:]}")
    rows2 = {}
    if (out / "sources").exists():
        q = f"SELECT path, status, error FROM read_parquet('{out}/sources/*/source.parquet')"
        rows2 = {r[0]: (r[1], r[2]) for r in duckdb.connect().execute(q).fetchall()}
    for path, (i, _, what) in cases.items():
        if path in rows and rows2.get(path, ("missing",))[0] != rows[path][0]:
            violation("rerun status", f"{path} ({what}): {rows[path]} then {rows2.get(path)}", i)
    for f, mtime in ok_rows.items():
        if f.exists() and f.stat().st_mtime_ns != mtime:
            src = duckdb.connect().execute(f"SELECT path, status FROM read_parquet('{f}')").fetchone()
            if src[1] == "ok":
                violation("rerun redid ok", f"{src[0]}: committed row rewritten", cases.get(src[0], (None,))[0])
    n_ok = sum(1 for s, _ in rows.values() if s == "ok")
    if log2.count("skipped (already done") != n_ok:
        violation("rerun skips", f"{n_ok} ok sources, {log2.count('skipped (already done')} skipped on the rerun")
    # nothing outside the output folder; no process left
    if _tree(inputs) != before:
        violation("wrote beside inputs", str(set(_tree(inputs)) ^ set(before)))
    if any(cwd.iterdir()):
        violation("wrote in cwd", str([p.name for p in cwd.iterdir()]))
    deadline = time.monotonic() + 15
    while (left := _processes_with(tag)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        violation("stray process", " ".join(Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120] for p in left if Path(f"/proc/{p}").exists()))
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
    report.wall_s += wall
    if verbose:
        print(f"batch {indices[0]}..{indices[-1]}: {wall:.0f} s, {dict(sorted(report.by_status.items()))} so far, "
              f"{len(report.violations)} violations", flush=True)


def campaign(files: int, seed: int, work: Path, *, batch: int = 100, start: int = 0, only: list[int] | None = None,
             timeout_s: float = 20.0, workers: int = 2, model: str | None = None, keep: bool = False,
             json_path: Path | None = None, verbose: bool = True) -> Report:
    work.mkdir(parents=True, exist_ok=True)
    seeds = make_seeds(work / "seeds")
    report = Report()
    indices = only if only is not None else list(range(start, start + files))
    for k in range(0, len(indices), batch):
        chunk = indices[k:k + batch]
        run_batch(seeds, seed, chunk, work, report, timeout_s=timeout_s, workers=workers, model=model, verbose=verbose)
        if not keep and not any(v["batch"] == chunk[0] for v in report.violations):
            shutil.rmtree(work / f"batch_{chunk[0]:05d}", ignore_errors=True)
        if json_path:
            json_path.write_text(json.dumps({"seed": seed, "av": av.__version__, **asdict(report)}, indent=1))
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first case index (resume a campaign)")
    ap.add_argument("--only", default=None, help="comma list of case indices to run again")
    ap.add_argument("--batch", type=int, default=100, help="files per `onepass run`")
    ap.add_argument("--timeout-s", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", default=None)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--keep", action="store_true", help="keep every batch folder (else only those with violations)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    only = [int(x) for x in a.only.split(",")] if a.only else None
    r = campaign(a.files, a.seed, a.work, batch=a.batch, start=a.start, only=only, timeout_s=a.timeout_s,
                 workers=a.workers, model=a.model, keep=a.keep, json_path=a.json)
    print(json.dumps({"files": r.files, "by_status": r.by_status, "violations": len(r.violations), "wall_s": round(r.wall_s)}))
    for v in r.violations:
        print(v["kind"], v["case"], v["detail"][:400])
    sys.exit(1 if r.violations else 0)


if __name__ == "__main__":
    main()
