"""Windows in, typed records out: prompts -> runner -> parsers -> speaker regions.

A task's *unit* (the checkpoint's ``onepass.json``, :func:`onepass.model.meta.model_units`) says
what one request covers: the whole window (real Gemma 4 weights), each kept frame alone
(captions) or each speech region alone (transcripts). Unit requests are small windows of their
own (:func:`frame_windows`, :func:`speech_windows`), batched through the same runner and parsed
by the same parsers; their times come back relative to the unit, hence absolute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from onepass.operators.audio import FRAME_MS, speech_spans
from onepass.operators.spans import Span

from dataclasses import replace

from .meta import match_question
from .records import Answer, Caption, Segment, Window, WindowResult
from .speakers import region_embeddings
from .tasks import UNSUPPORTED, Prompts, TaskSet, make_answer, parse_captions, parse_transcript

if TYPE_CHECKING:  # the runner imports torch; analyse() with no task to run must not need it
    from .runner import Runner, StreamSession

__all__ = ["TaskSet", "analyse", "analyse_streamed", "frame_windows", "speech_windows"]

UNIT_BATCH = 32  # unit requests (frames, speech regions) prefilled together
SPEECH_PAD_MS = 400  # audio kept around a speech region (at most half the gap to its neighbours)


def frame_windows(w: Window) -> list[Window]:
    """One window per kept frame, that frame alone (stamp 00:00), spanning to the next kept frame."""
    out = []
    for k, (t, patches) in enumerate(zip(w.frame_ms, w.patches)):
        end = w.frame_ms[k + 1] if k + 1 < len(w.frame_ms) else max(w.span.end_ms, t + 1)
        out.append(Window(w.source_id, Span(t, end), (t,), (patches,), w.audio[:0], t))
    return out


def _with_context(w: Window) -> tuple[np.ndarray, int, Span]:
    """The window's audio frames with their context (before, own, after), the first one's time, and
    the span of the window's own audio."""
    before, after = w.audio_before, w.audio_after
    full = np.concatenate([before, w.audio, after]) if before.shape[0] or after.shape[0] else w.audio
    own = Span(w.audio_start_ms, w.audio_start_ms + w.audio.shape[0] * FRAME_MS)
    return full, w.audio_start_ms - before.shape[0] * FRAME_MS, own


def speech_windows(w: Window, pad_ms: int = SPEECH_PAD_MS) -> list[Window]:
    """One audio-only window per speech region that starts in ``w`` (the regions speaker turns use),
    with up to ``pad_ms`` of audio either side but never past half the gap to a neighbouring region.

    With audio context around ``w`` (Window.audio_before / audio_after), regions are found over
    context and window together: a region that runs past the window's end is asked whole, with
    the next window's audio, and the next window leaves it alone (it began before that window)."""
    full, origin, own = _with_context(w)
    spans = speech_spans(full, origin)
    out = []
    for i, s in enumerate(spans):
        if not own.start_ms <= s.start_ms < own.end_ms:
            continue
        lo, hi = s.start_ms - pad_ms, s.end_ms + pad_ms
        if i:
            lo = max(lo, (spans[i - 1].end_ms + s.start_ms) // 2)
        if i + 1 < len(spans):
            hi = min(hi, (s.end_ms + spans[i + 1].start_ms) // 2)
        a = max(0, (lo - origin) // FRAME_MS)
        b = min(full.shape[0], -(-(hi - origin) // FRAME_MS))
        start = origin + a * FRAME_MS
        out.append(Window(w.source_id, Span(start, origin + b * FRAME_MS), (), (), full[a:b], start))
    return out


def _by_unit(runner: Runner, windows: list[Window], unit: str, jobs: list[tuple[str, str]], capture: bool = False):
    """Ask every unit (``frame`` or ``speech``) of every window the prompts of ``jobs`` [(kind, prompt)].

    Returns, per window, the parsed records by kind and (``capture``) the speaker layer's hidden
    states over the window's audio frames with their context (before, own, after), filled in
    from the units' own prefills (frames outside every unit stay zero: they lie outside every
    speech region the window owns, where no speaker embedding looks)."""
    cut = frame_windows if unit == "frame" else speech_windows
    units = [(i, u) for i, w in enumerate(windows) for u in cut(w)]
    records: list[dict[str, list]] = [{kind: [] for kind, _ in jobs} for _ in windows]
    hidden: list[np.ndarray | None] = [None] * len(windows)
    for b in range(0, len(units), UNIT_BATCH):
        chunk = units[b : b + UNIT_BATCH]
        texts, batch = runner.generate([u for _, u in chunk], [p for _, p in jobs], capture_audio=capture)
        for j, ((i, u), unit_texts) in enumerate(zip(chunk, texts)):
            w = windows[i]
            if capture:  # the unit's states, on the frames of the window's audio with its context
                h = batch.audio_hidden[j]
                n_full = w.audio_before.shape[0] + w.audio.shape[0] + w.audio_after.shape[0]
                if hidden[i] is None:
                    hidden[i] = np.zeros((n_full, h.shape[1]), np.float32)
                a = (u.audio_start_ms - w.audio_start_ms) // FRAME_MS + w.audio_before.shape[0]
                hidden[i][a : a + h.shape[0]] = h
            # a speech unit keeps its own span (it may run into the next window's audio); a frame's
            # ends at the window's end
            span = u.span if unit == "speech" else Span(u.span.start_ms, min(u.span.end_ms, w.span.end_ms))
            if span.duration_ms <= 0:
                continue
            for (kind, prompt), text, conf in zip(jobs, unit_texts, batch.confidence[j]):
                records[i][kind] += _parse(kind, prompt, text, conf, list(u.frame_ms), span)
    return records, hidden


def _parse(kind: str, prompt: str, text: str, confidence: float | None, frame_ms: list[int], span: Span) -> list:
    """The records of one generated text, each carrying the text's confidence."""
    if kind == "captions":
        return [replace(c, confidence=confidence) for c in parse_captions(text, frame_ms, span)]
    if kind == "transcript":
        return [replace(s, confidence=confidence) for s in parse_transcript(text, span)]
    return make_answer(text, prompt, span, confidence)


def _units(runner) -> dict[str, str]:
    return (getattr(getattr(runner, "bb", None), "units", None) or {}) if runner is not None else {}


def _questions(runner) -> dict | None:
    return getattr(getattr(runner, "bb", None), "questions", None) if runner is not None else None


def _job_units(runner, jobs: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Jobs by what one request of each covers (``window``, ``frame``, ``speech``): a task's unit
    is the checkpoint's ``units``; a documented question's is its own ``unit``."""
    units, questions = _units(runner), _questions(runner) or {}
    by_text = {q["text"]: q["unit"] for q in questions.values()}
    out: dict[str, list[tuple[str, str]]] = {"window": [], "frame": [], "speech": []}
    for kind, prompt in jobs:
        out[by_text.get(prompt, "window") if kind == "ask" else units.get(kind, "window")].append((kind, prompt))
    return out


def _prompts_for(w: Window, tasks: TaskSet, prompts: Prompts, runner=None) -> list[tuple[str, str]]:
    """(kind, prompt) of every request the window gets; a question the checkpoint does not answer
    (not in its documented set) gets none: it is answered as unsupported (:func:`_unsupported`)."""
    out = []
    if tasks.captions and w.has_video:
        out.append(("captions", prompts.caption))
    if tasks.transcript and w.has_audio:
        out.append(("transcript", prompts.transcript))
    questions = _questions(runner)
    for q in tasks.questions:
        key = match_question(questions, q)
        if key is not None:
            out.append(("ask", questions[key]["text"] if questions is not None else q))
    return out


def _unsupported(runner, w: Window, tasks: TaskSet) -> list[Answer]:
    questions = _questions(runner)
    return [Answer(span=w.span, question=q, text=UNSUPPORTED, supported=False)
            for q in tasks.questions if match_question(questions, q) is None]


def analyse(runner: Runner, windows: list[Window], tasks: TaskSet, prompts: Prompts = Prompts()) -> list[WindowResult]:
    """Run every task on every window; windows of the same shape (video/audio present) share a batch."""
    results: dict[int, WindowResult] = {}
    groups: dict[tuple[bool, bool], list[int]] = {}
    for i, w in enumerate(windows):
        groups.setdefault((w.has_video, w.has_audio), []).append(i)
    units = _units(runner)
    for idx in groups.values():
        group = [windows[i] for i in idx]
        jobs = _prompts_for(group[0], tasks, prompts, runner)
        want_speech = tasks.diarization and group[0].has_audio
        if not jobs and not want_speech:
            for i in idx:
                results[i] = WindowResult(source_id=windows[i].source_id, span=windows[i].span,
                                          answers=tuple(_unsupported(runner, windows[i], tasks)))
            continue
        split = _job_units(runner, jobs)
        by_frame, by_speech, whole = split["frame"], split["speech"], split["window"]
        # speech units carry the speaker layer's states when transcripts are asked per region
        speech_units = units.get("transcript") == "speech" and group[0].has_audio and (bool(by_speech) or want_speech)
        given: list[dict[str, list]] = [{} for _ in group]
        hidden: list = [None] * len(group)
        if by_frame:
            recs, _ = _by_unit(runner, group, "frame", by_frame)
            _merge(given, recs)
        if speech_units or (by_speech and group[0].has_audio):
            recs, unit_hidden = _by_unit(runner, group, "speech", by_speech, capture=want_speech and speech_units)
            _merge(given, recs)
            if speech_units:
                hidden = unit_hidden
        window_capture = want_speech and not speech_units
        confidence: list[list[float]] = [[] for _ in group]
        if whole or window_capture:
            texts, batch = runner.generate(group, [p for _, p in whole], capture_audio=window_capture)
            confidence = batch.confidence
            if window_capture:
                hidden = batch.audio_hidden
        else:
            texts = [[] for _ in group]
        for k, (i, w) in enumerate(zip(idx, group)):
            speech = None
            if want_speech and speech_units:  # the regions the window owns, whole, from its units' states
                h = hidden[k]
                if h is None:  # no speech unit in this window: no region either
                    h = np.zeros((1, runner.model.config.get_text_config().hidden_size), np.float32)
                speech = _owned_regions(w, h)
            results[i] = _result(w, whole, texts[k], hidden[k] if want_speech and not speech_units else None, given[k], speech,
                                 confidence[k], _unsupported(runner, w, tasks))
    return [results[i] for i in range(len(windows))]


def _merge(given: list[dict[str, list]], recs: list[dict[str, list]]) -> None:
    for g, r in zip(given, recs):
        for kind, rows in r.items():
            g.setdefault(kind, []).extend(rows)


def _owned_regions(w: Window, hidden: np.ndarray) -> list:
    """Speaker regions of a window asked per speech unit: those that start in the window, whole."""
    full, origin, own = _with_context(w)
    if hidden.shape[0] != full.shape[0]:
        hidden = np.zeros((full.shape[0], hidden.shape[1]), np.float32)
    return region_embeddings(full, hidden, origin, own=own)


def _result(w: Window, jobs: list[tuple[str, str]], texts: list[str], audio_hidden, given: dict | None = None,
            speech: list | None = None, confidence: list[float] | None = None, unsupported: list[Answer] = ()) -> WindowResult:
    """``given``: records already parsed per unit, by task kind ("captions", "transcript", "ask");
    ``speech``: speaker regions already made (else from ``audio_hidden``, the window's own);
    ``confidence``: of each of ``texts``; ``unsupported``: answer rows of questions not asked."""
    given = given or {}
    captions: list[Caption] = list(given.get("captions", []))
    segments: list[Segment] = list(given.get("transcript", []))
    answers: list[Answer] = list(given.get("ask", []))
    confidence = confidence or [None] * len(texts)
    for (kind, prompt), text, conf in zip(jobs, texts, confidence):
        records = _parse(kind, prompt, text, conf, list(w.frame_ms), w.span)
        if kind == "captions":
            captions = records
        elif kind == "transcript":
            segments = records
        else:
            answers += records
    answers += unsupported
    if speech is None:
        speech = region_embeddings(w.audio, audio_hidden, w.audio_start_ms) if audio_hidden is not None else []
    return WindowResult(
        source_id=w.source_id, span=w.span, captions=tuple(captions), segments=tuple(segments),
        answers=tuple(answers), speech=tuple(speech),
    )


def analyse_streamed(runner: Runner, session: StreamSession | None, w: Window, tasks: TaskSet,
                     prompts: Prompts = Prompts()) -> WindowResult:
    """Finish a live window whose frames are already in ``session``'s cache: its audio goes in
    after the last frame (the one-shot layout), then every task decodes from that cache."""
    from .runner import StreamSession

    session = session or StreamSession(runner, w.span.start_ms, has_video=False, has_audio=w.has_audio)
    want_speech = tasks.diarization and w.has_audio
    session.add_audio(w.audio, capture=want_speech)
    jobs = _prompts_for(w, tasks, prompts, runner)
    split = _job_units(runner, jobs)
    whole = split["window"]
    texts = session.finish([p for _, p in whole])
    hidden = np.concatenate(session.audio_hidden) if want_speech and session.audio_hidden else None
    given: dict[str, list] = {}
    for unit in ("frame", "speech"):
        if split[unit]:
            for kind, recs in _by_unit(runner, [w], unit, split[unit])[0][0].items():
                given.setdefault(kind, []).extend(recs)
    return _result(w, whole, texts, hidden, given, None, session.confidence, _unsupported(runner, w, tasks))
