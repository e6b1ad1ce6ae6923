"""Fine-tuning a Gemma 4 Unified checkpoint on the user's own labelled windows (``onepass finetune``).

The model side only (no Ray, no file formats): labelled windows in, a Hugging Face folder out.
``onepass.pipeline.finetune`` reads the labelled tables and decodes the clips.

- One pass over shared weights: the same target text (captions, transcripts with times, in the
  runner's prompt formats and layout) trains vision, audio and text together.
- Full fine-tuning for small checkpoints; LoRA adapters (PEFT) on the decoder's linear layers for
  big ones (``method="auto"``: LoRA above 1 B parameters); adapters are merged on export, so the
  result is a plain folder ``--model`` accepts.
- The loop is the recipe's (:mod:`.loop`): step-seeded batches (a resume draws the same items),
  a checkpoint every few minutes (only the trained tensors, the optimizer and the step), the
  held-out target loss and token accuracy in ``log.jsonl`` before training and every
  ``eval_every`` steps.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..load import check_folder
from ..meta import MODEL_META, model_noise_floor, model_units, model_window_s
from ..records import Window
from ..tasks import format_captions, format_transcript
from . import samples as S
from .loop import Loop

__all__ = ["FinetuneConfig", "LabelledWindow", "caption_target", "transcript_target", "finetune"]

LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
LORA_ABOVE = 1_000_000_000  # parameters: "auto" picks LoRA above this


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 200
    batch: int = 4  # windows (each with one task) per step
    lr: float = 1e-4
    warmup: int = 10
    min_lr_frac: float = 0.1
    weight_decay: float = 0.0
    clip: float = 1.0
    method: str = "auto"  # auto | full | lora
    lora_rank: int = 16
    lora_alpha: int = 32
    seed: int = 0

    def lr_at(self, step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, self.warmup))
        frac = min(1.0, step / max(1, self.steps))
        return self.lr * warm * (self.min_lr_frac + (1 - self.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))


@dataclass(frozen=True)
class LabelledWindow:
    """A window of a labelled clip and the target text of one task (in the runner's format)."""

    window: Window
    task: str  # "captions" | "transcript"
    target: str


def caption_target(window: Window, captions: list[tuple[int, int, int, str]]) -> str | None:
    """The caption target of a window from caption rows (start_ms, end_ms, frame_ms, text), absolute
    times: each kept frame takes the row of its frame (else the row whose span covers it), runs of
    equal captions are merged, stamps as the prompt gives them. None when no frame is labelled."""
    by_frame = {f: t for _, _, f, t in captions}
    runs: list[list] = []
    for t in window.frame_ms:
        text = by_frame.get(t) or next((c for a, b, _, c in captions if a <= t < b), None)
        if not text:
            continue
        rel = (t - window.span.start_ms) // 1000 * 1000
        if runs and runs[-1][2] == text:
            runs[-1][1] = rel
        else:
            runs.append([rel, rel, text])
    return format_captions([tuple(r) for r in runs]) if runs else None


def transcript_target(window: Window, utterances: list[tuple[int, int, str]]) -> str:
    """The transcript target of a window from (start_ms, end_ms, text) rows, absolute times: the
    rows whose middle falls in the window (the runner's rule), clipped to it, relative times."""
    a, b = window.span.start_ms, window.span.end_ms
    rows = sorted((max(s, a) - a, min(e, b) - a, " ".join(t.split())) for s, e, t in utterances if a <= (s + e) // 2 < b and t.strip())
    return format_transcript(rows)


# -- model ----------------------------------------------------------------------------------------
def load_trainable(base: Path, method: str, cfg: FinetuneConfig, device: torch.device):
    """(model in float32 on ``device``, tokenizer, the method used); LoRA wraps the decoder's linears."""
    from transformers import AutoTokenizer, Gemma4UnifiedForConditionalGeneration

    check_folder(base)
    common = dict(local_files_only=True, trust_remote_code=False)
    tok = AutoTokenizer.from_pretrained(base, **common)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    model = Gemma4UnifiedForConditionalGeneration.from_pretrained(base, use_safetensors=True, dtype=dtype, **common).to(device)
    if method == "auto":
        method = "lora" if sum(p.numel() for p in model.parameters()) > LORA_ABOVE else "full"
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                 target_modules=LORA_TARGETS, bias="none"))
    elif method != "full":
        raise ValueError(f"method must be auto, full or lora, got {method!r}")
    else:
        model.requires_grad_(True)
    return model, tok, method


def lm_loss(model, batch: dict, noise_floor: float = 0.0) -> dict[str, torch.Tensor]:
    """Cross-entropy on the target tokens (and their closing <turn|>) of one sub-batch."""
    from .recipe import forward

    logits, _ = forward(model, batch, noise_floor=noise_floor)
    labels = batch["labels"]
    return {"lm": F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)}


@torch.no_grad()
def heldout(model, items: list[dict], pad: int, batch: int = 4, noise_floor: float = 0.0) -> dict:
    """Mean target loss and teacher-forced token accuracy over held-out items."""
    from .recipe import forward

    model.eval()
    loss = correct = count = 0.0
    for group in _groups(items, batch):
        b = S.collate(group, pad)
        logits, _ = forward(model, b, noise_floor=noise_floor)
        labels = b["labels"][:, 1:]
        keep = labels != -100
        lg = logits[:, :-1][keep].float()
        loss += float(F.cross_entropy(lg, labels[keep], reduction="sum"))
        correct += float((lg.argmax(-1) == labels[keep]).sum())
        count += float(keep.sum())
    model.train()
    return {"loss": round(loss / max(count, 1), 4), "token_acc": round(correct / max(count, 1), 4), "tokens": int(count)}


def _layout_key(item: dict) -> tuple[bool, bool]:
    return item["pix"] is not None, item["audio"].shape[0] > 0


def _groups(items: list[dict], size: int) -> list[list[dict]]:
    """Items split by layout kind (collate takes one kind), in chunks of ``size``."""
    kinds: dict[tuple, list[dict]] = {}
    for it in items:
        kinds.setdefault(_layout_key(it), []).append(it)
    return [v[i : i + size] for v in kinds.values() for i in range(0, len(v), size)]


def make_items(labelled: list[LabelledWindow], builder, vocab) -> list[dict]:
    """Training items in the runner's layout (recipe's ``samples`` format, no auxiliary labels)."""
    items = []
    for lw in labelled:
        w = lw.window
        stamps = [t - w.span.start_ms for t in w.frame_ms]
        item = S.make_item(builder, vocab, stamps, list(w.patches), w.audio, lw.task, lw.target, [], [])
        items.append(item)
    return items


class _Batches:
    """``(step, {kind: sub-batch})`` drawn from [seed, step] alone: a resume continues the draws."""

    def __init__(self, items: list[dict], cfg: FinetuneConfig, start: int, pad: int):
        self.items, self.cfg, self.step, self.pad = items, cfg, start, pad

    def __iter__(self):
        while True:
            rng = np.random.default_rng([self.cfg.seed, self.step])
            pick = [self.items[i] for i in rng.choice(len(self.items), size=min(self.cfg.batch, len(self.items)), replace=False)]
            subs = {}
            for group in _groups(pick, len(pick)):
                v, a = _layout_key(group[0])
                subs[("va" if v and a else "v" if v else "a") + "_windows"] = _strip(S.collate(group, self.pad))
            yield self.step, subs
            self.step += 1


def _strip(batch: dict) -> dict:
    """Only what the forward and the LM loss read."""
    return {k: v for k, v in batch.items() if k not in ("cells", "audio_time", "ctc_targets")}


# -- checkpoint and export ----------------------------------------------------------------------
def _trained(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def _save(state_dir: Path, model, opt, step: int, spent_s: float, meta: dict) -> None:
    from safetensors.torch import save_file

    state_dir.mkdir(parents=True, exist_ok=True)
    save_file(_trained(model), state_dir / "trained.safetensors.tmp")  # named_parameters: a tied weight once
    torch.save({"opt": opt.state_dict()}, state_dir / "optimizer.pt.tmp")
    (state_dir / "state.json.tmp").write_text(json.dumps({"step": step, "spent_s": spent_s, **meta}))
    for name in ("trained.safetensors", "optimizer.pt", "state.json"):  # state.json last: it commits
        os.replace(state_dir / f"{name}.tmp", state_dir / name)


def _load(state_dir: Path, model, opt) -> tuple[int, float]:
    from safetensors.torch import load_file

    trained = load_file(state_dir / "trained.safetensors")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in trained.items():
            params[n].copy_(t)
    opt.load_state_dict(torch.load(state_dir / "optimizer.pt", weights_only=True)["opt"])
    meta = json.loads((state_dir / "state.json").read_text())
    return meta["step"], meta["spent_s"]


def _stored_dtype(base: Path) -> torch.dtype:
    """The dtype the base's weights are stored in (its config may say otherwise)."""
    from safetensors import safe_open

    names = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
    for f in sorted(base.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for key in st.keys():
                kind = st.get_slice(key).get_dtype()
                if kind in names:
                    return names[kind]
    return torch.float32


def export(model, method: str, base: Path, out_dir: Path, note: dict) -> Path:
    """A folder ``--model`` accepts: merged weights in the base's dtype, its tokenizer, template,
    generation config, and ``onepass.json`` (window length, what it was fine-tuned on)."""
    import copy

    m = copy.deepcopy(model)
    if method == "lora":
        m = m.merge_and_unload()
    dtype = _stored_dtype(base)
    state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype) for k, v in m.state_dict().items()}
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    m.config.dtype = str(dtype).removeprefix("torch.")
    m.save_pretrained(tmp, state_dict=state, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                 "chat_template.jinja", "generation_config.json"):
        if (base / name).exists():
            shutil.copy(base / name, tmp / name)
    (tmp / MODEL_META).write_text(json.dumps({"window_s": model_window_s(base), "noise_floor": model_noise_floor(base),
                                              "units": model_units(base), "finetuned_from": str(base), **note}, indent=1))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


# -- the front door -------------------------------------------------------------------------------
def finetune(train: list[LabelledWindow], held: list[LabelledWindow], base: Path, out: Path, state_dir: Path,
             cfg: FinetuneConfig, *, device: str = "cpu", max_steps: int | None = None, minutes: float | None = None,
             save_every_min: float = 10.0, eval_every: int = 50, window_s: int | None = None) -> dict:
    """Train ``base`` on ``train`` (held-out loss on ``held``), checkpointing to ``state_dir`` and
    resuming from it; export to ``out``. Returns the held-out measures before and after."""
    from .recipe import make_builder

    dev = torch.device(device)
    meta = {"config": asdict(cfg), "base": str(Path(base).resolve())}
    if (state_dir / "state.json").exists():
        saved = json.loads((state_dir / "state.json").read_text())
        if saved.get("config") != meta["config"] or saved.get("base") != meta["base"]:
            raise ValueError(f"{state_dir}: holds a fine-tuning run of another base or settings "
                             f"({saved.get('base')}, {saved.get('config')}); remove it or pick another output")
    model, tok, method = load_trainable(Path(base), cfg.method, cfg, dev)
    builder, vocab = make_builder(Path(base))
    pad = tok.pad_token_id
    train_items, held_items = make_items(train, builder, vocab), make_items(held, builder, vocab)
    if not train_items:
        raise ValueError("no labelled windows to train on")
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8)
    step, spent = 0, 0.0
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "log.jsonl"
    if (state_dir / "state.json").exists():
        step, spent = _load(state_dir, model, opt)
        print(f"resumed at step {step}", flush=True)
    n_train = sum(p.numel() for p in params)
    print(f"fine-tuning {base} ({method}, {n_train / 1e6:.2f} M trained parameters) on {len(train_items)} windows, "
          f"{len(held_items)} held out; state in {state_dir}", flush=True)
    floor = model_noise_floor(base)  # the base's input convention carries over
    before = heldout(model, held_items, pad, noise_floor=floor) if held_items else None
    if step == 0 and before is not None:
        with open(log_path, "a") as log:
            log.write(json.dumps({"step": 0, "eval": before}) + "\n")

    def checkpoint(at: int, spent_s: float) -> None:
        _save(state_dir, model, opt, at, spent_s, meta)

    loop = Loop(model=model, opt=opt, losses=lambda m, b: lm_loss(m, b, floor), total=lambda losses: losses["lm"], lr_at=cfg.lr_at, save=checkpoint,
                device=dev, clip=cfg.clip, evaluate=(lambda at: heldout(model, held_items, pad, noise_floor=floor)) if held_items else None)
    limit = cfg.steps if max_steps is None else min(cfg.steps, max_steps)
    step = loop.run(_Batches(train_items, cfg, step, pad), step=step, spent_s=spent, log_path=log_path, max_steps=limit,
                    minutes=minutes, save_every_min=save_every_min, eval_every=eval_every)
    after = heldout(model, held_items, pad, noise_floor=floor) if held_items else None
    done = step >= cfg.steps
    export(model, method, Path(base), out, {"window_s": window_s or model_window_s(base), "finetune_step": step, "finetune_method": method, "heldout_before": before, "heldout_after": after})
    return {"step": step, "done": done, "method": method, "before": before, "after": after, "out": str(out),
            "train_windows": len(train_items), "heldout_windows": len(held_items)}

