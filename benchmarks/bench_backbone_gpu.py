"""The backbone's figures for issue 14 in ONE run: GPU with the 12B config, or CPU with the default model's.

    python benchmarks/bench_backbone_gpu.py --json out.json                       # GPU: the 12B config, random bf16 weights
    python benchmarks/bench_backbone_gpu.py --config default --json out.json     # CPU (or GPU): the bundled model's config

Parts (each writes its figures into the JSON as soon as it ends, so a run cut short keeps them;
``--parts`` picks some):
- prefill: a 30 s window (30 frames x 66 video tokens + stamps, 750 audio tokens, prompt) at batch
  1/4/16 with the runner's masks (SDPA): tokens/s and MFU against the card's dense bf16 peak;
- decode: greedy steps on that cache, dynamic cache (what the runner does by default) vs a static
  cache with the step compiled (``torch.compile(mode="reduce-overhead")``: CUDA graphs): tokens/s,
  ms per step, real-time factor (30 s of media per window / (prefill + decode));
- stream: the latency from one second of media (a frame's 70 tokens, then 25 audio tokens) to its
  tokens being in the KV cache, appended to a cache that already holds the window so far, vs
  prefilling the whole window at once;
- memory: peak memory for one 30 s window (weights + KV cache + activations, prefill + 64 decode
  steps) unquantized (bf16), int8 and int4 (torchao, weight-only, decoder linears: ``onepass run --quantize``);
- lora: one LoRA training step (PEFT, rank 16, the decoder's linears) on one 30 s window: time and
  peak memory (``onepass finetune --method lora``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import traceback
from pathlib import Path

import torch

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40": 362.0, "4090": 165.0}


def config_12b():
    from transformers import Gemma4UnifiedConfig

    text = dict(vocab_size=262144, hidden_size=3840, intermediate_size=15360, num_hidden_layers=48,
                num_attention_heads=16, num_key_value_heads=8, head_dim=256, global_head_dim=512,
                num_global_key_value_heads=1, attention_k_eq_v=True, sliding_window=1024,
                final_logit_softcapping=30.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                use_bidirectional_attention="vision",
                layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 8)
    return Gemma4UnifiedConfig(text_config=text, vision_config=dict(mm_embed_dim=3840, output_proj_dims=3840, mm_posemb_size=1120),
                               audio_config=dict(audio_embed_dim=640))


def config_default():
    from transformers import Gemma4UnifiedConfig

    from onepass.model.meta import DEFAULT_MODEL_DIR

    return Gemma4UnifiedConfig.from_pretrained(DEFAULT_MODEL_DIR)


def window_types(frames=30, per_frame=66, audio=750, prompt=20):
    types = [0] * 4
    for _ in range(frames):
        types += [0] * 4 + [2] * per_frame + [0]
    types += [0] + [3] * audio + [0] + [0] * prompt
    return torch.tensor(types)


class Bench:
    def __init__(self, args):
        self.args = args
        self.dev = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
        self.dtype = torch.bfloat16 if self.dev.type == "cuda" else torch.float32
        self.cfg = config_12b() if args.config == "12b" else config_default()
        self.text = self.cfg.get_text_config()
        self.out: dict = {"device": torch.cuda.get_device_name() if self.dev.type == "cuda" else "cpu", "config": args.config,
                          "torch": torch.__version__, "parts": {}}
        self.types1 = window_types()
        self.length = self.types1.numel()

    # -- helpers ---------------------------------------------------------------------------------
    def sync(self):
        if self.dev.type == "cuda":
            torch.cuda.synchronize()

    def reset_peak(self):
        if self.dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self):
        return round(torch.cuda.max_memory_allocated() / 2**30, 2) if self.dev.type == "cuda" else None

    def build(self):
        from transformers import Gemma4UnifiedForConditionalGeneration

        torch.manual_seed(0)
        with torch.device("meta"):
            model = Gemma4UnifiedForConditionalGeneration(self.cfg)
        model = model.to_empty(device=self.dev).to(self.dtype)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.02)
            for n, b in model.named_buffers():
                if "layer_scalar" in n:
                    b.fill_(1.0)
        lm = model.model.language_model
        lm.rotary_emb = type(lm.rotary_emb)(self.text, device=self.dev)  # to_empty left RoPE's tables uninitialised
        return model.eval().requires_grad_(False)

    def masks(self, embeds, attn, cache, pos, types):
        from transformers.masking_utils import create_masks_for_generate
        from transformers.models.gemma4_unified.modeling_gemma4_unified import get_block_sequence_ids_for_mask

        block = get_block_sequence_ids_for_mask(types, embeds.device) if types is not None else torch.full(attn.shape, -1, device=embeds.device)
        return create_masks_for_generate(config=self.text, inputs_embeds=embeds, attention_mask=attn, past_key_values=cache,
                                         position_ids=pos, block_sequence_ids=block)

    def prefill(self, model, b, cache):
        lm = model.model.language_model
        types = self.types1[None].expand(b, -1).to(self.dev)
        embeds = torch.randn(b, self.length, self.text.hidden_size, device=self.dev, dtype=self.dtype) * 0.02
        attn = torch.ones(b, self.length, dtype=torch.long, device=self.dev)
        pos = torch.arange(self.length, device=self.dev)[None].expand(b, -1)
        with torch.inference_mode():
            out = lm(inputs_embeds=embeds, attention_mask=self.masks(embeds, attn, cache, pos, types), position_ids=pos,
                     past_key_values=cache, use_cache=True)
            tok = model.lm_head(out.last_hidden_state[:, -1]).argmax(-1, keepdim=True)
        return attn, tok

    def decode(self, model, cache, attn, tok, steps, step_fn=None):
        lm = model.model.language_model
        b = tok.shape[0]
        with torch.inference_mode():
            for i in range(steps):
                attn = torch.cat([attn, torch.ones(b, 1, dtype=torch.long, device=self.dev)], 1)
                p = torch.full((b, 1), self.length + i, device=self.dev)
                e = lm.embed_tokens(tok)
                m = self.masks(e, attn, cache, p, None)
                if step_fn is None:
                    h = lm(inputs_embeds=e, attention_mask=m, position_ids=p, past_key_values=cache, use_cache=True).last_hidden_state
                else:
                    h = step_fn(e, m, p, cache)
                tok = model.lm_head(h[:, -1]).argmax(-1, keepdim=True)
        return tok

    def save(self, part, figures):
        self.out["parts"][part] = figures
        print(json.dumps({part: figures}), flush=True)
        if self.args.json:
            Path(self.args.json).write_text(json.dumps(self.out, indent=1))

    # -- parts -----------------------------------------------------------------------------------
    def part_prefill_decode(self, model):
        from transformers import DynamicCache, StaticCache

        n_params = sum(p.numel() for p in model.parameters())
        body = n_params - model.model.language_model.embed_tokens.weight.numel()
        name = self.out["device"]
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), 989.0) * 1e12 if self.dev.type == "cuda" else None
        lm = model.model.language_model
        compiled = None
        if self.dev.type == "cuda" and not self.args.no_compile:
            def step(e, m, p, cache):
                return lm(inputs_embeds=e, attention_mask=m, position_ids=p, past_key_values=cache, use_cache=True).last_hidden_state
            compiled = torch.compile(step, mode="reduce-overhead", fullgraph=False, dynamic=False)
        rows = {}
        for b in self.args.batches:
            times = []
            for _ in range(self.args.runs):
                cache = DynamicCache(config=self.cfg)
                self.sync()
                t = time.perf_counter()
                attn, tok = self.prefill(model, b, cache)
                self.sync()
                times.append(time.perf_counter() - t)
            pre = statistics.median(times)
            head_dim = lm.layers[0].self_attn.head_dim  # sliding layers' (the 12B's global layers: 512)
            flops = 2 * body * self.length * b + 4 * self.text.num_hidden_layers * self.text.num_attention_heads * head_dim * min(self.length, 1024) * self.length * b
            row = {"prefill_tokens": b * self.length, "prefill_s": round(pre, 4), "prefill_tok_s": round(b * self.length / pre),
                   "mfu": round(flops / pre / peak, 4) if peak else None}
            for kind in ("dynamic", "static_compiled"):
                if kind == "static_compiled" and compiled is None:
                    continue
                try:
                    if kind == "dynamic":
                        cache = DynamicCache(config=self.cfg)
                        fn = None
                    else:
                        cache = StaticCache(config=self.cfg, max_cache_len=self.length + self.args.decode + 8)
                        fn = compiled
                    attn, tok = self.prefill(model, b, cache)
                    if fn is not None:  # warm-up: compile and capture (not timed)
                        warm = StaticCache(config=self.cfg, max_cache_len=self.length + self.args.decode + 8)
                        wa, wt = self.prefill(model, b, warm)
                        self.decode(model, warm, wa, wt, 3, fn)
                        del warm
                    self.sync()
                    t = time.perf_counter()
                    self.decode(model, cache, attn, tok, self.args.decode, fn)
                    self.sync()
                    dec = time.perf_counter() - t
                    row[kind] = {"tok_s": round(b * self.args.decode / dec, 1), "ms_per_step": round(dec / self.args.decode * 1000, 2),
                                 "real_time_x": round(b * 30.0 / (pre + dec), 1)}
                except Exception as exc:  # noqa: BLE001 - one failing variant must not lose the others
                    row[kind] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
                del cache
            rows[f"batch_{b}"] = row
            self.save("prefill_decode", rows)
            self.reset_peak()

    def part_stream(self, model):
        """Per second of media: a frame (4 + 66 + 1 tokens) appended to a cache holding the window so far."""
        from transformers import DynamicCache

        lm = model.model.language_model
        cache = DynamicCache(config=self.cfg)
        attn = torch.zeros(1, 0, dtype=torch.long, device=self.dev)
        lat = []
        with torch.inference_mode():
            for k in range(30):
                chunk_types = torch.tensor([[0] * 4 + [2] * 66 + [0]], device=self.dev)
                n = chunk_types.shape[1]
                e = torch.randn(1, n, self.text.hidden_size, device=self.dev, dtype=self.dtype) * 0.02
                attn = torch.cat([attn, torch.ones(1, n, dtype=torch.long, device=self.dev)], 1)
                p = torch.arange(attn.shape[1] - n, attn.shape[1], device=self.dev)[None]
                self.sync()
                t = time.perf_counter()
                all_types = torch.cat([torch.zeros(1, attn.shape[1] - n, dtype=torch.long, device=self.dev), chunk_types], 1)
                lm(inputs_embeds=e, attention_mask=self.masks(e, attn, cache, p, all_types), position_ids=p, past_key_values=cache, use_cache=True)
                self.sync()
                lat.append(time.perf_counter() - t)
        whole = []
        for _ in range(self.args.runs):
            c = DynamicCache(config=self.cfg)
            self.sync()
            t = time.perf_counter()
            self.prefill(model, 1, c)
            self.sync()
            whole.append(time.perf_counter() - t)
        self.save("stream", {"frame_chunk_ms_median": round(statistics.median(lat[2:]) * 1000, 2),
                             "frame_chunk_ms_last": round(lat[-1] * 1000, 2),
                             "window_prefill_ms": round(statistics.median(whole) * 1000, 1),
                             "note": "streaming: a second's frame is in the cache this long after it is decoded; windowed: the "
                                     "first second waits for the window's end (30 s) plus the window's prefill"})

    def part_memory(self):
        from onepass.model.load import quantize_decoder
        from transformers import DynamicCache

        rows = {}
        for scheme in self.args.schemes:
            try:
                self.reset_peak()
                model = self.build()
                if scheme != "none":
                    quantize_decoder(model, scheme, self.dev)
                self.reset_peak()
                weights = torch.cuda.memory_allocated() / 2**30 if self.dev.type == "cuda" else None
                cache = DynamicCache(config=self.cfg)
                t = time.perf_counter()
                attn, tok = self.prefill(model, 1, cache)
                self.decode(model, cache, attn, tok, 64)
                self.sync()
                rows[scheme] = {"weights_gib": round(weights, 2) if weights is not None else None, "peak_gib": self.peak_gib(),
                                "window_s": round(time.perf_counter() - t, 3)}
                del model, cache
            except Exception as exc:  # noqa: BLE001
                rows[scheme] = {"error": f"{type(exc).__name__}: {exc}"[:400], "trace": traceback.format_exc()[-600:]}
            self.save("memory", rows)

    def part_lora(self):
        from peft import LoraConfig, get_peft_model

        from onepass.model.training.finetune import LORA_TARGETS

        self.reset_peak()
        model = self.build()
        model.requires_grad_(False)
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS, lora_dropout=0.0))
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        lm = model.base_model.model.model.language_model
        types = self.types1[None].to(self.dev)
        embeds = torch.randn(1, self.length, self.text.hidden_size, device=self.dev, dtype=self.dtype) * 0.02
        attn = torch.ones(1, self.length, dtype=torch.long, device=self.dev)
        pos = torch.arange(self.length, device=self.dev)[None]
        labels = torch.randint(0, min(1000, self.text.vocab_size), (1, self.length), device=self.dev)
        times = []
        for _ in range(self.args.runs):
            self.sync()
            t = time.perf_counter()
            h = lm(inputs_embeds=embeds, attention_mask=self.masks(embeds, attn, None, pos, types), position_ids=pos, use_cache=False).last_hidden_state
            logits = model.base_model.model.lm_head(h[:, -64:]).float()  # the target is a short text after the media
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, -64:].flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            self.sync()
            times.append(time.perf_counter() - t)
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.save("lora", {"step_s": round(statistics.median(times), 3), "peak_gib": self.peak_gib(), "trained_params": trained,
                           "tokens": self.length, "gradient_checkpointing": True})


def main():
    from onepass.model.load import _quiet_torchao

    _quiet_torchao()  # before transformers imports torchao
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=("12b", "default"), default="12b")
    ap.add_argument("--cpu", action="store_true", help="run on CPU even where CUDA is present")
    ap.add_argument("--parts", nargs="+", default=["prefill_decode", "stream", "memory", "lora"])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--schemes", nargs="+", default=["none", "int8", "int4"], help="none: bf16 on GPU, float32 on CPU")
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    bench = Bench(args)
    t0 = time.perf_counter()
    model = None
    if {"prefill_decode", "stream"} & set(args.parts):
        model = bench.build()
        bench.out["params_b"] = round(sum(p.numel() for p in model.parameters()) / 1e9, 3)
        bench.out["build_s"] = round(time.perf_counter() - t0, 1)
    for part in args.parts:
        try:
            if part == "prefill_decode":
                bench.part_prefill_decode(model)
            elif part == "stream":
                bench.part_stream(model)
                del model
                model = None
                bench.reset_peak()
            elif part == "memory":
                bench.part_memory()
            elif part == "lora":
                bench.part_lora()
        except Exception as exc:  # noqa: BLE001 - a part that fails is recorded; the next one runs
            bench.save(part, {"error": f"{type(exc).__name__}: {exc}"[:400], "trace": traceback.format_exc()[-800:]})
    bench.out["total_s"] = round(time.perf_counter() - t0, 1)
    if args.json:
        Path(args.json).write_text(json.dumps(bench.out, indent=1))
    print(json.dumps(bench.out, indent=1))


if __name__ == "__main__":
    main()
