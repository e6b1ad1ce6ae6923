"""The default model's domain generator, training recipe (smoke) and measures."""

import json

import numpy as np
import pytest

from onepass.model import domain, metrics
from onepass.model.tasks import parse_captions, parse_transcript
from onepass.operators.spans import Span


def test_sentences_stay_in_the_domain_vocabulary(fixtures_dir):
    vocab = set((fixtures_dir.parent / "docs" / "vocabulary.txt").read_text().split())
    rng = np.random.default_rng(0)
    words = {w for _ in range(3000) for w in domain.sentence(rng).split()}
    assert words <= vocab and len(words) > 100


def test_scenes_follow_the_rules():
    rng = np.random.default_rng(1)
    for _ in range(300):
        scene = domain.random_scene(rng)
        for s in scene.shapes:
            assert 0 <= s.x0 and s.x0 + s.size <= 640 and 0 <= s.y0 and s.y0 + s.size <= 360
        if len(scene.shapes) == 2:
            a, b = scene.shapes
            if "left of" in scene.caption:
                assert b.x0 - (a.x0 + a.size) >= 20 and a.y0 < b.y0 + b.size and b.y0 < a.y0 + a.size
            else:
                assert "above" in scene.caption
                assert b.y0 - (a.y0 + a.size) >= 20 and a.x0 < b.x0 + b.size and b.x0 < a.x0 + a.size
    img = domain.render(domain.random_scene(rng))
    assert img.shape == (360, 640, 3) and img.dtype == np.uint8


def test_timeline_truth_matches_its_audio():
    rng = np.random.default_rng(2)
    tl = domain.random_timeline(rng, 25)
    assert tl.audio.size == 25 * 16000 and tl.utterances
    for u in tl.utterances:
        seg = tl.audio[u.start_ms * 16 : u.end_ms * 16]
        gap = tl.audio[max(0, u.start_ms - 250) * 16 : max(0, u.start_ms - 150) * 16]
        assert np.sqrt(np.mean(seg**2)) > 3 * (np.sqrt(np.mean(gap**2)) if gap.size else 0)
        assert 1000 <= u.end_ms - u.start_ms <= 7500
    same_seed = domain.random_timeline(np.random.default_rng(2), 25)
    assert [u.text for u in same_seed.utterances] == [u.text for u in tl.utterances]


def test_clip_has_h264_aac_and_truth(tmp_path):
    from onepass.operators.decode import MediaReader

    rng = np.random.default_rng(3)
    path = domain.write_clip(tmp_path / "c.mp4", domain.random_timeline(rng, 6), rng)
    truth = json.loads(path.with_suffix(".json").read_text())
    with MediaReader(path) as media:
        assert (media.info.video_codec, media.info.audio_codec) == ("h264", "aac")
        assert abs(media.info.duration_ms - 6000) < 200
    assert truth["scenes"][0]["start_ms"] == 0 and truth["duration_ms"] == 6000


def test_training_targets_parse_back_to_the_truth():
    from onepass.model.prompt import PromptBuilder
    from onepass.model.train import build_config, build_tokenizer, make_sample, _Shim
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        tok = build_tokenizer(Path(d))
        cfg = build_config(tok, hidden=64, layers=2, heads=2, intermediate=128)
        builder = PromptBuilder(_Shim(tok, (Path(d) / "chat_template.jinja").read_text(), cfg))
        rng = np.random.default_rng(4)
        for task in ("captions", "transcript"):
            s = make_sample(rng, builder, task=task, window_s=(8, 8))
            assert (s["types"] == 2).sum() == 8 * 66 and (s["types"] == 3).sum() == 200
            decoded = tok.decode(s["labels"][s["labels"] >= 0], skip_special_tokens=True)
            assert "<unk>" not in tok.decode(s["ids"])
            window = Span(0, 8000)
            if task == "captions":
                caps = parse_captions(decoded, s["stamps"], window)
                assert [c.text for c in caps] == [c for _, c in s["scenes"]]
            else:
                segs = parse_transcript(decoded, window)
                assert " ".join(x.text for x in segs) == " ".join(line.split(" ", 2)[2] for line in s["target"].splitlines())


def test_training_runs_resumes_and_exports_a_loadable_checkpoint(tmp_path):
    from onepass.model.load import load_backbone
    from onepass.model.train import main

    args = ["--out", str(tmp_path), "--device", "cpu", "--batch", "1", "--workers", "0", "--hidden", "64",
            "--layers", "2", "--window-s", "3", "4", "--minutes", "5"]
    assert main(args + ["--max-steps", "2"]) == 0
    state = json.loads((tmp_path / "ckpt" / "state.json").read_text())
    assert state["step"] == 2
    assert main(args + ["--max-steps", "3"]) == 0  # resumes from step 2
    assert json.loads((tmp_path / "ckpt" / "state.json").read_text())["step"] == 3
    assert any(json.loads(l)["step"] == 1 for l in (tmp_path / "log.jsonl").read_text().splitlines())
    bb = load_backbone(tmp_path / "export", device="cpu")
    assert bb.config.text_config.hidden_size == 64 and len(bb.stop_ids) == 2


def test_wer_der_and_boundaries():
    assert metrics.wer("valve number seven", "valve number eleven seven") == (1, 3)
    assert metrics.wer("a b c", "") == (3, 3)
    ref = [(0, 4000, "A"), (5000, 9000, "B")]
    assert metrics.der(ref, [(0, 4000, "x"), (5000, 9000, "y")]) [0] == pytest.approx(0)
    err, total = metrics.der(ref, [(0, 9000, "x")])
    # scored (outside +-0.25 s of each reference boundary): A 0.25-3.75 s, B 5.25-8.75 s = 7 s;
    # errors: B confused (3.5 s) + false alarm in the scored part of the gap 4.25-4.75 s (0.5 s)
    assert total == pytest.approx(7.0, abs=0.02) and err == pytest.approx(4.0, abs=0.02)
    assert metrics.der(ref, [])[0] / metrics.der(ref, [])[1] == pytest.approx(1)
    assert metrics.boundary_errors([(1000, 3000)], [(1200, 2900), (5000, 6000)]) == [200, 100]
    assert metrics.caption_exact([(0, 3000, "a small red circle")], {0: "a small red circle", 1000: "x"}, [0, 1000, 2000]) == (1, 3)
