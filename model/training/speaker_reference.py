"""Regenerate ``model/speaker_reference.json``: the mean and spread of the spectral block of speaker
embeddings over a fixed reference population of the domain's voices (speakers.py standardises with
it, so that one voice stays one speaker whatever else a source holds).

    python -m onepass.model.training.speaker_reference              # prints how far it is from the shipped file
    python -m onepass.model.training.speaker_reference --write      # replaces it

The population: speech regions (as diarization cuts them) of 30 s domain timelines drawn from
``--seed`` until ``--regions`` regions are collected.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from onepass.operators.audio import frame_audio

from .. import speakers
from . import domain

REFERENCE = Path(speakers.__file__).with_name("speaker_reference.json")


def build(seed: int = 777, regions: int = 221) -> dict:
    rng = np.random.default_rng(seed)
    blocks: list[np.ndarray] = []
    while len(blocks) < regions:
        timeline = domain.random_timeline(rng, 30.0)
        frames, _ = frame_audio(timeline.audio)
        hidden = np.zeros((frames.shape[0], 1), np.float32)  # the spectral block only
        for _, emb in speakers.region_embeddings(frames, hidden, 0):
            blocks.append(emb[: speakers.N_SPECTRAL])
    x = np.stack(blocks[:regions]).astype(np.float64)
    return {"mean": np.round(x.mean(0), 5).tolist(), "std": np.round(x.std(0), 5).tolist(), "regions": regions}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--regions", type=int, default=221)
    ap.add_argument("--write", action="store_true", help=f"replace {REFERENCE}")
    args = ap.parse_args(argv)
    new = build(args.seed, args.regions)
    old = json.loads(REFERENCE.read_text())
    d_mean = np.abs(np.asarray(new["mean"]) - old["mean"]).max()
    d_std = np.abs(np.asarray(new["std"]) / np.asarray(old["std"]) - 1).max()
    print(f"against {REFERENCE.name}: max |mean difference| {d_mean:.3f}, max relative std difference {d_std:.1%}")
    if args.write:
        REFERENCE.write_text(json.dumps(new))
        print(f"wrote {REFERENCE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
