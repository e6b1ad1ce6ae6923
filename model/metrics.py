"""Measures of the default model's domain: WER, DER (with collar), exact captions, boundary error."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import numpy as np

__all__ = ["normalise_words", "word_errors", "wer", "der", "caption_exact", "boundary_errors"]


def normalise_words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_errors(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance over words (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(ref: str, hyp: str) -> tuple[int, int]:
    """(errors, reference words)."""
    r, h = normalise_words(ref), normalise_words(hyp)
    return word_errors(r, h), len(r)


def der(reference: list[tuple[int, int, str]], hypothesis: list[tuple[int, int, str]], *, collar_ms: int = 250,
        step_ms: int = 10) -> tuple[float, float]:
    """Diarization error (missed + false alarm + confusion) and scored reference speech, in seconds.

    Turns are (start_ms, end_ms, speaker). ``collar_ms`` around every reference boundary is not
    scored. Speakers are matched one-to-one to maximise overlap (exhaustive; few speakers).
    """
    if not reference and not hypothesis:
        return 0.0, 0.0
    end = max([e for _, e, _ in reference + hypothesis] + [0])
    n = end // step_ms + 1
    ref_spk = sorted({s for *_, s in reference})
    hyp_spk = sorted({s for *_, s in hypothesis})
    R = np.zeros((len(ref_spk), n), bool)
    H = np.zeros((len(hyp_spk), n), bool)
    for a, b, s in reference:
        R[ref_spk.index(s), a // step_ms : b // step_ms] = True
    for a, b, s in hypothesis:
        H[hyp_spk.index(s), a // step_ms : b // step_ms] = True
    scored = np.ones(n, bool)
    for a, b, _ in reference:
        for t in (a, b):
            scored[max(0, (t - collar_ms) // step_ms) : (t + collar_ms) // step_ms] = False
    R, H = R[:, scored], H[:, scored]
    n_ref, n_hyp = R.sum(0), H.sum(0)
    overlap = (R[:, None, :] & H[None, :, :]).sum(-1) if len(ref_spk) and len(hyp_spk) else np.zeros((len(ref_spk), len(hyp_spk)))
    best = 0
    k = min(len(ref_spk), len(hyp_spk))
    for rs in itertools.permutations(range(len(ref_spk)), k):
        for hs in itertools.combinations(range(len(hyp_spk)), k):
            best = max(best, sum(overlap[r, h] for r, h in zip(rs, hs)))
    # with the best mapping, correct = mapped overlap; errors per frame = max(n_ref, n_hyp) - correct
    errors = np.maximum(n_ref, n_hyp).sum() - best
    total = n_ref.sum()
    return errors * step_ms / 1000, total * step_ms / 1000


def caption_exact(truth_scenes: list[tuple[int, int, str]], captions: dict[int, str], frame_ms: list[int]) -> tuple[int, int]:
    """(kept frames whose caption equals the truth at that time, kept frames)."""
    ok = 0
    for t in frame_ms:
        truth = next((c for a, b, c in truth_scenes if a <= t < b), None)
        ok += truth is not None and captions.get(t, "").strip() == truth
    return ok, len(frame_ms)


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
