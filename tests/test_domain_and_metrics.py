"""The default model's domain generator, training items and recipe, and measures."""

import json

import numpy as np
import pytest

from onepass.model.training import domain, metrics
from onepass.model.tasks import parse_captions, parse_transcript
from onepass.operators.spans import Span


def test_sentences_stay_in_the_domain_vocabulary(fixtures_dir):
    vocab = set((fixtures_dir / "vocabulary.txt").read_text().split())  # the domain spec's word list
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


def _builder(tmp):
    from onepass.model.training.recipe import make_builder
    from onepass.model.training.build import build_config, build_tokenizer

    tok = build_tokenizer(tmp)
    build_config(tok, hidden=64, layers=2, heads=2, intermediate=128).save_pretrained(tmp)
    return (*make_builder(tmp), tok)


def test_training_items_parse_back_to_the_truth(tmp_path):
    from onepass.model.training import samples as S

    builder, vocab, tok = _builder(tmp_path)
    rng = np.random.default_rng(4)
    for task in ("captions", "transcript"):
        s = S.window_item(rng, builder, vocab, 8, task=task)
        assert (s["types"] == 2).sum() == 8 * 66 and (s["types"] == 3).sum() == 200
        assert s["cells"].shape == (8 * 66, 3) and s["audio_time"].shape == (200, 2)
        decoded = tok.decode(s["labels"][s["labels"] >= 0], skip_special_tokens=True)
        assert "<unk>" not in tok.decode(s["ids"])
        window = Span(0, 8000)
        if task == "captions":
            caps = parse_captions(decoded, s["stamps"], window)
            assert [c.text for c in caps] == [s["frame_captions"][t] for t in s["stamps"]]
        else:
            segs = parse_transcript(decoded, window)
            assert " ".join(x.text for x in segs) == " ".join(line.split(" ", 2)[2] for line in s["target"].splitlines())
    u = S.utterance_item(rng, builder, vocab, kind="trained", task="transcript")
    seg = parse_transcript(u["target"], Span(0, 60_000))[0]
    assert tok.decode(u["ctc"]) == seg.text  # CTC target = the spoken words
    # the words' audio lies inside the stated span: energy inside, silence before it
    wave = u["audio"].reshape(-1)
    inside = wave[seg.span.start_ms * 16 : seg.span.end_ms * 16]
    before = wave[: max(0, seg.span.start_ms - 60) * 16]
    assert np.sqrt(np.mean(inside**2)) > 5 * (np.sqrt(np.mean(before**2)) if before.size else 0)
    # second / tenth labels of the audio frames
    assert tok.convert_ids_to_tokens(u["audio_time"][26].tolist()) == ["01", "0"]  # frame 26 starts at 1040 ms


def test_cell_labels_name_the_shape_under_each_cell(tmp_path):
    from onepass.model.training import samples as S

    builder, vocab, tok = _builder(tmp_path)
    shp = domain.Shape("square", "red", (220, 40, 40), x0=0, y0=0, size=180)
    scene = domain.Scene(40, (shp,), "a large red square")
    patches, cells = S.render_cells(scene, np.random.default_rng(0), vocab)
    assert patches.grid_hw == (6, 11)
    words = [tuple(tok.convert_ids_to_tokens(c.tolist())) for c in cells]
    assert words[0] == ("red", "square", "large")  # top-left cell: fully covered
    assert words[10] == ("<pad>",) * 3  # top-right cell: background
    covered = sum(w[0] == "red" for w in words)
    assert 9 <= covered <= 16  # 180 px square over ~58x60 px cells: 3-4 cells a side
    pair = domain.Scene(40, (domain.Shape("circle", "blue", (50, 80, 230), 20, 100, 100),
                             domain.Shape("triangle", "white", (240, 240, 240), 300, 120, 100)), "blue circle left of white triangle")
    words = {tuple(tok.convert_ids_to_tokens(c.tolist())) for c in S.cell_labels(pair, patches, vocab)}
    assert {("blue", "circle", "left"), ("white", "triangle", "right"), ("<pad>",) * 3} == words


def _train(args):
    from onepass.model.training.recipe import main

    return main(args)


def test_training_resumes_exactly_and_exports_a_loadable_checkpoint(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from onepass.model.load import load_backbone
    from onepass.model.meta import model_window_s
    from onepass.model.training import speech

    # the wheel's eSpeak NG carries state from call to call (the same text comes out a few samples
    # longer each time it is said again in a process), so a run resumed in a fresh state hears other
    # waves than one that went straight; said once per (text, voice), both runs hear the same
    said, say = {}, speech.Espeak.say
    monkeypatch.setattr(speech.Espeak, "say", lambda self, *a, **k: said.setdefault((a, tuple(sorted(k.items()))), say(self, *a, **k)))
    tiny = ["--device", "cpu", "--workers", "0", "--threads", "1", "--hidden", "64", "--layers", "2", "--intermediate", "128",
            "--short-batch", "2", "--replay", "1", "--replay-utterances", "1", "--b-windows", "1", "--c-windows", "1", "--stage-b", "1", "--stage-c", "2",
            "--window-s", "3", "--eval-every", "2", "--eval-items", "4", "--frontend-steps", "0"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert _train(["--out", str(a), "--max-steps", "3"] + tiny) == 0  # stages A, B, C in one go
    assert _train(["--out", str(b), "--max-steps", "2"] + tiny) == 0
    assert json.loads((b / "ckpt" / "state.json").read_text())["step"] == 2
    at_2 = load_file(b / "ckpt" / "model.safetensors")
    assert _train(["--out", str(b), "--max-steps", "3"] + tiny) == 0  # resumes from step 2
    # the resumed run continued the optimizer (Adam's per-parameter step counts those of the run
    # that went straight to 3, not 1; a parameter no loss reached in a step, such as the CTC head
    # when every utterance was outside the domain, counts one less in both)...
    state = torch.load(b / "ckpt" / "optimizer.pt", weights_only=True)["opt"]["state"]
    straight = torch.load(a / "ckpt" / "optimizer.pt", weights_only=True)["opt"]["state"]
    assert {k: int(v["step"]) for k, v in state.items()} == {k: int(v["step"]) for k, v in straight.items()}
    assert max(int(v["step"]) for v in state.values()) == 3
    # ...on the same draws, with the same schedule: the weights, the EMA and the training-only
    # heads of the resumed run are those of the straight run
    for name in ("model.safetensors", "ema.safetensors", "heads.safetensors"):
        x, y = load_file(a / "ckpt" / name), load_file(b / "ckpt" / name)
        assert x.keys() == y.keys() and x
        for k in x:
            torch.testing.assert_close(y[k], x[k], rtol=1e-5, atol=1e-6, msg=lambda m, k=k, name=name: f"{name} {k}: {m}")
    # and step 3 moved them (a run that did nothing would also be "equal")
    x = load_file(a / "ckpt" / "model.safetensors")
    assert any(not torch.equal(x[k], at_2[k]) for k in x)
    log = [json.loads(line) for line in (a / "log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log if "stage" in r] == ["A"]  # step 1 is logged; 10, 20... thereafter
    # the front-end loss (layer 0's audio states read out as log-mel bands by a training-only head):
    # logged, its head checkpointed and resumed beside the optimizer, and never exported
    m = tmp_path / "m"
    assert _train(["--out", str(m), "--max-steps", "1", "--w-mel", "1.0"] + tiny) == 0
    assert "u_mel" in json.loads((m / "log.jsonl").read_text().splitlines()[0]) and (m / "ckpt" / "heads.safetensors").exists()
    assert _train(["--out", str(m), "--max-steps", "2"] + tiny) == 0  # resumes with its head (w_mel kept from the checkpoint)
    from safetensors import safe_open

    with safe_open(str(m / "export" / "model.safetensors"), "pt") as f:
        assert not any("mel" in k for k in f.keys())
    # a run that read CTC through the lm_head (--ctc-head 0, as runs saved before the field) takes
    # the training-only CTC head on resume when asked: it joins the optimizer and is checkpointed
    c = tmp_path / "c"
    assert _train(["--out", str(c), "--max-steps", "1", "--ctc-head", "0"] + tiny) == 0
    assert not (c / "ckpt" / "heads.safetensors").exists()
    assert _train(["--out", str(c), "--max-steps", "2", "--ctc-head", "1"] + tiny) == 0
    assert (c / "ckpt" / "heads.safetensors").exists() and "u_ctc" in (c / "log.jsonl").read_text()
    evals = [r["eval"] for r in log if "eval" in r]
    assert evals and {"utt_wer", "frame_exact", "swap_audio", "swap_frames", "win_wer", "win_caption_exact"} <= evals[0].keys()
    bb = load_backbone(a / "export", device="cpu")
    assert bb.config.text_config.hidden_size == 64 and len(bb.stop_ids) == 2
    from onepass.model.meta import model_units
    from onepass.model.training.recipe import EXPORT_UNITS, EXPORT_WINDOW_S

    # asked per unit (a frame, a speech region), the export runs at the long window whatever it trained
    assert model_window_s(a / "export") == EXPORT_WINDOW_S == 30 and model_units(a / "export") == EXPORT_UNITS
    # the cool init is what training starts from
    from onepass.model.training.recipe import Recipe, build_model

    _, model = build_model(Recipe(hidden=64, layers=2, intermediate=128), tmp_path / "c")
    attn = model.model.language_model.layers[0].self_attn
    assert attn.q_norm.weight[0].item() == pytest.approx(attn.head_dim ** -0.25)
    assert model.model.embed_vision.pos_embedding.detach().std().item() == pytest.approx(1.0, abs=0.05)
    # the audio projection starts as a Fourier basis: each cosine row's spectrum peaks at its own
    # frequency, rising from 60 Hz to 7.6 kHz (25 Hz per rfft bin of 640 samples)
    w = model.model.embed_audio.embedding_projection.weight.detach().numpy()
    peaks = np.abs(np.fft.rfft(w[: w.shape[0] // 2], axis=1)).argmax(1)
    assert peaks[0] <= 3 and abs(peaks[-1] - 7600 / 25) <= 1 and (np.diff(peaks) >= 0).all(), peaks


def test_stage0_front_end_learns_its_band_features(tmp_path):
    """Stage 0 (a fresh run only): the projection and layers 0-1 regress per-frame log band features
    into fixed dims; logged, and not repeated on resume."""
    import torch

    from onepass.model.training.recipe import frontend_frames, frontend_layout, stair_features

    tiny = ["--device", "cpu", "--workers", "0", "--threads", "1", "--hidden", "64", "--layers", "2", "--intermediate", "128",
            "--short-batch", "1", "--replay", "1", "--replay-utterances", "1", "--b-windows", "1", "--c-windows", "1",
            "--window-s", "3", "--eval-every", "100", "--frontend-steps", "60"]
    out = tmp_path / "f"
    assert _train(["--out", str(out), "--max-steps", "1"] + tiny) == 0
    fe = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if "frontend_step" in line]
    assert [r["frontend_step"] for r in fe] == [1, 60] and fe[-1]["mse"] < 0.5 * fe[0]["mse"], fe
    assert fe[-1]["cells"] > 0 and fe[-1]["mse_vision"] < 0.5 * fe[0]["mse_vision"], fe  # cells too (vision_frontend)
    assert _train(["--out", str(out), "--max-steps", "2"] + tiny) == 0  # resumed: no second stage 0
    assert sum("frontend_step" in line for line in (out / "log.jsonl").read_text().splitlines()) == 2
    # the layout: band features land in their dims; silence stays zero (no bias anywhere)
    bands, first = frontend_layout(64)
    assert (bands, first) == (15, 46)
    frames = torch.zeros(2, 640)
    frames[1] = torch.sin(torch.arange(640) * 2 * np.pi * 440 / 16000)
    feats = stair_features(frames, bands)
    assert feats.shape == (2, 16) and torch.all(feats[0, :-1] == 0) and feats[1, :-1].abs().sum() > 0
    from onepass.model.training.recipe import Recipe, build_model

    _, model = build_model(Recipe(hidden=64, layers=2, intermediate=128), tmp_path / "c")
    assert torch.all(frontend_frames(model, frames)[0] == 0)
    # cells: the vision rows' pairs land in the audio's pair dims, nothing in the feature dims
    from onepass.model.training.recipe import cell_stair_features, vision_frontend_init

    vision_frontend_init(model)
    cells = torch.full((3, 6912), 128, dtype=torch.uint8)
    cells[1, ::2] = 255  # a vertical-stripe texture (luminance), and an edge: left half dark
    cells[2].view(48, 48, 3)[:, :24] = 0
    emb = model.model.embed_vision(cells[None].float() / 255, torch.tensor([[[0, 0], [1, 0], [2, 1]]])).pooler_output[0]
    assert torch.all(emb[:, first : first + bands + 1] == 0) and emb[0, : 2 * bands].abs().max() < 1e-6
    assert emb[2, : 2 * bands].abs().sum() > 0
    feats = cell_stair_features(cells, bands)
    assert feats.shape == (3, bands) and torch.all(feats[0] == 0) and feats[2].abs().sum() > 0


def test_noise_floor_in_training_is_seeded_and_spares_padding():
    import torch

    from onepass.model.training.recipe import with_noise_floor

    feats = torch.zeros(2, 5, 640)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    a, b = with_noise_floor(feats, mask, 1e-3), with_noise_floor(feats, mask, 1e-3)
    assert torch.equal(a, b)  # the same batch, the same noise: a resume replays it exactly
    assert torch.all(a[1, 3:] == 0) and torch.all(a[mask] != 0)  # padding stays padding
    assert 0.8e-3 < float(a[mask].std()) < 1.2e-3
    assert with_noise_floor(feats, mask, 0.0) is feats


def test_wer_der_and_boundaries():
    assert metrics.wer("valve number seven", "valve number eleven seven") == (1, 3)
    assert metrics.wer("a b c", "") == (3, 3)
    # hand-aligned (the one 3-edit alignment): valve deleted, nine -> one, six inserted
    e = metrics.word_errors("valve number nine at four", "number one at four six")
    assert (e["substitutions"], e["deletions"], e["insertions"], e["words"]) == (1, 1, 1, 5)
    assert e["confusions"] == [("nine", "one")]
    assert metrics.word_errors("seal nine at four", "seal one at five")["confusions"] == [("nine", "one"), ("four", "five")]
    assert metrics.wer("valve number nine at four", "number one at four six") == (3, 5)
    ref = [(0, 4000, "A"), (5000, 9000, "B")]
    assert metrics.der(ref, [(0, 4000, "x"), (5000, 9000, "y")]) [0] == pytest.approx(0)
    err, total = metrics.der(ref, [(0, 9000, "x")])
    # scored (outside +-0.25 s of each reference boundary): A 0.25-3.75 s, B 5.25-8.75 s = 7 s;
    # errors: B confused (3.5 s) + false alarm in the scored part of the gap 4.25-4.75 s (0.5 s)
    assert total == pytest.approx(7.0, abs=0.02) and err == pytest.approx(4.0, abs=0.02)
    assert metrics.der(ref, [])[0] / metrics.der(ref, [])[1] == pytest.approx(1)
    assert metrics.boundary_errors([(1000, 3000)], [(1200, 2900), (5000, 6000)]) == [200, 100]
    assert metrics.caption_exact([(0, 3000, "a small red circle")], {0: "a small red circle", 1000: "x"}, 3000) == (1, 3)
    # the kept frame of an instant may lag it (fast decode: 1,040 ms); judged at its own time
    scenes = [(0, 1020, "red circle"), (1020, 3000, "blue square")]
    assert metrics.caption_exact(scenes, {0: "red circle", 1040: "blue square", 2080: "red circle"}, 3000) == (2, 3)
    assert metrics.caption_exact(scenes, {0: "red circle", 2000: "blue square"}, 3000) == (2, 3)  # no frame at 1 s: wrong


def test_evaluate_scores_an_output_folder_and_says_what_the_word_errors_are(tmp_path):
    """`onepass evaluate`'s scoring, on a hand-made output folder of one clip: the WER and its parts,
    the confusions, captions and boundaries read back from the tables."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from onepass.pipeline.evaluate import score

    clip = tmp_path / "c.mp4"
    clip.write_bytes(b"")
    clip.with_suffix(".json").write_text(json.dumps({
        "duration_ms": 2000, "scenes": [{"start_ms": 0, "end_ms": 2000, "caption": "a red circle"}],
        "utterances": [{"start_ms": 100, "end_ms": 1500, "speaker": "A", "text": "valve number nine at four",
                        "facts": {"findings": "none", "readings": "none"}}]}))
    src = tmp_path / "out" / "sources" / "c"
    src.mkdir(parents=True)
    tables = {
        "source": {"source_id": ["c"], "path": [str(clip.resolve())]},
        "transcripts": {"source_id": ["c"], "start_ms": [140], "end_ms": [1400], "speaker": ["S1"], "text": ["number one at four six"]},
        "speakers": {"source_id": ["c"], "start_ms": [140], "end_ms": [1400], "speaker": ["S1"]},
        "captions": {"source_id": ["c", "c"], "frame_ms": [0, 1000], "text": ["a red circle", "a blue circle"]},
        "answers": {"source_id": ["c"] * 4, "start_ms": [0, 1000, 140, 1700], "end_ms": [1000, 2000, 1400, 1900],
                    "question": ["which shapes are visible"] * 2 + ["which components show a condition"] * 2,
                    "text": ["red circle", "blue circle", "none", "valve nine"]},
    }
    for name, cols in tables.items():
        pq.write_table(pa.table(cols), src / f"{name}.parquet")
    got = score(tmp_path / "out", [clip])
    assert got["words"] == 5 and got["wer"] == pytest.approx(3 / 5)
    assert got["wer_parts"] == pytest.approx({"substitutions": 0.2, "deletions": 0.2, "insertions": 0.2})
    assert got["confusions"] == {"nine -> one": 1}
    assert got["caption_exact"] == 0.5 and got["boundary_median_ms"] == 70.0  # |140-100| and |1400-1500|
    questions = {"findings": {"text": "which components show a condition", "unit": "speech"},
                 "readings": {"text": "what readings were taken", "unit": "speech"},
                 "shapes": {"text": "which shapes are visible", "unit": "frame"}}
    got = score(tmp_path / "out", [clip], questions)
    # findings: the row over the utterance says "none", as the truth does (the later row lies outside it);
    # readings: never answered; shapes: "a red circle" -> "red circle", one of two frames right
    assert got["answers"] == {"findings": {"exact": 1.0, "asked": 1}, "readings": {"exact": 0.0, "asked": 1},
                              "shapes": {"exact": 0.5, "asked": 2}}


def test_row_agreement_counts_missing_and_extra_rows():
    from onepass.model.training.metrics import row_agreement

    a = [(0, "red square"), (1000, "blue circle")]
    assert row_agreement(a, list(a)) == 1.0
    assert row_agreement(a, a + [(2000, "green triangle")]) == pytest.approx(2 / 3)  # an extra row costs
    assert row_agreement(a, a[:1]) == 0.5  # a missing row costs
    assert row_agreement(a + a[:1], a) == pytest.approx(2 / 3)  # rows are matched once each
