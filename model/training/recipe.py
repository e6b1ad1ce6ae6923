"""The default model's training recipe: grounding before formatting, on 2 CPU cores or a GPU.

    python -m onepass.model.training.recipe --out ~/onepass-train            # resumes if OUT has a checkpoint
    python -m onepass.model.training.recipe --out /tmp/run --device cuda --workers 14 --batch-scale 4

What makes a small Gemma 4 Unified learn to look and listen here (measured in issue 11):
- attention starts cool: q_norm/k_norm weights start at head_dim^-1/4, so q.k starts with unit
  variance (``scaling`` is 1.0 in this architecture; with unit norm weights attention starts
  saturated and the text prior wins);
- cell positions get a real share of the vision signal: the factorised position table starts at
  unit scale, like the LayerNormed patch embedding it is added to (0.02 by default: ~3%);
- stage 0 (a fresh run only): a front end inside layers 0-1, trained per token before anything
  else: the audio projection and the vision projection start as Fourier bases whose cos/sin pairs
  land in the same residual dims, and layers 0-1's MLPs learn to write a staircase log of each
  pair's relative power there (audio: mel bands of the 40 ms frame, plus its level; vision: the 56
  lowest 2D frequencies of the cell, whose magnitudes, unlike raw pixels, do not move with a shape's
  outline inside the cell);
- a curriculum by step: stage A = single utterances (audio only) and single frames (video only),
  100-250 tokens; stage B = 3-6 s windows in the runner's layout; stage C = 10 s windows. Later
  stages replay the short items. Stages B and C are OFF by default (they start at step 8,000, the
  schedule's end): the export is asked per frame and per speech region (``EXPORT_UNITS``), which
  is what stage A trains, and a window step costs ~3x a stage-A step. r4 trained windows for 1,166
  steps (2,500-3,666) and still lost its place over them (10 s windows WER 85% vs 48% per unit,
  same weights); pass ``--stage-b 2500 --stage-c 3500`` to train them.
- auxiliary losses that read the logits the forward already computes at media positions, through
  the tied lm_head: CTC over the audio positions (blank = <pad>), per-cell words at video positions
  (colour, shape, size or role of the shape covering the cell), and, at a middle layer, the second
  and tenth each audio frame belongs to.
- AdamW, warmup then cosine BY STEP (a resume continues the schedule and the draws: batches come
  from [seed, step] alone; only eSpeak NG's own jitter of a few samples is not reproducible), and an
  exponential moving average of the weights, which is what is evaluated and exported.

``OUT/ckpt`` (weights, EMA, optimizer, step, written every ``--save-every-min``) makes a run
resumable; ``OUT/export`` is a Hugging Face folder ``--model`` accepts (plus ``onepass.json`` with
the window it runs at, its noise floor and its units). ``OUT/log.jsonl`` holds per-step losses by stage and,
every ``--eval-every`` steps, held-out WER / exact captions / time errors on short items and 10 s
windows, and the media-swap gap (target loss with the item's own media vs another item's).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..meta import MODEL_META
from ..prompt import AUDIO, VIDEO
from . import domain
from . import samples as S
from .build import export_hf
from .loop import Loop

__all__ = ["Recipe", "build_model", "cool_init", "step_losses", "main"]



@dataclass(frozen=True)
class Recipe:
    hidden: int = 256
    layers: int = 6
    intermediate: int = 1024
    window_s: int = 10  # the window stage C trains (exports run at EXPORT_WINDOW_S, asked per unit)
    lr: float = 1.5e-3
    warmup: int = 150
    total_steps: int = 8000
    min_lr_frac: float = 0.1
    weight_decay: float = 0.05
    clip: float = 1.0
    ema: float = 0.998
    stage_b: int = 8000  # first step of stage B; off (see the module docstring; r4: 2,500)
    stage_c: int = 8000  # first step of stage C (r4: 3,500)
    short_batch: int = 24  # stage A: utterances and frames, each
    b_windows: int = 8
    c_windows: int = 6
    replay: int = 6  # single frames replayed per step in B and C
    replay_utterances: int = 6  # single utterances replayed per step in B and C
    w_ctc: float = 0.5
    w_cells: float = 0.5
    w_time: float = 0.2
    w_mel: float = 0.0  # front-end loss: layer mel_layer's audio states predict the frame's log-mel bands
    mel_layer: int = 0
    frontend_steps: int = 3000  # stage 0 (a fresh run only): layers 0-1 learn log band features per audio frame (and cell)
    vision_frontend: int = 1  # 1: stage 0 also teaches the front end 2D-frequency features per cell (0: audio only)
    frontend_lr: float = 1e-3
    noise_floor: float = 1e-3  # RMS of the noise under all audio (training and, via onepass.json, the runner)
    ctc_head: int = 1  # 1: CTC reads the final hidden states through a training-only head; 0: through the tied lm_head
    seed: int = 0

    def stage(self, step: int) -> str:
        return "A" if step < self.stage_b else "B" if step < self.stage_c else "C"

    def lr_at(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup)
        frac = min(1.0, step / self.total_steps)
        return self.lr * warm * (self.min_lr_frac + (1 - self.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))


# -- model ----------------------------------------------------------------------------------------
def build_model(recipe: Recipe, base: Path):
    """Tokenizer + config in ``base`` (made once), and a freshly initialised model."""
    from transformers import AutoTokenizer, Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration

    from .build import build_config, build_tokenizer

    if not (base / "config.json").exists():
        tok = build_tokenizer(base)
        build_config(tok, hidden=recipe.hidden, layers=recipe.layers, heads=max(2, recipe.hidden // 64),
                     intermediate=recipe.intermediate).save_pretrained(base)
    tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    cfg = Gemma4UnifiedConfig.from_pretrained(base)
    torch.manual_seed(recipe.seed)
    model = Gemma4UnifiedForConditionalGeneration(cfg)
    cool_init(model)
    return tok, model


@torch.no_grad()
def cool_init(model) -> None:
    """q/k norm weights at head_dim^-1/4 (unit-variance q.k); position table at unit scale."""
    for layer in model.model.language_model.layers:
        attn = layer.self_attn
        attn.q_norm.weight.fill_(attn.head_dim ** -0.25)
        if hasattr(attn, "k_norm"):
            attn.k_norm.weight.fill_(attn.head_dim ** -0.25)
    model.model.embed_vision.pos_embedding.normal_(0.0, 1.0)
    dft_audio_init(model)


@torch.no_grad()
def dft_audio_init(model, row_norm: float | None = None) -> None:
    """Audio projection (640 samples -> hidden) as a Hann-windowed Fourier basis: a cosine and a
    sine row for each of hidden/2 mel-spaced frequencies (60 Hz - 7.6 kHz). The frame's spectrum
    is then in the residual stream from step 0, in pairs whose squares (a GeGLU computes products)
    give the band energies speech is recognised by; from a random projection the model must first
    find that filterbank itself, and on 2 cores it did not (CTC flat from step 300 to 1300).
    Rows keep the norm of the weights they replace (``row_norm``: their mean), so the embedding's
    scale is unchanged."""
    w = model.model.embed_audio.embedding_projection.weight
    hidden, width = w.shape
    k = hidden // 2
    mel = np.linspace(2595 * np.log10(1 + 60 / 700), 2595 * np.log10(1 + 7600 / 700), k)
    freq = 700 * (10 ** (mel / 2595) - 1)
    n, window = np.arange(width), np.hanning(width)
    phase = 2 * np.pi * freq[:, None] * n / 16000
    rows = np.concatenate([window * np.cos(phase), window * np.sin(phase)])
    if hidden % 2:
        rows = np.concatenate([rows, window[None] / width])
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    scale = row_norm if row_norm is not None else float(w.detach().float().norm(dim=1).mean())
    w.copy_(torch.from_numpy(rows * scale).to(w.dtype))


# -- stage 0: an audio front end inside the first two layers ------------------------------------------
# Measured in model/training/probes/audio_frontend.py (word CTC through layers built as Gemma 4's,
# held-out WER after 250 steps): log band features given at the input learn (0.58), the raw
# Fourier projection the architecture allows does not (0.92, CTC's blank plateau), nor do band
# features hand-built inside layers 0-1 (0.92). So before anything else, layers 0-1's MLPs (attention
# silent) and the audio projection are trained per frame to write those features into fixed
# residual dims: a centred "staircase" log of each band's power relative to the frame's mean
# (sum_j min(r, t_j) / t_j, thresholds half a decade apart) and the frame's level, ln(mean power).
_STAIR = [10 ** (j / 2 - 3) for j in range(8)]


def frontend_layout(hidden: int) -> tuple[int, int]:
    """(bands, first feature dim): the projection writes cos/sin of ``bands`` frequencies into dims
    0..2*bands-1; the features go to dims first..first+bands (the last one: the level)."""
    bands = hidden * 60 // 256
    return bands, 3 * bands + 1


def _front_rows(bands: int, width: int = 640) -> np.ndarray:
    mel = np.linspace(2595 * np.log10(1 + 60 / 700), 2595 * np.log10(1 + 7600 / 700), bands)
    freq = 700 * (10 ** (mel / 2595) - 1)
    n, window = np.arange(width), np.hanning(width)
    phase = 2 * np.pi * freq[:, None] * n / 16000
    rows = np.concatenate([window * np.cos(phase), window * np.sin(phase)])
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def stair_features(frames: torch.Tensor, bands: int) -> torch.Tensor:
    """[N, 640] raw frames -> [N, bands + 1]: the front end's target (silent frames: zeros, level ln 1e-3)."""
    x = frames.float()
    x = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)  # as the embedder's norm
    rows = torch.from_numpy(_front_rows(bands)).float()
    c, s = x @ rows[:bands].T, x @ rows[bands:].T
    p = c * c + s * s
    return torch.cat([_stair(p, 0.0), torch.log(p.mean(-1, keepdim=True) + 1e-3)], -1)


def _stair(p: torch.Tensor, silent: float) -> torch.Tensor:
    """Pair powers [N, bands] -> the centred staircase log of their power relative to the mean
    (sum_j min(r, t_j) / t_j); zeros where the total power is not above ``silent``."""
    r = p / (p.mean(-1, keepdim=True) + 1e-9)
    stair = sum(torch.clamp(r, max=t) / t for t in _STAIR)
    return (stair - stair.mean(-1, keepdim=True)) * (p.sum(-1, keepdim=True) > silent)


@torch.no_grad()
def frontend_init(model) -> None:
    """Projection = unit cos/sin rows of the front end's bands in the first dims, zeros elsewhere;
    layers 0-1 attention silent (post-attention norm weight 0: it learns to speak later)."""
    w = model.model.embed_audio.embedding_projection.weight
    bands, _ = frontend_layout(w.shape[0])
    rows = np.zeros(tuple(w.shape))
    rows[: 2 * bands] = _front_rows(bands, w.shape[1])
    w.copy_(torch.from_numpy(rows).to(w.dtype))
    for layer in model.model.language_model.layers[:2]:
        layer.post_attention_layernorm.weight.zero_()


def frontend_frames(model, frames: torch.Tensor) -> torch.Tensor:
    """What the embedder and layers 0-1 make of single frames [N, 640] while their attention is
    silent (the decoder layer's own computation without the attention term)."""
    return _front_layers(model, model.model.embed_audio(inputs_embeds=frames[None])[0])


def _front_layers(model, h: torch.Tensor) -> torch.Tensor:
    """Layers 0-1 on single tokens while their attention is silent: each decoder layer's own
    computation without the attention term."""
    for layer in model.model.language_model.layers[:2]:
        h = (h + layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(h)))) * layer.layer_scalar
    return h


def pretrain_frontend(model, recipe: Recipe, base: Path, record, device="cpu") -> None:
    """Stage 0: per-token regression of the front end's features: audio frames (noisy domain
    utterances) and, with ``recipe.vision_frontend``, cells of domain frames with their positions."""
    builder, vocab = make_builder(base)
    rng = np.random.default_rng([recipe.seed, 10**6])
    n_utt = min(400, 8 + recipe.frontend_steps // 4)  # ~75 frames each: 30,000 frames for a full stage 0
    frames = torch.from_numpy(np.concatenate([S.utterance_item(rng, builder, vocab)["audio"] for _ in range(n_utt)]))
    g = torch.Generator().manual_seed(recipe.seed)
    frames = (frames + recipe.noise_floor * torch.randn(frames.shape, generator=g)).to(device)  # silence included: it is noise now
    bands, first = frontend_layout(model.config.get_text_config().hidden_size)
    frontend_init(model)
    layers = model.model.language_model.layers[:2]
    params = [model.model.embed_audio.embedding_projection.weight]
    for layer in layers:
        params += [*layer.mlp.parameters(), layer.pre_feedforward_layernorm.weight, layer.post_feedforward_layernorm.weight]
    cells = None
    if recipe.vision_frontend:
        vision_frontend_init(model)
        power_init(model)
        ev = model.model.embed_vision
        params += [ev.patch_dense.weight, ev.patch_dense.bias, ev.multimodal_embedder.embedding_projection.weight]
        n_img = min(500, 8 + recipe.frontend_steps // 6)  # 66 cells each: 33,000 cells for a full stage 0
        drawn = [S.render_cells(domain.random_scene(rng), rng, vocab)[0] for _ in range(n_img)]
        cells = torch.from_numpy(np.concatenate([p.cells[: p.num_tokens] for p in drawn])).to(device)
        pos = torch.from_numpy(np.concatenate([p.positions[: p.num_tokens] for p in drawn])).to(device)
    opt = torch.optim.AdamW(params, lr=recipe.frontend_lr, weight_decay=0.0)
    t0 = time.time()
    for step in range(recipe.frontend_steps):
        batch = frames[torch.randint(0, frames.shape[0], (1024,), generator=g)]
        target = stair_features(batch.cpu(), bands).to(device)
        loss = F.mse_loss(frontend_frames(model, batch)[:, first : first + bands + 1].float(), target)
        rec = {"frontend_step": step + 1, "mse": round(float(loss.detach()), 4), "target_var": round(float(target.var(0).mean()), 4)}
        if cells is not None:
            pick = torch.randint(0, cells.shape[0], (1024,), generator=g)
            v_target = cell_stair_features(cells[pick].cpu(), bands).to(device)
            v_loss = F.mse_loss(frontend_cells(model, cells[pick], pos[pick])[:, first : first + bands].float(), v_target)
            loss = loss + v_loss
            rec.update(mse_vision=round(float(v_loss.detach()), 4), target_var_vision=round(float(v_target.var(0).mean()), 4))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == recipe.frontend_steps - 1:
            record({**rec, "frames": int(frames.shape[0]), "cells": 0 if cells is None else int(cells.shape[0]),
                    "min": round((time.time() - t0) / 60, 2)})


# -- stage 0, vision: the same front end for cells ------------------------------------------------
# Measured in model/training/probes/vision_cells.py (per-cell shape of held-out frames through 6
# layers built as Gemma 4's, 300 steps of 24 frames): raw cells 0.45; the staircase log of the
# relative power of the cell's 56 lowest 2D frequencies GIVEN at the input 0.93; the projection
# (a 2D Fourier basis) + layers 0-1 MLPs trained per cell to write those features first (attention
# silent, layer 0 built for pair powers; 400 steps, R^2 0.39: 0.60; 3,000 steps, R^2 0.90: 0.80).
# Raw pixels are not shift invariant; a shape's outline is, in the magnitudes of its cells'
# spectra. The vision projection
# puts cos/sin of frequency k into the SAME residual dims (k, bands + k) as the audio's bands, so
# layers 0-1 learn one function of those dims (the staircase of relative pair powers) for both.
def vision_rows(bands: int, patch: int = 48) -> np.ndarray:
    """[2 * bands, patch*patch*3]: unit cos rows then sin rows (Hann window, luminance) of the
    ``bands`` lowest 2D frequencies with |k| <= 6 cycles per cell (56 at most; rows past them zero)."""
    ks = sorted(((ky, kx) for kx in range(7) for ky in range(-6, 7) if kx * kx + ky * ky <= 36 and (kx > 0 or ky > 0)),
                key=lambda k: (k[0] ** 2 + k[1] ** 2, k))[:bands]
    y, x = np.mgrid[0:patch, 0:patch]
    win = np.outer(np.hanning(patch), np.hanning(patch))
    rows = np.zeros((2 * bands, patch * patch * 3))
    for i, (ky, kx) in enumerate(ks):
        ph = 2 * np.pi * (ky * y + kx * x) / patch
        for row, wave in ((i, np.cos(ph)), (bands + i, np.sin(ph))):
            r = np.repeat((win * wave)[..., None], 3, -1).ravel()
            rows[row] = r / np.linalg.norm(r)
    return rows


def cell_stair_features(cells: torch.Tensor, bands: int) -> torch.Tensor:
    """[N, 6912] uint8 cells -> [N, bands]: the audio's staircase features (no level) of the pair
    powers the vision rows give on the LayerNormed cell (as patch_ln1 sees it); a flat cell gives zeros."""
    x = F.layer_norm(cells.float() / 255.0, cells.shape[-1:])
    rows = torch.from_numpy(vision_rows(bands, int(round((cells.shape[-1] // 3) ** 0.5)))).float()
    c, s = x @ rows[:bands].T, x @ rows[bands:].T
    return _stair(c * c + s * s, 1e-6)


@torch.no_grad()
def vision_frontend_init(model) -> None:
    """patch_dense: the vision rows in dims 0..2*bands-1 (no bias there); positions kept out of
    those dims (and zero-mean, so that the LayerNorms after them shift nothing); the final
    projection carries them unchanged into the same residual dims, and the rest (other dense
    rows, positions) into the dims the front end neither reads nor writes."""
    ev = model.model.embed_vision
    hidden = model.config.get_text_config().hidden_size
    bands, first = frontend_layout(hidden)
    w, b = ev.patch_dense.weight, ev.patch_dense.bias
    w[: 2 * bands] = torch.from_numpy(vision_rows(bands)).to(w.dtype) * float(w[2 * bands :].norm(dim=1).mean())
    b[: 2 * bands] = 0
    pe = ev.pos_embedding
    pe[..., : 2 * bands] = 0
    pe[..., 2 * bands :] -= pe[..., 2 * bands :].mean(-1, keepdim=True)  # zero mean: pos_norm's centring adds no offset to the pairs
    proj = ev.multimodal_embedder.embedding_projection.weight  # [hidden, mm]
    scale = float(proj.norm(dim=1).mean())
    free = [d for d in range(2 * bands, hidden) if not first <= d <= first + bands]
    rest = proj[free].clone()
    proj.zero_()
    proj[torch.arange(2 * bands), torch.arange(2 * bands)] = scale
    proj[free, 2 * bands :] = rest[:, 2 * bands :]


@torch.no_grad()
def power_init(model) -> None:
    """Layer 0's MLP starts by writing each pair's power: gelu(a)a + gelu(-a)(-a) = a^2 exactly
    (tanh-gelu too), 4 units per pair (+-cos, +-sin) into dim 2*bands + k; its other units keep
    their random start, and all of them train. In the probe, cells' features reached R^2 0.75 after
    1,000 steps with this start and 0.48 without (0.90 / 0.87 after 2,900; per-cell shape 300
    steps later 0.80 / 0.75)."""
    hidden = model.config.get_text_config().hidden_size
    bands, _ = frontend_layout(hidden)
    mlp = model.model.language_model.layers[0].mlp
    gate, up, down = mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight
    units = torch.arange(4 * bands)
    dims = torch.cat([torch.arange(2 * bands), torch.arange(2 * bands)])  # unit pairs (+a, -a) of each input dim
    sign = torch.cat([torch.ones(2 * bands), -torch.ones(2 * bands)])
    for w in (gate, up):
        w[units] = 0
        w[units, dims] = sign.to(w.dtype)
    down[:, units] = 0
    down[2 * bands + dims % bands, units] = 1.0


def frontend_cells(model, cells: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """What the vision embedder and layers 0-1 make of single cells [N, 6912] uint8 at their
    positions [N, 2] while layers 0-1's attention is silent."""
    return _front_layers(model, model.model.embed_vision(cells[None].float() / 255.0, positions[None]).pooler_output[0])


# -- losses ---------------------------------------------------------------------------------------
def _cap(model, logits: torch.Tensor) -> torch.Tensor:
    cap = model.config.get_text_config().final_logit_softcapping
    return cap * torch.tanh(logits / cap) if cap else logits


def with_noise_floor(features: torch.Tensor, mask: torch.Tensor, floor: float) -> torch.Tensor:
    """Audio frames [B, T, 640] plus a Gaussian noise floor of RMS ``floor`` on real frames (not the
    padding), seeded by the batch's shape: the same batch always gets the same noise (exact resume)."""
    if not floor:
        return features
    g = torch.Generator().manual_seed(features.shape[0] * 100_003 + features.shape[1])
    noise = torch.randn(features.shape, generator=g).to(features.device, features.dtype)
    return features + floor * noise * mask[..., None].to(features.dtype)


def forward(model, batch: dict, mid_layer: int | None = None, mel_layer: int | None = None, noise_floor: float = 0.0):
    """Model forward on one collated sub-batch: (logits [B, L, V], {layer: hidden} of the layers asked for);
    audio frames get the checkpoint's noise floor (``model.meta.model_noise_floor``), as the runner adds it."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "mm_token_type_ids", "input_features",
                                     "input_features_mask", "video_position_ids", "num_frames_per_video") if k in batch}
    if noise_floor and "input_features" in inputs:
        inputs["input_features"] = with_noise_floor(inputs["input_features"], inputs["input_features_mask"], noise_floor)
    if "pixel_u8" in batch:
        inputs["pixel_values_videos"] = batch["pixel_u8"].float() / 255.0  # the video processor's x/255
    captured: dict[int, torch.Tensor] = {}
    hooks = []
    for layer in {mid_layer, mel_layer} - {None}:
        def grab(_m, _i, out, layer=layer):
            captured[layer] = out[0] if isinstance(out, tuple) else out
        hooks.append(model.model.language_model.layers[layer].register_forward_hook(grab))
    try:
        out = model(**inputs, return_dict=True)
    finally:
        for hook in hooks:
            hook.remove()
    return out.logits, captured


_MEL_BANDS = 64


def log_mel(frames: torch.Tensor) -> torch.Tensor:
    """[N, 640] audio frames -> [N, 64] log band energies (Hann window, mel-spaced bands 60 Hz -
    7.6 kHz), normalised per frame (zero mean, unit variance): the target of the front-end loss."""
    frames = frames.float()
    frames = frames / torch.sqrt(frames.pow(2).mean(-1, keepdim=True) + 1e-6)  # as the embedder's norm
    power = torch.fft.rfft(frames * torch.hann_window(frames.shape[-1], periodic=False), dim=-1).abs().pow(2)
    mel = np.linspace(2595 * np.log10(1 + 60 / 700), 2595 * np.log10(1 + 7600 / 700), _MEL_BANDS + 2)
    edges = 700 * (10 ** (mel / 2595) - 1) / (16000 / frames.shape[-1])  # in rfft bins
    bins = np.arange(power.shape[-1])
    fb = np.maximum(0, np.minimum((bins[None] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None]),
                                  (edges[2:, None] - bins[None]) / (edges[2:, None] - edges[1:-1, None])))
    logm = torch.log(power @ torch.from_numpy(fb.T).float() + 1e-4)
    return (logm - logm.mean(-1, keepdim=True)) / (logm.std(-1, keepdim=True) + 1e-4)


def step_losses(model, batch: dict, recipe: Recipe, heads=None) -> dict[str, torch.Tensor]:
    """Target LM loss and the auxiliary losses of one sub-batch (``heads``: the training-only heads)."""
    mid = len(model.model.language_model.layers) // 2 - 1
    audio = "audio_time" in batch
    mel = audio and recipe.w_mel > 0 and heads is not None
    ctc_head = heads["ctc"] if audio and heads is not None and "ctc" in heads else None
    final = []
    hook = model.model.language_model.norm.register_forward_hook(lambda _m, _i, out: final.append(out)) if ctc_head is not None else None
    try:
        logits, hidden = forward(model, batch, mid if audio else None, recipe.mel_layer if mel else None, recipe.noise_floor)
    finally:
        if hook is not None:
            hook.remove()
    labels = batch["labels"]
    lm = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
    losses = {"lm": lm}
    types = batch["mm_token_type_ids"]
    if "cells" in batch:
        cell_logp = logits[types == VIDEO].float().log_softmax(-1)  # [N, V]
        target = batch["cells"]  # [N, 3] word ids
        losses["cells"] = -cell_logp.gather(1, target).mean()
    if "audio_time" in batch:
        amask = types == AUDIO
        logp = (ctc_head(final[-1]) if ctc_head is not None else logits).float().log_softmax(-1)
        targets = batch["ctc_targets"]
        keep = [i for i, t in enumerate(targets) if t.numel() > 0]
        if keep:
            lens = amask.sum(1)
            t_max = int(lens.max())
            per = torch.zeros((len(keep), t_max, logp.shape[-1]), dtype=logp.dtype)
            for j, i in enumerate(keep):
                per[j, : int(lens[i])] = logp[i][amask[i]]
            # summed over items, per audio frame: the same scale as a per-token cross-entropy
            losses["ctc"] = F.ctc_loss(per.transpose(0, 1), torch.cat([targets[i] for i in keep]), lens[keep],
                                       torch.tensor([targets[i].numel() for i in keep]), blank=0, reduction="sum",
                                       zero_infinity=True) / lens[keep].sum()
        norm = model.model.language_model.norm
        t_logp = _cap(model, model.lm_head(norm(hidden[mid][amask]))).float().log_softmax(-1)
        losses["time"] = -t_logp.gather(1, batch["audio_time"]).mean()
        if mel:
            target = log_mel(batch["input_features"][batch["input_features_mask"]])
            losses["mel"] = F.mse_loss(heads["mel"](hidden[recipe.mel_layer][amask].float()), target)
    return losses


def total(losses: dict[str, torch.Tensor], recipe: Recipe) -> torch.Tensor:
    w = {"lm": 1.0, "ctc": recipe.w_ctc, "cells": recipe.w_cells, "time": recipe.w_time, "mel": recipe.w_mel}
    return sum(w[k] * v for k, v in losses.items())


# -- data -----------------------------------------------------------------------------------------
@dataclass
class _Shim:
    """Just what PromptBuilder needs of a Backbone."""

    tokenizer: object
    chat_template: str
    config: object


def step_batches(recipe: Recipe, step: int, builder, vocab, batch_scale: float = 1.0) -> dict[str, dict]:
    """The sub-batches of one step, drawn from [seed, step] only (so a resume is exact)."""
    seeds = iter(np.random.SeedSequence([recipe.seed, step]).spawn(1000))

    def rng():  # one generator per item: an item's draws do not shift the next item's
        return np.random.default_rng(next(seeds))

    pad = vocab.tok.pad_token_id
    stage = recipe.stage(step)
    n_utt = max(1, round((recipe.short_batch if stage == "A" else recipe.replay_utterances) * batch_scale))
    n_frames = max(1, round((recipe.short_batch if stage == "A" else recipe.replay) * batch_scale))
    out = {
        "utterances": S.collate([S.utterance_item(rng(), builder, vocab) for _ in range(n_utt)], pad),
        "frames": S.collate([S.frame_item(rng(), builder, vocab) for _ in range(n_frames)], pad),
    }
    if stage == "B":
        n = max(1, round(recipe.b_windows * batch_scale))
        out["windows"] = S.collate([S.window_item(r, builder, vocab, int(r.integers(3, 7))) for r in (rng() for _ in range(n))], pad)
    elif stage == "C":
        n = max(1, round(recipe.c_windows * batch_scale))
        # mostly full windows (a source's last window is shorter); one width per step keeps padding low
        r = rng()
        width = recipe.window_s if r.random() < 0.75 else int(r.integers(3, recipe.window_s))
        out["windows"] = S.collate([S.window_item(rng(), builder, vocab, width) for _ in range(n)], pad)
    return out


class _Stream(torch.utils.data.IterableDataset):
    def __init__(self, base: Path, recipe: Recipe, start: int, batch_scale: float):
        self.base, self.recipe, self.start, self.scale = base, recipe, start, batch_scale

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        builder, vocab = make_builder(self.base)
        step = self.start + wid
        while True:
            yield step, step_batches(self.recipe, step, builder, vocab, self.scale)
            step += nw


def make_builder(model_dir: Path):
    from transformers import AutoTokenizer, Gemma4UnifiedConfig

    from ..prompt import PromptBuilder

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    cfg = Gemma4UnifiedConfig.from_pretrained(model_dir)
    return PromptBuilder(_Shim(tok, (model_dir / "chat_template.jinja").read_text(), cfg)), S.Vocab(tok)


# -- checkpoints ----------------------------------------------------------------------------------
def make_heads(recipe: Recipe, model):
    """Training-only heads (not exported): CTC's read-out of the final hidden states (with a bias,
    no softcap: measured in probes/audio_frontend.py, CTC through the tied, softcapped lm_head sat on
    the blank plateau at 250 steps (WER 0.918) where an untied read-out had learnt (0.722)); the
    front-end loss's linear read-out of log-mel bands."""
    hidden = model.config.get_text_config().hidden_size
    heads = {}
    if recipe.ctc_head:
        heads["ctc"] = torch.nn.Linear(hidden, model.config.get_text_config().vocab_size)
    if recipe.w_mel > 0:
        heads["mel"] = torch.nn.Linear(hidden, _MEL_BANDS)
    return torch.nn.ModuleDict(heads) if heads else None


def save(ckpt: Path, model, ema, opt, step: int, recipe: Recipe, spent_s: float, heads=None) -> None:
    from safetensors.torch import save_file

    ckpt.mkdir(parents=True, exist_ok=True)
    if heads is not None:
        save_file({k: v.detach().contiguous() for k, v in heads.state_dict().items()}, ckpt / "heads.safetensors.tmp")
        os.replace(ckpt / "heads.safetensors.tmp", ckpt / "heads.safetensors")
    for name, m in (("model", model), ("ema", ema)):
        state = {k: v.detach().contiguous() for k, v in m.state_dict().items() if k != "lm_head.weight"}
        save_file(state, ckpt / f"{name}.safetensors.tmp")
    torch.save({"opt": opt.state_dict(), "torch_rng": torch.get_rng_state()}, ckpt / "optimizer.pt.tmp")
    (ckpt / "state.json.tmp").write_text(json.dumps({"step": step, "spent_s": spent_s, "recipe": asdict(recipe)}))
    for name in ("model.safetensors", "ema.safetensors", "optimizer.pt", "state.json"):  # state.json last: it commits
        os.replace(ckpt / f"{name}.tmp", ckpt / name)


def load(ckpt: Path, model, ema, opt, heads=None) -> tuple[int, float]:
    """Weights, EMA, optimizer and RNG of a checkpoint. Heads new to this run (none saved) join the
    optimizer after its state is loaded."""
    from safetensors.torch import load_file

    saved_heads = heads is not None and (ckpt / "heads.safetensors").exists()
    if saved_heads:
        state = load_file(ckpt / "heads.safetensors")
        if set(state) != set(heads.state_dict()):
            raise ValueError(f"{ckpt}: its training-only heads {sorted(state)} are not this recipe's {sorted(heads.state_dict())}; "
                             "resume with the run's own --ctc-head / --w-mel")
        heads.load_state_dict(state)
        opt.add_param_group({"params": list(heads.parameters()), "weight_decay": 0.0})
    model.load_state_dict(load_file(ckpt / "model.safetensors"), strict=False)
    ema.load_state_dict(load_file(ckpt / "ema.safetensors"), strict=False)
    model.tie_weights()
    ema.tie_weights()
    blob = torch.load(ckpt / "optimizer.pt", weights_only=True)
    opt.load_state_dict(blob["opt"])
    if heads is not None and not saved_heads:
        opt.add_param_group({"params": list(heads.parameters()), "weight_decay": 0.0, "lr": opt.param_groups[0]["lr"]})
    torch.set_rng_state(blob["torch_rng"])
    meta = json.loads((ckpt / "state.json").read_text())
    return meta["step"], meta["spent_s"]


# What the runner asks the exported model per request (meta.model_units): each kept frame alone and
# each speech region alone. Measured on 20 held-out clips (seed 2) with the same step-2984 weights:
# WER 84.8% -> 48.1%, exact captions 16.7% -> 70.5%, median boundary 764 -> 46 ms, DER 14.6% both,
# against whole 10 s windows: the model transcribes and captions short items well and loses its
# place over a window's 250 audio and 700+ video tokens.
EXPORT_UNITS = {"captions": "frame", "transcript": "speech"}
# Asked per unit, the window is only a container, and a longer one cuts fewer utterances at its
# edges (a sixth of all words at 10 s): step 3666, 20 held-out clips, 10 s -> 30 s windows: WER
# 40.5% -> 30.5% (seed 2), 43.6% -> 30.9% (seed 11); captions and boundaries the same; DER 14.6% ->
# 16.1%, 9.9% -> 10.5% (speaker clustering, which flips a clip or two either way).
EXPORT_WINDOW_S = 30


def export(model, base: Path, out_dir: Path, recipe: Recipe, note: dict | None = None) -> Path:
    """A Hugging Face folder (bf16 safetensors + tokenizer + template + onepass.json) for ``--model``."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    export_hf(copy.deepcopy(model).eval(), base, tmp)
    from .grammar import QUESTIONS

    meta = {"window_s": EXPORT_WINDOW_S, "noise_floor": recipe.noise_floor, "units": EXPORT_UNITS,
            "questions": {k: {"text": text, "unit": unit} for k, (text, unit) in QUESTIONS.items()}, **(note or {})}
    (tmp / MODEL_META).write_text(json.dumps(meta, indent=1))
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


# -- the loop (model/training/loop.py, shared with onepass finetune) ------------------------------
def _decay_groups(model, wd: float):
    decay, rest = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "pos_embedding" not in name else rest).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]


def _parse(argv) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="run folder (keep it OUTSIDE the repository)")
    ap.add_argument("--minutes", type=float, default=None, help="stop (with a checkpoint and an export) after this long")
    ap.add_argument("--max-steps", type=int, default=None, help="stop at this step")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=int, default=1, help="data worker processes")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads of the trainer")
    ap.add_argument("--batch-scale", type=float, default=1.0, help="multiply every batch size (a GPU takes 4-8)")
    ap.add_argument("--save-every-min", type=float, default=10.0)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-items", type=int, default=48, help="held-out utterances and frames per evaluation")
    ap.add_argument("--export-only", action="store_true", help="export the checkpoint's weights and stop")
    ap.add_argument("--export-weights", choices=("ema", "raw"), default="ema",
                    help="with --export-only: the moving average (default) or the last step's weights")
    ap.add_argument("--export-to", type=Path, default=None, help="with --export-only: the folder (default OUT/export)")
    ap.add_argument("--measure", action="store_true", help="with --export-only: log the held-out measures of what is exported")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="a fresh run starts from this exported checkpoint's weights (e.g. model/default), not from "
                         "random ones and stage 0; its vocabulary is kept and EXTRA_WORDS take their spare rows")
    ap.add_argument("--reinit-audio", action="store_true",
                    help="on resume: restart the audio projection from the Fourier basis (weights, EMA and its optimizer state)")
    for f in Recipe.__dataclass_fields__.values():
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None,
                        help=f"recipe (default {f.default}; a resumed run keeps its own)")
    return ap.parse_args(argv)


def _base_from(src: Path, base: Path) -> None:
    """A run's base (tokenizer + config) from an exported checkpoint: its config, and this
    recipe's tokenizer, which must give every one of the checkpoint's words the same id."""
    import shutil

    from transformers import AutoTokenizer

    from .build import build_tokenizer

    tok = build_tokenizer(base)
    old = AutoTokenizer.from_pretrained(src, local_files_only=True)
    moved = [w for w, i in old.get_vocab().items() if tok.convert_tokens_to_ids(w) != i]
    if moved:
        raise ValueError(f"{src}: the tokenizer would move {len(moved)} of its words (e.g. {moved[:5]})")
    cfg = json.loads((src / "config.json").read_text())
    if len(tok) > cfg["text_config"]["vocab_size"]:
        raise ValueError(f"{src}: {len(tok)} tokens do not fit its {cfg['text_config']['vocab_size']} embedding rows")
    shutil.copy(src / "config.json", base / "config.json")


def _load_weights(model, src: Path) -> None:
    from transformers import Gemma4UnifiedForConditionalGeneration

    # from_pretrained maps the saved names back to the module's (safetensors only, no remote code)
    loaded = Gemma4UnifiedForConditionalGeneration.from_pretrained(src, dtype=torch.float32, local_files_only=True,
                                                                   use_safetensors=True)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ValueError(f"{src}: weights do not match the model (missing {missing[:4]}, unexpected {unexpected[:4]})")
    model.tie_weights()


def _reinit_audio(model, ema, opt) -> None:
    w = model.model.embed_audio.embedding_projection.weight
    norm = float(w.detach().float().norm(dim=1).mean())
    dft_audio_init(model, norm)
    dft_audio_init(ema, norm)
    opt.state.pop(w, None)  # fresh Adam moments for the new basis
    print(f"audio projection restarted from the Fourier basis (row norm {norm:.3f})", flush=True)


def _measure(ema, tok, base, recipe: Recipe, step: int, n: int) -> dict:
    from .evaluate import evaluate_short

    try:
        return evaluate_short(ema, tok, base, recipe, n=n, windows=recipe.stage(step - 1) != "A", n_windows=max(1, n // 8))
    except Exception as exc:  # noqa: BLE001 - a broken measurement must not end hours of training
        return {"error": f"{type(exc).__name__}: {exc}"}


def _export_only(args, weights, tok, base: Path, recipe: Recipe, step: int) -> int:
    target = args.export_to or args.out / "export"
    export(weights, base, target, recipe, {"step": step, "weights": args.export_weights})
    print(f"exported {target} (step {step}, {args.export_weights} weights)", flush=True)
    if args.measure:
        print(json.dumps(_measure(weights, tok, base, recipe, step, args.eval_items)), flush=True)
    return 0


def main(argv=None) -> int:
    args = _parse(argv)
    ckpt, base = args.out / "ckpt", args.out / "base"
    overrides = {k: getattr(args, k) for k in Recipe.__dataclass_fields__ if getattr(args, k) is not None}
    saved = json.loads((ckpt / "state.json").read_text())["recipe"] if (ckpt / "state.json").exists() else {}
    if saved:
        saved.setdefault("ctc_head", 0)  # a run saved before the field existed read CTC through the lm_head
        saved.setdefault("vision_frontend", 0)  # ... and had an audio-only stage 0
    recipe = Recipe(**{**saved, **overrides})
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    fresh = not (ckpt / "state.json").exists()
    if args.init_from is not None and fresh and not (base / "config.json").exists():
        _base_from(args.init_from, base)
    tok, model = build_model(recipe, base)
    if args.init_from is not None and fresh:
        _load_weights(model, args.init_from)
        print(f"weights from {args.init_from} (stage 0 skipped)", flush=True)
    model.to(args.device)
    if recipe.frontend_steps > 0 and fresh and args.init_from is None and not args.export_only:
        def record(rec: dict) -> None:
            print(json.dumps(rec), flush=True)
            with open(args.out / "log.jsonl", "a") as log:
                log.write(json.dumps(rec) + "\n")

        pretrain_frontend(model, recipe, base, record, args.device)  # stage 0, before the EMA copies the weights
    ema = copy.deepcopy(model).requires_grad_(False)
    heads = make_heads(recipe, model)
    opt = torch.optim.AdamW(_decay_groups(model, recipe.weight_decay), lr=recipe.lr, betas=(0.9, 0.98), eps=1e-8)
    step, spent_s = 0, 0.0
    if heads is not None:
        heads.to(args.device)
    if (ckpt / "state.json").exists():
        step, spent_s = load(ckpt, model, ema, opt, heads)
        print(f"resumed at step {step} ({spent_s / 60:.1f} min spent)", flush=True)
    elif heads is not None:
        opt.add_param_group({"params": list(heads.parameters()), "weight_decay": 0.0})
        if args.reinit_audio:
            _reinit_audio(model, ema, opt)
    if args.export_only:
        return _export_only(args, ema if args.export_weights == "ema" else model, tok, base, recipe, step)
    print(f"model {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, vocab {len(tok)}, "
          f"device {args.device}, recipe {asdict(recipe)}", flush=True)
    loader = torch.utils.data.DataLoader(_Stream(base, recipe, step, args.batch_scale), batch_size=None,
                                         num_workers=args.workers, prefetch_factor=2 if args.workers else None,
                                         persistent_workers=bool(args.workers))

    def checkpoint(at: int, spent: float) -> None:
        save(ckpt, model, ema, opt, at, recipe, spent, heads)
        export(ema, base, args.out / "export", recipe, {"step": at})

    loop = Loop(model=model, opt=opt, ema=ema, ema_decay=recipe.ema, clip=recipe.clip, device=torch.device(args.device),
                losses=lambda m, b: step_losses(m, b, recipe, heads), total=lambda losses: total(losses, recipe),
                lr_at=recipe.lr_at, save=checkpoint, stage=recipe.stage,
                evaluate=lambda at: _measure(ema, tok, base, recipe, at, args.eval_items))
    step = loop.run(loader, step=step, spent_s=spent_s, log_path=args.out / "log.jsonl", max_steps=args.max_steps,
                    minutes=args.minutes, save_every_min=args.save_every_min, eval_every=args.eval_every)
    print(f"exported {args.out / 'export'} (step {step})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
