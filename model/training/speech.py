"""Speech synthesis with the eSpeak NG library (ctypes), for generating the default model's domain.

Uses the self-contained library and voice data of the ``espeakng-loader`` wheel, so the same
voices exist on a CI machine, a laptop and a GPU box without Debian packages. One synthesiser
per process (the library keeps global state).
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

__all__ = ["Espeak", "resample", "espeak_ng_cli", "flite", "festival", "FLITE_VOICES", "FESTIVAL_VOICES"]

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_RATE, _VOLUME, _PITCH = 1, 2, 3
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def resample(wave: np.ndarray, rate_in: int, rate_out: int = 16000) -> np.ndarray:
    """Band-limited resampling by FFT truncation (float32 in, float32 out)."""
    if rate_in == rate_out:
        return wave.astype(np.float32)
    n_out = int(round(wave.size * rate_out / rate_in))
    spectrum = np.fft.rfft(wave.astype(np.float64))
    keep = min(spectrum.size, n_out // 2 + 1)
    out = np.fft.irfft(spectrum[:keep], n_out) * (n_out / wave.size)
    return out.astype(np.float32)


class Espeak:
    _lock = threading.Lock()
    _instance: Espeak | None = None

    def __init__(self):
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if self.rate <= 0:
            raise RuntimeError("espeak-ng failed to initialise")
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, _events):
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _CALLBACK(collect)  # keep a reference: the library calls it
        self.lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> Espeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = Espeak()
            return cls._instance

    def say(self, text: str, voice: str = "en-us", pitch: int = 50, speed: int = 160) -> np.ndarray:
        """16 kHz mono float32 of ``text`` spoken by ``voice`` (e.g. ``en-gb+f3``)."""
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {voice!r}")
            self.lib.espeak_SetParameter(_RATE, int(speed), 0)
            self.lib.espeak_SetParameter(_PITCH, int(pitch), 0)
            self._chunks = []
            data = text.encode() + b"\0"
            self.lib.espeak_Synth(data, len(data), 0, 1, 0, 0, None, None)
            self.lib.espeak_Synchronize()
            raw = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return resample(raw.astype(np.float32) / 32768.0, self.rate)


# -- other synthesizers (Debian packages): more than one build's sound of the same words ------------
def _run_wav(cmd: list[str], stdin: bytes | None = None) -> np.ndarray:
    """Run a synthesizer that writes a WAV file; 16 kHz mono float32."""
    import os
    import subprocess
    import tempfile

    import soundfile as sf

    fd, path = tempfile.mkstemp(suffix=".wav")
    os.close(fd)
    try:
        full = [path if part == "{out}" else part for part in cmd]
        try:
            subprocess.run(full, input=stdin, check=True, capture_output=True, timeout=60)
        except FileNotFoundError as exc:
            raise RuntimeError(f"{cmd[0]} is not installed (apt-get install {_PACKAGE.get(cmd[0], cmd[0])})") from exc
        wave, rate = sf.read(path, dtype="float32", always_2d=True)
    finally:
        os.unlink(path)
    return resample(wave.mean(axis=1), rate)


_PACKAGE = {"espeak-ng": "espeak-ng", "flite": "flite", "text2wave": "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"}

FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")


def espeak_ng_cli(text: str, voice: str, pitch: int, speed: int) -> np.ndarray:
    """Debian's espeak-ng program (another build and voice data than the wheel's library)."""
    return _run_wav(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", "{out}", text])


def flite(text: str, voice: str, speed: float = 1.0) -> np.ndarray:
    """CMU Flite: ``speed`` > 1 speaks faster (duration_stretch 1/speed)."""
    return _run_wav(["flite", "-voice", voice, "--setf", f"duration_stretch={1 / speed:.3f}", "-t", text, "-o", "{out}"])


def festival(text: str, voice: str, speed: float = 1.0) -> np.ndarray:
    """Festival's text2wave with one of its English voices."""
    scheme = f"(voice_{voice})(Parameter.set 'Duration_Stretch {1 / speed:.3f})"
    return _run_wav(["text2wave", "-eval", scheme, "-o", "{out}"], stdin=text.encode())
