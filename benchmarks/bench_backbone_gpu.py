"""GPU benchmark of the 12B Gemma 4 Unified decoder with random bf16 weights (contract doc section 5).

    python benchmarks/bench_backbone_gpu.py [--batches 1 4 16] [--decode 64]

A 30 s window = 30 frames x (66 video tokens + stamp + begin/end) + 750 audio tokens + prompt.
The same masks as the runner (each frame a bidirectional block). Prints prefill tokens/s, MFU
against the card's dense bf16 peak, decode tokens/s and the implied real-time factor.
"""

from __future__ import annotations

import argparse
import time

import torch

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


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


def window_types(frames=30, per_frame=66, audio=750, prompt=20):
    types = [0] * 4
    for _ in range(frames):
        types += [0] * 4 + [2] * per_frame + [0]
    types += [0] + [3] * audio + [0] + [0] * prompt
    return torch.tensor(types)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from transformers import DynamicCache, Gemma4UnifiedForConditionalGeneration
    from transformers.masking_utils import create_masks_for_generate
    from transformers.models.gemma4_unified.modeling_gemma4_unified import get_block_sequence_ids_for_mask

    cfg = config_12b()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = Gemma4UnifiedForConditionalGeneration(cfg)
    model = model.to_empty(device="cuda").to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
        for n, b in model.named_buffers():
            if "layer_scalar" in n:
                b.fill_(1.0)
    model.eval().requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters())
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), 989.0) * 1e12
    print(f"{name}: 12B config, {n_params / 1e9:.2f} B params bf16, built in {time.perf_counter() - t0:.1f} s", flush=True)
    lm, text_cfg = model.model.language_model, cfg.get_text_config()
    types1 = window_types()
    length = types1.numel()
    media_s = 30.0
    # FLOPs per prefill token: 2 x (non-embedding params) + attention (QK and PV over visible keys)
    body = n_params - model.model.language_model.embed_tokens.weight.numel()
    for b in args.batches:
        types = types1[None].expand(b, -1).cuda()
        embeds = torch.randn(b, length, 3840, device="cuda", dtype=torch.bfloat16) * 0.02
        attn = torch.ones(b, length, dtype=torch.long, device="cuda")
        pos = torch.arange(length, device="cuda")[None].expand(b, -1)
        times = []
        for _ in range(args.runs):
            cache = DynamicCache(config=cfg)
            torch.cuda.synchronize()
            t = time.perf_counter()
            with torch.inference_mode():
                masks = create_masks_for_generate(config=text_cfg, inputs_embeds=embeds, attention_mask=attn, past_key_values=cache,
                                                  position_ids=pos, block_sequence_ids=get_block_sequence_ids_for_mask(types, embeds.device))
                out = lm(inputs_embeds=embeds, attention_mask=masks, position_ids=pos, past_key_values=cache, use_cache=True)
                model.lm_head(out.last_hidden_state[:, -1])
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        prefill = sorted(times)[len(times) // 2]
        attn_flops = 48 * 4 * 16 * 256 * min(length, 1024) * length * b  # rough: sliding window keys
        flops = 2 * body * length * b + attn_flops
        # decode
        tok = torch.zeros(b, 1, dtype=torch.long, device="cuda")
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            for i in range(args.decode):
                attn = torch.cat([attn, torch.ones(b, 1, dtype=torch.long, device="cuda")], 1)
                p = torch.full((b, 1), length + i, device="cuda")
                e = model.model.language_model.embed_tokens(tok)
                o = lm(inputs_embeds=e, attention_mask=attn, position_ids=p, past_key_values=cache, use_cache=True)
                tok = model.lm_head(o.last_hidden_state[:, -1]).argmax(-1, keepdim=True)
        torch.cuda.synchronize()
        dec = time.perf_counter() - t
        rtf = b * media_s / (prefill + dec)
        print(f"batch {b:2d}: prefill {b * length} tok in {prefill * 1000:.0f} ms (median of {args.runs}) = "
              f"{b * length / prefill:,.0f} tok/s, MFU {flops / prefill / peak:.1%}; decode {args.decode} steps "
              f"{b * args.decode / dec:,.0f} tok/s ({dec / args.decode * 1000:.1f} ms/step); "
              f"real-time factor {rtf:.0f}x (30 s windows, prefill + {args.decode} tokens)", flush=True)
        del cache, out, embeds
        torch.cuda.empty_cache()
    print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
