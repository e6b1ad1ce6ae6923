"""What onepass knows of a checkpoint beyond its Hugging Face files, and whether a folder can be one
(:func:`check_folder`); no torch: the driver reads it.

``onepass.json`` beside ``config.json`` may say ``{"window_s": 10}``: the window length the model was
trained for, used when ``--window-s`` is not given, ``{"units": {"captions": "frame",
"transcript": "speech"}}``: what one request covers (:func:`model_units`), and ``{"speakers":
{"backbone_weight": 0.5, "threshold": 0.7}}``: how speaker clustering weighs the checkpoint's own
hidden states (:func:`model_speakers`), and ``{"questions": {"findings": {"text": "which components
show a condition", "unit": "speech"}}}``: the only questions the checkpoint answers, and what one
request of each covers (:func:`model_questions`). Real Gemma 4 weights have none of them: 30 s
windows, one request per task per window, spectral voice embeddings only, any question.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["ARCHITECTURE", "ModelLoadError", "check_folder", "DEFAULT_MODEL_DIR", "MODEL_META", "DEFAULT_WINDOW_S", "model_window_s", "model_noise_floor", "model_units", "UNITS", "model_speakers",
           "model_questions", "match_question"]

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"
MODEL_META = "onepass.json"
DEFAULT_WINDOW_S = 30  # Gemma 4 takes at most 30 s of audio per request


ARCHITECTURE = "Gemma4UnifiedForConditionalGeneration"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class ModelLoadError(Exception):
    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def check_folder(path: Path) -> None:
    """Refuse anything but a local folder of config + safetensors, before any file is parsed."""
    if not path.is_dir():
        raise ModelLoadError(path, "not a directory (expected a local Hugging Face model folder)")
    config = path / "config.json"
    if not config.is_file():
        raise ModelLoadError(path, "no config.json")
    try:
        arch = json.loads(config.read_text()).get("architectures") or []
    except json.JSONDecodeError as exc:
        raise ModelLoadError(path, f"config.json is not JSON: {exc}") from exc
    if ARCHITECTURE not in arch:
        raise ModelLoadError(path, f"config.json architectures {arch} does not name {ARCHITECTURE}")
    names = [p.name for p in path.iterdir()]
    if not any(n.endswith(".safetensors") for n in names):
        pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
        why = f"only pickled weights ({', '.join(sorted(pickles))}); onepass loads safetensors only" if pickles else "no *.safetensors weights"
        raise ModelLoadError(path, why)
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer.model").is_file():
        raise ModelLoadError(path, "no tokenizer (tokenizer.json or tokenizer.model)")


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


UNITS = {"captions": ("window", "frame"), "transcript": ("window", "speech")}


def model_units(path: str | os.PathLike | None = None) -> dict[str, str]:
    """What one request of each task covers, for a checkpoint: ``units`` in its ``onepass.json``.

    ``window`` (the default, and what real Gemma 4 weights get): one request per window with all its
    frames and audio. ``frame`` (captions): one request per kept frame, that frame alone.
    ``speech`` (transcripts): one request per speech region of the window (energy regions, as the
    speaker turns use), that region's audio alone with up to 400 ms around it; the model's times are
    relative to the region's audio. WhisperX cuts audio at voice activity before recognition for
    the same reason: a small model that transcribes a short clip well loses its place over a long
    one (issue 11: held-out WER 0.28 on single utterances vs 0.85 over 10 s windows, same weights).
    """
    meta = (Path(path) if path is not None else DEFAULT_MODEL_DIR) / MODEL_META
    units = {task: choices[0] for task, choices in UNITS.items()}
    if not meta.is_file():
        return units
    try:
        given = json.loads(meta.read_text()).get("units", {})
        if not isinstance(given, dict):
            raise TypeError(f"units is {given!r}")
        for task, value in given.items():
            if task not in UNITS or value not in UNITS[task]:
                raise TypeError(f"units[{task!r}] = {value!r}; choose from {UNITS}")
            units[task] = value
        return units
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{meta}: bad units ({exc})") from exc


def model_speakers(path: str | os.PathLike | None = None) -> dict[str, float]:
    """Speaker clustering settings a checkpoint was measured with: ``speakers`` in its
    ``onepass.json`` (``backbone_weight``: the weight of its hidden-state block beside the spectral
    one; ``threshold``: the cosine distance where clustering stops). Empty: the defaults of
    :func:`onepass.model.speakers.cluster` (spectral block only, stop at 0.6)."""
    meta = (Path(path) if path is not None else DEFAULT_MODEL_DIR) / MODEL_META
    if not meta.is_file():
        return {}
    try:
        given = json.loads(meta.read_text()).get("speakers", {})
        if not isinstance(given, dict):
            raise TypeError(f"speakers is {given!r}")
        out = {}
        for key, value in given.items():
            if key not in ("backbone_weight", "threshold"):
                raise TypeError(f"unknown speakers key {key!r}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 2:
                raise TypeError(f"speakers[{key!r}] = {value!r}, expected a number in [0, 2]")
            out[key] = float(value)
        return out
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{meta}: bad speakers ({exc})") from exc


QUESTION_UNITS = ("window", "frame", "speech")


def model_questions(path: str | os.PathLike | None = None) -> dict[str, dict[str, str]] | None:
    """The documented questions a checkpoint answers, ``{key: {"text": wording, "unit": unit}}``,
    or None when its ``onepass.json`` lists none (real Gemma 4 weights answer any question)."""
    meta = (Path(path) if path is not None else DEFAULT_MODEL_DIR) / MODEL_META
    if not meta.is_file():
        return None
    try:
        given = json.loads(meta.read_text()).get("questions")
        if given is None:
            return None
        if not isinstance(given, dict):
            raise TypeError(f"questions is {given!r}")
        out = {}
        for key, q in given.items():
            if not isinstance(q, dict) or not isinstance(q.get("text"), str) or q.get("unit", "window") not in QUESTION_UNITS:
                raise TypeError(f"questions[{key!r}] = {q!r}; expected {{'text': str, 'unit': one of {QUESTION_UNITS}}}")
            out[str(key)] = {"text": q["text"], "unit": q.get("unit", "window")}
        return out
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{meta}: bad questions ({exc})") from exc


def _norm(text: str) -> str:
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def match_question(questions: dict[str, dict[str, str]] | None, asked: str) -> str | None:
    """The key of the documented question ``asked`` is (its wording or its key, case and
    punctuation aside); None when the checkpoint does not answer it. With no documented set
    (``questions`` None) every question is its own."""
    if questions is None:
        return asked
    want = _norm(asked)
    for key, q in questions.items():
        if want in (_norm(q["text"]), _norm(key)):
            return key
    return None
