"""A task's unit (onepass.json ``units``): the whole window, each kept frame alone, or each speech
region alone. Unit requests are what the runner is asked, and records come back in source time."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from onepass.model.analyse import SPEECH_PAD_MS, TaskSet, analyse, frame_windows, speech_windows
from onepass.model.load import load_backbone
from onepass.model.meta import model_units
from onepass.model.runner import Runner, Window
from onepass.model.speakers import N_SPECTRAL
from onepass.operators.audio import frame_audio, speech_spans
from onepass.operators.patchify import patchify
from onepass.operators.spans import Span
from synth import espeak


def _window(start_ms: int = 20_000) -> Window:
    rng = np.random.default_rng(0)
    gap = np.zeros(16 * 900, np.float32)
    wave = np.concatenate([np.zeros(16 * 700, np.float32), espeak("check valve seven"), gap,
                           espeak("pressure is forty two psi", "en-gb+f4", 75), np.zeros(16 * 600, np.float32)])
    audio, _ = frame_audio(wave)
    width = 40 * audio.shape[0]
    stamps = tuple(start_ms + k * 1000 for k in range(3))
    patches = tuple(patchify(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), 70, video=True) for _ in stamps)
    return Window("clip", Span(start_ms, start_ms + width), stamps, patches, audio, start_ms)


def test_speech_units_are_the_regions_with_bounded_context():
    w = _window()
    regions = speech_spans(w.audio, w.audio_start_ms)
    units = speech_windows(w)
    assert len(regions) == len(units) == 2
    for r, u in zip(regions, units):
        assert not u.has_video and u.audio_start_ms == u.span.start_ms
        assert u.span.start_ms <= r.start_ms and r.end_ms <= u.span.end_ms  # the whole region
        assert r.start_ms - u.span.start_ms <= SPEECH_PAD_MS + 40 and u.span.end_ms - r.end_ms <= SPEECH_PAD_MS + 40
        a = (u.span.start_ms - w.audio_start_ms) // 40
        np.testing.assert_array_equal(u.audio, w.audio[a : a + u.audio.shape[0]])  # the window's own frames
        assert u.audio.shape[0] * 40 == u.span.duration_ms
    assert units[0].span.end_ms <= units[1].span.start_ms  # context never reaches into the next region


def test_frame_units_are_one_frame_each_spanning_to_the_next():
    w = _window()
    units = frame_windows(w)
    assert [u.frame_ms for u in units] == [(t,) for t in w.frame_ms]
    assert [u.span for u in units] == [Span(20_000, 21_000), Span(21_000, 22_000), Span(22_000, w.span.end_ms)]
    assert all(u.patches[0] is p and not u.has_audio for u, p in zip(units, w.patches))


@pytest.mark.parametrize("units,diarization", [(None, False), ({"captions": "frame", "transcript": "speech"}, False),
                                               ({"captions": "frame", "transcript": "speech"}, True)])
def test_the_runner_is_asked_per_unit_and_records_land_in_source_time(tiny_model, tmp_path, units, diarization):
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    if units:
        (model / "onepass.json").write_text(json.dumps({"units": units}))
    runner = Runner(load_backbone(model, device="cpu"), max_new_tokens=12)
    calls = []
    generate = runner.generate

    def spy(windows, tasks, capture_audio=False):
        calls.append(([(w.span, w.has_video, w.has_audio) for w in windows], list(tasks), capture_audio))
        return generate(windows, tasks, capture_audio=capture_audio)

    runner.generate = spy
    w = _window()
    [res] = analyse(runner, [w], TaskSet(captions=True, transcript=True, diarization=diarization))
    if not units:
        assert calls == [([(w.span, True, True)], ["caption each frame with its time", "transcribe the speech with start and end times"], False)]
        return
    frames = [(u.span, True, False) for u in frame_windows(w)]
    speech = [(u.span, False, True) for u in speech_windows(w)]
    # no whole-window request: with diarization the speaker layer's states come from the speech units
    assert sorted(calls) == sorted([(frames, ["caption each frame with its time"], False),
                                    (speech, ["transcribe the speech with start and end times"], diarization)])
    assert {c.frame_ms for c in res.captions} <= set(w.frame_ms)
    for seg in res.segments:  # each within its region's unit, in source time
        assert any(s.start_ms <= seg.span.start_ms <= seg.span.end_ms <= s.end_ms for s, _, _ in speech)
    if diarization:
        regions = speech_spans(w.audio, w.audio_start_ms)
        assert [span for span, _ in res.speech] == regions  # both regions are under 4 s: one embedding each
        dim = runner.model.config.get_text_config().hidden_size
        for _, emb in res.speech:  # spectral block + the hidden states' mean and std, taken from the units
            assert emb.shape == (N_SPECTRAL + 2 * dim,) and np.isfinite(emb).all() and np.abs(emb[N_SPECTRAL:]).min() > 0


@pytest.mark.parametrize("text", ['{"units": ["frame"]}', '{"units": {"captions": "speech"}}', '{"units": {"ocr": "frame"}}'])
def test_bad_units_are_named(tmp_path, text):
    (tmp_path / "onepass.json").write_text(text)
    with pytest.raises(ValueError, match="onepass.json"):
        model_units(tmp_path)
    (tmp_path / "onepass.json").write_text('{"window_s": 10}')
    assert model_units(tmp_path) == {"captions": "window", "transcript": "window"}


def test_a_live_window_is_asked_per_unit_too(tiny_model, tmp_path):
    """A live window (frames already in a StreamSession's cache) gives the same captions and
    transcript as the same window analysed in one go: both ask the runner per unit."""
    from onepass.model.analyse import analyse_streamed
    from onepass.model.runner import StreamSession

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    (model / "onepass.json").write_text(json.dumps({"units": {"captions": "frame", "transcript": "speech"}}))
    runner = Runner(load_backbone(model, device="cpu"), max_new_tokens=12)
    w = _window()
    tasks = TaskSet(captions=True, transcript=True, diarization=True)
    [whole] = analyse(runner, [w], tasks)
    session = StreamSession(runner, w.span.start_ms, has_video=True, has_audio=True)
    for t, patches in zip(w.frame_ms, w.patches):
        session.add_frame(t, patches)
    live = analyse_streamed(runner, session, w, tasks)
    assert live.captions == whole.captions and live.segments == whole.segments
    assert [span for span, _ in live.speech] == [span for span, _ in whole.speech] == speech_spans(w.audio, w.audio_start_ms)


def test_a_region_across_a_window_edge_is_asked_whole_by_the_window_it_starts_in():
    """With audio context (files: pipeline.windows.CONTEXT_MS), a speech region that starts near a
    window's end is one unit of that window, running into the next window's audio; the next
    window, whose context before shows the region began earlier, does not ask it again."""
    wave = np.concatenate([np.zeros(16 * 2200, np.float32), espeak("replace the upper seal it shows corrosion"),
                           np.zeros(16 * 4000, np.float32)])
    full, _ = frame_audio(wave)
    edge = 75  # frames: the windows are [0, 3 s) and [3 s, 6 s)
    first = Window("c", Span(0, 3000), (), (), full[:edge], 0, full[:0], full[edge : edge + 125])
    second = Window("c", Span(3000, 6000), (), (), full[edge : 2 * edge], 3000, full[edge - 25 : edge], full[2 * edge : 2 * edge + 125])
    [region] = speech_spans(full, 0)
    assert region.start_ms < 3000 < region.end_ms  # the utterance crosses the edge
    [unit] = speech_windows(first)
    assert unit.span.start_ms <= region.start_ms and unit.span.end_ms >= region.end_ms > 3000
    np.testing.assert_array_equal(unit.audio, full[unit.span.start_ms // 40 : unit.span.end_ms // 40])
    assert speech_windows(second) == []
    # without context each window asks its own piece (the old behaviour, and a live window's)
    cut = [Window("c", w.span, (), (), w.audio, w.audio_start_ms) for w in (first, second)]
    assert [len(speech_windows(w)) for w in cut] == [1, 1]
    assert speech_windows(cut[0])[0].span.end_ms <= 3000
    # speaker regions follow the same rule: the first window owns the whole region
    from onepass.model.speakers import region_embeddings

    ctx = np.concatenate([first.audio, first.audio_after])
    owned = region_embeddings(ctx, np.zeros((ctx.shape[0], 4), np.float32), 0, own=Span(0, 3000))
    assert [s for s, _ in owned] == [region]
    assert region_embeddings(second.audio, np.zeros((75, 4), np.float32), 3000, own=Span(3000, 6000)) != []  # cut piece: its own start
    both = np.concatenate([second.audio_before, second.audio])
    assert region_embeddings(both, np.zeros((both.shape[0], 4), np.float32), 2000, own=Span(3000, 6000)) == []


def test_speech_regions_are_found_in_noise_less_than_30_db_under_the_speech():
    """Noise 25 dB under the loudest speech frame: every frame clears "30 dB under the loudest",
    so the noise floor (10th percentile level + 10 dB) must set the threshold; else the whole clip
    is one region (a held-out clip of the domain was one 58 s region, asked as one unit)."""
    rng = np.random.default_rng(3)
    a, b = espeak("check valve seven"), espeak("pressure is forty two psi", "en-gb+f4", 75)
    wave = np.concatenate([np.zeros(16 * 800, np.float32), a, np.zeros(16 * 1200, np.float32), b, np.zeros(16 * 900, np.float32)])
    frames, _ = frame_audio(wave)
    peak = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)).max()
    noisy, _ = frame_audio(wave + (peak * 10 ** (-25 / 20) * rng.standard_normal(wave.size)).astype(np.float32))
    clean = speech_spans(frames, 0)
    assert len(clean) == 2
    got = speech_spans(noisy, 0)
    assert len(got) == 2 and all(abs(g.start_ms - c.start_ms) <= 200 and abs(g.end_ms - c.end_ms) <= 300 for g, c in zip(got, clean))
    assert len(speech_spans(noisy, 0, noise_margin_db=-100)) == 1  # the loudest-frame rule alone: one region


def test_a_steady_sound_is_one_region():
    """A steady tone (no quieter frames to call a noise floor) stays one region: the noise-floor
    threshold never asks for more than 6 dB under the loudest frame."""
    t = np.arange(16 * 3000) / 16000
    tone = np.concatenate([np.zeros(16 * 500), 0.1 * np.sin(2 * np.pi * 220 * t)]).astype(np.float32)
    frames, _ = frame_audio(tone)
    [region] = speech_spans(frames, 0)
    assert region.start_ms <= 560 and region.end_ms >= 3440
    constant, _ = frame_audio((0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    assert [s.duration_ms for s in speech_spans(constant, 0)] == [3000]


_QUESTIONS = {"findings": {"text": "which components show a condition", "unit": "speech"},
              "shapes": {"text": "which shapes are visible", "unit": "frame"}}


@pytest.mark.parametrize("live", [False, True])
def test_documented_questions_are_asked_per_unit_and_others_are_marked_unsupported(tiny_model, tmp_path, live):
    """A checkpoint's onepass.json ``questions``: a question in its set (in any case or punctuation,
    or by key) is asked in the set's wording of each of its units; one outside the set is not
    asked at all and comes back as one row per window, supported = False, text UNSUPPORTED.
    Every generated row carries its text's confidence."""
    from onepass.model.analyse import analyse_streamed
    from onepass.model.runner import StreamSession
    from onepass.model.tasks import UNSUPPORTED

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    (model / "onepass.json").write_text(json.dumps({"units": {"captions": "frame", "transcript": "speech"}, "questions": _QUESTIONS}))
    runner = Runner(load_backbone(model, device="cpu"), max_new_tokens=6)
    calls = []
    generate = runner.generate

    def spy(windows, tasks, capture_audio=False):
        calls.append(([(w.span, w.has_video, w.has_audio) for w in windows], list(tasks)))
        return generate(windows, tasks, capture_audio=capture_audio)

    runner.generate = spy
    w = _window()
    tasks = TaskSet(captions=True, transcript=True, diarization=False,
                    questions=("Which components show a condition?", "shapes", "list visible defects"))
    if live:
        session = StreamSession(runner, w.span.start_ms, has_video=True, has_audio=True)
        for t, patches in zip(w.frame_ms, w.patches):
            session.add_frame(t, patches)
        res = analyse_streamed(runner, session, w, tasks)
    else:
        [res] = analyse(runner, [w], tasks)
    frames = [(u.span, True, False) for u in frame_windows(w)]
    speech = [(u.span, False, True) for u in speech_windows(w)]
    asked = [c for c in calls if c[0] in (frames, speech)]
    assert sorted(asked) == sorted([(frames, ["caption each frame with its time", "which shapes are visible"]),
                                    (speech, ["transcribe the speech with start and end times", "which components show a condition"])])
    assert not any("list visible defects" in t for c in calls for t in c[1])  # never asked
    odd = [a for a in res.answers if not a.supported]
    assert [(a.question, a.text, a.span, a.confidence) for a in odd] == [("list visible defects", UNSUPPORTED, w.span, None)]
    by_q = {}
    for a in res.answers:
        by_q.setdefault(a.question, []).append(a)
    # a row per unit that answered (the random tiny model may say nothing for one)
    assert {a.span for a in by_q.get("which shapes are visible", [])} <= {s for s, _, _ in frames}
    assert {a.span for a in by_q.get("which components show a condition", [])} <= {s for s, _, _ in speech}
    rows = [*res.captions, *res.segments, *[a for a in res.answers if a.supported]]
    assert rows and all(r.confidence is not None and -100 < r.confidence < 0 for r in rows)


def test_confidence_is_the_mean_log_probability_of_the_chosen_tokens(tiny_model):
    """Recomputed from a fresh prefill, one chosen token at a time: the mean over the chosen tokens
    and the stop token that ended the text (Whisper's avg_logprob)."""
    import dataclasses

    import torch

    runner = Runner(load_backbone(tiny_model, device="cpu"), max_new_tokens=6)
    w = _window()
    prompt = "transcribe the speech with start and end times"
    suffix = runner.prompts.suffix(prompt, w.has_video, w.has_audio)

    def scored():
        batch = runner.prefill([w])
        return runner.greedy_scored(batch, runner.append_text(batch, suffix))

    runner.bb = dataclasses.replace(runner.bb, stop_ids=())
    (free,), _ = scored()
    k = next(i for i in range(1, len(free)) if free[i] not in free[:i])  # a token first chosen at step k
    runner.bb = dataclasses.replace(runner.bb, stop_ids=(free[k],))  # ... now ends the text there
    (ids,), (conf,) = scored()
    assert ids == free[:k]
    fresh = runner.prefill([w])
    logits = [runner.append_text(fresh, suffix)]
    for tok in ids:
        logits.append(runner.decode_one_token(torch.tensor([tok]), fresh))
    logp = [float(l[0].float().log_softmax(-1)[t]) for l, t in zip(logits, free[: k + 1])]  # k tokens and the stop
    assert conf == pytest.approx(sum(logp) / len(logp), abs=1e-3)
