"""``onepass evaluate``: the default model's measures through the whole pipeline.

Generates held-out clips of the domain (a seed the training never draws: training seeds each
sample from [seed, worker, pid], evaluation from ``[10_000 + seed]``), runs ``onepass run`` on
them, and scores the tables against the clips' truth: WER over each clip's words in time order,
DER with a 0.25 s collar, the share of kept frames captioned exactly, and the median utterance
boundary error; with the checkpoint's documented questions asked, the share of answers exactly
right per question. Clips are drawn from one sentence set (``trained`` forms, ``heldout`` forms
the training never draws, ``random`` vocabulary in no order, ``numbers``) spoken by one
synthesizer set (``espeak``: the wheel's eSpeak NG; ``trained``: every training synthesizer;
``heldout``: Festival, never in training). Optionally real recordings (``--speech-dir``) and
photographs (``--images-dir``) outside the domain: the share of their speech rows and frames the
model marks as ``[other ...]`` and how many it writes as a domain report instead.
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


SENTENCES = ("trained", "heldout", "random", "numbers")
SYNTHS = ("espeak", "trained", "heldout")


def make_heldout_clips(folder: Path, n: int, seed: int, duration_s: tuple[int, int] = (20, 60), *,
                       sentences: str = "trained", synths: str = "espeak") -> list[Path]:
    import zlib

    from onepass.model.training.domain import random_timeline, write_clip

    folder.mkdir(parents=True, exist_ok=True)
    kind = f"{sentences}-{synths}"
    rng = np.random.default_rng([10_000 + seed] + ([] if kind == "trained-espeak" else [zlib.crc32(kind.encode())]))
    clips = []
    for i in range(n):
        path = folder / f"{kind}_{seed}_{i:03d}.mp4"
        draw = lambda: random_timeline(rng, float(rng.integers(duration_s[0], duration_s[1] + 1)),  # noqa: E731
                                       sentences=sentences, synths=synths)
        if not path.exists() or not path.with_suffix(".json").exists():
            write_clip(path, draw(), rng)
        else:  # keep the generator in step so clip i is the same whichever exist
            draw()
        clips.append(path)
    return clips


def _rows(con, out: Path, table: str, source_path: str) -> list[tuple]:
    cols = {"captions": "frame_ms, text", "transcripts": "start_ms, end_ms, speaker, text", "speakers": "start_ms, end_ms, speaker",
            "answers": "start_ms, end_ms, question, text"}[table]
    return con.execute(
        f"SELECT {cols} FROM read_parquet('{table_glob(out, table)}') t JOIN read_parquet('{table_glob(out, 'sources')}') s "
        f"USING (source_id) WHERE s.path = ? ORDER BY 1", [source_path]).fetchall()


def score(out: Path, clips: list[Path], questions: dict | None = None) -> dict:
    con = duckdb.connect()
    answers: dict[str, list[int]] = {}  # question key -> [right, asked]
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
        if questions:
            _score_answers(truth, _rows(con, out, "answers", path), answers, questions)
    words = parts.pop("words")
    return {
        "clips": len(clips), "wer": sum(parts.values()) / max(words, 1),
        # what the errors are: rates per reference word, and the most frequent substitutions
        "wer_parts": {k: v / max(words, 1) for k, v in parts.items()},
        "confusions": {f"{a} -> {b}": n for (a, b), n in confusions.most_common(10)}, "der": der_err / max(der_total, 1e-9),
        "caption_exact": cap_ok / max(cap_n, 1), "boundary_median_ms": float(np.median(bounds)) if bounds else None,
        "words": words, "frames": cap_n, "boundaries": len(bounds),
        "answers": {k: {"exact": r / max(n, 1), "asked": n} for k, (r, n) in answers.items()},
    }


def _score_answers(truth: dict, rows: list[tuple], tally: dict, questions: dict) -> None:
    from onepass.model.training.grammar import caption_answer

    """Each truth utterance's speech-question answer: the answer row overlapping it most; each kept
    frame's "shapes" answer: the row of that frame. Exact text, as the generator states it."""
    for key, q in questions.items():
        mine = [r for r in rows if r[2] == q["text"]]
        if q["unit"] == "speech":
            for u in truth["utterances"]:
                want = (u.get("facts") or {}).get(key)
                if want is None:
                    continue
                best = max(mine, key=lambda r: min(r[1], u["end_ms"]) - max(r[0], u["start_ms"]), default=None)
                hit = best is not None and min(best[1], u["end_ms"]) > max(best[0], u["start_ms"])
                right = tally.setdefault(key, [0, 0])
                right[0] += bool(hit and best[3] == want)
                right[1] += 1
        elif q["unit"] == "frame":
            for a, b, _, text in mine:
                scene = next((s for s in truth["scenes"] if s["start_ms"] <= a < s["end_ms"]), None)
                if scene is None:
                    continue
                right = tally.setdefault(key, [0, 0])
                right[0] += text == caption_answer(scene["caption"])
                right[1] += 1


def score_real_speech(out: Path, speech_dir: Path) -> dict:
    """Per recording (*.wav): WER against its reference *.txt where there is one, and
    ``marked``: how many of its transcript rows are ``[other speech]`` / ``[other sound]``; the rest
    (``reports``) were written as domain words."""
    from onepass.model.tasks import is_marker

    con = duckdb.connect()
    result = {}
    for wav in sorted(speech_dir.glob("*.wav")):
        txt = wav.with_suffix(".txt")
        rows = _rows(con, out, "transcripts", str(wav.resolve()))
        hyp = " ".join(r[3] for r in rows)
        marked = sum(is_marker(r[3]) for r in rows)
        entry = {"rows": len(rows), "marked": marked, "reports": len(rows) - marked, "hypothesis": hyp[:200]}
        if txt.exists():  # a reference: WER (expected to be poor, the domain is closed)
            e, n = metrics.wer(txt.read_text(), hyp)
            entry.update(wer=e / max(n, 1), words=n)
        timing = txt.with_suffix(".json")
        if timing.exists():  # one reader: the reference turn is the span of the words
            words = [w for w in json.loads(timing.read_text())["w"] if not w["t"].startswith("<")]
            ref = [(int(words[0]["b"] * 1000), int((words[-1]["b"] + words[-1]["d"]) * 1000), "reader")]
            hyp_turns = [(a, b, s) for a, b, s in _rows(con, out, "speakers", str(wav.resolve()))]
            d, t = metrics.der(ref, hyp_turns)
            entry["der"] = d / max(t, 1e-9)
        result[wav.name] = entry
    return result


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def still_clips(images_dir: Path, folder: Path, seconds: int = 5) -> list[Path]:
    """A silent H.264 clip of each photograph (scaled to 640 wide, 16:9 padded), ``seconds`` long."""
    import av
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for img_path in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        path = folder / f"still_{img_path.stem}.mp4"
        if not path.exists():
            img = Image.open(img_path).convert("RGB")
            img.thumbnail((640, 360))
            canvas = Image.new("RGB", (640, 360))
            canvas.paste(img, ((640 - img.width) // 2, (360 - img.height) // 2))
            tmp = path.with_name(path.name + ".tmp.mp4")
            with av.open(str(tmp), "w") as c:
                v = c.add_stream("libx264", rate=25)
                v.width, v.height, v.pix_fmt = 640, 360, "yuv420p"
                frame = av.VideoFrame.from_image(canvas)
                for i in range(25 * seconds):
                    frame.pts = i
                    for packet in v.encode(frame):
                        c.mux(packet)
                for packet in v.encode(None):
                    c.mux(packet)
            tmp.rename(path)
        out.append(path)
    return out


def score_images(out: Path, stills: list[Path]) -> dict:
    """Per photograph: its kept frames' captions, how many are ``[other scene]`` (``marked``) and how
    many were written as a domain scene instead (``reports``)."""
    from onepass.model.tasks import is_marker

    con = duckdb.connect()
    result = {}
    for clip in stills:
        caps = _rows(con, out, "captions", str(clip.resolve()))
        marked = sum(is_marker(t) for _, t in caps)
        result[clip.stem.removeprefix("still_")] = {"frames": len(caps), "marked": marked, "reports": len(caps) - marked,
                                                    "captions": sorted({t for _, t in caps})[:5]}
    return result


def _pooled(entries: dict, total: str) -> dict:
    n = sum(e[total] for e in entries.values())
    marked = sum(e["marked"] for e in entries.values())
    return {total: n, "marked": marked, "marked_share": marked / max(n, 1), "reports": n - marked}


def evaluate(cfg: RunConfig, clips: list[Path], speech_dir: Path | None = None, images_dir: Path | None = None) -> dict:
    from onepass.model.meta import model_questions

    questions = model_questions(cfg.model)
    if questions and not cfg.questions:  # ask every documented question of every clip
        from dataclasses import replace

        cfg = replace(cfg, questions=tuple(q["text"] for q in questions.values()))
    stills = still_clips(images_dir, cfg.output.parent / "stills") if images_dir else []
    inputs = [str(c) for c in clips] + ([str(p) for p in sorted(speech_dir.glob("*.wav"))] if speech_dir else [])
    inputs += [str(p) for p in stills]
    summary = build_pipeline(cfg).run(inputs)
    report = {"domain": score(cfg.output, clips, questions), "failed": summary.failed, "throughput": summary.throughput}
    if speech_dir:
        report["real_speech"] = score_real_speech(cfg.output, speech_dir)
        report["real_speech_pooled"] = _pooled(report["real_speech"], "rows")
    if stills:
        report["images"] = score_images(cfg.output, stills)
        report["images_pooled"] = _pooled(report["images"], "frames")
    return report
