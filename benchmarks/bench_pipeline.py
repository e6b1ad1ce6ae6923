"""Whole-pipeline benchmark (2 cores is the target machine).

    python benchmarks/bench_pipeline.py [--minutes 10] [--long-minutes 120] [--hd-repeat 3] [--runs 3]
    python benchmarks/bench_pipeline.py --skip model memory live --compare-rev REV  # a regression check

(1) Ray overhead: the whole pipeline with the backbone bypassed (--tasks '': windows still travel
    decode task -> patchify / audio-frame pools -> backbone actor, which does not run the model)
    vs the decode stage alone (decode + patchify + windowing in one process, no Ray), each in a
    fresh process, on a 10-min 360p and a 10-min 1080p clip. Two ratios decode/pipeline: whole
    runs (process start to exit: Ray's start-up included) and steady state (first window out to
    last window out). With --compare-rev REV the pipeline of that git revision (a worktree of
    this repository, imported instead of this checkout) runs too, interleaved run by run with
    decode and this checkout, so that a change is judged against its parent in one invocation.
(2) The whole pipeline with the default model on the bundled example clips: x real time.
(3) Peak memory (driver + every Ray process, summed PSS; summed RSS printed too) of the bypassed
    pipeline on a 10-minute and a 2-hour input: ratio.
(4) Live: the example stream over loopback, median time from a second decoded to its rows committed.
Inputs are generated with ffmpeg into --workdir (not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_input(path: Path, minutes: float, size: str = "640x360") -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
                        "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=16000", "-t", str(int(minutes * 60)),
                        "-c:v", "libx264", "-preset", "ultrafast", "-g", "250", "-pix_fmt", "yuv420p",
                        "-c:a", "aac", "-ac", "1", str(path) + ".tmp.mp4"], check=True)
        os.rename(str(path) + ".tmp.mp4", path)
    return path


def repeat_input(src: Path, times: int, path: Path) -> Path:
    """``times`` copies of ``src`` back to back, stream-copied (no re-encoding)."""
    if not path.exists():
        listing = path.with_suffix(".txt")
        listing.write_text("".join(f"file '{src.resolve()}'\n" for _ in range(times)))
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy",
                        str(path) + ".tmp.mp4"], check=True)
        os.rename(str(path) + ".tmp.mp4", path)
    return path


def tree_memory_mb(root_pid: int) -> tuple[float, float]:
    """(RSS, PSS) summed over root_pid and every Ray process of this machine (workers are started
    by the raylet, not by the driver). PSS shares each shared page among the processes mapping
    it; RSS counts Ray's shared-memory object store once per process that touched it, and so
    grows with how much data has passed through the store, not with what is held."""
    rss = pss = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
            if not (int(pid) == root_pid or "ray::" in cmd or "raylet" in cmd or "gcs_server" in cmd or "default_worker" in cmd):
                continue
            smaps = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        rss += int(re.search(r"^Rss:\s+(\d+)", smaps, re.M).group(1))
        pss += int(re.search(r"^Pss:\s+(\d+)", smaps, re.M).group(1))
    return rss / 1024, pss / 1024


def run_onepass(args: list[str], sample_memory: bool = False) -> tuple[float, tuple[float, float], str]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(["onepass", "run", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = (0.0, 0.0)
    if sample_memory:
        done = threading.Event()
        out_box = []
        threading.Thread(target=lambda: (out_box.append(proc.communicate()[0]), done.set()), daemon=True).start()
        while not done.wait(0.5):
            peak = tuple(max(a, b) for a, b in zip(peak, tree_memory_mb(proc.pid)))
        out = out_box[0]
    else:
        out = proc.communicate()[0]
    return time.perf_counter() - t0, peak, out


CHILD = """
import json, sys, time
t0 = time.perf_counter()
mode, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
stamps = []
if mode == "decode":
    from onepass.operators.decode import MediaReader
    from onepass.pipeline.windows import iter_windows
    with MediaReader(path) as media:
        for _ in iter_windows(media, "bench"):
            stamps.append(time.perf_counter() - t0)
else:
    from pathlib import Path
    from onepass.pipeline.config import RunConfig
    from onepass.pipeline.run import Progress, build_pipeline
    class Stamps(Progress):
        def window(self, source_id):
            stamps.append(time.perf_counter() - t0)
    summary = build_pipeline(RunConfig(output=Path(out), tasks="", force=True)).run([path], Stamps())
    assert summary.ok, summary.failed
print(json.dumps({"first": stamps[0], "last": stamps[-1], "windows": len(stamps)}))
"""


def checkout_rev(rev: str, workdir: Path) -> Path:
    """A folder to put on PYTHONPATH so that ``import onepass`` is git revision ``rev`` of this
    repository (a detached worktree; the packages mapped as pyproject.toml maps them)."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True, check=True).stdout.strip()
    tree, shim = workdir / f"rev-{sha}", workdir / f"rev-{sha}-path"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree.resolve()), sha], check=True, capture_output=True)
    (shim / "onepass").mkdir(parents=True, exist_ok=True)
    for name in ("pipeline", "operators", "model"):
        link = shim / "onepass" / name
        if not link.exists():
            link.symlink_to((tree / name).resolve())
    return shim


def timed_child(mode: str, path: Path, out: Path, pythonpath: Path | None = None) -> tuple[float, float]:
    """(whole run, steady state) seconds of one fresh process: decode alone or the pipeline
    (of this checkout, or of the revision whose import folder is ``pythonpath``)."""
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(pythonpath.resolve())) if pythonpath else None
    res = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(out)], capture_output=True, text=True, env=env)
    total = time.perf_counter() - t0
    if res.returncode:
        raise RuntimeError(res.stderr[-2000:])
    got = json.loads(res.stdout.strip().splitlines()[-1])
    return total, got["last"] - got["first"]


def ray_overhead(clip: Path, label: str, runs: int, out: Path, rev: tuple[str, Path] | None = None) -> None:
    dec, pipe, base = [], [], []
    for _ in range(runs):  # interleaved, so that a drift in machine load hits all alike
        dec.append(timed_child("decode", clip, out))
        pipe.append(timed_child("pipeline", clip, out))
        if rev:
            base.append(timed_child("pipeline", clip, out, rev[1]))
    med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
    print(f"(1) {label}: decode stage alone {med(dec, 0):.1f} s whole {[round(x[0], 1) for x in dec]}, "
          f"{med(dec, 1):.1f} s steady; pipeline (backbone bypassed) {med(pipe, 0):.1f} s whole "
          f"{[round(x[0], 1) for x in pipe]}, {med(pipe, 1):.1f} s steady -> decode/pipeline = "
          f"{med(dec, 0) / med(pipe, 0):.2f}x whole run, {med(dec, 1) / med(pipe, 1):.2f}x steady state", flush=True)
    if rev:
        print(f"    revision {rev[0]}: pipeline {med(base, 0):.1f} s whole {[round(x[0], 1) for x in base]}, "
              f"{med(base, 1):.1f} s steady -> decode/pipeline = {med(dec, 0) / med(base, 0):.2f}x whole run, "
              f"{med(dec, 1) / med(base, 1):.2f}x steady; this checkout / {rev[0]} = {med(base, 0) / med(pipe, 0):.2f}x "
              f"whole run (above 1: faster), {med(base, 1) / med(pipe, 1):.2f}x steady", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--hd-repeat", type=int, default=3, help="(1) also on the 1080p clip repeated this many times (1: skip)")
    ap.add_argument("--long-minutes", type=float, default=120)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench"))
    ap.add_argument("--skip", nargs="*", default=[], choices=["ray", "model", "memory", "live"])
    ap.add_argument("--compare-rev", metavar="REV", help="(1) also the pipeline of this git revision, interleaved")
    a = ap.parse_args()
    w = a.workdir
    rev = (a.compare_rev, checkout_rev(a.compare_rev, w)) if a.compare_rev else None
    if "ray" not in a.skip:
        clip = make_input(w / f"pipe_{a.minutes:g}min.mp4", a.minutes)
        ray_overhead(clip, f"{a.minutes:g}-min 360p", a.runs, w / "out_bypass", rev)
        hd = make_input(w / f"pipe_{a.minutes:g}min_1080p.mp4", a.minutes, size="1920x1080")
        ray_overhead(hd, f"{a.minutes:g}-min 1080p", a.runs, w / "out_bypass", rev)
        if a.hd_repeat > 1:  # the same start-up cost over a longer input
            long_hd = repeat_input(hd, a.hd_repeat, w / f"pipe_{a.minutes * a.hd_repeat:g}min_1080p.mp4")
            ray_overhead(long_hd, f"{a.minutes * a.hd_repeat:g}-min 1080p", a.runs, w / "out_bypass", rev)
    if "model" not in a.skip:
        clips = ROOT / "examples" / "clips"
        media_s = 44.0
        times = [run_onepass([str(clips), "-o", str(w / "out_model"), "--force"])[0] for _ in range(a.runs)]
        print(f"(2) default model, examples/clips ({media_s:g} s of media): median {statistics.median(times):.1f} s "
              f"{[round(x, 1) for x in times]} = {media_s / statistics.median(times):.2f}x real time", flush=True)
    if "memory" not in a.skip:
        long = make_input(w / f"pipe_{a.long_minutes:g}min_180p.mp4", a.long_minutes, size="320x180")
        short = make_input(w / "pipe_10min_180p.mp4", 10, size="320x180")
        _, m_short, _ = run_onepass([str(short), "-o", str(w / "out_mem_s"), "--tasks", "", "--force"], sample_memory=True)
        t_long, m_long, _ = run_onepass([str(long), "-o", str(w / "out_mem_l"), "--tasks", "", "--force"], sample_memory=True)
        print(f"(3) peak memory, backbone bypassed, driver + all Ray processes: PSS 10-min input {m_short[1]:.0f} MB, "
              f"{a.long_minutes:g}-min input {m_long[1]:.0f} MB ({t_long:.0f} s) -> long/short = {m_long[1] / m_short[1]:.2f}x; "
              f"(summed RSS, which counts the shared object store once per process: {m_short[0]:.0f} vs {m_long[0]:.0f} MB = "
              f"{m_long[0] / m_short[0]:.2f}x)", flush=True)
    if "live" not in a.skip:
        out = subprocess.run([sys.executable, str(ROOT / "examples" / "live_stream.py"), str(w / "out_live")],
                             capture_output=True, text=True).stdout
        line = next((l for l in out.splitlines() if l.startswith("live:")), "live: no figure (see the example's output)")
        print(f"(4) {line}", flush=True)


if __name__ == "__main__":
    main()
