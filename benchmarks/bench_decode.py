"""Decode-stage benchmark: onepass (fast and exact modes) vs the ffmpeg command line vs naive PyAV.

    python benchmarks/bench_decode.py               # 10-min 1080p H.264 (B-frames) + AAC clip
    python benchmarks/bench_decode.py --minutes 1   # quicker
    python benchmarks/bench_decode.py --segments 2  # also: video in 2 segments by 2 processes
    python benchmarks/bench_decode.py --input runs/bench/seg_40min_640x360.mp4 --segments 2 --skip-naive --skip-exact
    ONEPASS_DECODE_THREADS=1 python benchmarks/bench_decode.py ...  # one FFmpeg thread per decoder

All three produce the same thing: 1-FPS RGB frames and 16 kHz mono audio. Prints the median of
--runs runs for each and the ratios (ffmpeg / ours) and (naive / ours). The clip is generated
once with ffmpeg (not timed) and cached under --workdir.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import av

from onepass.operators.decode import AudioChunk, MediaReader


def make_clip(path: Path, minutes: float) -> Path:
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    seconds = str(int(minutes * 60))
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", seconds, "-c:v", "libx264", "-preset", "veryfast", "-bf", "3", "-g", "250",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-ac", "2", str(path) + ".tmp.mp4"],
        check=True,
    )
    Path(str(path) + ".tmp.mp4").rename(path)
    return path


def run_ours(path: Path, mode: str) -> tuple[int, int]:
    frames = samples = 0
    with MediaReader(path, mode=mode) as media:
        for item in media.items():
            if isinstance(item, AudioChunk):
                samples += item.samples.size
            else:
                frames += 1
    return frames, samples


def _segment(args) -> int:
    path, mode, a, b, t0, threads = args
    with MediaReader(path, mode=mode, audio=False, threads=threads) as media:
        return sum(1 for _ in media.video_segment(a, b, t0))


def run_segmented(path: Path, mode: str, workers: int) -> tuple[int, int]:
    """Video in ``workers`` segments decoded by as many processes at once (each from a keyframe
    before its start: MediaReader.video_segment, with cores / workers FFmpeg threads), audio in one
    audio-only pass beside them."""
    from concurrent.futures import ProcessPoolExecutor

    with MediaReader(path, mode=mode, audio=False) as media:
        t0, duration = media.video_origin(), media.info.duration_ms
    edges = [duration * i // workers // 1000 * 1000 for i in range(workers)] + [None]
    # as the pipeline does (ray_stages.decode_threads): the cores shared out among the segments' decoders
    threads = int(os.environ.get("ONEPASS_DECODE_THREADS") or max(1, (os.cpu_count() or 1) // workers))
    with ProcessPoolExecutor(workers) as pool:
        jobs = pool.map(_segment, [(path, mode, a, b, t0, threads) for a, b in zip(edges, edges[1:])])
        samples = 0
        with MediaReader(path, mode=mode, video=False) as media:
            for item in media.items():
                samples += item.samples.size
        return sum(jobs), samples


def run_ffmpeg(path: Path) -> tuple[int, int]:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path),
         "-map", "0:v:0", "-vf", "fps=1", "-pix_fmt", "rgb24", "-f", "null", "-",
         "-map", "0:a:0", "-ar", "16000", "-ac", "1", "-c:a", "pcm_f32le", "-f", "null", "-"],
        check=True,
    )
    return -1, -1


def run_naive(path: Path) -> tuple[int, int]:
    """Decode and convert every frame, keep one a second: what a first PyAV script does."""
    frames = samples = 0
    resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
    next_s = 0.0
    with av.open(str(path)) as c:
        for frame in c.decode(video=0, audio=0):
            if isinstance(frame, av.VideoFrame):
                rgb = frame.to_ndarray(format="rgb24")
                if frame.time >= next_s:
                    frames += 1
                    next_s += 1.0
                del rgb
            else:
                for out in resampler.resample(frame):
                    samples += out.samples
    return frames, samples


def timed(fn, *args, runs: int) -> tuple[float, tuple]:
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result, times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench"))
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--skip-exact", action="store_true")
    ap.add_argument("--input", type=Path, help="decode this file instead of the generated 1080p clip")
    ap.add_argument("--segments", type=int, default=0, help="also: fast mode decoded in this many segments by as many processes")
    args = ap.parse_args(argv)
    if args.input:
        clip = args.input
        print(f"clip: {clip} ({clip.stat().st_size / 1e6:.0f} MB), FFmpeg decoder threads: {os.environ.get('ONEPASS_DECODE_THREADS', 'auto')}")
    else:
        clip = make_clip(args.workdir / f"clip_{args.minutes:g}min_1080p.mp4", args.minutes)
        print(f"clip: {clip} ({clip.stat().st_size / 1e6:.0f} MB, {args.minutes:g} min 1080p25 H.264 bf=3 + AAC)")
    rows = {}
    for name, fn, fargs in [
        ("ours fast", run_ours, ("fast",)),
        *([] if args.skip_exact else [("ours exact", run_ours, ("exact",))]),
        ("ffmpeg CLI", run_ffmpeg, ()),
        *([] if args.skip_naive else [("naive PyAV", run_naive, ())]),
        *([(f"fast x{args.segments} seg", run_segmented, ("fast", args.segments))] if args.segments > 1 else []),
    ]:
        med, result, times = timed(fn, clip, *fargs, runs=args.runs)
        rows[name] = med
        detail = "" if result[0] < 0 else f"  frames={result[0]} audio_s={result[1] / 16000:.1f}"
        print(f"{name:11s} median {med:7.2f} s  runs {[round(t, 2) for t in times]}{detail}", flush=True)
    for mode in ("fast", "exact"):
        if f"ours {mode}" not in rows:
            continue
        ours = rows[f"ours {mode}"]
        line = f"{mode:5s}: ffmpeg/ours = {rows['ffmpeg CLI'] / ours:.2f}x"
        if "naive PyAV" in rows:
            line += f", naive/ours = {rows['naive PyAV'] / ours:.2f}x"
        print(line)
    if args.segments > 1:
        seg = rows[f"fast x{args.segments} seg"]
        print(f"segments: fast / fast x{args.segments} = {rows['ours fast'] / seg:.2f}x, ffmpeg / fast x{args.segments} = {rows['ffmpeg CLI'] / seg:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
