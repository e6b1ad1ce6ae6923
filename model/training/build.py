"""What a default-model checkpoint is made of: the word-level tokenizer (with the real Gemma 4
special-token strings), the small Gemma 4 Unified config, and the Hugging Face export ``--model``
accepts (bf16 safetensors + tokenizer + chat template + generation config)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..tasks import Prompts
from . import domain

__all__ = ["EXTRA_WORDS", "SPECIALS", "CHAT_TEMPLATE", "domain_words", "build_tokenizer", "build_config", "export_hf"]

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<|turn>", "<turn|>", "<|image>", "<image|>", "<|image|>",
            "<|audio>", "<audio|>", "<|audio|>", "<|video|>"]
CHAT_TEMPLATE = (
    "{{- bos_token -}}{%- for message in messages -%}{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{- '<|turn>' + role + '\\n' -}}{%- if message['content'] is string -%}{{- message['content'] | trim -}}{%- else -%}"
    "{%- for item in message['content'] -%}{%- if item['type'] == 'text' -%}{{- item['text'] | trim -}}"
    "{%- elif item['type'] == 'image' -%}{{- '<|image|>' -}}{%- elif item['type'] == 'audio' -%}{{- '<|audio|>' -}}"
    "{%- elif item['type'] == 'video' -%}{{- '<|video|>' -}}{%- endif -%}{%- endfor -%}{%- endif -%}{{- '<turn|>\\n' -}}"
    "{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|turn>model\\n' -}}{%- endif -%}"
)


# Words added after the first shipped checkpoints, at the END of the vocabulary (ids 295-313 of the
# 320 rows every default checkpoint has): the out-of-domain markers and the documented questions.
EXTRA_WORDS = ("[ ] other scene sound none which components show condition what needs attention readings "
               "were taken shapes are visible").split()


def domain_words() -> list[str]:
    words = set("user model system".split())
    words |= set(" ".join(domain.NUMBER_WORDS).split())
    for group in (domain.COMPONENTS, domain.CONDITIONS, domain.STATES, domain.UNITS, domain.QUANTITIES,
                  domain.PLACES, domain.ACTIONS, domain.PRIORITIES, domain.SHAPES, tuple(domain.COLOURS)):
        words |= set(group)
    words |= set("the a at on is has and number shows found priority it of reading small large left above".split())
    prompts = Prompts()
    words |= set(prompts.caption.split()) | set(prompts.transcript.split())
    return sorted(words)


def build_tokenizer(out_dir: Path):
    """Word-level tokenizer carrying the real Gemma 4 special-token strings; saved to out_dir."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = list(SPECIALS)
    vocab += [f"{i:02d}" for i in range(100)] + [str(i) for i in range(10)] + [":", ".", ",", "-"]
    vocab += [w for w in domain_words() if w not in vocab]
    vocab += [w for w in EXTRA_WORDS if w not in vocab]  # appended: the ids of a shipped checkpoint stay
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<|image|>", "boi_token": "<|image>", "eoi_token": "<image|>",
                              "audio_token": "<|audio|>", "boa_token": "<|audio>", "eoa_token": "<audio|>",
                              "video_token": "<|video|>", "sot_token": "<|turn>", "eot_token": "<turn|>"},
    )
    fast.chat_template = CHAT_TEMPLATE
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    (out_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return fast


def build_config(tok, *, hidden: int = 384, layers: int = 6, heads: int = 6, intermediate: int = 1536):
    from transformers import Gemma4UnifiedConfig

    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    vocab = -(-len(tok) // 64) * 64
    text = dict(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=2, head_dim=hidden // heads, global_head_dim=2 * hidden // heads,
        num_global_key_value_heads=1, attention_k_eq_v=True, sliding_window=4096, final_logit_softcapping=30.0,
        rms_norm_eps=1e-6, tie_word_embeddings=True, use_bidirectional_attention="vision",
        layer_types=["sliding_attention"] * (layers - 1) + ["full_attention"],
        pad_token_id=ids["<pad>"], bos_token_id=ids["<bos>"], eos_token_id=ids["<eos>"],
    )
    return Gemma4UnifiedConfig(
        text_config=text,
        vision_config=dict(mm_embed_dim=hidden, output_proj_dims=hidden, mm_posemb_size=1120),
        audio_config=dict(audio_embed_dim=640),
        image_token_id=ids["<|image|>"], boi_token_id=ids["<|image>"], eoi_token_id=ids["<image|>"],
        audio_token_id=ids["<|audio|>"], boa_token_id=ids["<|audio>"], eoa_token_index=ids["<audio|>"],
        video_token_id=ids["<|video|>"], tie_word_embeddings=True,
    )


def export_hf(model, src_dir: Path, out_dir: Path, dtype=torch.bfloat16) -> Path:
    """A Hugging Face folder (bf16 safetensors + tokenizer + template) the loader accepts."""
    import shutil

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype) for k, v in model.state_dict().items()}
    model.config.dtype = "bfloat16"
    model.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        if (src_dir / name).exists():
            shutil.copy(src_dir / name, out_dir / name)
    gen = {"bos_token_id": model.config.text_config.bos_token_id, "eos_token_id": [model.config.text_config.eos_token_id,
           int(json.loads((src_dir / "tokenizer.json").read_text())["model"]["vocab"]["<turn|>"])],
           "pad_token_id": model.config.text_config.pad_token_id}
    (out_dir / "generation_config.json").write_text(json.dumps(gen, indent=1))
    return out_dir
