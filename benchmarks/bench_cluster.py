"""A folder of clips on a 3-node local Ray cluster vs a local run, in one invocation.

    python benchmarks/bench_cluster.py [--clips 8] [--seconds 60] [--runs 3]

The cluster is real (tests/cluster.py: Ray's cluster_utils, a head with no CPU for tasks and
three 1-CPU worker nodes, token authentication on) and shares this machine's cores with nothing
else, so the ratio says what the cluster path costs (scheduling across raylets, objects moving
between node object stores), not what more machines would give. Each run is a fresh
`onepass run` process (Ray start and model load included); the backbone runs the default model.
Prints the median of --runs for each and the ratio cluster/local (goal: within 15%).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_clips(folder: Path, n: int, seconds: int) -> Path:
    """n domain clips (shapes and speech) made by the default model's generator, cached."""
    import numpy as np

    from onepass.model.training import domain

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"clip{i}.mp4"
        if not path.exists():
            rng = np.random.default_rng([7, i])
            domain.write_clip(path, domain.random_timeline(rng, seconds), rng)
    return folder


def timed_run(inputs: Path, out: Path, env: dict, *extra: str) -> float:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "onepass.pipeline.cli", "run", str(inputs), "-o", str(out), "--force", *extra],
                         capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"onepass run failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench"))
    args = ap.parse_args(argv)
    inputs = make_clips(args.workdir / f"cluster_{args.clips}x{args.seconds}s", args.clips, args.seconds)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0")
    cluster = subprocess.Popen([sys.executable, str(ROOT / "tests" / "cluster.py"), "3", "0", "1"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        address = json.loads(cluster.stdout.readline())["address"]
        local, remote = [], []
        for r in range(args.runs):  # alternate, so that drift in the machine's load hits both alike
            local.append(timed_run(inputs, args.workdir / "cluster_local_out", env))
            remote.append(timed_run(inputs, args.workdir / "cluster_remote_out", env, "--address", address))
            print(f"run {r + 1}: local {local[-1]:.1f} s, cluster {remote[-1]:.1f} s", flush=True)
    finally:
        cluster.stdin.write("quit\n")
        cluster.stdin.flush()
        cluster.wait(timeout=120)
    lm, cm = statistics.median(local), statistics.median(remote)
    print(f"{args.clips} clips x {args.seconds} s: local median {lm:.1f} s, 3-node cluster median {cm:.1f} s, cluster/local = {cm / lm:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
