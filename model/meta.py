"""What onepass knows of a checkpoint beyond its Hugging Face files (no torch: the driver reads it).

``onepass.json`` beside ``config.json`` may say ``{"window_s": 10}``: the window length the model was
trained for, used when ``--window-s`` is not given. Real Gemma 4 weights have none: 30 s.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["DEFAULT_MODEL_DIR", "MODEL_META", "DEFAULT_WINDOW_S", "model_window_s", "model_noise_floor"]

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"
MODEL_META = "onepass.json"
DEFAULT_WINDOW_S = 30  # Gemma 4 takes at most 30 s of audio per request


def model_window_s(path: str | os.PathLike | None = None) -> int:
    """The window length a checkpoint was trained for: ``window_s`` in its ``onepass.json``, else 30 s."""
    meta = (Path(path) if path is not None else DEFAULT_MODEL_DIR) / MODEL_META
    if not meta.is_file():
        return DEFAULT_WINDOW_S
    try:
        value = json.loads(meta.read_text())["window_s"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"window_s is {value!r}")
        return value
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{meta}: expected a JSON object with an integer window_s ({exc})") from exc


def model_noise_floor(path: str | os.PathLike | None = None) -> float:
    """The noise floor (RMS, full scale 1.0) a checkpoint was trained with under all of its audio:
    ``noise_floor`` in its ``onepass.json``, else 0 (real Gemma 4 weights: audio as decoded).

    The runner adds the same floor (seeded Gaussian noise) to every audio frame it embeds. Why: an
    exactly silent frame embeds to the zero vector (RMSNorm without bias, no biases anywhere), and a
    small model trained on clips whose silence is exact zeros never started to hear (issue 11: word
    CTC stuck on its blank plateau with zero-vector silence, learning with a -38 dB floor)."""
    meta = (Path(path) if path is not None else DEFAULT_MODEL_DIR) / MODEL_META
    if not meta.is_file():
        return 0.0
    try:
        value = json.loads(meta.read_text()).get("noise_floor", 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 0.1:
            raise TypeError(f"noise_floor is {value!r}")
        return float(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{meta}: noise_floor must be a number in [0, 0.1) ({exc})") from exc
