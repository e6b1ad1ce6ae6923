"""What onepass knows of a checkpoint beyond its Hugging Face files (no torch: the driver reads it).

``onepass.json`` beside ``config.json`` may say ``{"window_s": 10}``: the window length the model was
trained for, used when ``--window-s`` is not given. Real Gemma 4 weights have none: 30 s.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["DEFAULT_MODEL_DIR", "MODEL_META", "DEFAULT_WINDOW_S", "model_window_s"]

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
