"""Windows in, typed records out: prompts -> runner -> parsers -> speaker regions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .records import Window, WindowResult
from .speakers import region_embeddings
from .tasks import Prompts, TaskSet, make_answer, parse_captions, parse_transcript

if TYPE_CHECKING:  # the runner imports torch; analyse() with no task to run must not need it
    from .runner import Runner, StreamSession

__all__ = ["TaskSet", "analyse", "analyse_streamed"]


def _prompts_for(w: Window, tasks: TaskSet, prompts: Prompts) -> list[tuple[str, str]]:
    out = []
    if tasks.captions and w.has_video:
        out.append(("captions", prompts.caption))
    if tasks.transcript and w.has_audio:
        out.append(("transcript", prompts.transcript))
    out += [("ask", q) for q in tasks.questions]
    return out


def analyse(runner: Runner, windows: list[Window], tasks: TaskSet, prompts: Prompts = Prompts()) -> list[WindowResult]:
    """Run every task on every window; windows of the same shape (video/audio present) share a batch."""
    results: dict[int, WindowResult] = {}
    groups: dict[tuple[bool, bool], list[int]] = {}
    for i, w in enumerate(windows):
        groups.setdefault((w.has_video, w.has_audio), []).append(i)
    for idx in groups.values():
        group = [windows[i] for i in idx]
        jobs = _prompts_for(group[0], tasks, prompts)
        want_speech = tasks.diarization and group[0].has_audio
        if not jobs and not want_speech:
            for i in idx:
                results[i] = WindowResult(source_id=windows[i].source_id, span=windows[i].span)
            continue
        texts, batch = runner.generate(group, [p for _, p in jobs], capture_audio=want_speech)
        for k, (i, w) in enumerate(zip(idx, group)):
            results[i] = _result(w, jobs, texts[k], batch.audio_hidden[k] if want_speech else None)
    return [results[i] for i in range(len(windows))]


def _result(w: Window, jobs: list[tuple[str, str]], texts: list[str], audio_hidden) -> WindowResult:
    captions, segments, answers = [], [], []
    for (kind, prompt), text in zip(jobs, texts):
        if kind == "captions":
            captions = parse_captions(text, list(w.frame_ms), w.span)
        elif kind == "transcript":
            segments = parse_transcript(text, w.span)
        else:
            answers += make_answer(text, prompt, w.span)
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
    jobs = _prompts_for(w, tasks, prompts)
    texts = session.finish([p for _, p in jobs])
    hidden = np.concatenate(session.audio_hidden) if want_speech and session.audio_hidden else None
    return _result(w, jobs, texts, hidden)
