"""Training recipe of the bundled default model (a small Gemma4UnifiedForConditionalGeneration).

    python -m onepass.model.train --out runs/default --minutes 360            # 2 CPU cores, resumable
    python -m onepass.model.train --out runs/default --minutes 8 --device cuda --workers 14

Data are generated on the fly (``onepass.model.domain``): each sample is one window (10-30 s) of a
fresh synthetic timeline (scenes changing every 3-10 s, 1-3 espeak voices with pauses), laid out
exactly as the runner lays out inference windows (``PromptBuilder``), with ONE task prompt and
its target (captions or transcript, in the formats of ``onepass.model.tasks``). Loss on the
target text (and its closing ``<turn|>``) only, i.e. prefix-LM. The forward is the model's own
plain forward, whose masks are the ones the runner uses (vision blocks bidirectional).

Checkpoints (``OUT/ckpt``: safetensors weights + optimizer state + step) let a run resume; the
export (``OUT/export``) is a Hugging Face folder the loader accepts. ``OUT/log.jsonl`` holds the
loss curve and held-out measures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import domain
from .tasks import Prompts, format_captions, format_transcript

__all__ = ["build_tokenizer", "build_config", "make_sample", "collate", "main"]

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


@dataclass
class _Shim:
    """Just what PromptBuilder needs of a Backbone."""

    tokenizer: object
    chat_template: str
    config: object


# -- samples --------------------------------------------------------------------------------------
def make_sample(rng: np.random.Generator, prompts_builder, *, window_s: tuple[int, int] = (10, 30), task: str | None = None,
                budget: int = 70):
    """One training window: token layout, uint8 cells, positions, audio frames, labels."""
    from onepass.operators.audio import frame_audio
    from onepass.operators.patchify import patchify

    width_s = int(rng.integers(window_s[0], window_s[1] + 1))
    lead_s = float(rng.uniform(0, 8)) if rng.random() < 0.5 else 0.0
    timeline = domain.random_timeline(rng, width_s + lead_s + 4)
    start_ms, end_ms = int(lead_s * 1000) // 40 * 40, int(lead_s * 1000) // 40 * 40 + width_s * 1000
    # frames at 1 fps from the window start; one render per scene
    cells, stamps, scenes = [], [], []
    cache: dict[int, object] = {}
    for k in range(width_s):
        t = start_ms + k * 1000
        j = next(i for i, (span, _) in enumerate(timeline.scenes) if span.start_ms <= t < span.end_ms)
        if j not in cache:
            img = domain.render(timeline.scenes[j][1], rng=rng)
            noise = rng.normal(0, rng.uniform(0, 3), img.shape)
            cache[j] = patchify(np.clip(img + noise, 0, 255).astype(np.uint8), budget, video=True)
        cells.append(cache[j])
        stamps.append(k * 1000)
        scenes.append((k * 1000, timeline.scenes[j][0].caption))
    audio, _ = frame_audio(timeline.audio[start_ms * 16 : end_ms * 16])
    task = task or ("captions" if rng.random() < 0.5 else "transcript")
    prompts = Prompts()
    if task == "captions":
        runs = []
        for t, cap in scenes:
            if runs and runs[-1][2] == cap:
                runs[-1][1] = t
            else:
                runs.append([t, t, cap])
        target = format_captions([tuple(r) for r in runs])
        prompt = prompts.caption
    else:
        utts = []
        for u in timeline.utterances:
            mid = (u.start_ms + u.end_ms) // 2
            if start_ms <= mid < end_ms:
                a, b = max(u.start_ms, start_ms) - start_ms, min(u.end_ms, end_ms) - start_ms
                utts.append((a, b, u.text))
        target = format_transcript(utts)
        prompt = prompts.transcript
    prefix = prompts_builder.prefix(stamps, [c.num_tokens for c in cells], audio.shape[0])
    suffix = prompts_builder.suffix(prompt, True, True)
    tok = prompts_builder.tok
    target_ids = np.asarray(tok(target, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<turn|>")], np.int64)
    ids = np.concatenate([prefix.ids, suffix.ids, target_ids])
    types = np.concatenate([prefix.types, suffix.types, np.zeros_like(target_ids)])
    labels = np.full_like(ids, -100)
    labels[-target_ids.size :] = target_ids
    pix = np.stack([c.cells for c in cells])
    pos = np.stack([c.positions for c in cells])
    return dict(ids=ids, types=types, labels=labels, pix=pix, pos=pos, audio=audio, task=task, target=target,
                stamps=stamps, prompt=prompt, scenes=scenes)


def collate(samples: list[dict], pad_id: int) -> dict:
    b, longest = len(samples), max(s["ids"].size for s in samples)
    ids = torch.full((b, longest), pad_id, dtype=torch.long)
    types = torch.zeros((b, longest), dtype=torch.long)
    labels = torch.full((b, longest), -100, dtype=torch.long)
    attn = torch.zeros((b, longest), dtype=torch.long)
    for i, s in enumerate(samples):
        n = s["ids"].size
        ids[i, :n] = torch.from_numpy(s["ids"])
        types[i, :n] = torch.from_numpy(s["types"])
        labels[i, :n] = torch.from_numpy(s["labels"])
        attn[i, :n] = 1
    t_max = max(s["audio"].shape[0] for s in samples)
    feats = torch.zeros((b, t_max, 640), dtype=torch.float32)
    fmask = torch.zeros((b, t_max), dtype=torch.bool)
    for i, s in enumerate(samples):
        feats[i, : s["audio"].shape[0]] = torch.from_numpy(s["audio"])
        fmask[i, : s["audio"].shape[0]] = True
    return dict(
        input_ids=ids, attention_mask=attn, mm_token_type_ids=types, labels=labels,
        pixel_u8=torch.from_numpy(np.concatenate([s["pix"] for s in samples])),
        video_position_ids=torch.from_numpy(np.concatenate([s["pos"] for s in samples])),
        num_frames_per_video=torch.tensor([s["pix"].shape[0] for s in samples]),
        input_features=feats, input_features_mask=fmask,
    )


class _Stream(torch.utils.data.IterableDataset):
    def __init__(self, model_dir: Path, seed: int, batch: int, window_s: tuple[int, int] = (10, 30)):
        self.model_dir, self.seed, self.batch, self.window_s = model_dir, seed, batch, window_s

    def __iter__(self):
        from transformers import AutoTokenizer, Gemma4UnifiedConfig

        from .prompt import PromptBuilder

        info = torch.utils.data.get_worker_info()
        wid = info.id if info else 0
        rng = np.random.default_rng([self.seed, wid, os.getpid()])
        tok = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        cfg = Gemma4UnifiedConfig.from_pretrained(self.model_dir)
        builder = PromptBuilder(_Shim(tok, (self.model_dir / "chat_template.jinja").read_text(), cfg))
        while True:
            samples = []
            while len(samples) < self.batch:
                try:
                    samples.append(make_sample(rng, builder, window_s=self.window_s))
                except Exception as exc:  # noqa: BLE001 - one bad draw must not end a training run
                    print(f"sample skipped: {type(exc).__name__}: {exc}", flush=True)
            yield collate(samples, tok.pad_token_id)


def _to_device(batch: dict, device) -> dict:
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    out["pixel_values_videos"] = out.pop("pixel_u8").float() / 255.0  # the video processor's x/255
    return out


# -- checkpoints ------------------------------------------------------------------------------------
def export(model, src_dir: Path, out_dir: Path, dtype=torch.bfloat16) -> Path:
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=60.0, help="wall-clock training budget (the LR schedule follows it)")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every-min", type=float, default=10.0)
    ap.add_argument("--export-only", action="store_true", help="export the last checkpoint and stop")
    ap.add_argument("--init", type=Path, default=None, help="start from the weights of an exported folder (same config)")
    ap.add_argument("--window-s", type=int, nargs=2, default=(10, 30), metavar=("MIN", "MAX"),
                    help="window lengths drawn per sample; short windows first is a cheap curriculum on CPU")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)

    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer, Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration

    base, ckpt = args.out / "base", args.out / "ckpt"
    if not (base / "config.json").exists():
        tok = build_tokenizer(base)
        build_config(tok, hidden=args.hidden, layers=args.layers, heads=max(2, args.hidden // 64)).save_pretrained(base)
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    cfg = Gemma4UnifiedConfig.from_pretrained(base)
    torch.manual_seed(args.seed)
    model = Gemma4UnifiedForConditionalGeneration(cfg).to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    step, spent_s = 0, 0.0
    if (ckpt / "model.safetensors").exists():
        model.load_state_dict(load_file(ckpt / "model.safetensors", device=args.device), strict=False)
        model.tie_weights()
        opt.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=args.device, weights_only=True))
        meta = json.loads((ckpt / "state.json").read_text())
        step, spent_s = meta["step"], meta["spent_s"]
        print(f"resumed at step {step} ({spent_s / 60:.1f} min spent)", flush=True)
    elif args.init is not None:
        # from_pretrained applies the checkpoint-name conversions save_pretrained applied
        model = Gemma4UnifiedForConditionalGeneration.from_pretrained(args.init, dtype=torch.float32, use_safetensors=True,
                                                                      local_files_only=True).to(args.device)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
        print(f"initialised from {args.init}", flush=True)
    if args.export_only:
        export(model.eval(), base, args.out / "export")
        print(f"exported {args.out / 'export'} (step {step})", flush=True)
        return 0
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {n_params / 1e6:.1f} M params, vocab {len(tok)}, device {args.device}", flush=True)
    loader = torch.utils.data.DataLoader(_Stream(base, args.seed + step, args.batch, tuple(args.window_s)), batch_size=None,
                                         num_workers=args.workers, prefetch_factor=4 if args.workers else None,
                                         persistent_workers=bool(args.workers), pin_memory=args.device.startswith("cuda"))
    budget_s = args.minutes * 60
    log = open(args.out / "log.jsonl", "a")
    t_start, t_saved = time.time() - spent_s, time.time()
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if args.device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    model.train()
    for batch in loader:
        elapsed = time.time() - t_start
        if elapsed >= budget_s or (args.max_steps is not None and step >= args.max_steps):
            break
        frac = elapsed / budget_s
        lr = args.lr * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        inputs = _to_device(batch, args.device)
        with amp:
            loss = model(**inputs).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 20 == 0 or step == 1:
            rec = {"step": step, "min": round((time.time() - t_start) / 60, 2), "loss": round(loss.item(), 4), "lr": lr}
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if time.time() - t_saved > args.save_every_min * 60:
            _save(model, opt, ckpt, step, time.time() - t_start, save_file)
            t_saved = time.time()
    _save(model, opt, ckpt, step, time.time() - t_start, save_file)
    model.eval()
    export(model, base, args.out / "export")
    print(f"exported {args.out / 'export'} after {step} steps, {(time.time() - t_start) / 60:.1f} min", flush=True)
    return 0


def _save(model, opt, ckpt: Path, step: int, spent_s: float, save_file) -> None:
    ckpt.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, ckpt / "model.safetensors.tmp")
    os.replace(ckpt / "model.safetensors.tmp", ckpt / "model.safetensors")
    torch.save(opt.state_dict(), ckpt / "optimizer.pt")
    (ckpt / "state.json").write_text(json.dumps({"step": step, "spent_s": spent_s}))


if __name__ == "__main__":
    raise SystemExit(main())
