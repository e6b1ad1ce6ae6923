"""The runner against the reference request, chunked prefill, batching and loading rules."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from helpers_model import make_tiny_checkpoint
from onepass.model.load import ModelLoadError, load_backbone
from onepass.model.runner import CACHES, Runner, StreamSession, Window
from onepass.operators.audio import frame_audio
from onepass.operators.patchify import patchify
from onepass.operators.spans import Span


@pytest.fixture(scope="module")
def reference(fixtures_dir, tiny_model):
    """The reference tiny request (tests/fixtures/tiny_request.json: the reference processor's layout)
    with seeded media, on the tiny config with seeded random weights."""
    meta = json.loads((fixtures_dir / "tiny_request.json").read_text())
    rng = np.random.default_rng(11)
    media = {"frames_uint8": rng.integers(0, 256, (len(meta["frames_ms"]), 360, 640, 3), dtype=np.uint8),
             "audio_16k": rng.normal(0, 0.1, int(meta["audio_seconds"] * 16000)).astype(np.float32)}
    return meta, media, load_backbone(tiny_model, device="cpu")


def reference_window(meta, z) -> Window:
    patches = tuple(patchify(f, meta["video_budget"], video=True) for f in z["frames_uint8"])
    audio, _ = frame_audio(z["audio_16k"])
    return Window("ref", Span(0, 4000), tuple(meta["frames_ms"]), patches, audio, 0)


def test_inputs_match_the_reference_processor(reference):
    meta, z, backbone = reference
    runner = Runner(backbone)
    w = reference_window(meta, z)
    layout = runner.layout(w) + runner.prompts.suffix(meta["prompt"], True, True)
    assert layout.ids.tolist() == meta["input_ids"]
    assert layout.types.tolist() == meta["mm_token_type_ids"]
    pos = np.stack([p.positions for p in w.patches])
    assert list(pos.shape) == meta["video_position_ids_shape"]
    assert hashlib.sha256(pos.astype(np.int64).tobytes()).hexdigest() == meta["video_position_ids_sha256"]
    assert w.audio.shape[0] == meta["audio_frames"]


def _hf_generate(backbone, meta, w, n_tokens):
    """What Hugging Face's own generate() does with the same request (the reference path)."""
    model = backbone.model
    out = model.generate(
        input_ids=torch.tensor([meta["input_ids"]]), attention_mask=torch.ones(1, len(meta["input_ids"]), dtype=torch.long),
        mm_token_type_ids=torch.tensor([meta["mm_token_type_ids"]]),
        pixel_values_videos=torch.from_numpy(np.stack([p.pixel_values for p in w.patches])),
        video_position_ids=torch.from_numpy(np.stack([p.positions for p in w.patches])),
        num_frames_per_video=torch.tensor([len(w.patches)]),
        input_features=torch.from_numpy(w.audio)[None], input_features_mask=torch.ones(1, w.audio.shape[0], dtype=torch.bool),
        do_sample=False, max_new_tokens=n_tokens, min_new_tokens=n_tokens, output_logits=True, return_dict_in_generate=True)
    return out.logits[0][0].numpy(), out.sequences[0, len(meta["input_ids"]):].tolist()


def test_logits_and_greedy_tokens_match_the_reference(reference):
    meta, z, backbone = reference
    runner = Runner(backbone)
    w = reference_window(meta, z)
    ref_logits, ref_tokens = _hf_generate(backbone, meta, w, 12)
    batch = runner.prefill([w])
    first = runner.append_text(batch, runner.prompts.suffix(meta["prompt"], True, True))
    assert np.abs(first[0].numpy() - ref_logits).max() < 1e-6  # float32 summation order only (measured 5.6e-7)
    tokens = runner.greedy(batch, first, max_new_tokens=12)[0]
    assert tokens == ref_tokens[: len(tokens)] and len(tokens) >= 1
    if len(tokens) < 12:  # we stopped at a stop token: the reference produced that same token there
        assert ref_tokens[len(tokens)] in backbone.stop_ids


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
    ref_logits, _ = _hf_generate(backbone, meta, w, 1)
    assert np.abs(chunk_logits[0].numpy() - ref_logits).max() < 1e-5


def _decode(runner, windows, tasks, n=8):
    """([window][task] generated ids, [window][task] first-token logits, [window][task] mean
    log-probability of the chosen tokens), as Runner.generate makes them (shared prefill, forks)."""
    import copy

    from onepass.model.runner import _Batch

    batch = runner.prefill(windows)
    ids, logits, scores = ([[] for _ in windows] for _ in range(3))
    for task in tasks:
        fork = _Batch(copy.deepcopy(batch.cache), batch.attn, batch.types)
        first = runner.append_text(fork, runner.prompts.suffix(task, True, True))
        chosen, score = runner.greedy_scored(fork, first.clone(), max_new_tokens=n)
        for i in range(len(windows)):
            ids[i].append(chosen[i])
            logits[i].append(first[i].float())
            scores[i].append(score[i])
    return ids, logits, scores


def _ids(runner, windows, tasks, n=8):
    """Generated token ids [window][task]."""
    return _decode(runner, windows, tasks, n)[0]


def test_a_padded_batch_gives_each_window_its_own_answer(reference):
    meta, z, backbone = reference
    runner = Runner(backbone, max_new_tokens=8)
    full = reference_window(meta, z)
    short = Window("b", Span(0, 2000), full.frame_ms[:2], full.patches[:2], full.audio[:50], 0)
    tasks = ["describe the video", "transcribe this audio"]
    together, t_logits, t_scores = _decode(runner, [full, short], tasks)
    alone = [_decode(runner, [w], tasks) for w in (full, short)]
    assert together == [a[0][0] for a in alone]
    # not only the argmax: padding that leaked into attention would move the logits and the
    # chosen tokens' log-probabilities without flipping a greedy choice
    for i, (_, a_logits, a_scores) in enumerate(alone):
        for task in range(len(tasks)):
            torch.testing.assert_close(t_logits[i][task], a_logits[0][task], atol=1e-4, rtol=1e-4)
            assert t_scores[i][task] == pytest.approx(a_scores[0][task], abs=1e-4)
    assert together[0] != together[1]  # two different windows: not one answer copied
    assert runner.stats.prefill_tokens > 0


def test_fresh_tiny_checkpoint_round_trips_through_save_pretrained(tmp_path, reference):
    meta, z, ref_backbone = reference
    path = make_tiny_checkpoint(tmp_path / "tiny", seed=3)
    assert any(p.suffix == ".safetensors" for p in path.iterdir())
    backbone = load_backbone(path, device="cpu")
    assert type(backbone.model).__name__ == "Gemma4UnifiedForConditionalGeneration"
    w = reference_window(meta, z)
    ids = _ids(Runner(backbone), [w], ["describe the video"], n=4)[0][0]
    again = _ids(Runner(load_backbone(path, device="cpu")), [w], ["describe the video"], n=4)[0][0]
    assert ids == again  # the saved weights, not a fresh draw, are what loads
    a, b = (dict(m.model.named_parameters())["model.language_model.layers.0.mlp.up_proj.weight"] for m in (backbone, ref_backbone))
    assert not torch.equal(a, b)  # another seed: other weights


def test_pickled_weights_and_wrong_folders_are_refused(tmp_path, tiny_model):
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, pickled / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        load_backbone(pickled)
    with pytest.raises(ModelLoadError, match="not a directory"):
        load_backbone(tmp_path / "nothing")
    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["architectures"] = ["LlamaForCausalLM"]
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="Gemma4UnifiedForConditionalGeneration"):
        load_backbone(other)


def test_remote_code_in_a_model_folder_is_never_run(tmp_path, tiny_model):
    """The right architecture, plus an auto_map to code shipped in the folder: the folder loads with
    the installed class and the shipped code never runs."""
    folder = tmp_path / "with_code"
    shutil.copytree(tiny_model, folder)
    marker = tmp_path / "remote_code_ran"
    code = f"open({str(marker)!r}, 'w').write('ran')\n"
    for name in ("evil.py", "modeling_evil.py", "tokenization_evil.py"):
        (folder / name).write_text(code)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.Config", "AutoModel": "modeling_evil.Model",
                       "AutoModelForImageTextToText": "modeling_evil.Model"}
    (folder / "config.json").write_text(json.dumps(cfg))
    tok_cfg = json.loads((folder / "tokenizer_config.json").read_text())
    tok_cfg["auto_map"] = {"AutoTokenizer": ["tokenization_evil.Tok", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    bb = load_backbone(folder, device="cpu")
    assert type(bb.model).__module__.startswith("transformers.models.gemma4_unified")
    assert not marker.exists()


def test_device_and_dtype_overrides(tiny_model):
    bb = load_backbone(tiny_model, device="cpu", dtype="bfloat16")
    assert bb.dtype == torch.bfloat16 and next(bb.model.parameters()).dtype == torch.bfloat16


def test_sdpa_attention_equals_the_eager_reference(reference, tiny_model):
    """The loader's attention kernel (SDPA) gives the eager reference's logits (float32 rounding) and
    greedy tokens on the reference request."""
    meta, z, sdpa = reference
    assert sdpa.model.config.text_config._attn_implementation == "sdpa"
    eager = load_backbone(tiny_model, device="cpu", attention="eager")
    assert eager.model.config.text_config._attn_implementation == "eager"
    w = reference_window(meta, z)
    got = {}
    for name, backbone in (("sdpa", sdpa), ("eager", eager)):
        runner = Runner(backbone)
        batch = runner.prefill([w])
        first = runner.append_text(batch, runner.prompts.suffix(meta["prompt"], True, True))
        got[name] = first[0].numpy(), runner.greedy(batch, first, max_new_tokens=12)[0]
    assert np.abs(got["sdpa"][0] - got["eager"][0]).max() < 1e-5  # measured 3.6e-7
    assert got["sdpa"][1] == got["eager"][1] and got["sdpa"][1]
    with pytest.raises(ValueError, match="attention must be one of"):
        load_backbone(tiny_model, device="cpu", attention="flash")


def test_static_kv_cache_equals_the_dynamic_one(reference):
    """A preallocated (static) KV cache, the fixed-shape decode a CUDA graph can capture, gives the
    dynamic cache's logits and greedy tokens: the golden request, then two windows of different
    lengths (left padding) with two tasks forked from one prefill, on the bundled model."""
    meta, z, backbone = reference
    w = reference_window(meta, z)
    got = {}
    for cache in CACHES:
        runner = Runner(backbone, cache=cache, max_new_tokens=12)
        batch = runner.prefill([w])
        first = runner.append_text(batch, runner.prompts.suffix(meta["prompt"], True, True))
        got[cache] = first[0].numpy(), runner.greedy(batch, first)[0], type(batch.cache).__name__
    assert got["static"][2] == "StaticCache" and got["dynamic"][2] == "DynamicCache"
    assert np.abs(got["static"][0] - got["dynamic"][0]).max() < 1e-5 and got["static"][1] == got["dynamic"][1]
    default = load_backbone(None, device="cpu")
    long_w = Window("a", Span(0, 4000), (0, 1000, 2000), w.patches[:1] * 3, w.audio, 0)
    short_w = Window("b", Span(0, 2000), (0,), w.patches[:1], w.audio[:30], 0)
    texts = {cache: Runner(default, cache=cache, max_new_tokens=24).generate([long_w, short_w], ["caption each frame with its time",
             "transcribe the speech with start and end times"])[0] for cache in CACHES}
    assert texts["static"] == texts["dynamic"] and all(t for row in texts["static"] for t in row)
    with pytest.raises(ValueError, match="cache must be one of"):
        Runner(default, cache="paged")
