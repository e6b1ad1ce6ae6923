"""Load a Gemma 4 Unified checkpoint from a local Hugging Face folder.

Safetensors only (pickled .bin/.pt weights are refused before anything is read), never remote
code, never a hub download. The same path loads the real 12B and the small default model that
ships in ``model/default/``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .meta import (ARCHITECTURE, DEFAULT_MODEL_DIR, MODEL_META, ModelLoadError, check_folder, model_noise_floor,  # noqa: F401 - re-exported
                   model_questions, model_units, model_window_s)
from .quantize import QUANTIZE, quantize_decoder, quiet_torchao  # noqa: F401 - re-exported

__all__ = ["Backbone", "ModelLoadError", "check_folder", "QUANTIZE", "quantize_decoder", "DEFAULT_MODEL_DIR", "MODEL_META", "load_backbone", "model_window_s", "pick_device_dtype"]


@dataclass
class Backbone:
    """A loaded checkpoint: the HF model, its tokenizer and the ids the runner needs."""

    path: Path
    model: torch.nn.Module
    tokenizer: object
    chat_template: str
    device: torch.device
    dtype: torch.dtype
    stop_ids: tuple[int, ...]
    noise_floor: float = 0.0  # RMS of the noise the runner adds under audio frames (the checkpoint's onepass.json)
    units: dict | None = None  # what one request covers per task (meta.model_units); None: whole windows
    questions: dict | None = None  # the documented questions it answers (meta.model_questions); None: any

    @property
    def config(self):
        return self.model.config

    def token_id(self, name: str) -> int:
        return int(getattr(self.config, name))


def pick_device_dtype(device: str | None = None, dtype: str | None = None) -> tuple[torch.device, torch.dtype]:
    """CUDA + bf16 when available, else CPU + float32 (a CPU without a bf16 GEMM, as most x86 ones,
    runs a bf16 prefill ~8x slower: model/quantize.py); either can be overridden ("cpu", "bfloat16")."""
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype:
        dt = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if not isinstance(dt, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}")
    else:
        dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    return dev, dt


ATTENTION = ("sdpa", "eager")  # "sdpa" (the default) equals "eager", the reference, on the tiny golden request
# (tests/test_backbone.py). flex_attention (block masks, no materialised mask) is not offered: torch
# 2.13's CPU inductor fails to compile its kernel, and it has had no GPU run here.


def load_backbone(path: str | os.PathLike | None = None, *, device: str | None = None, dtype: str | None = None,
                  attention: str = "sdpa", quantize: str | None = None) -> Backbone:
    """Load the checkpoint at ``path`` (default: the bundled small model), with the attention
    kernel ``attention`` (one of ATTENTION), optionally with weight-only ``quantize`` (one of QUANTIZE)."""
    if attention not in ATTENTION:
        raise ValueError(f"attention must be one of {ATTENTION}, got {attention!r}")
    if quantize is not None and quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    quiet_torchao()
    from transformers import AutoTokenizer, Gemma4UnifiedForConditionalGeneration

    path = Path(path) if path is not None else DEFAULT_MODEL_DIR
    check_folder(path)
    dev, dt = pick_device_dtype(device, dtype)
    common = dict(local_files_only=True, trust_remote_code=False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **common)
        if quantize:
            # streamed: each decoder layer's weights quantized as they are read, on the target device
            from transformers import AutoConfig

            from .quantize import load_streamed

            model = load_streamed(path, AutoConfig.from_pretrained(path, **common), dt, dev, quantize, attention)
        else:
            model = Gemma4UnifiedForConditionalGeneration.from_pretrained(
                path, use_safetensors=True, dtype=dt, attn_implementation=attention, **common
            )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(path, f"cannot load: {exc}") from exc
    model.to(dev).eval().requires_grad_(False)
    template_file = path / "chat_template.jinja"
    chat_template = template_file.read_text() if template_file.is_file() else tokenizer.chat_template
    if not chat_template:
        raise ModelLoadError(path, "no chat template (chat_template.jinja or in tokenizer_config.json)")
    stop = set()
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    for e in (eos if isinstance(eos, list) else [eos]):
        if e is not None:
            stop.add(int(e))
    turn_end = tokenizer.convert_tokens_to_ids("<turn|>")
    if isinstance(turn_end, int) and turn_end != tokenizer.unk_token_id:
        stop.add(turn_end)
    return Backbone(path=path, model=model, tokenizer=tokenizer, chat_template=chat_template, device=dev, dtype=dt, stop_ids=tuple(sorted(stop)),
                    noise_floor=model_noise_floor(path), units=model_units(path), questions=model_questions(path))
