"""Research probe (not part of the package; session 5's note on issue 11 has the figures):

    python model/training/probes/make_utterances.py /tmp/utt.pkl     # 4,000 domain utterances (~370 MB)
    UTT=/tmp/utt.pkl LR=1e-3 python model/training/probes/audio_frontend.py lmsparse_cl 250

Word CTC on domain utterances (3,850 train / 150 held out) through layers built as Gemma 4's decoder layer is
(RMSNorm with weights, sandwich norms, q/k norms, GeGLU with tanh-gelu, no biases anywhere).
Variants:
  dft     audio projection = Fourier basis (60 mel-spaced freqs, cos+sin), default layers
  hand    dft + layer 0 MLP built to square-and-sum (band power, exact: gelu(a)a + gelu(-a)(-a) = a^2)
          and write a constant (sum of all powers is fixed by the RMSNorm); layer 1 MLP built to
          compress each band's power relative to the constant: sum_j min(r, t_j)/t_j ~ log r
  logmel  fixed log-mel of the same 60 freqs, linear in (upper bound)
  hand2..hand5  the built front end with a consistent scale (2), centred (3), keeping the level (4), both (5)
  lmsparse, lmsparse_c, lmsparse_cl, lmsparse_ln, lmsparse_ln_e, lmplus_e, lmdense_fixed, lmdense_rel,
  lmsparse_stair, lmsparse_stair_l:
          log features given at the input, in fixed dims or through a fixed random projection (see front0)
  pre, pre2  the projection + layers 0-1 MLPs pretrained per frame (PRE_STEPS, PRE_LR) to write
          lmsparse_stair's features, then CTC (the recipe's stage 0)
Environment: FREEZE=1|2 (built front end / all of layers 0-1 frozen), SIL=1 (layers 0-1 silent),
SCRUB=1 (only the feature dims leave layer 1), SILZERO=1 (silent frames as zero vectors), NOISE=x
(noise on the features), DITHER=x (a noise floor of RMS x under every frame), TIED=1 (the real
model's read-out: no bias, std-0.02 head, softcap 30), GN=1 (where the gradient norm is).
Session 6's figures: silence as the zero vector blocks learning; a noise floor unblocks it.
"""
import sys, time, json, pickle, numpy as np, torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(1)
variant, steps = sys.argv[1], int(sys.argv[2])
data = pickle.load(open(__import__('os').environ.get('UTT', '/root/probe/data4k.pkl'), 'rb'))
if __import__('os').environ.get('DITHER'):  # a noise floor under every frame (seeded per item)
    data = [(f + np.random.default_rng(i).normal(0, float(__import__('os').environ['DITHER']), f.shape).astype(f.dtype), ws) for i, (f, ws) in enumerate(data)]
vocab = sorted({w for _, ws in data for w in ws}); idx = {w: i + 1 for i, w in enumerate(vocab)}
train, test = data[:-150], data[-150:]
H, I, NH, HD, NB = 256, 1024, 4, 64, 60
P0, C0, L0 = 2 * NB, 3 * NB, 3 * NB + 1          # power dims, constant dim, log dims
TH = [10 ** (j / 2 - 3) for j in range(8)]
REF = 3 * NB + 2 + NB  # dims REF..H-1: layer 0's attention output (hand4)      # thresholds on relative band power


def dft_rows(k):
    mel = np.linspace(2595*np.log10(1+60/700), 2595*np.log10(1+7600/700), k); fr = 700*(10**(mel/2595)-1)
    n = np.arange(640); win = np.hanning(640); ph = 2*np.pi*fr[:, None]*n/16000
    c, s = win*np.cos(ph), win*np.sin(ph)
    return c / np.linalg.norm(c, axis=1, keepdims=True), s / np.linalg.norm(s, axis=1, keepdims=True)


C, S_ = dft_rows(NB)


class RMS(nn.Module):
    def __init__(s, d, w=1.0):
        super().__init__(); s.weight = nn.Parameter(torch.full((d,), float(w)))
    def forward(s, x):
        return x * torch.pow(x.pow(2).mean(-1, keepdim=True) + 1e-6, -0.5) * s.weight


def rope(x):
    T, d = x.shape[-2], x.shape[-1]
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d)); a = torch.arange(T).float()[:, None] * inv
    cos, sin = torch.cos(a).repeat(1, 2), torch.sin(a).repeat(1, 2)
    x1, x2 = x[..., :d // 2], x[..., d // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


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
    def forward(s, h, mask):
        B, T, _ = h.shape; x = s.n_in(h)
        q = rope(s.qn(s.q(x).view(B, T, NH, HD)).transpose(1, 2)); k = rope(s.kn(s.k(x).view(B, T, NH, HD)).transpose(1, 2))
        v = s.v(x).view(B, T, NH, HD).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(-1, -2) + mask, -1) @ v
        h = h + s.n_pa(s.o(a.transpose(1, 2).reshape(B, T, NH * HD)))
        x = s.n_pf(h)
        return h + s.n_pff(s.down(F.gelu(s.gate(x), approximate='tanh') * s.up(x)))


class M(nn.Module):
    def __init__(s):
        super().__init__()
        s.register_buffer('C', torch.tensor(C, dtype=torch.float32)); s.register_buffer('S', torch.tensor(S_, dtype=torch.float32))
        if variant == 'logmel':
            s.proj = nn.Linear(NB, H, bias=False)
        else:
            s.proj = nn.Linear(640, H, bias=False)
            w = np.zeros((H, 640)); w[:NB] = C; w[NB:2 * NB] = S_
            s.proj.weight.data = torch.tensor(w, dtype=torch.float32)
        s.register_buffer('R', torch.randn(NB, H, generator=torch.Generator().manual_seed(3)) / NB ** 0.5 * 0.58)
        s.layers = nn.ModuleList(Layer() for _ in range(6)); s.norm = RMS(H); s.out = nn.Linear(H, len(vocab) + 1)
        if __import__("os").environ.get("TIED"):  # the real model's read-out: no bias, weights = token embeddings (std 0.02), softcap 30
            s.out = nn.Linear(H, len(vocab) + 1, bias=False)
            nn.init.normal_(s.out.weight, std=0.02)
        if variant in ('hand', 'hand2', 'hand3', 'hand4', 'hand5'):
            s.hand()

    @torch.no_grad()
    def hand(s):
        l0, l1 = s.layers[0], s.layers[1]
        for L in (l0, l1):
            L.n_pa.weight.zero_()                     # attention of layers 0-1 starts silent (learns to speak)
        g, u, d = l0.gate.weight, l0.up.weight, l0.down.weight
        for k in range(NB):
            for j, (dim, sign) in enumerate([(k, 1), (k, -1), (NB + k, 1), (NB + k, -1)]):
                r = 4 * k + j; g[r].zero_(); u[r].zero_(); g[r, dim] = sign; u[r, dim] = sign
                d[:, r].zero_(); d[P0 + k, r] = 1.0; d[C0, r] = 1.0 / NB
        d[:, 4 * NB:] *= 0.1
        g, u, d = l1.gate.weight, l1.up.weight, l1.down.weight
        kappa, B = float(__import__("os").environ.get("KAPPA", "5")), float(__import__("os").environ.get("BB", "10"))
        for k in range(NB):
            r = 9 * k; g[r].zero_(); u[r].zero_(); g[r, C0] = B; u[r, P0 + k] = 1.0
            d[:, r].zero_(); d[L0 + k, r] = sum(1 / t for t in TH) / B
            for j, t in enumerate(TH):
                r = 9 * k + 1 + j; g[r].zero_(); u[r].zero_(); g[r, P0 + k] = kappa / t; g[r, C0] = -kappa; u[r, C0] = 1.0
                d[:, r].zero_(); d[L0 + k, r] = -1.0 / kappa
        d[:, 9 * NB:] *= 0.1
        l1.n_pff.weight[L0:L0 + NB] = 3.0
        if variant in ('hand4', 'hand5'):  # keep the level: layer 0's attention output (RMS fixed by its post-norm) lands
            # in dims REF.. only, and the constant is its squared size, not the audio's own
            l0.n_pa.weight.fill_(1.0)
            l0.o.weight[:REF].zero_()
            g0, u0, d0 = l0.gate.weight, l0.up.weight, l0.down.weight
            d0[C0, :4 * NB] = 0.0
            for j, dim in enumerate(range(REF, H)):
                for sgn, r in ((1, 4 * NB + 2 * j), (-1, 4 * NB + 2 * j + 1)):
                    g0[r].zero_(); u0[r].zero_(); g0[r, dim] = sgn; u0[r, dim] = sgn; d0[:, r].zero_(); d0[C0, r] = 1.0 / NB
        if variant in ('hand3', 'hand5'):  # hand2, and the log dims centred over bands (down_proj: delta_jk - 1/NB)
            block = d[L0:L0 + NB, :9 * NB].clone()
            d[L0:L0 + NB, :9 * NB] = block - block.mean(0, keepdim=True)
            if variant == 'hand5':  # hand4's level kept apart: the bands' mean in one dim of its own (H-1, in REF..)
                d[H - 1, :9 * NB] = block.mean(0)
        if variant in ('hand2', 'hand3', 'hand4', 'hand5'):  # a constant dominates the MLP output, so its RMSNorm keeps L's scale frame to frame
            r, K = 9 * NB, L0 + NB
            g[r].zero_(); u[r].zero_(); g[r, C0] = B; u[r, C0] = 1.0; d[:, r].zero_(); d[K, r] = 80.0 / B
            l1.n_pff.weight[K] = 0.0
            l1.n_pff.weight[L0:L0 + NB] = 15.0
            if variant == 'hand5':
                l1.n_pff.weight[H - 1] = 15.0

    def front(s, x):
        return s.front0(x) * float(__import__("os").environ.get("SCALE", "1"))

    def front0(s, x):
        x = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6)
        if variant == 'logmel':
            p = (x @ s.C.T) ** 2 + (x @ s.S.T) ** 2
            return s.proj(torch.log(p + 1e-3))
        if variant == 'lmdense_fixed':  # the log features through a FIXED random dense projection
            p = (x @ s.C.T) ** 2 + (x @ s.S.T) ** 2
            return torch.log(p + 1e-3) @ s.R
        if variant == 'lmdense_rel':  # lmsparse's features (log10 relative power + 4) through the fixed projection
            p = (x @ s.C.T) ** 2 + (x @ s.S.T) ** 2
            return ((torch.log10(p / (p.mean(-1, keepdim=True) + 1e-9) + 1e-4) + 4) * (p.sum(-1, keepdim=True) > 0)) @ s.R
        if variant in ('lmsparse_ln', 'lmsparse_ln_e'):  # ln(p + 1e-3) in fixed sparse dims (_e: beside the Fourier embedding)
            p = (x @ s.C.T) ** 2 + (x @ s.S.T) ** 2
            h = torch.zeros(*x.shape[:-1], H)
            h[..., L0:L0 + NB] = torch.log(p + 1e-3)
            return h + (s.proj(x) if variant == 'lmsparse_ln_e' else 0)
        if variant == 'lmsparse_c':  # lmsparse's features centred per frame (mean over bands removed)
            p = (x @ s.C.T) ** 2 + (x @ s.S.T) ** 2
            lg = torch.log10(p / (p.mean(-1, keepdim=True) + 1e-9) + 1e-4)
            h = torch.zeros(*x.shape[:-1], H)
            h[..., L0:L0 + NB] = (lg - lg.mean(-1, keepdim=True)) * (p.sum(-1, keepdim=True) > 0)
            return h
        if variant == 'lmsparse_cl':  # lmsparse_c plus the frame's level: ln of its mean band power, in one more dim
            p = (x @ s.C.T) ** 2 + (x @ s.S.T) ** 2
            lg = torch.log10(p / (p.mean(-1, keepdim=True) + 1e-9) + 1e-4)
            h = torch.zeros(*x.shape[:-1], H)
            h[..., L0:L0 + NB] = (lg - lg.mean(-1, keepdim=True)) * (p.sum(-1, keepdim=True) > 0)
            h[..., L0 + NB] = torch.log(p.mean(-1) + 1e-3)
            return h
        if variant in ('lmsparse_stair', 'lmsparse_stair_l'):  # lmsparse_cl with hand's staircase log (sum_j min(r, t_j)/t_j)
            p = (x @ s.C.T) ** 2 + (x @ s.S.T) ** 2
            r = p / (p.mean(-1, keepdim=True) + 1e-9)
            lg = sum(torch.clamp(r, max=t) / t for t in TH)
            if variant == 'lmsparse_stair_l':  # the same staircase on absolute power (no division by the frame's mean)
                lg = sum(torch.clamp(p, max=t) / t for t in TH)
            h = torch.zeros(*x.shape[:-1], H)
            h[..., L0:L0 + NB] = (lg - lg.mean(-1, keepdim=True)) * (p.sum(-1, keepdim=True) > 0)
            h[..., L0 + NB] = torch.log(p.mean(-1) + 1e-3)
            if __import__("os").environ.get("SILZERO"):  # silent frames all zero (what the architecture makes of them)
                h = h * (p.sum(-1, keepdim=True) > 0)
            if __import__("os").environ.get("NOISE"):  # the pretrained front end's error, as noise (R^2 0.85: std 0.81)
                h[..., L0:L0 + NB + 1] += float(__import__("os").environ["NOISE"]) * torch.randn_like(h[..., L0:L0 + NB + 1])
            return h
        if variant in ('lmsparse', 'lmplus_e'):  # log rel. power as hand2 places it (dims L0..), alone or beside e
            p = (x @ s.C.T) ** 2 + (x @ s.S.T) ** 2
            lg = (torch.log10(p / (p.mean(-1, keepdim=True) + 1e-9) + 1e-4) + 4) * (p.sum(-1, keepdim=True) > 0)
            h = torch.zeros(*x.shape[:-1], H)
            h[..., L0:L0 + NB] = lg
            return h + (s.proj(x) if variant == 'lmplus_e' else 0)
        return s.proj(x)

    def forward(s, x):
        h = s.front(x); T = h.shape[1]; mask = torch.triu(torch.full((T, T), float('-inf')), 1)
        for i, L in enumerate(s.layers):
            h = L(h, mask)
            if i == 1 and __import__("os").environ.get("SCRUB"):  # oracle: only the built log dims (and level) go on
                keep = torch.zeros(H); keep[L0:L0 + NB + 1] = 1; keep[H - 1] = 1
                h = h * keep
        logits = s.out(s.norm(h))
        return 30.0 * torch.tanh(logits / 30.0) if __import__("os").environ.get("TIED") else logits


torch.manual_seed(0); m = M()


def stair_target(x):
    """lmsparse_stair's features of raw frames [N, 640]: centred staircase log of relative band power, ln level."""
    x = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6)
    p = (x @ m.C.T) ** 2 + (x @ m.S.T) ** 2
    r = p / (p.mean(-1, keepdim=True) + 1e-9)
    lg = sum(torch.clamp(r, max=t) / t for t in TH)
    return torch.cat([(lg - lg.mean(-1, keepdim=True)) * (p.sum(-1, keepdim=True) > 0), torch.log(p.mean(-1, keepdim=True) + 1e-3)], -1)


def frame_mlps(x, n=2):
    """What layers 0..n-1 do to one frame when their attention is silent: RMSNorm -> projection -> MLPs."""
    h = m.proj(x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6))
    for L in m.layers[:n]:
        y = L.n_pf(h)
        h = h + L.n_pff(L.down(F.gelu(L.gate(y), approximate='tanh') * L.up(y)))
    return h


if variant in ('pre', 'pre2'):  # front-end pretraining: layers 0-1 MLPs (+ the projection) regress the stair features
    # into dims L0..L0+NB (and the level), per frame, attention silent; then CTC as for every variant
    frames = torch.tensor(np.concatenate([f for f, _ in data[:-150]]).astype(np.float32))
    frames = frames[frames.abs().sum(-1) > 0]
    keep_dims = torch.zeros(H); keep_dims[L0:L0 + NB + 1] = 1
    with torch.no_grad():
        for L in m.layers[:2]:
            L.n_pa.weight.zero_()
            if variant == 'pre2':  # the MLPs write only the feature dims; the raw projection is small beside them
                L.n_pff.weight.mul_(keep_dims)
        if variant == 'pre2':
            m.proj.weight.mul_(0.05)
    pre_params = list(m.proj.parameters()) + [p for L in m.layers[:2] for n_, p in L.named_parameters() if not n_.startswith(('q', 'k', 'v', 'o', 'n_in', 'n_pa'))]
    popt = torch.optim.AdamW(pre_params, float(__import__("os").environ.get("PRE_LR", "1e-3")))
    g = torch.Generator().manual_seed(1); t0 = time.time()
    for pstep in range(int(__import__("os").environ.get("PRE_STEPS", "1500")) + 1):
        xb = frames[torch.randint(0, frames.shape[0], (1024,), generator=g)]
        tgt = stair_target(xb); h = frame_mlps(xb)
        loss = F.mse_loss(h[:, L0:L0 + NB + 1], tgt)
        popt.zero_grad(); loss.backward(); popt.step()
        if variant == 'pre2':
            with torch.no_grad():
                for L in m.layers[:2]:
                    L.n_pff.weight.mul_(keep_dims)
        if pstep % 250 == 0:
            var = tgt.var(0).mean().item()
            print(json.dumps({"pre_step": pstep, "mse": round(loss.item(), 4), "target_var": round(var, 4), "s": round(time.time() - t0)}), flush=True)
if __import__("os").environ.get("SIL"):  # layers 0-1 write nothing (as the built variants' unused parts): input reaches layer 2
    with torch.no_grad():
        for L in m.layers[:2]:
            L.n_pa.weight.zero_(); L.n_pff.weight.zero_()
if __import__("os").environ.get("FREEZE"):  # the built front end stays as built (FREEZE=2: all of layers 0-1)
    for L in m.layers[:2]:
        for lin in ((L.gate, L.up, L.down) if __import__("os").environ["FREEZE"] != "2" else list(L.modules())[1:]):
            for p in lin.parameters():
                p.requires_grad_(False)
    m.proj.weight.requires_grad_(False)
opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], float(__import__("os").environ.get("LR", "1e-3")))


def batch(items):
    T = max(f.shape[0] for f, _ in items); x = torch.zeros(len(items), T, 640)
    for i, (f, _) in enumerate(items): x[i, :f.shape[0]] = torch.tensor(f.astype(np.float32))
    return x, torch.tensor([idx[w] for _, ws in items for w in ws]), torch.tensor([f.shape[0] for f, _ in items]), torch.tensor([len(ws) for _, ws in items])


def check_hand():
    """The built layers compute what they claim: layer-1 log dims vs log of relative band power."""
    x, _, il, _ = batch(test[:4]); xn = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6)
    p = (xn @ m.C.T) ** 2 + (xn @ m.S.T) ** 2
    h = m.front(x); T = h.shape[1]; mask = torch.triu(torch.full((T, T), float('-inf')), 1)
    h = m.layers[1](m.layers[0](h, mask), mask)
    lg = h[..., L0:L0 + NB]; ref = torch.log10(p / (p.mean(-1, keepdim=True) + 1e-9) + 1e-4)
    keep = (torch.arange(T)[None, :] < il[:, None]) & (p.sum(-1) > 1e-3)
    a, b = lg[keep].flatten(), ref[keep].flatten()
    per_frame = [float(torch.corrcoef(torch.stack([lg[keep][i], ref[keep][i]]))[0, 1]) for i in range(0, int(keep.sum()), 7)]
    print(json.dumps({"check": "median per-frame corr", "r": round(float(np.median(per_frame)), 3)}), flush=True)
    print(json.dumps({"check": "corr(log dims, log10 rel power)", "r": round(float(torch.corrcoef(torch.stack([a, b]))[0, 1]), 3)}), flush=True)


def wer():
    import jiwer; m.eval(); hyps, refs = [], []
    with torch.no_grad():
        for i in range(0, len(test), 25):
            items = test[i:i+25]; x, _, il, _ = batch(items); p = m(x).argmax(-1)
            for j, (f, ws) in enumerate(items):
                o, prev = [], 0
                for c in p[j, :il[j]].tolist():
                    if c != prev and c: o.append(vocab[c-1])
                    prev = c
                hyps.append(' '.join(o) or 'x'); refs.append(' '.join(ws))
    m.train(); return jiwer.wer(refs, hyps)


if variant in ('hand', 'hand2', 'hand3', 'hand4', 'hand5'):
    with torch.no_grad():
        check_hand()
rng = np.random.default_rng(0); t0 = time.time()
for step in range(steps + 1):
    items = [train[i] for i in rng.integers(0, len(train), 16)]
    x, tg, il, tl = batch(items)
    loss = F.ctc_loss(m(x).log_softmax(-1).transpose(0, 1), tg, il, tl, zero_infinity=True)
    opt.zero_grad(); loss.backward(); gn = nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step()
    if __import__("os").environ.get("GN") and step % 25 == 0:  # where the gradient norm is (clipping at 1.0 shares it out)
        top = sorted(((p.grad.norm().item(), n) for n, p in m.named_parameters() if p.grad is not None), reverse=True)[:4]
        print(json.dumps({"step": step, "grad_norm": round(float(gn), 2), "top": [(n, round(g, 2)) for g, n in top]}), flush=True)
    if step % 250 == 0:
        print(json.dumps({"v": variant, "step": step, "loss": round(loss.item(), 3), "test_wer": round(wer(), 3), "s": round(time.time() - t0)}), flush=True)
