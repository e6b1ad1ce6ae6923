"""One long video decoded in segments by tasks side by side vs in one pass, in one invocation.

    python benchmarks/bench_segments.py [--minutes 40] [--size 640x360] [--runs 3] [--threads auto]

The whole pipeline with the backbone bypassed (--tasks '': decode task(s) -> patchify / audio-frame
pools -> backbone actor, which does not run the model), each run a fresh process, runs
interleaved: ``--segment-minutes 0`` (one decode task) vs the default (a file at least twice
``--segment-minutes`` long is split, at most one segment per CPU: 2 on a 2-core machine). Prints
medians of --runs, the ratio one-pass/segmented, and checks that both runs committed the same
windows. The input is a 10-minute ffmpeg test pattern repeated (stream copy) to --minutes.

``--threads 1`` pins FFmpeg's decoder to one thread per task (``OMP``-style: the PyAV
``thread_count``), which shows how segments scale when a decoder's own threads cannot use the
cores (many cores per file, or codecs FFmpeg does not thread); ``auto`` is the product's setting.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import make_input, repeat_input  # noqa: E402

CHILD = """
import json, sys, time
t0 = time.perf_counter()
path, out, segment_s = sys.argv[1], sys.argv[2], int(sys.argv[3])
from pathlib import Path
from onepass.pipeline.config import RunConfig
from onepass.pipeline.run import build_pipeline
summary = build_pipeline(RunConfig(output=Path(out), tasks="", force=True, segment_s=segment_s)).run([path])
assert summary.ok, summary.failed
import duckdb
row = duckdb.connect().execute(f"SELECT windows, decode_segments FROM read_parquet('{out}/sources/*/source.parquet') WHERE path = ?", [path]).fetchone()
print(json.dumps({"s": time.perf_counter() - t0, "windows": row[0], "segments": row[1]}))
"""


def run(path: Path, out: Path, segment_s: int, threads: str) -> dict:
    env = dict(os.environ)
    if threads != "auto":
        env["ONEPASS_DECODE_THREADS"] = threads
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", CHILD, str(path), str(out), str(segment_s)], capture_output=True, text=True, env=env)
    if res.returncode:
        raise RuntimeError(res.stderr[-3000:])
    got = json.loads(res.stdout.strip().splitlines()[-1])
    got["whole"] = time.perf_counter() - t0
    return got


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=int, default=40)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", default="auto", help="FFmpeg decoder threads per decode task: auto (the product's) or a number")
    ap.add_argument("--segment-minutes", type=float, default=10)
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench"))
    a = ap.parse_args()
    w = a.workdir.resolve()  # the sources table holds absolute paths
    base = make_input(w / f"seg_10min_{a.size}.mp4", 10, size=a.size)
    path = repeat_input(base, a.minutes // 10, w / f"seg_{a.minutes}min_{a.size}.mp4") if a.minutes > 10 else base
    one, seg = [], []
    for _ in range(a.runs):
        one.append(run(path, w / "out_seg_one", 0, a.threads))
        seg.append(run(path, w / "out_seg_split", round(a.segment_minutes * 60), a.threads))
        print(f"  one pass {one[-1]['whole']:.1f} s, segmented ({seg[-1]['segments']} tasks) {seg[-1]['whole']:.1f} s", flush=True)
    assert all(r["windows"] == one[0]["windows"] for r in one + seg), (one, seg)
    m1, m2 = statistics.median(r["whole"] for r in one), statistics.median(r["whole"] for r in seg)
    print(f"{a.minutes}-min {a.size}, decoder threads {a.threads}, {os.cpu_count()} CPUs: one decode task {m1:.1f} s "
          f"{[round(r['whole'], 1) for r in one]}, {seg[0]['segments']} segment tasks {m2:.1f} s "
          f"{[round(r['whole'], 1) for r in seg]} -> {m1 / m2:.2f}x; {one[0]['windows']} windows in both "
          f"(whole runs: process start to exit, Ray start included; backbone bypassed)", flush=True)


if __name__ == "__main__":
    main()
