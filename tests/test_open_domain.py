"""Issue 24's training data: an open grammar with held-out forms, vocabulary in no order, number-
dense reports, more than one synthesizer, media outside the domain with their markers, and the
documented questions with their truth."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from onepass.model.training import domain, grammar, other

ROOT = Path(__file__).resolve().parents[1]


def test_open_grammar_makes_many_forms_and_keeps_held_out_ones_out_of_training(fixtures_dir):
    vocab = set((fixtures_dir / "vocabulary.txt").read_text().split())
    rng = np.random.default_rng(0)
    trained = [grammar.report(rng, "trained") for _ in range(3000)]
    heldout = [grammar.report(rng, "heldout") for _ in range(1000)]
    t_forms, h_forms = {r.form for r in trained}, {r.form for r in heldout}
    assert len(t_forms) > 500 and len(h_forms) > 200  # twelve templates before
    assert not t_forms & h_forms  # no held-out form is ever drawn for training
    words = {w for r in trained + heldout for w in r.text.split()}
    assert words <= vocab and len(words) > 130
    # the twelve old templates' first form is still a trained form, its reordering held out
    assert any(r.form == "COMP number NUM shows COND" for r in trained)
    lengths = [len(r.text.split()) for r in trained]
    assert min(lengths) >= 3 and max(lengths) <= 14


def test_random_strings_and_number_dense_reports():
    rng = np.random.default_rng(1)
    strings = [grammar.utterance_text(rng, "random").text for _ in range(500)]
    firsts = {s.split()[0] for s in strings}
    assert len(firsts) > 60  # no grammar: any word may start
    numbers = set(" ".join(domain.NUMBER_WORDS).split())
    dense = [grammar.utterance_text(rng, "numbers").text.split() for _ in range(500)]
    plain = [grammar.utterance_text(rng, "trained").text.split() for _ in range(500)]
    share = lambda texts: sum(w in numbers for t in texts for w in t) / sum(len(t) for t in texts)  # noqa: E731
    assert share(dense) > 1.3 * share(plain)


def test_answers_come_from_what_the_report_says():
    rng = np.random.default_rng(2)
    seen = set()
    for _ in range(400):
        rep = grammar.report(rng, "trained")
        words = rep.text.split()
        for key in ("findings", "actions", "readings"):
            ans = grammar.answer(rep, key)
            if ans == grammar.NONE:
                continue
            seen.add(key)
            for fact in ans.split(" and "):
                # every fact's words are said in the report (a reading's quantity may be implied)
                assert set(fact.split()) - {"reading", "priority"} <= set(words), (rep.text, key, ans)
    assert seen == {"findings", "actions", "readings"}
    assert grammar.answer(None, "findings") == "none"
    assert grammar.answer(grammar.random_string(rng), "readings") == "none"
    scene = domain.random_scene(np.random.default_rng(3))
    assert grammar.scene_answer(scene) == " and ".join(f"{s.colour} {s.kind}" for s in scene.shapes)


def test_markers_survive_a_word_level_tokenizer():
    assert other.normalise_markers("00:00.4 00:02.0 [ other speech ]") == "00:00.4 00:02.0 [other speech]"
    assert other.is_marker("[ other  scene ]") and not other.is_marker("pump is loose")


def test_other_scenes_are_not_plain_backgrounds_with_shapes():
    rng = np.random.default_rng(4)
    for _ in range(12):
        img = other.other_scene(rng)
        assert img.shape == (360, 640, 3) and img.dtype == np.uint8
        # a domain scene is mostly one background grey: an other scene's commonest colour covers far less
        _, counts = np.unique(img.reshape(-1, 3) // 8, axis=0, return_counts=True)
        assert counts.max() / counts.sum() < 0.9
    _, counts = np.unique(domain.render(domain.random_scene(rng)).reshape(-1, 3) // 8, axis=0, return_counts=True)
    assert counts.max() / counts.sum() > 0.5


def test_other_sounds_and_text():
    rng = np.random.default_rng(5)
    for _ in range(10):
        wave = other.other_sound(rng)
        assert wave.dtype == np.float32 and 0.8 * 16000 <= wave.size <= 5 * 16000 and 0.04 < np.abs(wave).max() <= 0.9
    text = other.other_text(rng)
    assert 3 <= len(text.split()) <= 14


@pytest.mark.parametrize("engine,tool,package", [("espeak-ng", "espeak-ng", "espeak-ng"), ("flite", "flite", "flite"),
                                                 ("festival", "text2wave", "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts")])
def test_every_synthesizer_speaks(engine, tool, package):
    if shutil.which(tool) is None:
        pytest.fail(f"the tests need `{tool}`: apt-get install {package} (.ci/run installs it)", pytrace=False)
    from onepass.model.training import speech

    names = {"espeak-ng": "en-us+f2", "flite": speech.FLITE_VOICES[-1], "festival": speech.FESTIVAL_VOICES[0]}
    voice = domain.Voice(names[engine], 50, 165, 0.5, engine)
    wave = domain.spoken(voice, "valve number seven shows corrosion")
    assert wave.dtype == np.float32 and 1.0 < wave.size / 16000 < 4.0
    assert 0.4 < np.abs(wave).max() <= 0.46  # normalised to 0.9 x gain


def test_voices_trained_and_held_out_synthesizers_are_apart():
    rng = np.random.default_rng(6)
    trained = {domain.random_voice(rng, "trained").engine for _ in range(200)}
    heldout = {domain.random_voice(rng, "heldout").engine for _ in range(50)}
    assert trained == set(domain.TRAINED_ENGINES) and heldout == set(domain.HELDOUT_ENGINES)
    assert not trained & heldout
    gains = [domain.random_voice(rng, "trained").gain for _ in range(300)]
    assert min(gains) < 0.08 and max(gains) > 0.8  # a wide loudness range


def test_new_words_keep_the_shipped_checkpoints_ids(tmp_path):
    from transformers import AutoTokenizer

    from onepass.model.training.build import EXTRA_WORDS, build_tokenizer

    tok = build_tokenizer(tmp_path)
    shipped = AutoTokenizer.from_pretrained(ROOT / "model" / "default", local_files_only=True)
    assert all(tok.convert_tokens_to_ids(w) == i for w, i in shipped.get_vocab().items())
    assert len(tok) <= 320  # the spare rows of the shipped embedding
    prompts = [text for text, _ in grammar.QUESTIONS.values()] + list(other.MARKERS) + ["none"]
    for text in prompts:
        assert tok.unk_token_id not in tok(text)["input_ids"], text
    assert set(EXTRA_WORDS) <= set(tok.get_vocab())


def test_items_of_every_kind_carry_their_truth(tmp_path):
    from onepass.model.training import samples as S
    from onepass.model.training.recipe import make_builder
    from onepass.model.training.build import build_config, build_tokenizer

    tok = build_tokenizer(tmp_path)
    build_config(tok, hidden=64, layers=2, heads=2, intermediate=128).save_pretrained(tmp_path)
    builder, vocab = make_builder(tmp_path)
    rng = np.random.default_rng(7)
    for kind in ("trained", "heldout", "random", "numbers", "other_speech", "other_sound"):
        item = S.utterance_item(rng, builder, vocab, kind=kind, task="transcript")
        target = tok.decode(item["labels"][item["labels"] >= 0], skip_special_tokens=True)
        if kind.startswith("other"):
            assert other.normalise_markers(target).endswith(item["spoken"]) and item["ctc"].size == 0
        else:
            assert target.endswith(item["spoken"]) and tok.decode(item["ctc"]) == item["spoken"]
    item = S.utterance_item(rng, builder, vocab, kind="other_speech", task="findings")
    assert item["target"] == "none" and grammar.QUESTIONS["findings"][0] in tok.decode(item["ids"])
    frame = S.frame_item(rng, builder, vocab, kind="other", task="captions")
    assert other.normalise_markers(frame["target"]) == "00:00 [other scene]"
    assert (frame["cells"] == vocab.blank).all()
    frame = S.frame_item(rng, builder, vocab, kind="scene", task="shapes")
    assert frame["target"] == grammar.scene_answer(frame["scene"])


def test_a_run_can_start_from_the_shipped_checkpoint(tmp_path):
    """--init-from: the shipped weights, unchanged, in a fresh run (its first export equals them)."""
    import torch
    from safetensors.torch import load_file

    from onepass.model.training.recipe import main

    out = tmp_path / "run"
    assert main(["--out", str(out), "--init-from", str(ROOT / "model" / "default"), "--device", "cpu", "--workers", "0",
                 "--threads", "1", "--max-steps", "0", "--eval-every", "1000"]) == 0
    a, b = load_file(ROOT / "model" / "default" / "model.safetensors"), load_file(out / "export" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
