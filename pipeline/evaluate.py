"""``onepass evaluate``: the default model's measures through the whole pipeline.

Generates held-out clips of the domain (a seed the training never draws: training seeds each
sample from [seed, worker, pid], evaluation from ``[10_000 + seed]``), runs ``onepass run`` on
them, and scores the tables against the clips' truth: WER over each clip's words in time order,
DER with a 0.25 s collar, the share of kept frames captioned exactly, and the median utterance
boundary error. Optionally the real recordings in ../shared/media/speech (outside the domain).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np

from onepass.model.training import metrics

from .config import RunConfig
from .run import build_pipeline
from .writers import table_glob

__all__ = ["make_heldout_clips", "score", "evaluate"]


def make_heldout_clips(folder: Path, n: int, seed: int, duration_s: tuple[int, int] = (20, 60)) -> list[Path]:
    from onepass.model.training.domain import random_timeline, write_clip

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([10_000 + seed])
    clips = []
    for i in range(n):
        path = folder / f"heldout_{seed}_{i:03d}.mp4"
        if not path.exists() or not path.with_suffix(".json").exists():
            timeline = random_timeline(rng, float(rng.integers(duration_s[0], duration_s[1] + 1)))
            write_clip(path, timeline, rng)
        else:  # keep the generator in step so clip i is the same whichever exist
            random_timeline(rng, float(rng.integers(duration_s[0], duration_s[1] + 1)))
        clips.append(path)
    return clips


def _rows(con, out: Path, table: str, source_path: str) -> list[tuple]:
    cols = {"captions": "frame_ms, text", "transcripts": "start_ms, end_ms, speaker, text", "speakers": "start_ms, end_ms, speaker"}[table]
    return con.execute(
        f"SELECT {cols} FROM read_parquet('{table_glob(out, table)}') t JOIN read_parquet('{table_glob(out, 'sources')}') s "
        f"USING (source_id) WHERE s.path = ? ORDER BY 1", [source_path]).fetchall()


def score(out: Path, clips: list[Path]) -> dict:
    con = duckdb.connect()
    parts = {"substitutions": 0, "deletions": 0, "insertions": 0, "words": 0}
    confusions: Counter = Counter()
    der_err = der_total = 0.0
    cap_ok = cap_n = 0
    bounds: list[int] = []
    for clip in clips:
        truth = json.loads(clip.with_suffix(".json").read_text())
        path = str(clip.resolve())
        transcripts = _rows(con, out, "transcripts", path)
        we = metrics.word_errors(" ".join(u["text"] for u in truth["utterances"]), " ".join(r[3] for r in transcripts))
        for k in parts:
            parts[k] += we[k]
        confusions.update(we["confusions"])
        ref_turns = [(u["start_ms"], u["end_ms"], u["speaker"]) for u in truth["utterances"]]
        hyp_turns = [(a, b, s) for a, b, s in _rows(con, out, "speakers", path)]
        d, t = metrics.der(ref_turns, hyp_turns)
        der_err, der_total = der_err + d, der_total + t
        caps = {frame: text for frame, text in _rows(con, out, "captions", path)}
        ok, n = metrics.caption_exact([(s["start_ms"], s["end_ms"], s["caption"]) for s in truth["scenes"]], caps, truth["duration_ms"])
        cap_ok, cap_n = cap_ok + ok, cap_n + n
        bounds += metrics.boundary_errors([(u["start_ms"], u["end_ms"]) for u in truth["utterances"]],
                                          [(a, b) for a, b, _, _ in transcripts])
    words = parts.pop("words")
    return {
        "clips": len(clips), "wer": sum(parts.values()) / max(words, 1),
        # what the errors are: rates per reference word, and the most frequent substitutions
        "wer_parts": {k: v / max(words, 1) for k, v in parts.items()},
        "confusions": {f"{a} -> {b}": n for (a, b), n in confusions.most_common(10)}, "der": der_err / max(der_total, 1e-9),
        "caption_exact": cap_ok / max(cap_n, 1), "boundary_median_ms": float(np.median(bounds)) if bounds else None,
        "words": words, "frames": cap_n, "boundaries": len(bounds),
    }


def score_real_speech(out: Path, speech_dir: Path) -> dict:
    con = duckdb.connect()
    result = {}
    for txt in sorted(speech_dir.glob("*.txt")):
        wav = txt.with_suffix(".wav")
        if not wav.exists():
            continue
        hyp = " ".join(r[3] for r in _rows(con, out, "transcripts", str(wav.resolve())))
        e, n = metrics.wer(txt.read_text(), hyp)
        entry = {"wer": e / max(n, 1), "words": n, "hypothesis": hyp[:200]}
        timing = txt.with_suffix(".json")
        if timing.exists():  # one reader: the reference turn is the span of the words
            words = [w for w in json.loads(timing.read_text())["w"] if not w["t"].startswith("<")]
            ref = [(int(words[0]["b"] * 1000), int((words[-1]["b"] + words[-1]["d"]) * 1000), "reader")]
            hyp_turns = [(a, b, s) for a, b, s in _rows(con, out, "speakers", str(wav.resolve()))]
            d, t = metrics.der(ref, hyp_turns)
            entry["der"] = d / max(t, 1e-9)
        result[wav.name] = entry
    return result


def evaluate(cfg: RunConfig, clips: list[Path], speech_dir: Path | None = None) -> dict:
    inputs = [str(c) for c in clips] + ([str(p) for p in sorted(speech_dir.glob("*.wav"))] if speech_dir else [])
    summary = build_pipeline(cfg).run(inputs)
    report = {"domain": score(cfg.output, clips), "failed": summary.failed, "throughput": summary.throughput}
    if speech_dir:
        report["real_speech"] = score_real_speech(cfg.output, speech_dir)
    return report
