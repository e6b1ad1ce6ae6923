"""Weight-only quantization of the decoder (``--quantize int8|int4``), and the streamed load.

What is quantized: every ``nn.Linear`` of the text decoder's layers (attention and MLP
projections), and on a CPU also the tied token embedding / ``lm_head`` (int8, one copy serving
both: the 12B's 262,144 x 3,840 table is 4 GB in float32). The embedders (``model.embed_vision``,
``model.embed_audio``) stay as loaded.

Per device:

- CUDA: torchao. int8 per channel (``Int8WeightOnlyConfig``); int4 as tinygemm's packed int4 in
  groups of 128 (``Int4WeightOnlyConfig``). Activations bf16.
- CPU: PyTorch's own CPU kernels behind two small modules, activations float32 (measured on this
  2-core x86 machine, one 3840 x 15360 projection: a 1,000-token prefill takes 11.3 s in bf16 and
  1.3 s in float32: no bf16 GEMM here). ``Int8Linear``: per-channel int8; a prefill dequantizes the
  layer to float32 and runs the float32 GEMM (2.0 s for those 1,000 tokens), a decode step runs
  ``aten._weight_int8pack_mm`` (15 ms a token vs 186 ms for torchao's CPU int8, which dequantizes
  every call). ``Int4PackedLinear``: asymmetric int4 in groups of 32, two weights a byte, through
  ``aten._weight_int4pack_mm_for_cpu`` (gpt-fast's CPU kernel; torchao 0.18 has no packed int4 for
  x86: its ``Intx`` weights take one byte each).

``quantize_decoder`` quantizes a model in memory; ``load_streamed`` quantizes each layer's
weights as they are read from the safetensors shards, so that the unquantized model never exists
whole. (transformers' own torchao loading quantizes per tensor too, but it memory-maps every
shard for the whole load and each kept view pins its file: 553 MB of file pages stayed resident
after loading a 480 MB checkpoint; the 12B's 24 GB would be.)
"""

from __future__ import annotations

import logging
import sys

import torch

QUANTIZE = ("int8", "int4")
NOT_QUANTIZED = ("model.embed_vision", "model.embed_audio", "lm_head")  # module-name prefixes no decoder Linear has
INT4_CPU_GROUP = 32
DECODE_ROWS = 8  # up to this many rows a call is a decode step (the int8 kernel); more: a prefill (float32 GEMM)


def quiet_torchao() -> None:
    """transformers imports torchao when it is installed; its import-time notices (kernels this build
    lacks, torch's pytree deprecations) are not the user's business."""
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _int8_rows(w, shape: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 of a 2-D weight: a tensor, or an iterable of its row blocks with the
    whole ``shape``. Block by block into preallocated outputs: float32 temporaries of one block, no
    second copy of the result."""
    if isinstance(w, torch.Tensor):
        shape, w = tuple(w.shape), torch.split(w, 1024)
    q = torch.empty(shape, dtype=torch.int8)
    scales = torch.empty(shape[0], dtype=torch.float32)
    at = 0
    for rows in w:
        f = rows.float()
        scale = f.abs().amax(-1).clamp(min=1e-8) / 127
        q[at:at + len(f)] = f.div_(scale[:, None]).round_().clamp_(-127, 127)
        scales[at:at + len(f)] = scale
        at += len(f)
    return q, scales


def _frozen(t: torch.Tensor) -> torch.nn.Parameter:
    p = torch.nn.Parameter(t, requires_grad=False)
    p._is_hf_initialized = True  # transformers' init skips it
    return p


class Int8Linear(torch.nn.Linear):
    """A Linear holding per-channel int8 weights (CPU). Made in place from a Linear by ``_int8_cpu``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if x2.shape[0] <= DECODE_ROWS:
            y = torch._weight_int8pack_mm(x2.to(torch.bfloat16), self.qweight, self.scale.to(torch.bfloat16)).to(x.dtype)
        else:
            w = self.qweight.to(x.dtype)
            y = x2 @ w.mul_(self.scale[:, None].to(x.dtype)).t()
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per channel"


def _int8_cpu(module: torch.nn.Linear) -> torch.nn.Module:
    qweight, scale = _int8_rows(module.weight.detach())
    del module._parameters["weight"]
    module.qweight, module.scale = _frozen(qweight), _frozen(scale)
    module.__class__ = Int8Linear
    return module


class Int4PackedLinear(torch.nn.Linear):
    """An ``nn.Linear`` whose weight is held as packed int4 (two weights a byte) with per-group
    bf16 scales and zeros, multiplied by PyTorch's CPU int4 kernel. Made in place from a Linear by
    ``_pack_int4_cpu`` (the module's class changes rather than the module, so that every reference
    to it, its name in the model included, stays valid)."""

    group_size: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).to(self.scales_and_zeros.dtype)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.packed_weight, self.group_size, self.scales_and_zeros)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 groups of {self.group_size}"


def _pack_int4_cpu(module: torch.nn.Module, group_size: int) -> torch.nn.Module:
    """Quantize one Linear's weight to asymmetric int4 per group of ``group_size`` input
    channels (tinygemm's convention: w = (q - 8) * scale + zero) and pack it, in place."""
    if not isinstance(module, torch.nn.Linear) or module.in_features % group_size or module.in_features % 2:
        return module  # a shape the kernel cannot take stays as it is
    w = module.weight.detach()
    n, k = w.shape
    packed, scales, zeros = [], [], []
    for rows in torch.split(w, 1024):  # in row blocks: the float32 temporaries stay small on the 12B's 15360-row MLPs
        groups = rows.float().reshape(rows.shape[0], k // group_size, group_size)
        lo, hi = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        scale = ((hi - lo) / 15).clamp(min=1e-6)
        q = groups.sub_(lo).div_(scale).round_().clamp_(0, 15).to(torch.int32).reshape(rows.shape[0], k)
        packed.append(torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1))  # rows pack independently
        scales.append(scale)
        zeros.append(lo + 8 * scale)
    packed = torch.cat(packed)
    scales_and_zeros = torch.cat([torch.cat(scales), torch.cat(zeros)], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)  # [k/g, n, 2]
    del module._parameters["weight"]
    module.packed_weight, module.scales_and_zeros = _frozen(packed), _frozen(scales_and_zeros)
    module.__class__ = Int4PackedLinear
    module.group_size = group_size
    return module


class Int8TiedEmbedding(torch.nn.Module):
    """The token embedding as per-row int8 (CPU): a lookup dequantizes only the rows it takes.
    ``lm_head`` becomes an ``Int8Linear`` over the same int8 table (the two stay tied)."""

    def __init__(self, qweight: torch.nn.Parameter, scale: torch.nn.Parameter, embed_scale: float, padding_idx):
        super().__init__()
        self.qweight, self.scale = qweight, scale
        self.embed_scale, self.padding_idx = embed_scale, padding_idx
        self.num_embeddings, self.embedding_dim = qweight.shape

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = torch.nn.functional.embedding(ids, self.qweight).float()
        return rows * (self.scale[ids] * self.embed_scale)[..., None]


def quantize_embedding_cpu(model: torch.nn.Module, weight=None, shape: tuple[int, int] | None = None) -> bool:
    """Tied embedding and lm_head to one int8 table (CPU), from ``weight`` (the stored table: a
    tensor or its row blocks as read) or the loaded one; False where the model does not tie them."""
    lm = model.model.language_model
    embed, head = lm.embed_tokens, model.lm_head
    if not isinstance(embed, torch.nn.Embedding) or not model.config.get_text_config().tie_word_embeddings:
        return False
    if weight is None and head.weight is not embed.weight:
        return False
    qweight, scale = _int8_rows(embed.weight.detach() if weight is None else weight, shape)
    qweight, scale = _frozen(qweight), _frozen(scale)
    factor = float(embed.scalar_embed_scale)  # Gemma's sqrt(hidden), as the class computes it
    lm.embed_tokens = Int8TiedEmbedding(qweight, scale, factor, embed.padding_idx)
    head._parameters.pop("weight", None)
    head.qweight, head.scale = qweight, scale
    head.__class__ = Int8Linear
    model.config.get_text_config().tie_word_embeddings = False  # nothing may re-tie lm_head to a float table
    return True


def quantize_linear(module: torch.nn.Linear, scheme: str, device: torch.device) -> torch.nn.Module:
    """Quantize one Linear in place with ``scheme`` for ``device``."""
    if scheme not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {scheme!r}")
    if device.type == "cpu":
        return _int8_cpu(module) if scheme == "int8" else _pack_int4_cpu(module, INT4_CPU_GROUP)
    quiet_torchao()
    try:
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
    except ImportError as exc:
        raise ImportError(f"--quantize {scheme} on {device} needs torchao: pip install 'onepass[quant]' ({exc})") from exc
    config = Int8WeightOnlyConfig() if scheme == "int8" else Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d")
    quantize_(module, config, filter_fn=lambda m, fqn: True)
    return module


def is_decoder_linear(module: torch.nn.Module, fqn: str) -> bool:
    """A Linear of the text decoder: no NOT_QUANTIZED prefix covers it."""
    return isinstance(module, torch.nn.Linear) and not any(fqn == p or fqn.startswith(p + ".") for p in NOT_QUANTIZED)


def quantize_decoder(model: torch.nn.Module, scheme: str, device: torch.device) -> int:
    """Quantize a model in memory, in place (on a CPU the tied embedding too); returns how many
    decoder Linears were quantized."""
    picked = [m for name, m in model.named_modules() if is_decoder_linear(m, name)]
    for module in picked:
        quantize_linear(module, scheme, device)
    if device.type == "cpu":
        quantize_embedding_cpu(model)
    return len(picked)


def _libc():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    return ctypes.CDLL(name) if name else None


def _trim() -> None:
    """Hand freed heap memory back to the OS (glibc keeps freed blocks under its mmap threshold in
    its heap, and the source tensors and quantizer temporaries of every layer are such blocks)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def release_freed_memory_eagerly(threshold: int = 1 << 20) -> None:
    """Have glibc serve every allocation of ``threshold`` bytes or more with its own mmap, returned
    to the OS when freed (M_MMAP_THRESHOLD; glibc otherwise raises the threshold to 32 MB as big
    blocks are freed and keeps them in a heap that fragments). Measured on a 6-layer checkpoint of
    the 12B's shape, one 10 s window analysed in int8: the process's peak over its loaded size
    +777 MB -> +510 MB, and +451 MB -> +32 MB kept after it; prefill ~10% slower (fresh pages)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(-3, threshold)  # M_MMAP_THRESHOLD


def load_streamed(path, config, dtype: torch.dtype, device: torch.device, scheme: str, attention: str):
    """Build the model empty (meta device), then bring in its tensors shard by shard, each read
    alone (``pread``: no memory map that would keep a whole shard resident), cast, placed on
    ``device`` and, for a decoder Linear, quantized at once: the unquantized model never exists
    whole, and the peak is about the quantized model plus one tensor in flight.

    Buffers the checkpoint does not hold (rotary frequencies, the embedding scale) are computed by
    the class's own initialisation, which skips every tensor already loaded. Raises ``KeyError`` /
    ``ValueError`` naming a tensor the model does not have, has in another shape, or misses.
    """
    import json
    from pathlib import Path

    from safetensors import safe_open
    from transformers import Gemma4UnifiedForConditionalGeneration

    path = Path(path)
    if device.type == "cpu":
        release_freed_memory_eagerly()  # the process's whole life: load, then every window's cache and temporaries
    with torch.device("meta"):
        model = Gemma4UnifiedForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation=attention)
    expected = model.state_dict(keep_vars=True)
    # checkpoint names -> the class's names, by transformers' own renamings for this model
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    index = path / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    tied_int8 = False
    for file in files:
        with safe_open(path / file, framework="pt", device="cpu", backend="pread") as f:
            for stored in f.keys():
                name, converted = rename_source_key(stored, renamings, converters, model.base_model_prefix, expected)
                if converted is not None:
                    raise KeyError(f"{file}: tensor {stored!r} needs a conversion the streamed load does not do")
                if name not in expected:
                    raise KeyError(f"{file}: tensor {stored!r} is not one of the model's")
                stored_slice = f.get_slice(stored)
                shape = tuple(stored_slice.get_shape())
                if shape != tuple(expected[name].shape):
                    raise ValueError(f"{file}: {name} has shape {shape}, the model's is {tuple(expected[name].shape)}")
                module_name, _, attr = name.rpartition(".")
                module = model.get_submodule(module_name)
                if device.type == "cpu" and module is model.get_input_embeddings() and attr == "weight":
                    # the 12B's table: 2 GB stored, 4 GB in float32; read and quantized 4,096 rows at a time
                    blocks = (stored_slice[i:min(i + 4096, shape[0])] for i in range(0, shape[0], 4096))
                    if quantize_embedding_cpu(model, blocks, shape):
                        tied_int8 = True
                        _trim()
                        continue
                tensor = f.get_tensor(stored)
                to_quantize = attr == "weight" and is_decoder_linear(module, module_name)
                if tensor.is_floating_point() and not (to_quantize and device.type == "cpu"):  # the CPU quantizers read any dtype
                    tensor = tensor.to(dtype)
                tensor = tensor.to(device)
                if attr in module._parameters:
                    module._parameters[attr] = torch.nn.Parameter(tensor, requires_grad=False)
                else:
                    module._buffers[attr] = tensor
                del tensor
                if to_quantize:
                    quantize_linear(module, scheme, device)  # this Linear, now: its source is freed next
                    _trim()
    if not tied_int8:  # (the int8 table already serves both)
        model.tie_weights()
    for module in model.modules():
        own = list(module._parameters.items()) + list(module._buffers.items())
        meta = [(n, t) for n, t in own if t is not None and t.is_meta]
        for n, t in own:
            if t is not None and not t.is_meta:
                t._is_hf_initialized = True
        for n, t in meta:  # computed, not stored (rotary frequencies, embedding scale): the class's init fills them
            if n in module._parameters:
                raise KeyError(f"the checkpoint lacks parameter {n!r} of a {type(module).__name__}")
            module._buffers[n] = torch.empty_like(t, device=device)
        module._is_hf_initialized = not meta
    model.initialize_weights()
    if (path / "generation_config.json").is_file():
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(path, local_files_only=True)
    return model
