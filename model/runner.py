"""The backbone runner: embed -> prefill -> decode-one-token -> generate, as short named steps.

A *window* (default 30 s) is a run of kept frames plus the window's audio. The runner

1. builds each window's token layout (:mod:`onepass.model.prompt`) and its soft tokens with the
   checkpoint's own embedders (raw 48x48x3 cells, raw 640-sample frames),
2. prefills the media of a whole batch of windows (from any sources) once, left-padded,
3. forks that KV cache for each task (caption, transcript, ask...), appends the task text and
   decodes greedily with the cache,
4. hands back the generated text and, for diarization, per-audio-token hidden states.

Attention masks are built exactly as ``generate`` builds them (``create_masks_for_generate``):
vision blocks bidirectional on sliding layers, causal elsewhere (contract doc section 6).
A :class:`StreamSession` does the same prefill incrementally, frame by frame, as decode delivers.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from onepass.operators.patchify import Patches

from .load import Backbone
from .records import Window
from .prompt import AUDIO, TEXT, VIDEO, Layout, PromptBuilder

__all__ = ["Window", "Runner", "StreamSession", "Throughput", "CACHES"]

CACHES = ("dynamic", "static")  # KV cache kinds; static equals dynamic on the tiny golden request (tests/test_backbone.py)
_SUFFIX_ROOM = 64  # tokens a task prompt may add after the media (the default prompts take ~15)


@dataclass
class Throughput:
    items: int = 0  # prefilled requests: whole windows, or frames / speech regions asked alone (analyse units)
    prefill_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0  # all of the backbone's time
    prefill_seconds: float = 0.0  # of which: forward passes over media and prompts
    decode_seconds: float = 0.0  # of which: one-token steps

    def line(self) -> str:
        s = max(self.seconds, 1e-9)
        return (f"{self.items} requests, {self.items / s:.2f} requests/s, prefill {self.prefill_tokens / max(self.prefill_seconds, 1e-9):.0f} tok/s, "
                f"decode {self.generated_tokens / max(self.decode_seconds, 1e-9):.1f} tok/s")


@dataclass
class _Batch:
    """A prefilled batch: KV cache, 2-D padding mask and token types from position 0."""

    cache: object
    attn: torch.Tensor  # [B, L] long, 0 = left padding
    types: torch.Tensor  # [B, L] long
    audio_hidden: list[np.ndarray] = field(default_factory=list)  # per item [n_audio, D]
    confidence: list[list[float]] = field(default_factory=list)  # per item, per task: mean token log-probability


class Runner:
    def __init__(self, backbone: Backbone, *, max_new_tokens: int = 256, speaker_layer: int | None = None,
                 cache: str = "dynamic"):
        if cache not in CACHES:
            raise ValueError(f"cache must be one of {CACHES}, got {cache!r}")
        self.cache = cache
        self.bb = backbone
        self.model = backbone.model
        self.lm = backbone.model.model.language_model
        self.prompts = PromptBuilder(backbone)
        self.max_new_tokens = max_new_tokens
        n_layers = len(self.lm.layers)
        # Speaker embeddings come from the hidden states of one middle layer (see speakers.py).
        self.speaker_layer = n_layers // 2 if speaker_layer is None else speaker_layer
        self.pad_id = int(backbone.config.get_text_config().pad_token_id or 0)
        self.stats = Throughput()

    # -- step 1: embeddings --------------------------------------------------------------------
    @torch.inference_mode()
    def embed(self, layout: Layout, patches: list[Patches], audio: np.ndarray | None) -> torch.Tensor:
        """Embeddings [L, D] of one layout: text rows from the table, soft tokens from the embedders."""
        ids = torch.as_tensor(layout.ids, device=self.bb.device)
        types = torch.as_tensor(layout.types, device=self.bb.device)
        embeds = self.model.model.get_input_embeddings()(torch.where(types == TEXT, ids, self.pad_id)[None])[0]
        if patches:
            pixels = torch.as_tensor(np.stack([p.pixel_values for p in patches]), device=self.bb.device)
            pos = torch.as_tensor(np.stack([p.positions for p in patches]), device=self.bb.device)
            out = self.model.model.embed_vision(pixels, pos).pooler_output  # [F, P, D]
            keep = (pos != -1).all(-1)
            embeds[types == VIDEO] = out[keep].to(embeds.dtype)
        if audio is not None and audio.shape[0]:
            if self.bb.noise_floor:  # the floor the checkpoint was trained with (seeded: same window, same input)
                noise = np.random.default_rng(audio.shape[0]).standard_normal(audio.shape).astype(np.float32)
                audio = audio + self.bb.noise_floor * noise
            frames = torch.as_tensor(audio, device=self.bb.device)[None]
            out = self.model.model.embed_audio(inputs_embeds=frames)[0]  # [n, D]
            embeds[types == AUDIO] = out.to(embeds.dtype)
        return embeds

    # -- step 2: one forward over new tokens, with the generate-time masks ----------------------------
    def forward(self, embeds: torch.Tensor, batch: _Batch, new_types: torch.Tensor | None, capture: bool = False):
        """Run [B, L, D] new embeddings on top of ``batch.cache``; returns hidden [B, L, D] (and the
        speaker layer's hidden states when ``capture``). ``batch.attn``/``batch.types`` already cover them."""
        length = embeds.shape[1]
        positions = (batch.attn.cumsum(-1) - 1).clamp(min=0)[:, -length:]
        types = batch.types if new_types is not None else None
        masks = self._masks(embeds, batch, positions, types)
        captured = {}
        hook = None
        if capture:
            def grab(_module, _inputs, output):
                captured["h"] = output[0] if isinstance(output, tuple) else output
            hook = self.lm.layers[self.speaker_layer].register_forward_hook(grab)
        try:
            out = self.lm(inputs_embeds=embeds, attention_mask=masks, position_ids=positions,
                          past_key_values=batch.cache, use_cache=True, return_dict=True)
        finally:
            if hook is not None:
                hook.remove()
        return out.last_hidden_state, captured.get("h")

    def _masks(self, embeds, batch: _Batch, positions, types):
        """The masks HF 5.23 builds inside ``Gemma4UnifiedModel.forward`` (what ``generate`` runs):
        each image/frame a bidirectional block on every layer, everything else causal. (The
        model's ``create_masks_for_generate`` would keep full-attention layers causal; the
        reference logits in ../shared/fixtures match the former to 5e-7, the latter only to 2e-4.)"""
        from transformers.masking_utils import create_masks_for_generate
        from transformers.models.gemma4_unified.modeling_gemma4_unified import get_block_sequence_ids_for_mask

        text_config = self.model.config.get_text_config()
        kwargs = dict(config=text_config, inputs_embeds=embeds, attention_mask=batch.attn,
                      past_key_values=batch.cache, position_ids=positions)
        if text_config.use_bidirectional_attention == "vision":
            if types is None:
                kwargs["block_sequence_ids"] = torch.full(batch.attn.shape, -1, device=embeds.device)
            else:
                kwargs["block_sequence_ids"] = get_block_sequence_ids_for_mask(types, device=embeds.device)
        return create_masks_for_generate(**kwargs)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Soft-capped logits for hidden states [..., D]."""
        logits = self.model.lm_head(hidden).float()
        cap = self.model.config.get_text_config().final_logit_softcapping
        return cap * torch.tanh(logits / cap) if cap else logits

    def _new_batch(self, media_len: int = 0) -> _Batch:
        """An empty batch; with ``cache="static"`` its KV cache is preallocated for the media, the
        longest task prompt and ``max_new_tokens`` (fixed shapes: a decode step that can be captured)."""
        from transformers import DynamicCache, StaticCache

        empty = torch.zeros((0, 0), dtype=torch.long, device=self.bb.device)
        if self.cache == "static" and media_len:
            size = media_len + _SUFFIX_ROOM + self.max_new_tokens
            cache = StaticCache(config=self.model.config, max_cache_len=size)
        else:
            cache = DynamicCache(config=self.model.config)
        return _Batch(cache=cache, attn=empty, types=empty)

    # -- step 3: prefill a batch of windows -------------------------------------------------------
    def layout(self, w: Window) -> Layout:
        return self.prompts.prefix(list(_stamps(w)), [p.num_tokens for p in w.patches], w.audio.shape[0])

    @torch.inference_mode()
    def prefill(self, windows: list[Window], capture_audio: bool = False) -> _Batch:
        """Prefill the media of all windows as one left-padded batch."""
        t0 = time.perf_counter()
        layouts = [self.layout(w) for w in windows]
        longest = max(len(l) for l in layouts)
        dim = self.model.config.get_text_config().hidden_size
        embeds = torch.zeros((len(windows), longest, dim), dtype=self.bb.dtype, device=self.bb.device)
        attn = torch.zeros((len(windows), longest), dtype=torch.long, device=self.bb.device)
        types = torch.zeros_like(attn)
        for i, (w, lay) in enumerate(zip(windows, layouts)):
            pad = longest - len(lay)
            embeds[i, pad:] = self.embed(lay, list(w.patches), w.audio)
            attn[i, pad:] = 1
            types[i, pad:] = torch.as_tensor(lay.types, device=self.bb.device)
        batch = self._new_batch(longest)
        batch.attn, batch.types = attn, types
        hidden, spk = self.forward(embeds, batch, types, capture=capture_audio)
        if capture_audio:
            for i in range(len(windows)):
                batch.audio_hidden.append(spk[i][types[i] == AUDIO].float().cpu().numpy())
        self.stats.prefill_tokens += int(attn.sum())
        self.stats.prefill_seconds += time.perf_counter() - t0
        return batch

    # -- step 4: decode -------------------------------------------------------------------------
    @torch.inference_mode()
    def decode_one_token(self, token: torch.Tensor, batch: _Batch) -> torch.Tensor:
        """token [B] -> next-token logits [B, V]."""
        t0 = time.perf_counter()
        batch.attn = torch.cat([batch.attn, torch.ones_like(token)[:, None]], dim=1)
        batch.types = torch.cat([batch.types, torch.zeros_like(token)[:, None]], dim=1)
        embeds = self.model.model.get_input_embeddings()(token[:, None])
        hidden, _ = self.forward(embeds, batch, None)
        logits = self.logits(hidden[:, -1])
        self.stats.decode_seconds += time.perf_counter() - t0
        return logits

    @torch.inference_mode()
    def append_text(self, batch: _Batch, suffix: Layout) -> torch.Tensor:
        """Append the same text to every item (a task's prompt); returns next-token logits [B, V]."""
        t0 = time.perf_counter()
        b = batch.attn.shape[0]
        ids = torch.as_tensor(suffix.ids, device=self.bb.device)[None].expand(b, -1)
        batch.attn = torch.cat([batch.attn, torch.ones_like(ids)], dim=1)
        batch.types = torch.cat([batch.types, torch.zeros_like(ids)], dim=1)
        hidden, _ = self.forward(self.model.model.get_input_embeddings()(ids), batch, batch.types)
        logits = self.logits(hidden[:, -1])
        self.stats.prefill_tokens += int(ids.numel())
        self.stats.prefill_seconds += time.perf_counter() - t0
        return logits

    @torch.inference_mode()
    def greedy(self, batch: _Batch, first_logits: torch.Tensor, max_new_tokens: int | None = None) -> list[list[int]]:
        """Greedy decoding with the KV cache until every item hit a stop token or the limit."""
        return self.greedy_scored(batch, first_logits, max_new_tokens)[0]

    @torch.inference_mode()
    def greedy_scored(self, batch: _Batch, first_logits: torch.Tensor,
                      max_new_tokens: int | None = None) -> tuple[list[list[int]], list[float]]:
        """Greedy decoding, and each item's confidence: the mean log-probability of the tokens it
        chose, its stop token included (Whisper's ``avg_logprob``; 0 is certain)."""
        limit = max_new_tokens or self.max_new_tokens
        stop = torch.as_tensor(self.bb.stop_ids, device=self.bb.device)
        b = first_logits.shape[0]
        done = torch.zeros(b, dtype=torch.bool, device=self.bb.device)
        out: list[list[int]] = [[] for _ in range(b)]
        logp_sum = torch.zeros(b, dtype=torch.float64, device=self.bb.device)
        counted = torch.zeros(b, dtype=torch.long, device=self.bb.device)
        logits = first_logits
        for _ in range(limit):
            token = logits.argmax(-1)
            chosen = logits.float().log_softmax(-1).gather(1, token[:, None])[:, 0]
            logp_sum += torch.where(done, 0.0, chosen.double())
            counted += (~done).long()
            for i in range(b):
                if not done[i] and not bool(torch.isin(token[i], stop)):
                    out[i].append(int(token[i]))
            done |= torch.isin(token, stop)
            self.stats.generated_tokens += int((~done).sum())
            if bool(done.all()):
                break
            logits = self.decode_one_token(torch.where(done, self.pad_id, token), batch)
        conf = (logp_sum / counted.clamp(min=1)).tolist()
        return out, [round(float(c), 4) for c in conf]

    def generate(self, windows: list[Window], tasks: list[str], capture_audio: bool = False) -> tuple[list[list[str]], _Batch]:
        """Prefill the windows once, then run every task prompt from a fork of that cache.
        Returns texts[window][task] and the prefilled batch (for its audio hidden states, and each
        text's confidence in ``batch.confidence[window][task]``)."""
        t0 = time.perf_counter()
        batch = self.prefill(windows, capture_audio=capture_audio)
        texts: list[list[str]] = [[] for _ in windows]
        batch.confidence = [[] for _ in windows]
        has_video, has_audio = windows[0].has_video, windows[0].has_audio
        for k, task in enumerate(tasks):
            fork = _fork(batch, last=k == len(tasks) - 1)
            first = self.append_text(fork, self.prompts.suffix(task, has_video, has_audio))
            ids_all, conf = self.greedy_scored(fork, first)
            for i, ids in enumerate(ids_all):
                texts[i].append(self.prompts.decode(ids))
                batch.confidence[i].append(conf[i])
        self.stats.items += len(windows)
        self.stats.seconds += time.perf_counter() - t0
        return texts, batch


def _fork(batch: _Batch, last: bool) -> _Batch:
    """A task's own copy of the prefilled cache; the last task takes the cache itself (nothing reads
    it after: one copy fewer, ~0.7 GB for the 12B's 1,000-token window)."""
    cache = batch.cache if last else copy.deepcopy(batch.cache)
    return _Batch(cache=cache, attn=batch.attn, types=batch.types)


def _stamps(w: Window):
    return (ms - w.span.start_ms for ms in w.frame_ms)


class StreamSession:
    """Incremental prefill of one live window: frames enter the KV cache as they are decoded.

    Each frame is one chunk (an image must be whole in one forward, contract doc section 6);
    the audio follows the last frame, as in the one-shot layout, in as many pieces as arrive.
    ``finish`` runs the tasks from the same cache.
    """

    def __init__(self, runner: Runner, window_start_ms: int, has_video: bool = True, has_audio: bool = True):
        self.r = runner
        self.start_ms = window_start_ms
        self.has_video, self.has_audio = has_video, has_audio
        self.parts = runner.prompts.template_parts(has_video, has_audio)
        self.batch = runner._new_batch()
        self.frames = 0
        self.audio_frames = 0
        self.audio_open = False
        self.audio_hidden: list[np.ndarray] = []
        self.confidence: list[float] = []  # per task of the last finish(): mean token log-probability

    def _push(self, pieces: list, patches: list[Patches], audio: np.ndarray | None, capture: bool = False) -> torch.Tensor:
        t0 = time.perf_counter()
        layout = self.r.prompts.encode(pieces)
        dev = self.r.bb.device
        new = torch.ones((1, len(layout)), dtype=torch.long, device=dev)
        self.batch.attn = torch.cat([self.batch.attn.reshape(1, -1), new], dim=1)
        self.batch.types = torch.cat([self.batch.types.reshape(1, -1), torch.as_tensor(layout.types, device=dev)[None]], dim=1)
        embeds = self.r.embed(layout, patches, audio)[None]
        with torch.inference_mode():
            hidden, spk = self.r.forward(embeds, self.batch, self.batch.types, capture=capture)
        if capture:
            self.audio_hidden.append(spk[0][torch.as_tensor(layout.types, device=dev) == AUDIO].float().cpu().numpy())
        self.r.stats.prefill_tokens += len(layout)
        self.r.stats.seconds += time.perf_counter() - t0
        self.r.stats.prefill_seconds += time.perf_counter() - t0
        return hidden

    def add_frame(self, frame_ms: int, patches: Patches) -> None:
        if self.audio_open:
            raise RuntimeError("frames must come before the window's audio")
        pieces = [self.parts[0]] if self.frames == 0 else []
        pieces += self.r.prompts.frame_pieces(frame_ms - self.start_ms, patches.num_tokens, first=self.frames == 0)
        self._push(pieces, [patches], None)
        self.frames += 1

    def add_audio(self, frames: np.ndarray, capture: bool = False) -> None:
        if frames.shape[0] == 0:
            return
        pieces: list = []
        if not self.audio_open:
            if self.frames == 0:
                pieces.append(self.parts[0])
            elif self.has_video:
                pieces.append(self.parts[1])
            pieces.append(("tok", self.r.prompts.boa, 1, TEXT))
            self.audio_open = True
        pieces.append(("mm", self.r.prompts.audio_id, frames.shape[0], AUDIO))
        self._push(pieces, [], frames, capture=capture)
        self.audio_frames += frames.shape[0]

    def close_media(self) -> None:
        """End of the window's media (closes the audio block and the template text before the task)."""
        pieces: list = []
        if self.audio_open:
            pieces += [("tok", self.r.prompts.eoa, 1, TEXT), self.parts[-2]]
        elif self.frames:
            pieces.append(self.parts[1])
        if pieces:
            self._push(pieces, [], None)

    def finish(self, tasks: list[str]) -> list[str]:
        self.close_media()
        t0 = time.perf_counter()
        texts = []
        self.confidence = []
        for k, task in enumerate(tasks):
            fork = _fork(self.batch, last=k == len(tasks) - 1)
            first = self.r.append_text(fork, self.r.prompts.suffix(task, self.frames > 0, self.audio_open))
            ids, conf = self.r.greedy_scored(fork, first)
            texts.append(self.r.prompts.decode(ids[0]))
            self.confidence.append(conf[0])
        self.r.stats.items += 1
        self.r.stats.seconds += time.perf_counter() - t0
        return texts
