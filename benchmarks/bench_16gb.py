"""The 16 GB mode, measured: the 12B's shape with random weights, quantized as it loads, on a CPU.

    python benchmarks/bench_16gb.py --checkpoint ~/.cache/onepass/gemma4-12b-random --json out.json

1. Writes, once (kept between runs; about 24 GB), a random-weight checkpoint of the Gemma 4 12B
   configuration as Hugging Face ships one: bf16 safetensors in ~5 GB shards with an index
   (``tests/helpers_model.write_random_checkpoint``; the tiny fixture's tokenizer drives it).
2. Makes a 10 s clip of the default model's domain (seeded; outside the repository).
3. Per scheme (``--schemes``, default int8,int4): ``onepass run CLIP --model DIR --quantize Q
   --device cpu --tasks captions,transcript`` with ``--max-new-tokens`` (random weights rarely stop
   on their own), sampling every 0.2 s the resident memory of EVERY process of the run summed (the
   driver and all its descendants: Ray's GCS, raylet, workers, the backbone actor), and reports:
   peak summed RSS during the load (until the backbone's first request) and over the whole run,
   the same for anonymous memory (RssAnon: what cannot be dropped; RSS also counts the safetensors
   pages mapped while they are read), load seconds, wall seconds, seconds per video second, and
   the backbone's own prefill and decode tokens/s (its throughput line).

Not a CI test (it needs 24 GB of disk and minutes per scheme); ``tests/test_quantize.py`` runs
the same loader on a generated mid-size checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def tree_memory(pid: int, by_process: dict | None = None) -> tuple[int, int]:
    """(RSS, RssAnon) in bytes summed over ``pid`` and all its descendants (each one's RSS into
    ``by_process`` by name when given)."""
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0
    rss = anon = 0
    for p in procs:
        try:
            one = p.memory_info().rss
            rss += one
            if by_process is not None:
                name = " ".join(p.cmdline())[:60] or p.name()
                by_process[name] = by_process.get(name, 0) + one
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        anon += int(line.split()[1]) * 1024
        except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
            continue
    return rss, anon


class Sampler(threading.Thread):
    """Peak summed memory of a process tree, with a phase marker the caller flips."""

    def __init__(self, pid: int, every_s: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.phase = "load"
        self.peaks = {"load": [0, 0], "analysis": [0, 0]}
        self.at_peak: dict[str, int] = {}  # per process, at the run's highest summed RSS
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            by_process: dict[str, int] = {}
            rss, anon = tree_memory(self.pid, by_process)
            if rss > max(p[0] for p in self.peaks.values()):
                self.at_peak = by_process
            peak = self.peaks[self.phase]
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], anon)
            self.stop.wait(self.every_s)


def ensure_checkpoint(dest: Path, layers: int) -> float:
    """Write the random checkpoint unless it is there; returns seconds spent writing (0: kept)."""
    if (dest / "model.safetensors.index.json").is_file():
        return 0.0
    sys.path.insert(0, str(ROOT))
    from tests.helpers_model import config_like_12b, write_random_checkpoint

    t0 = time.perf_counter()
    write_random_checkpoint(dest, config_like_12b(layers), shard_bytes=5 * 10**9)
    return time.perf_counter() - t0


def make_clip(folder: Path, seconds: int = 10, seed: int = 5) -> Path:
    import numpy as np

    from onepass.model.training import domain

    clip = folder / f"domain_{seconds}s_seed{seed}.mp4"
    if not clip.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        domain.write_clip(clip, domain.random_timeline(rng, seconds), rng)
    return clip


def backbone_phase(pid: int) -> str | None:
    """What the backbone actor is doing, from its process title (Ray names a worker after the
    method it runs): "init" while it loads the model, "ready" after; None before it exists."""
    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for p in procs:
        try:
            title = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if title.startswith("ray::BackboneActor"):
            return "init" if "__init__" in title else "ready"
    return None


def run_scheme(args, clip: Path, scheme: str) -> dict:
    out = args.work / f"out_{scheme}"
    cmd = [sys.executable, "-m", "onepass.pipeline.cli", "run", str(clip), "-o", str(out), "--model", str(args.checkpoint),
           "--quantize", scheme, "--device", "cpu", "--tasks", "captions,transcript", "--max-new-tokens", str(args.max_new_tokens),
           "--force"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = Sampler(proc.pid)
    sampler.start()
    lines, init_at, load_s = [], None, None
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    while proc.poll() is None:
        if load_s is None:
            phase = backbone_phase(proc.pid)
            if phase == "init" and init_at is None:
                init_at = time.perf_counter()
            elif phase == "ready" and init_at is not None:
                load_s = round(time.perf_counter() - init_at, 1)
                sampler.phase = "analysis"
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    reader.join(timeout=5)
    text = "".join(lines)
    m = re.search(r"prefill (\d+) tok/s, decode ([\d.]+) tok/s", text)
    gb = 1 / 2**30
    load, ana = sampler.peaks["load"], sampler.peaks["analysis"]
    return {
        "scheme": scheme, "exit_code": proc.returncode,
        "load_s": load_s, "wall_s": round(wall, 1), "s_per_video_s": round(wall / 10, 1),
        "peak_rss_gb_load": round(load[0] * gb, 2), "peak_rss_gb_run": round(max(load[0], ana[0]) * gb, 2),
        "peak_anon_gb_load": round(load[1] * gb, 2), "peak_anon_gb_run": round(max(load[1], ana[1]) * gb, 2),
        "at_peak_gb": {k: round(v * gb, 2) for k, v in sorted(sampler.at_peak.items(), key=lambda kv: -kv[1])[:8]},
        "prefill_tok_s": int(m.group(1)) if m else None, "decode_tok_s": float(m.group(2)) if m else None,
        "tail": text[-1500:] if proc.returncode else text[-400:],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=Path.home() / ".cache" / "onepass" / "gemma4-12b-random")
    ap.add_argument("--layers", type=int, default=48, help="decoder layers of the written checkpoint (the 12B: 48)")
    ap.add_argument("--schemes", default="int8,int4")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="--threads of the run (default: the run's own default)")
    ap.add_argument("--work", type=Path, default=Path("runs/bench/16gb"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    written = ensure_checkpoint(args.checkpoint, args.layers)
    size = sum(f.stat().st_size for f in args.checkpoint.glob("*.safetensors"))
    clip = make_clip(args.work)
    report = {"checkpoint": str(args.checkpoint), "checkpoint_gb": round(size / 2**30, 2), "written_s": round(written, 1),
              "cores": len(os.sched_getaffinity(0)), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
              "clip": clip.name, "max_new_tokens": args.max_new_tokens, "runs": []}
    for scheme in args.schemes.split(","):
        res = run_scheme(args, clip, scheme)
        report["runs"].append(res)
        print(json.dumps({k: v for k, v in res.items() if k != "tail"}), flush=True)
        if res["exit_code"]:
            print(res["tail"], file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
