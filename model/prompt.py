"""Token layout of one window, built from our operators' outputs (not the HF processor).

Layout (contract doc sections 3, 7, 9), through the checkpoint's chat template:

    <bos><|turn>user\\n
      MM:SS <|image>{n x <|video|>}<image|> MM:SS <|image>...<image|>     one chain link per kept frame
      <|audio>{n x <|audio|>}<audio|>                                    the window's audio, one block
      {task text}<turn|>\\n<|turn>model\\n

The media come first so that every task on a window shares one prefill (the *prefix*); each
task's text and the generation prompt are its *suffix*. Frame stamps are relative to the
window start, as the reference processor stamps a clip's frames from its first one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onepass.operators.spans import ms_to_clock

from .load import Backbone

__all__ = ["TEXT", "IMAGE", "VIDEO", "AUDIO", "Layout", "PromptBuilder"]

# mm_token_type_ids values
TEXT, IMAGE, VIDEO, AUDIO = 0, 1, 2, 3
_TASK = "\x00TASK\x00"


@dataclass(frozen=True, eq=False)
class Layout:
    """Token ids and their types, int64 arrays of the same length."""

    ids: np.ndarray
    types: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.size)

    def __add__(self, other: Layout) -> Layout:
        return Layout(np.concatenate([self.ids, other.ids]), np.concatenate([self.types, other.types]))


class PromptBuilder:
    """Turns (frame stamps, tokens per frame, audio frame count, task text) into token layouts."""

    def __init__(self, backbone: Backbone):
        self.tok = backbone.tokenizer
        self.template = backbone.chat_template
        cfg = backbone.config
        self.boi, self.eoi = cfg.boi_token_id, cfg.eoi_token_id
        self.boa, self.eoa = cfg.boa_token_id, cfg.eoa_token_index
        self.video_id, self.audio_id = cfg.video_token_id, cfg.audio_token_id
        self._parts: dict[tuple[bool, bool], list[str]] = {}

    def template_parts(self, has_video: bool, has_audio: bool) -> list[str]:
        """The rendered template split at its placeholders: [head, (video), (audio), task, tail]."""
        key = (has_video, has_audio)
        if key not in self._parts:
            content = ([{"type": "video"}] if has_video else []) + ([{"type": "audio"}] if has_audio else [])
            content.append({"type": "text", "text": _TASK})
            text = self.tok.apply_chat_template(
                [{"role": "user", "content": content}], chat_template=self.template,
                tokenize=False, add_generation_prompt=True,
            )
            parts, rest = [], text
            for marker in (["<|video|>"] if has_video else []) + (["<|audio|>"] if has_audio else []) + [_TASK]:
                head, found, rest = rest.partition(marker)
                if not found:
                    raise ValueError(f"chat template did not place {marker!r} where expected")
                parts.append(head)
            parts.append(rest)
            self._parts[key] = parts
        return self._parts[key]

    def encode(self, pieces: list[tuple[str, int, int, int] | str]) -> Layout:
        """pieces: text strings or (kind, token_id, count, type) runs; adjacent text is merged."""
        ids: list[np.ndarray] = []
        types: list[np.ndarray] = []
        text = ""

        def flush_text():
            nonlocal text
            if text:
                t = np.asarray(self.tok(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
                ids.append(t)
                types.append(np.zeros_like(t))
                text = ""

        for piece in pieces:
            if isinstance(piece, str):
                text += piece
                continue
            flush_text()
            _, token_id, count, kind = piece
            ids.append(np.full(count, token_id, dtype=np.int64))
            types.append(np.full(count, kind, dtype=np.int64))
        flush_text()
        if not ids:
            return Layout(np.zeros(0, np.int64), np.zeros(0, np.int64))
        return Layout(np.concatenate(ids), np.concatenate(types))

    def frame_pieces(self, stamp_ms: int, num_tokens: int, first: bool) -> list:
        """One link of the video chain: ``[" "]MM:SS <|image>{n x <|video|>}<image|>``."""
        return [
            ("" if first else " ") + f"{ms_to_clock(stamp_ms)} ",
            ("tok", self.boi, 1, TEXT),
            ("mm", self.video_id, num_tokens, VIDEO),
            ("tok", self.eoi, 1, TEXT),
        ]

    def prefix(self, frame_stamps_ms: list[int], tokens_per_frame: list[int], num_audio_frames: int) -> Layout:
        """The media part of a window (everything before the task text)."""
        has_video, has_audio = bool(frame_stamps_ms), num_audio_frames > 0
        parts = self.template_parts(has_video, has_audio)
        pieces: list = [parts[0]]
        i = 1
        if has_video:
            for k, (stamp, n) in enumerate(zip(frame_stamps_ms, tokens_per_frame)):
                pieces += self.frame_pieces(stamp, n, first=(k == 0))
            pieces.append(parts[i])
            i += 1
        if has_audio:
            pieces += [("tok", self.boa, 1, TEXT), ("mm", self.audio_id, num_audio_frames, AUDIO), ("tok", self.eoa, 1, TEXT)]
            pieces.append(parts[i])
            i += 1
        return self.encode(pieces)

    def suffix(self, task_text: str, has_video: bool, has_audio: bool) -> Layout:
        """The task text and the generation prompt, appended to a prefix."""
        parts = self.template_parts(has_video, has_audio)
        return self.encode([task_text.strip() + parts[-1]])

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)
