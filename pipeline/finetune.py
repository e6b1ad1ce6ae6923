"""``onepass finetune``: labelled tables + their clips -> labelled windows -> a fine-tuned model.

LABELLED is an output folder of ``onepass run`` (``sources/*/*.parquet``), corrected or written by
hand in the same format: the ``sources`` table says where each clip is (``path``), ``captions``
(``frame_ms``, ``text``) and ``transcripts`` (``start_ms``, ``end_ms``, ``text``) hold the truth.
A clip that moved is looked up by its file name in ``--media`` folders, then beside LABELLED.
Clips are decoded in this process (no Ray) and cut into the model's windows as ``onepass run``
cuts them; every window gets a captions item (when its frames are labelled) and a transcript item
(when the source has transcript rows: a window with none is labelled "no speech").
A source that cannot be used (clip missing, unreadable) is reported and skipped.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from .windows import iter_windows
from .writers import FILE_OF

__all__ = ["LabelledSource", "read_labelled", "labelled_windows"]


@dataclass
class LabelledSource:
    source_id: str
    clip: Path
    captions: list[tuple[int, int, int, str]]  # start_ms, end_ms, frame_ms, text
    utterances: list[tuple[int, int, str]]  # start_ms, end_ms, text
    has_captions: bool
    has_transcripts: bool


def _rows(folder: Path, table: str) -> list[dict]:
    f = folder / FILE_OF[table]
    return pq.read_table(f).to_pylist() if f.is_file() else []


def _find_clip(path: str, labelled: Path, media: list[Path]) -> Path | None:
    p = Path(path)
    if not p.is_absolute():
        p = labelled / p
    if p.is_file():
        return p
    for d in [*media, labelled]:
        if (d / Path(path).name).is_file():
            return d / Path(path).name
    return None


def read_labelled(labelled: Path, media: list[Path] = ()) -> tuple[list[LabelledSource], list[str]]:
    """The usable sources of LABELLED and one message per source that is not."""
    root = Path(labelled) / "sources"
    if not root.is_dir():
        raise FileNotFoundError(f"{labelled}: no sources/ folder (expected an output folder of `onepass run`)")
    out, problems = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            src = _rows(folder, "sources")
            if not src:
                problems.append(f"{folder}: no sources row")
                continue
            row = src[0]
            clip = _find_clip(row["path"], Path(labelled), list(media))
            if clip is None:
                problems.append(f"{folder.name}: clip {row['path']} not found (give its folder with --media)")
                continue
            caps = [(r["start_ms"], r["end_ms"], r["frame_ms"], r["text"]) for r in _rows(folder, "captions") if r["text"]]
            utts = [(r["start_ms"], r["end_ms"], r["text"]) for r in _rows(folder, "transcripts")]
        except Exception as exc:  # noqa: BLE001 - one unreadable table must not stop the others
            problems.append(f"{folder}: {type(exc).__name__}: {exc}")
            continue
        if not caps and not utts:
            problems.append(f"{folder.name}: no caption or transcript rows")
            continue
        out.append(LabelledSource(folder.name, clip, caps, utts, bool(caps), bool(utts)))
    return out, problems


def labelled_windows(sources: list[LabelledSource], window_s: int, budget: int = 70, decode_mode: str = "fast"):
    """(LabelledWindow list, problems): each source's windows with their targets."""
    from onepass.model.training.finetune import LabelledWindow, caption_target, transcript_target
    from onepass.operators.decode import MediaReader

    items, problems = [], []
    for s in sources:
        try:
            got = []
            with MediaReader(s.clip, mode=decode_mode) as media:
                for w in iter_windows(media, s.source_id, window_s=window_s, budget=budget):
                    if s.has_captions and w.has_video and (target := caption_target(w, s.captions)):
                        got.append(LabelledWindow(w, "captions", target))
                    if s.has_transcripts and w.has_audio:
                        got.append(LabelledWindow(w, "transcript", transcript_target(w, s.utterances)))
            items.append((s.source_id, got))
        except Exception as exc:  # noqa: BLE001 - a bad clip is reported, the others go on
            problems.append(f"{s.clip}: {type(exc).__name__}: {exc}")
    return items, problems


def split_heldout(per_source: list[tuple[str, list]], fraction: float) -> tuple[list, list]:
    """Whole sources held out (every k-th by id) when there are two or more; else every k-th window."""
    per_source = [(sid, ws) for sid, ws in per_source if ws]
    if fraction <= 0:
        return [w for _, ws in per_source for w in ws], []
    k = max(2, round(1 / fraction))
    if len(per_source) >= 2:
        held_ids = {sid for i, (sid, _) in enumerate(per_source) if i % k == k - 1} or {per_source[-1][0]}
        train = [w for sid, ws in per_source if sid not in held_ids for w in ws]
        held = [w for sid, ws in per_source if sid in held_ids for w in ws]
        return train, held
    ws = per_source[0][1] if per_source else []
    return [w for i, w in enumerate(ws) if i % k != k - 1], [w for i, w in enumerate(ws) if i % k == k - 1]


def report(problems: list[str]) -> None:
    for p in problems:
        print(f"onepass finetune: skipped {p}", file=sys.stderr)


def write_truth_tables(clip: Path, truth: dict, labelled: Path, source_id: str | None = None) -> Path:
    """A labelled source folder in ``onepass run``'s format from a generated clip's truth (the
    domain generator's ``.json``: scenes and utterances): how to make a training set from clips
    whose truth is known without running the model first."""
    from .writers import commit_source, source_row

    sid = source_id or Path(clip).stem
    rows = {
        "sources": [source_row(sid, str(Path(clip).resolve()), None, status="ok", error=None, windows=0,
                               config_fingerprint="truth", model="truth")],
        "captions": [dict(source_id=sid, start_ms=s["start_ms"], end_ms=s["end_ms"], frame_ms=s["start_ms"], text=s["caption"])
                     for s in truth["scenes"]],
        "transcripts": [dict(source_id=sid, start_ms=u["start_ms"], end_ms=u["end_ms"], speaker=str(u["speaker"]), text=u["text"])
                        for u in truth["utterances"]],
        "speakers": [dict(source_id=sid, start_ms=u["start_ms"], end_ms=u["end_ms"], speaker=str(u["speaker"]))
                     for u in truth["utterances"]],
    }
    return commit_source(labelled, sid, rows)
