"""Tiny random Gemma 4 Unified checkpoints, saved and loaded through the real path."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

FIXTURE_MODEL = Path(__file__).resolve().parent / "fixtures" / "tiny-gemma4-unified"  # config + tokenizer, no weights


def make_tiny_checkpoint(dest: Path, *, seed: int = 0, layers: int = 2, from_dir: Path = FIXTURE_MODEL) -> Path:
    """A fresh random model of the reference tiny config (contract doc section 8), saved with
    save_pretrained (safetensors), plus its tokenizer, chat template and generation config."""
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration

    dest.mkdir(parents=True, exist_ok=True)
    config = Gemma4UnifiedConfig.from_pretrained(from_dir)
    if layers != config.text_config.num_hidden_layers:
        config.text_config.num_hidden_layers = layers
        config.text_config.layer_types = (["sliding_attention"] * 5 + ["full_attention"]) * (layers // 6) + ["sliding_attention"] * (layers % 6 - 1) + ["full_attention"]
    torch.manual_seed(seed)
    model = Gemma4UnifiedForConditionalGeneration(config)
    model.save_pretrained(dest, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        shutil.copy(from_dir / name, dest / name)
    return dest


def write_random_checkpoint(dest: Path, config, *, seed: int = 0, shard_bytes: int = 2 * 2**30,
                            dtype: torch.dtype = torch.bfloat16, from_dir: Path = FIXTURE_MODEL) -> Path:
    """A random-weight checkpoint of ``config`` written shard by shard as Hugging Face ships one
    (``model-0000k-of-0000n.safetensors`` + ``model.safetensors.index.json``), never holding more
    than one shard in memory: the 12B's 24 GB in bf16 is written on a machine with less RAM.

    The model is built on the meta device for its tensor names and shapes; weights are drawn
    N(0, 0.02), biases 0, norm scales and layer scalars 1 (the values the class's own init gives).
    Tokenizer, chat template and generation config come from ``from_dir``; the config's special
    token ids must be the tokenizer's (the caller's job: copy them from the fixture's config).
    """
    import json

    from safetensors.torch import save_file
    from transformers import Gemma4UnifiedForConditionalGeneration

    dest.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        model = Gemma4UnifiedForConditionalGeneration(config)
    seen, specs = set(), []
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:  # tied (lm_head = embed_tokens): saved once, as save_pretrained does
            continue
        seen.add(id(tensor))
        specs.append((name, tuple(tensor.shape)))
    del model
    gen = torch.Generator().manual_seed(seed)

    def draw(name: str, shape: tuple) -> torch.Tensor:
        if len(shape) >= 2:
            return torch.empty(shape, dtype=dtype).normal_(0.0, 0.02, generator=gen)
        return torch.full(shape, 0.0 if name.endswith("bias") else 1.0, dtype=dtype)

    shards, current, size = [], [], 0
    for name, shape in specs:
        nbytes = torch.Size(shape).numel() * torch.finfo(dtype).bits // 8
        if current and size + nbytes > shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape))
        size += nbytes
    shards.append(current)
    weight_map, total = {}, 0
    for k, shard in enumerate(shards, 1):
        file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: draw(name, shape) for name, shape in shard}
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        save_file(tensors, dest / file, metadata={"format": "pt"})
        weight_map.update({name: file for name in tensors})
        del tensors
    (dest / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    config.dtype = str(dtype).removeprefix("torch.")
    config.architectures = [Gemma4UnifiedForConditionalGeneration.__name__]
    config.save_pretrained(dest)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        shutil.copy(from_dir / name, dest / name)
    return dest


def config_like_12b(layers: int = 48, *, hidden: int = 3840, intermediate: int = 15360, vocab: int = 262144):
    """The 12B's text shape (hidden 3840, MLP 15360, 16 heads of 256, a global layer of 512-wide heads
    every sixth, 262,144-token vocabulary) with ``layers`` decoder layers, and the tiny fixture's
    special token ids so that the fixture's tokenizer drives it."""
    from transformers import Gemma4UnifiedConfig

    tiny = Gemma4UnifiedConfig.from_pretrained(FIXTURE_MODEL)
    types = ((["sliding_attention"] * 5 + ["full_attention"]) * (layers // 6 + 1))[:layers]
    if types[-1] != "full_attention":
        types[-1] = "full_attention"
    text = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=16, num_key_value_heads=8, head_dim=256, global_head_dim=512,
                num_global_key_value_heads=1, attention_k_eq_v=True, sliding_window=1024,
                final_logit_softcapping=30.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                use_bidirectional_attention="vision", layer_types=types,
                bos_token_id=tiny.text_config.bos_token_id, eos_token_id=tiny.text_config.eos_token_id,
                pad_token_id=tiny.text_config.pad_token_id)
    ids = {k: getattr(tiny, k) for k in ("audio_token_id", "boa_token_id", "boi_token_id", "eoa_token_index",
                                         "eoi_token_id", "image_token_id", "video_token_id")}
    return Gemma4UnifiedConfig(text_config=text, vision_config=dict(mm_embed_dim=hidden, output_proj_dims=hidden, mm_posemb_size=1120),
                               audio_config=dict(audio_embed_dim=640), **ids)
