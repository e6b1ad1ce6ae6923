"""Research probe (not part of the package): can per-cell SHAPE be learnt from the architecture's raw
48x48x3 cells, and does a shift-invariant feature (the 2D Fourier magnitude of the cell) help?

    python model/training/probes/vision_cells.py make /root/probe/frames.pkl 3000   # domain frames, ~1 min
    FRAMES=/root/probe/frames.pkl python model/training/probes/vision_cells.py VARIANT STEPS

Per-cell classification (shape of the shape covering the cell, or blank; its colour) through layers
built as Gemma 4's decoder layer (sandwich RMSNorms, q/k norms started at head_dim^-1/4, GeGLU),
bidirectional inside the frame, x/y position embeddings, the video embedder's input path (LayerNorm
without affine -> unscaled RMSNorm -> Linear). Held out: the last 300 frames.
Variants:
  raw       the architecture's input only
  fourier   + log |2D DFT| of the cell's luminance (low frequencies, a shift-invariant shape cue) at the input
  fourier_only  the Fourier features alone (no raw pixels)
  pre       dft_init's basis, then the projection + layers 0-1 MLPs trained per cell (PRE_STEPS, attention
            silent) to write the Fourier features into fixed dims (the audio stage 0's recipe), then as raw
  hand      dft_rows in the projection, layer 0's MLP built to write the 56 powers (attention silent), then as raw
  handpre   hand's layer 0, then pre's per-cell training (all front-end weights) to write the features in dims 168..
  dft_init  raw, the projection's first rows started as a 2D Fourier basis of the luminance (cos, sin of
            the 56 frequencies with |k| <= 6 cycles per cell, Hann window): the power must be learnt
Prints held-out per-cell shape accuracy (cells a shape covers) and colour accuracy every 100 steps.

Session 7's figures (1,500 frames, 300 steps of 24 frames, lr 1e-3, one seed, 2 cores shared with training):
  raw 0.454 (colour 0.938) | fourier 0.840 (0.963) | dft_init 0.451 (0.964) | pre (500 steps, mse 0.85) 0.412 (0.913)
i.e. a shift-invariant magnitude feature makes shape learnable (as log band power made words learnable
for audio); a Fourier projection alone does not, and a 500-step per-cell front end did not learn the
feature well enough (mse 0.85 of a unit-variance target) to help yet. With STAIR=1 (the target made
as the audio stage 0's: staircase log of relative power of the LayerNormed cell, which the input path
can compute) the per-cell front end reaches mse 0.87 of variance 1.57 (R^2 ~0.45) after 900 steps,
where audio's reached R^2 0.84 after 500 and 0.93 after 1,500: vision's front end learns slower.
Given at the input, those staircase features give per-cell shape 0.932 at 200 steps, 0.928 at 300
(STAIR=1 fourier): the feature the architecture can compute is the right one. Building it:
  hand (exact power in layer 0, no log) 0.509 | handpre (hand, then 400 per-cell steps on the
  staircase target) 0.605 at 300 steps
So the log compression is the missing piece (as for audio) and the per-cell front end is the part to
make faster: next, layer 1's staircase built (a constant dim from the power sum, min(r, t) = r -
relu(r - t) with large-gain gelu), or a longer stage 0 (audio's needed 1,500 steps for R^2 0.93).
Session 8, positions kept out of the built dims (0..223) in hand / handpre (before, the std-1
position embeddings were added to the Fourier dims too): hand 0.470, handpre (400 pre-steps) 0.604:
the same as before. Then a LONGER per-cell stage 0 (STAIR=1, PRE_STEPS=3000, lr 1e-3, 1,024 cells
a step, ~13 min on one core); the pre-training target's R^2 and per-cell shape at 100/200/300 steps:
  handpre: R^2 0.75 at 1,000 pre-steps, 0.90 at 2,900; shape 0.635 / 0.718 / 0.797 (colour 0.945)
  pre (no built layer 0): R^2 0.48 at 1,000, 0.87 at 2,900; shape 0.547 / 0.719 / 0.745 (colour 0.943)
(pre-training plateaus at R^2 ~0.4 for the first few hundred steps, then breaks out.) So a long
stage 0 makes per-cell shape learnable (raw 0.454 at 300 steps); a built power layer makes it
learn its target faster. This is what model/training/recipe.py's stage 0 now does for cells.
Environment: STAIR=1 (the staircase features, input and target), PRE_STEPS, LR, THREADS, FRAMES.
"""
import os
import pickle
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(int(os.environ.get("THREADS", "1")))
SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow", "white", "purple", "orange")
K = 7  # frequencies 0..K-1 on each axis (both signs on x)


class _V:
    blank = 0

    def word(self, w):
        return 1 + SHAPES.index(w) if w in SHAPES else 1 + COLOURS.index(w) if w in COLOURS else 0


def fourier(cells: np.ndarray) -> np.ndarray:
    """[n, 6912] uint8 -> [n, F] log power of the low 2D frequencies of the cell's luminance (cell mean removed)."""
    x = cells.reshape(-1, 48, 48, 3).astype(np.float32).mean(-1)
    x = x - x.mean((1, 2), keepdims=True)
    x = x / (x.std((1, 2), keepdims=True) + 1.0)
    f = np.fft.rfft2(x * np.outer(np.hanning(48), np.hanning(48)))  # [n, 48, 25]
    f = np.concatenate([f[:, :K, :K], f[:, -K + 1:, :K]], 1)  # ky 0..K-1 and -(K-1)..-1, kx 0..K-1
    p = np.log1p(np.abs(f) ** 2).reshape(len(cells), -1)
    return p.astype(np.float32)


def dft_rows() -> np.ndarray:
    """[2 * 56, 6912]: unit cos then sin rows over a cell's (y, x, channel) values, luminance only."""
    ks = [(ky, kx) for kx in range(7) for ky in range(-6, 7) if kx * kx + ky * ky <= 36 and (kx > 0 or ky > 0)]
    y, x = np.mgrid[0:48, 0:48]
    win = np.outer(np.hanning(48), np.hanning(48))
    ph = np.stack([2 * np.pi * (ky * y + kx * x) / 48 for ky, kx in ks])  # [56, 48, 48]
    rows = np.concatenate([win * np.cos(ph), win * np.sin(ph)])
    rows = np.repeat(rows[..., None], 3, -1).reshape(len(rows), -1)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


_STAIR = [10 ** (j / 2 - 3) for j in range(8)]


def stair(cells: np.ndarray) -> np.ndarray:
    """[n, 6912] uint8 -> [n, 56]: the audio front end's target made for cells: the power of the 56
    frequencies of dft_rows() on the LayerNormed cell (what the input path sees), relative to its
    mean, through the 'staircase' log (sum_j min(r, t_j) / t_j), centred; a flat cell gives zeros."""
    x = torch.from_numpy(cells).float() / 255
    x = F.layer_norm(x, x.shape[-1:])
    rows = torch.from_numpy(dft_rows()).float()
    c, s = x @ rows[:56].T, x @ rows[56:].T
    p = c * c + s * s
    r = p / (p.mean(-1, keepdim=True) + 1e-9)
    out = sum(torch.clamp(r, max=t) / t for t in _STAIR)
    return ((out - out.mean(-1, keepdim=True)) * (p.sum(-1, keepdim=True) > 1e-6)).numpy()


def make(path: str, n: int) -> None:
    from onepass.model.training import domain
    from onepass.model.training.samples import BUDGET, cell_labels
    from onepass.operators.patchify import patchify

    rng, out = np.random.default_rng(5), []
    v = _V()
    for _ in range(n):
        scene = domain.random_scene(rng)
        img = domain.render(scene, rng=rng)
        img = np.clip(img + rng.normal(0, rng.uniform(0, 3), img.shape), 0, 255).astype(np.uint8)
        p = patchify(img, BUDGET, video=True)
        lab = cell_labels(scene, p, v)
        m = p.num_tokens
        out.append((p.cells[:m], p.positions[:m], lab[:m, 1], lab[:m, 0], scene.caption))
    pickle.dump(out, open(path, "wb"))
    print(f"{n} frames, {out[0][0].shape[0]} cells each -> {path}")


class RMS(nn.Module):
    def __init__(s, d, w=1.0):
        super().__init__()
        s.weight = nn.Parameter(torch.full((d,), float(w)))

    def forward(s, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * s.weight


H, I, NH, HD = 256, 1024, 4, 64


class Layer(nn.Module):
    def __init__(s):
        super().__init__()
        s.n_in, s.n_pa, s.n_pf, s.n_pff = RMS(H), RMS(H), RMS(H), RMS(H)
        s.q, s.k, s.v = (nn.Linear(H, NH * HD, bias=False) for _ in range(3))
        s.o = nn.Linear(NH * HD, H, bias=False)
        s.qn, s.kn = RMS(HD, HD ** -0.25), RMS(HD, HD ** -0.25)
        s.gate, s.up, s.down = nn.Linear(H, I, bias=False), nn.Linear(H, I, bias=False), nn.Linear(I, H, bias=False)
        for lin in (s.q, s.k, s.v, s.o, s.gate, s.up, s.down):
            nn.init.normal_(lin.weight, std=0.02)

    def forward(s, h):
        B, T, _ = h.shape
        x = s.n_in(h)
        q, k = s.qn(s.q(x).view(B, T, NH, HD)).transpose(1, 2), s.kn(s.k(x).view(B, T, NH, HD)).transpose(1, 2)
        v = s.v(x).view(B, T, NH, HD).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        h = h + s.n_pa(s.o(a.transpose(1, 2).reshape(B, T, NH * HD)))
        x = s.n_pf(h)
        return h + s.n_pff(s.down(F.gelu(s.gate(x), approximate="tanh") * s.up(x)))


class Net(nn.Module):
    def __init__(s, variant: str, nf: int):
        super().__init__()
        s.variant = variant
        s.proj = nn.Linear(6912, H, bias=False)
        nn.init.normal_(s.proj.weight, std=0.02)
        if variant == "dft_init":
            with torch.no_grad():
                rows = torch.from_numpy(dft_rows()).float()
                s.proj.weight[: len(rows)] = rows
        s.fproj = nn.Linear(nf, H, bias=False) if variant.startswith("fourier") else None
        s.px, s.py = nn.Embedding(16, H), nn.Embedding(16, H)
        s.layers = nn.ModuleList(Layer() for _ in range(6))
        s.norm = RMS(H)
        s.head_shape, s.head_colour = nn.Linear(H, 4), nn.Linear(H, 8)
        if variant in ("hand", "handpre"):  # dft_rows in dims 0..111, layer 0's MLP built to write each frequency's power
            with torch.no_grad():  # gelu(a)a + gelu(-a)(-a) = a^2 (tanh-gelu too): 4 units per frequency
                rows = torch.from_numpy(dft_rows()).float()
                s.proj.weight.zero_()
                s.proj.weight[: len(rows)] = rows
                m = s.layers[0]
                m.gate.weight.zero_(); m.up.weight.zero_(); m.down.weight.zero_()
                for j in range(112):  # units 2j (+a), 2j+1 (-a); frequency j % 56 -> output dim 112 + j % 56
                    for u, sign in ((2 * j, 1.0), (2 * j + 1, -1.0)):
                        m.gate.weight[u, j] = sign
                        m.up.weight[u, j] = sign
                        m.down.weight[112 + j % 56, u] = 1.0
                m.n_pa.weight.zero_()
                s.layers[1].n_pa.weight.zero_()
                s.px.weight[:, :224] = 0  # positions kept out of the built dims (the real position table can start so)
                s.py.weight[:, :224] = 0
        if variant == "pre":
            with torch.no_grad():
                rows = torch.from_numpy(dft_rows()).float()
                s.proj.weight.zero_()
                s.proj.weight[: len(rows)] = rows
                for layer in s.layers[:2]:
                    layer.n_pa.weight.zero_()  # attention silent in layers 0-1: it learns to speak later

    def embed(s, pix):
        x = F.layer_norm(pix, pix.shape[-1:])
        return s.proj(x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))

    def front(s, pix):
        h = s.embed(pix)
        for layer in s.layers[:2]:
            h = h + layer.n_pff(layer.down(F.gelu(layer.gate(layer.n_pf(h)), approximate="tanh") * layer.up(layer.n_pf(h))))
        return h

    def forward(s, pix, feats, pos):
        h = 0
        if s.variant != "fourier_only":
            x = F.layer_norm(pix, pix.shape[-1:])
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
            h = s.proj(x)
        if s.fproj is not None:
            f = feats if os.environ.get("STAIR") else (feats - feats.mean(-1, keepdim=True)) / (feats.std(-1, keepdim=True) + 1e-3)
            h = h + s.fproj(f)
        h = h + s.px(pos[..., 0]) + s.py(pos[..., 1])
        for layer in s.layers:
            h = layer(h)
        h = s.norm(h)
        return s.head_shape(h), s.head_colour(h)


def main(variant: str, steps: int) -> None:
    data = pickle.load(open(os.environ.get("FRAMES", "/root/probe/frames.pkl"), "rb"))
    pix = torch.from_numpy(np.stack([d[0] for d in data])).float() / 255  # [N, 66, 6912]
    feats = torch.from_numpy(np.stack([(stair if os.environ.get("STAIR") else fourier)(d[0]) for d in data]))
    pos = torch.from_numpy(np.stack([d[1] for d in data]))
    shp = torch.from_numpy(np.stack([d[2] for d in data]))
    col = torch.from_numpy(np.stack([d[3] for d in data]))
    n_test = 300
    torch.manual_seed(0)
    net = Net(variant, feats.shape[-1])
    opt = torch.optim.AdamW(net.parameters(), lr=float(os.environ.get("LR", "1e-3")), weight_decay=0.05)
    g, t0 = torch.Generator().manual_seed(1), time.time()
    if variant in ("pre", "handpre"):
        nf, first = feats.shape[-1], 112 if variant == "pre" else 168
        params = [net.proj.weight] + [p for layer in net.layers[:2] for p in (*layer.gate.parameters(), *layer.up.parameters(),
                                                                               *layer.down.parameters(), layer.n_pf.weight, layer.n_pff.weight)]
        popt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
        flat_pix, flat_f = pix[: len(data) - n_test].flatten(0, 1), feats[: len(data) - n_test].flatten(0, 1)
        for step in range(int(os.environ.get("PRE_STEPS", "500"))):
            b = torch.randint(0, len(flat_pix), (1024,), generator=g)
            f = flat_f[b]
            target = f if os.environ.get("STAIR") else (f - f.mean(-1, keepdim=True)) / (f.std(-1, keepdim=True) + 1e-3)
            loss = F.mse_loss(net.front(flat_pix[b])[:, first : first + nf], target)
            popt.zero_grad()
            loss.backward()
            popt.step()
            if step % 100 == 0:
                print(f"pre {step} mse {loss.item():.3f} target var {target.var(0).mean().item():.3f} ({time.time() - t0:.0f} s)", flush=True)
    for step in range(1, steps + 1):
        b = torch.randint(0, len(data) - n_test, (24,), generator=g)
        lr_scale = min(1.0, step / 100)
        for grp in opt.param_groups:
            grp["lr"] = float(os.environ.get("LR", "1e-3")) * lr_scale
        ls, lc = net(pix[b], feats[b], pos[b])
        loss = F.cross_entropy(ls.flatten(0, 1), shp[b].flatten()) + F.cross_entropy(lc.flatten(0, 1), col[b].flatten())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == steps:
            with torch.no_grad():
                ls, lc = net(pix[-n_test:], feats[-n_test:], pos[-n_test:])
                keep = shp[-n_test:] > 0
                acc_s = (ls.argmax(-1)[keep] == shp[-n_test:][keep]).float().mean()
                acc_c = (lc.argmax(-1)[keep] == col[-n_test:][keep]).float().mean()
            print(f"{variant} step {step} loss {loss.item():.3f} shape {acc_s:.3f} colour {acc_c:.3f} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]))
    else:
        main(sys.argv[1], int(sys.argv[2]))
