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
