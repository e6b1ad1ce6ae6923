"""Greedy CTC WER at a recipe checkpoint's audio positions on 48 held-out utterances (the probe's measure;
through the run's training-only CTC head when it has one, else through the lm_head):

    python model/training/probes/ctc_wer.py ~/onepass-train/RUN [model|ema]
"""
import json, sys, torch, numpy as np
torch.set_num_threads(1)
from pathlib import Path
from safetensors.torch import load_file
from onepass.model.training.recipe import Recipe, build_model, make_builder, forward, make_heads
from onepass.model.training import samples as S
from onepass.model.prompt import AUDIO
import jiwer
run = Path(sys.argv[1]); which = sys.argv[2] if len(sys.argv) > 2 else "model"
base = run / "base"
st = json.loads((run / "ckpt/state.json").read_text()); recipe = Recipe(**st["recipe"])
tok, model = build_model(recipe, base)
model.load_state_dict(load_file(run / f"ckpt/{which}.safetensors"), strict=False); model.tie_weights(); model.eval()
builder, vocab = make_builder(base)
heads = make_heads(recipe, model)
if heads is not None and "ctc" in heads:
    heads.load_state_dict(load_file(run / "ckpt/heads.safetensors"))
    final = []
    model.model.language_model.norm.register_forward_hook(lambda _m, _i, out: final.append(out))
rng = np.random.default_rng([12345])
items = [S.utterance_item(rng, builder, vocab) for _ in range(48)]
refs, hyps = [], []
with torch.no_grad():
    for i in range(0, 48, 8):
        b = S.collate(items[i:i+8], tok.pad_token_id)
        logits, _ = forward(model, b, noise_floor=recipe.noise_floor)
        if heads is not None and "ctc" in heads:
            logits = heads["ctc"](final[-1])
        types = b["mm_token_type_ids"]
        for j, it in enumerate(items[i:i+8]):
            ids = logits[j][types[j] == AUDIO].argmax(-1).tolist()
            out, prev = [], None
            for c in ids:
                if c != prev and c != vocab.blank:
                    out.append(c)
                prev = c
            hyps.append(tok.decode(out) or "x"); refs.append(tok.decode(it["ctc"].tolist()))
print(json.dumps({"step": st["step"], "weights": which, "ctc_greedy_wer": round(jiwer.wer(refs, hyps), 3), "example": [refs[0], hyps[0]]}))
