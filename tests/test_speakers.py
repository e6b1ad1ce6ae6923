"""Speaker ids are the same person across windows: two voices alternating over six windows."""

import numpy as np

from onepass.model.analyse import TaskSet, analyse
from onepass.model.load import load_backbone
from onepass.model.records import Segment
from onepass.model.runner import Runner, Window
from onepass.model.speakers import assign_speakers, cluster, label_segments
from onepass.operators.audio import frame_audio
from onepass.operators.spans import Span
from synth import espeak

SENTENCES = [
    "valve number seven shows corrosion",
    "pressure is forty two psi at the inlet pump",
    "tighten the loose flange",
    "reading eighty five percent on tank three",
    "replace bearing twelve priority high",
    "check the upper seal for a leak",
]
VOICES = [("en-us+m3", 35, 160), ("en-gb+f4", 75, 170)]


def test_two_voices_alternating_across_windows_keep_their_ids(tiny_model):
    runner = Runner(load_backbone(tiny_model, device="cpu"))
    windows, truth = [], []
    for k, text in enumerate(SENTENCES):
        voice = k % 2
        wave = np.concatenate([np.zeros(4000, np.float32), espeak(text, *VOICES[voice]), np.zeros(8000, np.float32)])
        frames, _ = frame_audio(wave)
        start = k * 10_000
        windows.append(Window("clip", Span(start, start + 40 * len(frames)), (), (), frames, start))
        truth.append(voice)
    results = analyse(runner, windows, TaskSet(captions=False, transcript=False, diarization=True))
    regions = [r for res in results for r in res.speech]
    assert len(regions) >= len(SENTENCES)
    turns = assign_speakers(regions)
    # every turn lies in one window; map each to that window's true voice
    got = [t.speaker for t in turns]
    want = [truth[t.span.start_ms // 10_000] for t in turns]
    mapping = {}
    for g, w in zip(got, want):
        mapping.setdefault(g, w)
    assert [mapping[g] for g in got] == want
    assert len(set(got)) == 2


def test_cluster_finds_planted_groups_and_labels_by_first_appearance():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 96)) * 3
    order = [2, 0, 2, 1, 0, 1, 2, 0]
    x = np.stack([centers[c] + rng.normal(size=96) * 0.3 for c in order])
    labels = cluster(x)
    assert labels.tolist() == [0, 1, 0, 2, 1, 2, 0, 1]
    assert cluster(x, num_speakers=2).max() == 1


def test_segments_take_the_speaker_they_overlap_most():
    from onepass.model.records import SpeakerTurn

    turns = [SpeakerTurn(Span(0, 2000), "S1"), SpeakerTurn(Span(2000, 5000), "S2")]
    segs = label_segments([Segment(Span(500, 2600), "a"), Segment(Span(1500, 4000), "b"), Segment(Span(6000, 7000), "c")], turns)
    assert [s.speaker for s in segs] == ["S1", "S2", None]


def test_a_checkpoint_can_weigh_its_own_hidden_states(tmp_path):
    """onepass.json ``speakers`` reaches the clustering the commit runs: two voices whose spectra lie
    0.5 apart (under the spectral-only stop, 0.6) and whose backbone blocks differ; only with the
    backbone block weighted (0.5, stop 0.7: (0.5 + 0.5) / 1.25 = 0.8 between them) are they two."""
    import json

    import pytest

    from onepass.model.meta import model_speakers
    from onepass.model.speakers import N_SPECTRAL, _spectral_reference
    from onepass.pipeline.commit import Committer
    from onepass.pipeline.config import RunConfig

    rng = np.random.default_rng(1)
    mean, std = _spectral_reference()
    a, b = np.linalg.qr(rng.normal(size=(N_SPECTRAL, 2)))[0].T
    voices = [mean + 5 * std * a, mean + 5 * std * (0.5 * a + 0.75 ** 0.5 * b)]  # cosine distance 0.5
    groups = rng.normal(size=(2, 32)) * 3
    regions = []
    for k in range(10):
        spec = voices[k % 2] + std * rng.normal(size=N_SPECTRAL) * 0.05
        hidden = groups[k % 2] + rng.normal(size=32) * 0.3
        regions.append((Span(k * 2000, k * 2000 + 1500), np.concatenate([spec, hidden]).astype(np.float32)))
    assert {t.speaker for t in assign_speakers(regions)} == {"S1"}
    weighted = assign_speakers(regions, backbone_weight=0.5, threshold=0.7)
    assert [t.speaker for t in weighted] == ["S1", "S2"] * 5

    model = tmp_path / "m"
    model.mkdir()
    assert model_speakers(model) == {}  # real Gemma weights: spectral only
    (model / "onepass.json").write_text(json.dumps({"window_s": 30, "speakers": {"backbone_weight": 0.5, "threshold": 0.7}}))
    committer = Committer(RunConfig(output=tmp_path / "out", model=model), None, None)
    assert committer.speakers == {"backbone_weight": 0.5, "threshold": 0.7}
    for bad in ('{"speakers": {"weight": 1}}', '{"speakers": {"threshold": "a"}}', '{"speakers": [0.5]}'):
        (model / "onepass.json").write_text(bad)
        with pytest.raises(ValueError, match="onepass.json"):
            model_speakers(model)
