"""DER of a checkpoint's speaker clustering over a grid of (backbone_weight, stop threshold), on 20
held-out clips of one seed, from the regions and embeddings the runner makes (units included; no Ray).
What chose the bundled model's ``speakers`` in its onepass.json:

    python model/training/probes/speaker_grid.py SEED WINDOW_S [MODEL]   # e.g. 5 30 ~/onepass-train/r4/export
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from onepass.model import speakers
from onepass.model.analyse import TaskSet, analyse
from onepass.model.load import load_backbone
from onepass.model.runner import Runner
from onepass.model.training import metrics
from onepass.operators.decode import MediaReader
from onepass.pipeline.evaluate import make_heldout_clips
from onepass.pipeline.windows import iter_windows

torch.set_num_threads(1)
seed, window_s = int(sys.argv[1]), int(sys.argv[2])
runner = Runner(load_backbone(sys.argv[3] if len(sys.argv) > 3 else None, device="cpu"))
data = []
for clip in make_heldout_clips(Path(f"/tmp/speaker_grid_{seed}"), 20, seed):
    with MediaReader(str(clip), fps=1.0) as media:
        windows = [w for w in iter_windows(media, "x", window_s=window_s) if w.has_audio]
    regions = [r for res in analyse(runner, windows, TaskSet(False, False, True)) for r in res.speech]
    data.append((json.loads(clip.with_suffix(".json").read_text()), sorted(regions, key=lambda r: r[0])))
for weight in (0.0, 0.25, 0.5, 1.0):
    row = []
    for threshold in (0.4, 0.5, 0.6, 0.7, 0.8):
        err = total = 0.0
        for truth, regions in data:
            turns = speakers.assign_speakers(regions, threshold=threshold, backbone_weight=weight) if regions else []
            e, t = metrics.der([(u["start_ms"], u["end_ms"], u["speaker"]) for u in truth["utterances"]],
                               [(s.span.start_ms, s.span.end_ms, s.speaker) for s in turns])
            err, total = err + e, total + t
        row.append(f"{threshold}: {err / total:.3f}")
    print(f"backbone_weight {weight}:  " + "  ".join(row), flush=True)
