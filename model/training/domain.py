"""The default model's domain (../shared/docs/default-model-domain.md): field-inspection speech
and shape scenes, as training windows and as whole MP4 clips with ground truth.

Everything is drawn from a seeded ``numpy.random.Generator``: the same seed gives the same clips.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = ["sentence", "Scene", "random_scene", "render", "Voice", "random_voice", "Utterance",
           "Timeline", "random_timeline", "spoken", "shape_mask", "write_clip", "NUMBER_WORDS", "VOICES"]

# -- speech ---------------------------------------------------------------------------------------
_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n == 100:
        return "one hundred"
    tens, ones = divmod(n, 10)
    return _TENS[tens - 2] + ("" if ones == 0 else " " + _ONES[ones])


NUMBER_WORDS = [number_words(n) for n in range(101)]
COMPONENTS = ("valve flange pump gauge pipe bolt weld conduit motor tank filter hose fitting bearing seal coupling "
              "panel breaker cable sensor compressor boiler duct bracket housing nozzle regulator manifold actuator switch").split()
CONDITIONS = "corrosion leak crack rust damage wear vibration noise overheating blockage".split()
STATES = "loose normal tight worn damaged clean dirty missing broken cracked corroded leaking stable hot cold wet dry".split()
UNITS = "psi volts degrees amps percent bar hertz millimeters liters rpm".split()
QUANTITIES = "pressure temperature voltage current level flow speed reading thickness".split()
PLACES = "north south east west upper lower left right inlet outlet".split()
ACTIONS = "check replace tighten inspect clean repair record monitor isolate drain".split()
PRIORITIES = "low medium high urgent".split()

def sentence(rng: np.random.Generator, forms: str = "trained") -> str:
    """One utterance's words: a report of the open grammar (``model/training/grammar.py``) in a
    trained or held-out form, vocabulary words in no order (``random``), or a number-dense report."""
    from .grammar import utterance_text

    return utterance_text(rng, forms).text


# espeak-ng voice names of the domain (the library calls en-gb "en")
VOICES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
VARIANTS = tuple(f"m{i}" for i in range(1, 8)) + tuple(f"f{i}" for i in range(1, 6))


# Synthesizers: the wheel's eSpeak NG library, Debian's espeak-ng program (another build), CMU
# Flite (trained on) and Festival (HELD OUT: never in training, the held-out synthesizer's WER).
TRAINED_ENGINES = ("espeak", "espeak-ng", "flite")
HELDOUT_ENGINES = ("festival",)


@dataclass(frozen=True)
class Voice:
    name: str
    pitch: int
    speed: int  # words per minute (Flite and Festival: relative to 165)
    gain: float
    engine: str = "espeak"

    @property
    def espeak_name(self) -> str:
        return self.name

    def say(self, text: str) -> np.ndarray:
        from . import speech

        if self.engine == "espeak":
            wave = speech.Espeak.get().say(text, self.name, self.pitch, self.speed)
        elif self.engine == "espeak-ng":
            wave = speech.espeak_ng_cli(text, self.name, self.pitch, self.speed)
        elif self.engine == "flite":
            wave = speech.flite(text, self.name, self.speed / 165)
        elif self.engine == "festival":
            wave = speech.festival(text, self.name, self.speed / 165)
        else:
            raise ValueError(f"unknown synthesizer {self.engine!r}")
        peak = float(np.abs(wave).max()) if wave.size else 0.0
        return wave * (self.gain / max(peak, 1e-6)) * 0.9 if self.engine != "espeak" else wave * self.gain


def spoken(voice: Voice, text: str) -> np.ndarray:
    """The voice saying ``text``, espeak's leading/trailing silence trimmed (5 ms kept), so that
    truth times are the speech's own."""
    wave = voice.say(text)
    active = np.flatnonzero(np.abs(wave) > 0.01 * max(np.abs(wave).max(), 1e-6))
    if active.size:
        wave = wave[max(0, active[0] - 80) : active[-1] + 80]
    return wave


def random_voice(rng: np.random.Generator, synths: str = "espeak") -> Voice:
    """``espeak``: the wheel's eSpeak NG (issue 11's clips); ``trained``: any training synthesizer
    with a wide loudness range; ``heldout``: Festival's voices (never in training)."""
    if synths == "espeak":
        name = f"{VOICES[rng.integers(len(VOICES))]}+{VARIANTS[rng.integers(len(VARIANTS))]}"
        return Voice(name, int(rng.integers(30, 81)), int(rng.integers(140, 191)), float(rng.uniform(0.3, 1.0)))
    from .speech import FESTIVAL_VOICES, FLITE_VOICES

    gain = float(10 ** rng.uniform(-1.3, 0))  # 0.05 - 1.0: 26 dB of loudness
    pitch, speed = int(rng.integers(30, 81)), int(rng.integers(140, 191))
    if synths == "heldout":
        return Voice(FESTIVAL_VOICES[rng.integers(len(FESTIVAL_VOICES))], pitch, speed, gain, "festival")
    if synths != "trained":
        raise ValueError(f"synths must be espeak, trained or heldout, not {synths!r}")
    engine = TRAINED_ENGINES[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
    if engine == "flite":
        return Voice(FLITE_VOICES[rng.integers(len(FLITE_VOICES))], pitch, speed, gain, "flite")
    name = f"{VOICES[rng.integers(len(VOICES))]}+{VARIANTS[rng.integers(len(VARIANTS))]}"
    if engine == "espeak-ng":
        name = name.replace("en+", "en-gb+", 1) if name.startswith("en+") else name
    return Voice(name, pitch, speed, gain, engine)


# -- pictures -------------------------------------------------------------------------------------
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230), "yellow": (235, 220, 40),
           "white": (240, 240, 240), "purple": (150, 60, 200), "orange": (245, 140, 30)}
SHAPES = ("circle", "square", "triangle")


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    rgb: tuple[int, int, int]
    x0: int
    y0: int
    size: int


@dataclass(frozen=True)
class Scene:
    background: int
    shapes: tuple[Shape, ...]
    caption: str


def _shape(rng, size: int, x0: int, y0: int, avoid: str | None = None) -> Shape:
    kind = SHAPES[rng.integers(3)]
    names = [c for c in COLOURS if c != avoid]
    colour = names[rng.integers(len(names))]
    rgb = tuple(int(np.clip(v + rng.integers(-15, 16), 0, 255)) for v in COLOURS[colour])
    return Shape(kind, colour, rgb, x0, y0, size)


def random_scene(rng: np.random.Generator, width: int = 640, height: int = 360) -> Scene:
    s = width / 640
    background = int(rng.integers(20, 61)) if rng.random() < 0.5 else int(rng.integers(150, 191))
    if rng.random() < 0.4:  # one shape, small or large
        large = rng.random() < 0.5
        size = int(rng.integers(140, 201) * s) if large else int(rng.integers(40, 71) * s)
        x0, y0 = int(rng.integers(0, width - size)), int(rng.integers(0, height - size))
        shp = _shape(rng, size, x0, y0)
        return Scene(background, (shp,), f"a {'large' if large else 'small'} {shp.colour} {shp.kind}")
    a_size, b_size = int(rng.integers(70, 111) * s), int(rng.integers(70, 111) * s)
    gap = int(rng.integers(20, 80) * s)
    if rng.random() < 0.5:  # a left of b: boxes share rows
        total = a_size + gap + b_size
        x = int(rng.integers(0, width - total))
        ya = int(rng.integers(0, height - a_size))
        lo, hi = max(0, ya - b_size + 1), min(height - b_size, ya + a_size - 1)
        yb = int(rng.integers(lo, hi + 1))
        a = _shape(rng, a_size, x, ya)
        b = _shape(rng, b_size, x + a_size + gap, yb)
        rel = "left of"
    else:  # a above b: boxes share columns
        total = a_size + gap + b_size
        y = int(rng.integers(0, height - total)) if height > total else 0
        xa = int(rng.integers(0, width - a_size))
        lo, hi = max(0, xa - b_size + 1), min(width - b_size, xa + a_size - 1)
        xb = int(rng.integers(lo, hi + 1))
        a = _shape(rng, a_size, xa, y)
        b = _shape(rng, b_size, xb, y + a_size + gap)
        rel = "above"
    return Scene(background, (a, b), f"{a.colour} {a.kind} {rel} {b.colour} {b.kind}")


def _inside(kind: str, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Which points of the unit square (x right, y down) a shape of this kind fills."""
    if kind == "circle":
        return (xx - 0.5) ** 2 + (yy - 0.5) ** 2 <= 0.25
    if kind == "square":
        return np.ones_like(xx, dtype=bool)
    # triangle pointing up, base at the bottom
    inside = (yy >= 1 - 2 * np.minimum(xx, 1 - xx) * 1.0) & (yy <= 1)
    return inside & (yy >= np.abs(xx - 0.5) * 2)


def render(scene: Scene, width: int = 640, height: int = 360, rng: np.random.Generator | None = None) -> np.ndarray:
    """RGB uint8 (height, width, 3); shapes with 4x supersampled (anti-aliased) edges."""
    img = np.full((height, width, 3), scene.background, dtype=np.float32)
    if rng is not None:  # a slightly uneven background
        img += rng.normal(0, 1.5, size=(1, 1, 3)).astype(np.float32)
    for shp in scene.shapes:
        n, ss = shp.size, 4
        u = (np.arange(n * ss) + 0.5) / (n * ss)
        yy, xx = np.meshgrid(u, u, indexing="ij")
        cover = _inside(shp.kind, xx, yy).reshape(n, ss, n, ss).mean(axis=(1, 3))[..., None].astype(np.float32)
        region = img[shp.y0 : shp.y0 + n, shp.x0 : shp.x0 + n]
        region[:] = region * (1 - cover) + np.array(shp.rgb, np.float32) * cover
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def shape_mask(shp: Shape, width: int = 640, height: int = 360) -> np.ndarray:
    """Coverage in [0, 1] of one shape over the frame's pixels (float32 (height, width)), as drawn."""
    n, ss = shp.size, 4
    u = (np.arange(n * ss) + 0.5) / (n * ss)
    yy, xx = np.meshgrid(u, u, indexing="ij")
    cover = _inside(shp.kind, xx, yy).reshape(n, ss, n, ss).mean(axis=(1, 3)).astype(np.float32)
    out = np.zeros((height, width), np.float32)
    out[shp.y0 : shp.y0 + n, shp.x0 : shp.x0 + n] = cover[: max(0, height - shp.y0), : max(0, width - shp.x0)]
    return out


# -- timelines and clips ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Utterance:
    start_ms: int
    end_ms: int
    speaker: str
    text: str
    form: str = ""  # the grammar's form signature (grammar.Report.form; RANDOM for vocabulary in no order)
    facts: dict | None = None  # what the report says, by question key (grammar.answer): the truth for answers


@dataclass(frozen=True)
class SceneSpan:
    start_ms: int
    end_ms: int
    caption: str


@dataclass
class Timeline:
    duration_ms: int
    scenes: list[tuple[SceneSpan, Scene]]
    utterances: list[Utterance]
    audio: np.ndarray  # 16 kHz mono float32, duration_ms * 16 samples


def random_timeline(rng: np.random.Generator, duration_s: float, *, max_speakers: int = 3, noise: bool = True,
                    speech_gap_s: tuple[float, float] = (0.3, 2.0), sentences: str = "trained",
                    synths: str = "espeak", voices: list[Voice] | None = None) -> Timeline:
    """``sentences``: trained | heldout | random | numbers (grammar.utterance_text);
    ``synths``: espeak | trained | heldout (random_voice); ``voices``: these speakers (utterance
    speaker ``spk<i>`` is ``voices[i]``) instead of random ones."""
    duration_ms = int(duration_s * 1000)
    scenes, t = [], 0
    while t < duration_ms:
        length = int(rng.integers(3000, 10001))
        scene = random_scene(rng)
        scenes.append((SceneSpan(t, min(t + length, duration_ms), scene.caption), scene))
        t += length
    if voices is None:
        n_speakers = int(rng.integers(1, max_speakers + 1))
        voices = [random_voice(rng, synths) for _ in range(n_speakers)]
    n_speakers = len(voices)
    audio = np.zeros(duration_ms * 16, np.float32)
    utterances, t = [], int(rng.uniform(0.2, 1.5) * 1000)
    speaker = int(rng.integers(n_speakers))
    from .grammar import QUESTIONS, answer, utterance_text

    while True:
        rep = utterance_text(rng, sentences)
        text = rep.text
        wave = spoken(voices[speaker], text)
        end = t + -(-wave.size // 16)
        if end > duration_ms or t * 16 + wave.size > audio.size:
            break
        audio[t * 16 : t * 16 + wave.size] += wave
        facts = {k: answer(rep, k) for k, (_, unit) in QUESTIONS.items() if unit == "speech"}
        utterances.append(Utterance(t, end, f"spk{speaker}", text, rep.form, facts))
        t = end + int(rng.uniform(*speech_gap_s) * 1000)
        if n_speakers > 1 and rng.random() < 0.7:
            speaker = int((speaker + rng.integers(1, n_speakers)) % n_speakers)
    if noise and rng.random() < 0.5:
        speech_rms = np.sqrt(np.mean(audio[audio != 0] ** 2)) if np.any(audio) else 0.1
        snr_db = rng.uniform(20, 40)
        audio += rng.normal(0, speech_rms / 10 ** (snr_db / 20), audio.size).astype(np.float32)
    return Timeline(duration_ms, scenes, utterances, np.clip(audio, -1, 1))


def write_clip(path: Path, timeline: Timeline, rng: np.random.Generator, fps: int = 25) -> Path:
    """MP4 (H.264 + AAC) of the timeline and ``<path>.json`` with its ground truth."""
    import av

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = 640, 360, "yuv420p"
        v.options = {"crf": "23", "preset": "veryfast", "g": str(fps * 4)}
        a = out.add_stream("aac", rate=16000)
        a.layout = "mono"
        frames = {}
        for i in range(timeline.duration_ms * fps // 1000):
            t_ms = i * 1000 // fps
            k = next(j for j, (span, _) in enumerate(timeline.scenes) if span.start_ms <= t_ms < span.end_ms)
            if k not in frames:
                frames = {k: av.VideoFrame.from_ndarray(render(timeline.scenes[k][1], rng=rng), format="rgb24")}
            frame = frames[k]
            frame.pts = i
            for packet in v.encode(frame):
                out.mux(packet)
        for packet in v.encode(None):
            out.mux(packet)
        _encode_audio(out, a, timeline.audio)
    tmp.rename(path)
    truth = {
        "duration_ms": timeline.duration_ms,
        "scenes": [asdict(span) for span, _ in timeline.scenes],
        "utterances": [asdict(u) for u in timeline.utterances],
    }
    path.with_suffix(".json").write_text(json.dumps(truth, indent=1))
    return path


def _encode_audio(out, stream, wave: np.ndarray) -> None:
    import av

    n = stream.codec_context.frame_size or 1024
    for pos in range(0, wave.size, n):
        frame = av.AudioFrame.from_ndarray(wave[pos : pos + n].reshape(1, -1).astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        frame.pts = pos
        frame.time_base = Fraction(1, 16000)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
