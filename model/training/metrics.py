"""Measures of the default model's domain: WER (jiwer), DER with collar (pyannote.metrics), exact captions,
boundary error. The hand-counted cases in tests/test_domain_and_metrics.py cross-check both libraries."""

from __future__ import annotations

import re

__all__ = ["normalise_words", "word_errors", "wer", "der", "caption_exact", "boundary_errors", "row_agreement"]


def normalise_words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_errors(ref: str, hyp: str) -> dict:
    """jiwer's alignment of lower-cased words: ``substitutions``, ``deletions``, ``insertions``,
    ``words`` (reference) and ``confusions``, the (reference word, hypothesis word) of each
    substitution, in order."""
    import jiwer

    r, h = normalise_words(ref), normalise_words(hyp)
    if not r or not h:
        return {"substitutions": 0, "deletions": len(r), "insertions": len(h), "words": len(r), "confusions": []}
    out = jiwer.process_words(" ".join(r), " ".join(h))
    pairs = [(r[c.ref_start_idx + k], h[c.hyp_start_idx + k]) for c in out.alignments[0] if c.type == "substitute"
             for k in range(c.ref_end_idx - c.ref_start_idx)]
    return {"substitutions": out.substitutions, "deletions": out.deletions, "insertions": out.insertions, "words": len(r),
            "confusions": pairs}


def wer(ref: str, hyp: str) -> tuple[int, int]:
    """(word errors, reference words), counted by jiwer over lower-cased words."""
    e = word_errors(ref, hyp)
    return e["substitutions"] + e["deletions"] + e["insertions"], e["words"]


def der(reference: list[tuple[int, int, str]], hypothesis: list[tuple[int, int, str]], *, collar_ms: int = 250) -> tuple[float, float]:
    """Diarization error (missed + false alarm + confusion) and scored reference speech, in seconds,
    by pyannote.metrics. Turns are (start_ms, end_ms, speaker); ``collar_ms`` on each side of every
    reference boundary is not scored (pyannote's ``collar`` is the whole width: 2 x collar_ms);
    speakers are matched one-to-one to maximise overlap."""
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    def annotation(turns):
        ann = Annotation()
        for k, (a, b, spk) in enumerate(turns):
            if b > a:
                ann[Segment(a / 1000, b / 1000), k] = spk
        return ann

    if not reference and not hypothesis:
        return 0.0, 0.0
    ref, hyp = annotation(reference), annotation(hypothesis)
    # scored: the union of both extents (what pyannote assumes without a UEM, stated so it need not warn)
    uem = Timeline([a.get_timeline().extent() for a in (ref, hyp) if len(a)]).support()
    detail = DiarizationErrorRate(collar=2 * collar_ms / 1000, skip_overlap=False)(ref, hyp, uem=uem, detailed=True)
    errors = detail["confusion"] + detail["missed detection"] + detail["false alarm"]
    return float(errors), float(detail["total"])


def caption_exact(truth_scenes: list[tuple[int, int, str]], captions: dict[int, str], duration_ms: int,
                  step_ms: int = 1000) -> tuple[int, int]:
    """(sampling instants whose kept frame is captioned exactly, sampling instants).

    One instant per ``step_ms`` from 0; its kept frame is the first captioned frame at or after the
    instant and before the next one (the decoder keeps the first frame at or after each instant, and
    in its default fast mode that frame may lag by a few frame intervals: 1,040 ms at 25 fps). The
    caption is judged against the scene at the frame's own time. An instant without a captioned
    frame counts as wrong."""
    frames = sorted(captions)
    ok = n = 0
    for t in range(0, duration_ms, step_ms):
        n += 1
        kept = next((f for f in frames if t <= f < t + step_ms), None)
        if kept is None:
            continue
        truth = next((c for a, b, c in truth_scenes if a <= kept < b), None)
        ok += truth is not None and captions[kept].strip() == truth
    return ok, n


def boundary_errors(truth: list[tuple[int, int]], segments: list[tuple[int, int]]) -> list[int]:
    """|start error| and |end error| in ms of each truth utterance against the segment overlapping it most."""
    errs = []
    for a, b in truth:
        best, best_ov = None, 0
        for c, d in segments:
            ov = min(b, d) - max(a, c)
            if ov > best_ov:
                best, best_ov = (c, d), ov
        if best is not None:
            errs += [abs(best[0] - a), abs(best[1] - b)]
    return errs


def row_agreement(ref: list, other: list) -> float:
    """Rows (hashable tuples) that ``ref`` and ``other`` share, each matched once, over the larger
    of the two counts (quantized vs unquantized output: the same row, times and text). A row
    missing from ``other`` and a row only ``other`` has both cost; 1.0 only when they are equal
    as multisets."""
    pool: dict = {}
    for row in other:
        pool[row] = pool.get(row, 0) + 1
    hit = 0
    for row in ref:
        if pool.get(row, 0):
            pool[row] -= 1
            hit += 1
    return hit / max(len(ref), len(other), 1)
