"""Known voices end to end (issue 25): domain clips spoken by 3 enrolled eSpeak voices and 1 voice
that is not enrolled, through `onepass run --voices DIR` as a user runs it.

Enrolment: one ~30 s recording per enrolled person (other sentences than the clips'). Each clip
holds 2-4 of the four voices. Scored on the truth: the share of each enrolled person's speech
time whose speaker row carries their name, and the share of the unenrolled voice's speech time
that carries any name (it must be 0).

    python benchmarks/bench_known_voices.py --clips 10 --seconds 40 --json known.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_voices import person_voices, speech  # noqa: E402

NAMES = ("ana", "ben", "chidi")  # the enrolled; the fourth voice is nobody's


def make_set(root: Path, n_clips: int, seconds: float, seed: int) -> tuple[Path, Path, list]:
    """(clips folder, voices folder, the four voices) on fresh draws."""
    import soundfile as sf

    from onepass.model.training.domain import VARIANTS, random_timeline, write_clip

    rng = np.random.default_rng(seed)
    variants = [VARIANTS[k] for k in rng.choice(len(VARIANTS), size=4, replace=False)]
    voices = person_voices(rng, variants)
    vdir, cdir = root / "voices", root / "clips"
    vdir.mkdir(parents=True, exist_ok=True)
    cdir.mkdir(parents=True, exist_ok=True)
    for name, v in zip(NAMES, voices):
        sf.write(vdir / f"{name}.wav", speech(v, rng, 30.0), 16000)
    for k in range(n_clips):
        present = sorted(rng.choice(4, size=int(rng.integers(2, 5)), replace=False).tolist())
        if k < 4 and 3 not in present:  # the stranger speaks in the first clips at least
            present = sorted(present[:-1] + [3])
        tl = random_timeline(rng, seconds, voices=[voices[i] for i in present], sentences="heldout", noise=False)
        path = write_clip(cdir / f"clip{k:02d}.mp4", tl, rng)
        truth = json.loads(path.with_suffix(".json").read_text())
        for u in truth["utterances"]:  # who each utterance's speaker is
            i = present[int(u["speaker"][3:])]
            u["person"] = NAMES[i] if i < 3 else None
        path.with_suffix(".json").write_text(json.dumps(truth))
    return cdir, vdir, voices


def score(out: Path, clips: Path) -> dict:
    import duckdb

    rows = duckdb.connect().execute(
        f"SELECT s.path, k.start_ms, k.end_ms, k.speaker FROM read_parquet('{out}/sources/*/speakers.parquet') k "
        f"JOIN read_parquet('{out}/sources/*/source.parquet') s USING (source_id)").fetchall()
    turns: dict[str, list] = {}
    for path, a, b, who in rows:
        turns.setdefault(Path(path).stem, []).append((a, b, who))
    right = {n: 0 for n in NAMES}
    total = {n: 0 for n in NAMES}
    stranger_named = stranger_total = 0
    wrong_names: dict[str, int] = {}
    for truth_file in sorted(clips.glob("*.json")):
        for u in json.loads(truth_file.read_text())["utterances"]:
            for a, b, who in turns.get(truth_file.stem, []):
                ov = max(0, min(b, u["end_ms"]) - max(a, u["start_ms"]))
                if not ov:
                    continue
                if u["person"] is None:
                    stranger_named += ov if who in NAMES else 0
                    if who in NAMES:
                        wrong_names[who] = wrong_names.get(who, 0) + ov
                else:
                    right[u["person"]] += ov if who == u["person"] else 0
                    if who != u["person"] and who in NAMES:
                        wrong_names[who] = wrong_names.get(who, 0) + ov
            dur = u["end_ms"] - u["start_ms"]
            if u["person"] is None:
                stranger_total += dur
            else:
                total[u["person"]] += dur
    named_share = sum(right.values()) / max(1, sum(total.values()))
    return {"enrolled_speech_s": round(sum(total.values()) / 1000, 1), "named_right": round(named_share, 4),
            "per_person": {n: round(right[n] / max(1, total[n]), 4) for n in NAMES},
            "stranger_speech_s": round(stranger_total / 1000, 1), "stranger_named_s": round(stranger_named / 1000, 2),
            "wrong_name_s": {k: round(v / 1000, 2) for k, v in wrong_names.items()}}


def run(clips: Path, voices: Path, out: Path, model: str | None = None, extra: tuple = ()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "onepass.pipeline.cli", "run", str(clips), "-o", str(out), "--voices", str(voices), *extra]
    if model:
        cmd += ["--model", model]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=3600)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("runs/known_voices"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--reuse", action="store_true", help="score a new run on clips made before (same --work and --seed)")
    a = ap.parse_args()
    t0 = time.time()
    root = a.work / f"seed{a.seed}"
    if a.reuse and (root / "clips").is_dir():
        import shutil

        clips, voices, drawn = root / "clips", root / "voices", []
        shutil.rmtree(root / "out", ignore_errors=True)
    else:
        clips, voices, drawn = make_set(root, a.clips, a.seconds, a.seed)
    out = root / "out"
    r = run(clips, voices, out, extra=("--tasks", "transcript,diarization"))
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:])
        raise SystemExit(1)
    res = {"clips": a.clips, "seconds": a.seconds, "seed": a.seed, "voices": [v.name for v in drawn], "enrolled": list(NAMES),
           **score(out, clips), "wall_s": round(time.time() - t0)}
    print(json.dumps(res, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
