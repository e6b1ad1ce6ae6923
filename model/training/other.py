"""Media outside the default model's domain, and the markers it answers them with.

The default model used to turn anything it heard into a confident inspection report ("pipe
eighty four is cracked" for a LibriVox reading). For a field-inspection tool a made-up finding is
the worst output there is, so training shows it what is not its domain:

- other speech: the training synthesizers reading ordinary English (sentences of the licence
  texts every Debian system ships, or dictionary words), transcribed as ``[other speech]``;
- other sound: noise bursts, tone melodies, chirps and clicks, transcribed as ``[other sound]``;
- other scenes: 1/f-noise "photographs", gradients, stripes and checkers, textures, and clutters
  of many shapes or of colours outside the domain, captioned ``[other scene]``.

The held-out checks are real recordings and photographs (``../shared/media``), which training
never sees.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["OTHER_SPEECH", "OTHER_SOUND", "OTHER_SCENE", "MARKERS", "other_text", "other_sound", "other_scene",
           "is_marker", "normalise_markers"]

from ..tasks import MARKERS, OTHER_SCENE, OTHER_SOUND, OTHER_SPEECH, is_marker, normalise_markers  # noqa: F401 - defined once, there


# -- other speech ---------------------------------------------------------------------------------
_FALLBACK = """the old house stood at the end of a quiet lane where children played in the summer evenings
she opened the letter and read it twice before she put it back in the drawer
we walked along the river until the light began to fade behind the hills
if you want to see the results you will have to wait until the morning
the committee agreed to meet again next week to discuss the proposal in detail
he said that the train would be late because of the snow on the line
a good book can take you to places you have never been and people you will never meet
the price of bread went up again and nobody in the village was happy about it
please remember to bring your own lunch and a warm coat for the afternoon walk
music filled the hall as the orchestra played the final movement of the symphony""".splitlines()


@lru_cache(maxsize=1)
def _corpus() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(sentences, words) of ordinary English from the licence texts of /usr/share/common-licenses
    and /usr/share/dict/words where present; a short built-in list otherwise."""
    sentences: list[str] = list(_FALLBACK)
    lic = Path("/usr/share/common-licenses")
    if lic.is_dir():
        for f in sorted(lic.iterdir()):
            try:
                text = f.read_text(errors="ignore").lower()
            except OSError:
                continue
            for part in re.split(r"[.;:!?\n]{1,}\s*", text):
                words = re.findall(r"[a-z]+", part)
                if 4 <= len(words) <= 40:
                    sentences.append(" ".join(words))
    words: tuple[str, ...] = ()
    d = Path("/usr/share/dict/words")
    if d.exists():
        words = tuple(w for w in d.read_text(errors="ignore").split() if w.isalpha() and w.islower() and 3 <= len(w) <= 12)
    return tuple(sentences), words


def other_text(rng: np.random.Generator) -> str:
    """4-14 words of ordinary English (a stretch of a sentence, or dictionary words)."""
    sentences, words = _corpus()
    if words and rng.random() < 0.25:
        return " ".join(words[int(rng.integers(len(words)))] for _ in range(int(rng.integers(3, 9))))
    s = sentences[int(rng.integers(len(sentences)))].split()
    n = int(rng.integers(4, 15))
    start = int(rng.integers(0, max(1, len(s) - n + 1)))
    return " ".join(s[start : start + n])


# -- other sound ----------------------------------------------------------------------------------
def other_sound(rng: np.random.Generator, seconds: float | None = None) -> np.ndarray:
    """0.8-5 s of a sound that is not speech, 16 kHz float32, peak 0.05-0.9."""
    n = int((seconds or rng.uniform(0.8, 5.0)) * 16000)
    t = np.arange(n) / 16000
    kind = int(rng.integers(5))
    if kind == 0:  # a melody of harmonic notes
        out = np.zeros(n)
        pos = 0
        while pos < n:
            length = int(rng.uniform(0.1, 0.6) * 16000)
            f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
            tt = np.arange(min(length, n - pos)) / 16000
            note = sum(np.sin(2 * np.pi * f0 * h * tt) / h ** rng.uniform(1, 2) for h in range(1, 6))
            out[pos : pos + tt.size] = note * np.exp(-tt * rng.uniform(1, 8))
            pos += length
    elif kind == 1:  # coloured noise: white, pink or brown
        spec = np.fft.rfft(rng.normal(size=n))
        f = np.fft.rfftfreq(n, 1 / 16000)
        spec /= np.maximum(f, 20) ** (rng.choice([0.0, 0.5, 1.0]))
        out = np.fft.irfft(spec, n)
    elif kind == 2:  # a chirp or a steady tone with vibrato
        f0, f1 = rng.uniform(100, 3000, 2)
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * t[-1]))
        out = np.sin(phase + rng.uniform(0, 3) * np.sin(2 * np.pi * rng.uniform(2, 8) * t))
    elif kind == 3:  # clicks and knocks
        out = np.zeros(n)
        for at in rng.integers(0, n, int(rng.integers(3, 30))):
            m = min(n - at, 800)
            out[at : at + m] += rng.normal(size=m) * np.exp(-np.arange(m) / rng.uniform(30, 300))
    else:  # an engine-like hum: low harmonics with amplitude wobble
        f0 = rng.uniform(30, 120)
        out = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 12))
        out *= 1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 5) * t)
        out += rng.normal(0, 0.1, n)
    out = out / max(np.abs(out).max(), 1e-9) * rng.uniform(0.05, 0.9)
    fade = min(n // 4, 160)
    out[:fade] *= np.linspace(0, 1, fade)
    out[n - fade :] *= np.linspace(1, 0, fade)
    return out.astype(np.float32)


# -- other scenes ---------------------------------------------------------------------------------
def _pink(rng, h: int, w: int, power: float) -> np.ndarray:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    f[0, 0] = 1
    out = np.stack([np.fft.irfft2(np.fft.rfft2(rng.normal(size=(h, w))) / f ** power, (h, w)) for _ in range(3)], -1)
    mix = rng.normal(size=(3, 3)) * 0.5 + np.eye(3)  # correlated channels, like a photograph's
    out = out @ mix
    out -= out.min((0, 1))
    return out / max(out.max(), 1e-9)


def other_scene(rng: np.random.Generator, width: int = 640, height: int = 360) -> np.ndarray:
    """An RGB uint8 frame that is not one of the domain's scenes."""
    kind = int(rng.integers(6))
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    if kind == 0:  # natural-image-like 1/f noise
        img = _pink(rng, height, width, rng.uniform(1.0, 2.0))
    elif kind == 1:  # a gradient, linear or radial, 2-3 colours
        c = rng.uniform(0, 1, (3, 3))
        a = rng.uniform(0, 2 * np.pi)
        u = (np.cos(a) * xx + np.sin(a) * yy) if rng.random() < 0.6 else np.hypot(xx - rng.random(), yy - rng.random())
        u = (u - u.min()) / max(np.ptp(u), 1e-9)
        img = np.where(u[..., None] < 0.5, c[0] + (c[1] - c[0]) * (2 * u[..., None]), c[1] + (c[2] - c[1]) * (2 * u[..., None] - 1))
    elif kind == 2:  # stripes or a checkerboard
        period = rng.uniform(0.01, 0.15)
        a = rng.uniform(0, np.pi)
        s = np.sin((np.cos(a) * xx + np.sin(a) * yy) / period * 2 * np.pi) > 0
        if rng.random() < 0.4:
            s = s ^ (np.sin((-np.sin(a) * xx + np.cos(a) * yy) / period * 2 * np.pi) > 0)
        c = rng.uniform(0, 1, (2, 3))
        img = np.where(s[..., None], c[0], c[1])
    elif kind == 3:  # a texture: fine noise over a coloured base
        img = rng.uniform(0, 1, 3) + rng.normal(0, rng.uniform(0.05, 0.3), (height, width, 1)) * rng.uniform(0.5, 1.5, 3)
    else:  # a clutter: many shapes, or shapes of colours outside the domain, on a textured ground
        img = _pink(rng, height, width, 2.0) * rng.uniform(0.2, 1.0) + rng.uniform(0, 0.5, 3)
        for _ in range(int(rng.integers(3, 25)) if kind == 4 else int(rng.integers(1, 3))):
            r = rng.uniform(0.02, 0.25)
            cx, cy = rng.uniform(0, width / max(width, height)), rng.uniform(0, height / max(width, height))
            colour = rng.uniform(0, 1, 3)
            if rng.random() < 0.5:
                m = (xx - cx) ** 2 / rng.uniform(0.3, 3) + (yy - cy) ** 2 <= r * r
            else:
                a = rng.uniform(0, np.pi)
                u, v = np.cos(a) * (xx - cx) + np.sin(a) * (yy - cy), -np.sin(a) * (xx - cx) + np.cos(a) * (yy - cy)
                m = (np.abs(u) <= r) & (np.abs(v) <= r * rng.uniform(0.2, 1))
            img = np.where(m[..., None], colour, img)
    return np.clip(np.rint(np.clip(img, 0, 1) * 255), 0, 255).astype(np.uint8)
