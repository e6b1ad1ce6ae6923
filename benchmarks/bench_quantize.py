"""Weight-only quantization (``--quantize``) against the unquantized model, in one invocation.

    python benchmarks/bench_quantize.py --clips 10 --seed 3

On freshly generated held-out clips of the default model's domain (``onepass evaluate``'s
generator, a seed training never draws), runs the runner (no Ray) with the model unquantized, int8
and int4, and prints per scheme: the share of caption rows (frame, text) and transcript rows
(start, end, text) identical to the unquantized model's, the median seconds per window (of
``--runs`` passes) and its ratio to unquantized, and the size of the serialized weights.
``--model`` points at another checkpoint (on CPU the 12B needs ~50 GB of RAM in float32).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path

import torch


def weights_mb(model) -> float:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell() / 2**20


def rows(runner, windows_by_clip) -> tuple[list, list, float]:
    from onepass.model.analyse import analyse
    from onepass.model.tasks import TaskSet

    caps, segs = [], []
    t0 = time.perf_counter()
    n = 0
    for name, windows in windows_by_clip:
        for res in analyse(runner, windows, TaskSet(True, True, False)):
            caps += [(name, c.frame_ms, c.text) for c in res.captions]
            segs += [(name, s.span.start_ms, s.span.end_ms, s.text) for s in res.segments]
        n += len(windows)
    return caps, segs, (time.perf_counter() - t0) / max(n, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3, help="passes per scheme (median seconds per window)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--folder", type=Path, default=Path("runs/bench/quantize"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from onepass.model.load import load_backbone
    from onepass.model.meta import model_window_s
    from onepass.model.runner import Runner
    from onepass.model.training.metrics import row_agreement
    from onepass.operators.decode import MediaReader
    from onepass.pipeline.evaluate import make_heldout_clips
    from onepass.pipeline.windows import iter_windows

    clips = make_heldout_clips(args.folder, args.clips, args.seed, duration_s=(20, 40))
    window_s = model_window_s(args.model)
    windows_by_clip = []
    for clip in clips:
        with MediaReader(clip) as media:
            windows_by_clip.append((clip.stem, list(iter_windows(media, clip.stem, window_s=window_s))))
    runners = {q: Runner(load_backbone(args.model, device="cpu", quantize=q)) for q in (None, "int8", "int4")}
    out: dict[str, dict] = {str(q): {"weights_mb": round(weights_mb(r.model), 2), "s_per_window": []} for q, r in runners.items()}
    got = {}
    for _ in range(args.runs):  # interleaved: the schemes share whatever else the machine is doing
        for q, r in runners.items():
            caps, segs, spw = rows(r, windows_by_clip)
            got[q] = (caps, segs)
            out[str(q)]["s_per_window"].append(round(spw, 4))
    ref_caps, ref_segs = got[None]
    base = statistics.median(out["None"]["s_per_window"])
    for q in runners:
        caps, segs = got[q]
        med = statistics.median(out[str(q)]["s_per_window"])
        out[str(q)].update(median_s_per_window=med, speed_vs_unquantized=round(base / med, 3),
                           caption_rows_agree=round(row_agreement(ref_caps, caps), 4), transcript_rows_agree=round(row_agreement(ref_segs, segs), 4),
                           all_rows_agree=round(row_agreement(ref_caps + ref_segs, caps + segs), 4), caption_rows=len(ref_caps), transcript_rows=len(ref_segs))
    print(json.dumps({"clips": len(clips), "windows": sum(len(w) for _, w in windows_by_clip), "window_s": window_s, "schemes": out}, indent=1))


if __name__ == "__main__":
    main()
