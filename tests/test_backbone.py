"""The runner against the reference request, chunked prefill, batching and loading rules."""

import json
import shutil

import numpy as np
import pytest
import torch

from helpers_model import make_tiny_checkpoint
from onepass.model.load import ModelLoadError, load_backbone
from onepass.model.runner import Runner, StreamSession, Window
from onepass.operators.audio import frame_audio
from onepass.operators.patchify import patchify
from onepass.operators.spans import Span


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    meta = json.loads((fixtures_dir / "tiny_gemma4_unified_golden.json").read_text())
    z = np.load(fixtures_dir / "tiny_gemma4_unified_golden.npz")
    backbone = load_backbone(fixtures_dir / "tiny-gemma4-unified", device="cpu")
    return meta, z, backbone


def reference_window(meta, z) -> Window:
    patches = tuple(patchify(f, meta["video_budget"], video=True) for f in z["frames_uint8"])
    audio, _ = frame_audio(z["audio_16k"])
    return Window("ref", Span(0, 4000), tuple(meta["frames_ms"]), patches, audio, 0)


def test_inputs_match_the_reference_processor(reference):
    meta, z, backbone = reference
    runner = Runner(backbone)
    w = reference_window(meta, z)
    layout = runner.layout(w) + runner.prompts.suffix(meta["prompt"], True, True)
    assert np.array_equal(layout.ids, z["input_ids"][0])
    assert np.array_equal(layout.types, z["mm_token_type_ids"][0])
    assert np.array_equal(np.stack([p.pixel_values for p in w.patches]), z["pixel_values_videos"])
    assert np.array_equal(np.stack([p.positions for p in w.patches]), z["video_position_ids"])
    assert np.array_equal(w.audio, z["input_features"][0])
    assert w.audio.shape[0] == int(z["input_features_mask"].sum())


def test_logits_and_greedy_tokens_match_the_reference(reference):
    meta, z, backbone = reference
    runner = Runner(backbone)
    batch = runner.prefill([reference_window(meta, z)])
    first = runner.append_text(batch, runner.prompts.suffix(meta["prompt"], True, True))
    assert np.abs(first[0].numpy() - z["first_step_logits"]).max() < 1e-5
    tokens = runner.greedy(batch, first, max_new_tokens=len(z["greedy_tokens"]))[0]
    # the reference never stopped early; our stop set (eos, <turn|>) must not cut it either
    assert tokens == z["greedy_tokens"].tolist()


def test_streaming_prefill_equals_one_shot(reference):
    meta, z, backbone = reference
    runner = Runner(backbone)
    w = reference_window(meta, z)
    one = runner.prefill([w])
    one_types = one.types.clone()
    one_logits = runner.append_text(one, runner.prompts.suffix(meta["prompt"], True, True))

    session = StreamSession(runner, window_start_ms=0)
    for t, p in zip(w.frame_ms, w.patches):
        session.add_frame(t, p)  # each frame its own forward, as decode delivers it
    for a in range(0, w.audio.shape[0], 37):  # audio in uneven pieces
        session.add_audio(w.audio[a : a + 37])
    session.close_media()
    assert torch.equal(session.batch.types[0], one_types[0])
    from onepass.model.runner import _Batch
    import copy

    fork = _Batch(copy.deepcopy(session.batch.cache), session.batch.attn, session.batch.types)
    chunk_logits = runner.append_text(fork, runner.prompts.suffix(meta["prompt"], True, True))
    assert torch.allclose(chunk_logits, one_logits, atol=1e-5, rtol=0)
    assert np.abs(chunk_logits[0].numpy() - z["first_step_logits"]).max() < 1e-5


def test_a_padded_batch_gives_each_window_its_own_answer(reference):
    meta, z, backbone = reference
    runner = Runner(backbone, max_new_tokens=8)
    full = reference_window(meta, z)
    short = Window("b", Span(0, 2000), full.frame_ms[:2], full.patches[:2], full.audio[:50], 0)
    tasks = ["describe the video", "transcribe this audio"]
    together, _ = runner.generate([full, short], tasks)
    alone = [runner.generate([w], tasks)[0][0] for w in (full, short)]
    assert together == alone
    assert "windows/s" in runner.stats.line()


def test_fresh_tiny_checkpoint_round_trips_through_save_pretrained(tmp_path, reference):
    meta, z, _ = reference
    path = make_tiny_checkpoint(tmp_path / "tiny", seed=3)
    assert any(p.suffix == ".safetensors" for p in path.iterdir())
    backbone = load_backbone(path, device="cpu")
    assert type(backbone.model).__name__ == "Gemma4UnifiedForConditionalGeneration"
    texts, _ = Runner(backbone, max_new_tokens=4).generate([reference_window(meta, z)], ["describe the video"])
    assert isinstance(texts[0][0], str)


def test_pickled_weights_and_wrong_folders_are_refused(tmp_path, fixtures_dir):
    src = fixtures_dir / "tiny-gemma4-unified"
    pickled = tmp_path / "pickled"
    shutil.copytree(src, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, pickled / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        load_backbone(pickled)
    with pytest.raises(ModelLoadError, match="not a directory"):
        load_backbone(tmp_path / "nothing")
    other = tmp_path / "other"
    shutil.copytree(src, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["architectures"] = ["LlamaForCausalLM"]
    cfg["auto_map"] = {"AutoModel": "evil.Model"}
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="Gemma4UnifiedForConditionalGeneration"):
        load_backbone(other)


def test_device_and_dtype_overrides(fixtures_dir):
    bb = load_backbone(fixtures_dir / "tiny-gemma4-unified", device="cpu", dtype="bfloat16")
    assert bb.dtype == torch.bfloat16 and next(bb.model.parameters()).dtype == torch.bfloat16
