"""Backbone runner throughput on CPU with the default model (or --model).

    python benchmarks/bench_runner_cpu.py [--windows 4] [--runs 3] [--model PATH]

Each window is --window-s (default: the model's own) of the default model's domain (66 tokens a
frame at 1 fps + 25 audio tokens a second).
Runs captions + transcript per window (a) as onepass does it: the media prefilled once, each
task decoded from a fork of that cache, windows batched; (b) the baseline: each task prefilled
from scratch, one window at a time. Prints medians and the ratio (b)/(a).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from onepass.model.load import load_backbone
from onepass.model.runner import Runner, Window
from onepass.model.tasks import Prompts
from onepass.model.meta import model_window_s
from onepass.model.training import samples as S
from onepass.operators.spans import Span


def windows(runner, n: int, width_s: int, seed: int = 7) -> list[Window]:
    rng = np.random.default_rng(seed)
    vocab = S.Vocab(runner.bb.tokenizer)
    out = []
    for i in range(n):
        s = S.window_item(rng, runner.prompts, vocab, width_s, task="captions")
        out.append(Window(f"w{i}", Span(0, width_s * 1000), tuple(s["stamps"]), tuple(s["patches"]), s["audio"], 0))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--window-s", type=int, default=None, help="default: the model's own")
    args = ap.parse_args()
    width = args.window_s or model_window_s(args.model)
    bb = load_backbone(args.model, device="cpu")
    runner = Runner(bb, max_new_tokens=args.max_new_tokens)
    ws = windows(runner, args.windows, width)
    tasks = [Prompts().caption, Prompts().transcript]
    print(f"model {bb.path.name}: {sum(p.numel() for p in bb.model.parameters()) / 1e6:.1f} M params, "
          f"{torch.get_num_threads()} threads; {len(ws)} windows x {width} s, tasks: captions + transcript")

    def ours():
        for i in range(0, len(ws), args.batch):
            runner.generate(ws[i : i + args.batch], tasks)

    def baseline():
        for w in ws:
            for t in tasks:
                runner.generate([w], [t])

    results = {}
    for name, fn in (("onepass (shared prefill, batched)", ours), ("baseline (prefill per task, batch 1)", baseline)):
        times = []
        for _ in range(args.runs):
            runner.stats = type(runner.stats)()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        results[name] = med
        st = runner.stats
        print(f"{name:38s} median {med:6.2f} s  ({[round(t, 2) for t in times]}): {len(ws) / med:.2f} windows/s, "
              f"{len(ws) * width / med:.1f}x real time; last run prefill {st.prefill_tokens / med:.0f} tok/s, "
              f"decode {st.generated_tokens / med:.1f} tok/s")
    a, b = results.values()
    print(f"baseline / onepass = {b / a:.2f}x")


if __name__ == "__main__":
    main()
