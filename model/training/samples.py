"""Training items of the default model's curriculum, each laid out exactly as the runner lays out
its inputs (``PromptBuilder``), with the labels of the main and the auxiliary losses.

Three kinds:
- ``utterance_item``: one utterance, audio only (100-250 tokens): transcript with times;
- ``frame_item``: one frame, video only (~90 tokens): its caption;
- ``window_item``: a window of a timeline (frames + audio, the runner's layout) with one task.

Besides the target text (loss on it and its closing ``<turn|>``), every item carries
- ``ctc``: the words spoken in its audio (token ids), for CTC over the audio positions; empty when
  an utterance straddles the window's edge (its words are partly outside);
- ``audio_time``: for each audio frame, the ids of its second (``"07"``) and tenth (``"3"``) relative
  to the window start, read at a middle layer;
- ``cell_labels``: for each video token, up to three word ids (colour, shape, size or role) of the
  shape that covers that cell, or the blank for background.
"""

from __future__ import annotations

import numpy as np
import torch

from onepass.operators.audio import frame_audio
from onepass.operators.patchify import patchify

from . import domain
from ..tasks import Prompts, format_captions, format_transcript

__all__ = ["Vocab", "make_item", "utterance_item", "frame_item", "window_item", "collate", "BUDGET"]

BUDGET = 70  # soft tokens per frame, as the domain's frames are read
_FRAME_W, _FRAME_H = 640, 360


class Vocab:
    """Token ids the labels need, looked up once per tokenizer."""

    def __init__(self, tok):
        self.tok = tok
        self.blank = tok.pad_token_id
        self.turn_end = tok.convert_tokens_to_ids("<turn|>")
        self.seconds = [tok.convert_tokens_to_ids(f"{i:02d}") for i in range(100)]
        self.tenths = [tok.convert_tokens_to_ids(str(i)) for i in range(10)]

    def ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def word(self, w: str) -> int:
        (i,) = self.ids(w)
        return i


def _noisy(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5 and np.any(audio):
        rms = np.sqrt(np.mean(audio[audio != 0] ** 2))
        audio = audio + rng.normal(0, rms / 10 ** (rng.uniform(20, 40) / 20), audio.size).astype(np.float32)
    return np.clip(audio, -1, 1).astype(np.float32)


def _audio_time(n_frames: int, vocab: Vocab) -> np.ndarray:
    ms = np.arange(n_frames) * 40
    return np.stack([np.asarray(vocab.seconds)[np.minimum(ms // 1000, 99)], np.asarray(vocab.tenths)[(ms % 1000) // 100]], 1)


def cell_labels(scene: domain.Scene, patches, vocab: Vocab, min_cover: float = 0.1) -> np.ndarray:
    """[num_tokens, 3] word ids per cell: colour, shape and (single) size or (pair) role word;
    background cells are the blank three times."""
    gh, gw = patches.grid_hw
    out = np.full((gh * gw, 3), vocab.blank, dtype=np.int64)
    best = np.zeros(gh * gw, np.float32)
    ys = np.linspace(0, _FRAME_H, gh + 1).round().astype(int)
    xs = np.linspace(0, _FRAME_W, gw + 1).round().astype(int)
    pair = len(scene.shapes) == 2
    rel = "left of" if " left of " in scene.caption else "above"
    for k, shp in enumerate(scene.shapes):
        mask = domain.shape_mask(shp, _FRAME_W, _FRAME_H)
        cover = np.add.reduceat(np.add.reduceat(mask, ys[:-1], axis=0), xs[:-1], axis=1)
        cover /= np.outer(np.diff(ys), np.diff(xs))
        cover = cover.reshape(-1)
        if pair:
            third = ("left", "right")[k] if rel == "left of" else ("upper", "lower")[k]
        else:
            third = scene.caption.split()[1]  # small / large
        words = [vocab.word(shp.colour), vocab.word(shp.kind), vocab.word(third)]
        take = (cover >= min_cover) & (cover > best)
        out[take] = words
        best = np.where(take, cover, best)
    return out


def _noisy_patches(img: np.ndarray, rng: np.random.Generator):
    noise = rng.normal(0, rng.uniform(0, 3), img.shape)
    return patchify(np.clip(img + noise, 0, 255).astype(np.uint8), BUDGET, video=True)


def render_cells(scene: domain.Scene, rng: np.random.Generator, vocab: Vocab):
    patches = _noisy_patches(domain.render(scene, rng=rng), rng)
    return patches, cell_labels(scene, patches, vocab)


def make_item(builder, vocab: Vocab, stamps, patches, audio, task: str, target: str, ctc, cells, prompt: str | None = None) -> dict:
    """One item in the runner's layout: frames at ``stamps`` (ms from the window start) with their
    patches, audio frames, the task's prompt (``prompt``: a question's wording instead), and
    ``target`` (the loss is on it and its <turn|>); ``ctc`` word ids and ``cells`` per-cell labels
    for the auxiliary losses (empty: none)."""
    prompts = Prompts()
    if prompt is None:
        prompt = prompts.caption if task == "captions" else prompts.transcript
    has_video, has_audio = bool(stamps), audio.shape[0] > 0
    prefix = builder.prefix(stamps, [p.num_tokens for p in patches], audio.shape[0])
    suffix = builder.suffix(prompt, has_video, has_audio)
    target_ids = np.asarray(vocab.ids(target) + [vocab.turn_end], np.int64)
    ids = np.concatenate([prefix.ids, suffix.ids, target_ids])
    types = np.concatenate([prefix.types, suffix.types, np.zeros_like(target_ids)])
    labels = np.full_like(ids, -100)
    labels[-target_ids.size :] = target_ids
    return dict(
        ids=ids, types=types, labels=labels, task=task, target=target, prompt=prompt, stamps=list(stamps),
        pix=np.stack([p.cells for p in patches]) if patches else None,
        pos=np.stack([p.positions for p in patches]) if patches else None,
        patches=list(patches), audio=audio, ctc=np.asarray(ctc, np.int64),
        audio_time=_audio_time(audio.shape[0], vocab),
        cells=np.concatenate(cells) if cells else np.zeros((0, 3), np.int64),
    )


# What stage A's utterances are (issue 24): open-grammar reports of trained forms, vocabulary in
# no order, number-dense reports, and speech or sound outside the domain (a marker, not words).
UTTERANCE_MIX = {"trained": 0.50, "random": 0.20, "numbers": 0.16, "other_speech": 0.09, "other_sound": 0.05}
QUESTION_SHARE = 0.2  # of utterances and frames asked a documented question instead of their transcript/caption
OTHER_SCENE_SHARE = 0.1


def utterance_item(rng: np.random.Generator, builder, vocab: Vocab, kind: str | None = None, synths: str = "trained",
                   task: str | None = None) -> dict:
    """One utterance of a random voice, 0.1-1.5 s of silence before and 0.1-1.0 s after.
    ``kind``: a key of ``UTTERANCE_MIX`` or ``heldout`` (held-out forms; drawn from the mix when
    None); ``task``: ``transcript`` or a key of ``grammar.QUESTIONS`` (drawn when None)."""
    from . import grammar, other

    if kind is None:
        keys = list(UTTERANCE_MIX)
        kind = keys[int(rng.choice(len(keys), p=list(UTTERANCE_MIX.values())))]
    if task is None:
        speech_q = [k for k, (_, unit) in grammar.QUESTIONS.items() if unit == "speech"]
        task = speech_q[int(rng.integers(len(speech_q)))] if rng.random() < QUESTION_SHARE else "transcript"
    rep, words = None, None
    if kind == "other_sound":
        text, wave = other.OTHER_SOUND, other.other_sound(rng)
    else:
        voice = domain.random_voice(rng, synths)
        if kind == "other_speech":
            text = other.OTHER_SPEECH
            wave = domain.spoken(voice, other.other_text(rng))
        else:
            rep = grammar.utterance_text(rng, kind)
            text = words = rep.text
            wave = domain.spoken(voice, text)
    lead = int(rng.uniform(0.1, 1.5) * 1000)
    tail = int(rng.uniform(0.1, 1.0) * 1000)
    speech_ms = -(-wave.size // 16)
    audio = np.zeros((lead + speech_ms + tail) * 16, np.float32)
    audio[lead * 16 : lead * 16 + wave.size] = wave
    frames, _ = frame_audio(_noisy(audio, rng))
    ctc = vocab.ids(words) if words else []
    if task == "transcript":
        item = make_item(builder, vocab, [], [], frames, "transcript", format_transcript([(lead, lead + speech_ms, text)]), ctc, [])
    else:
        item = make_item(builder, vocab, [], [], frames, task, grammar.answer(rep, task), ctc, [], grammar.QUESTIONS[task][0])
    item["kind"] = kind
    item["spoken"] = text
    return item


def frame_item(rng: np.random.Generator, builder, vocab: Vocab, kind: str | None = None, task: str | None = None) -> dict:
    """One frame: a domain scene (``kind="scene"``) or one outside the domain (``"other"``, captioned
    ``[other scene]``); ``task``: ``captions`` or ``shapes`` (the question; drawn when None)."""
    from . import grammar, other

    if kind is None:
        kind = "other" if rng.random() < OTHER_SCENE_SHARE else "scene"
    if task is None:
        task = "shapes" if rng.random() < QUESTION_SHARE else "captions"
    if kind == "other":
        scene, patches = None, _noisy_patches(other.other_scene(rng), rng)
        cells = np.full((patches.num_tokens, 3), vocab.blank, dtype=np.int64)
        caption = other.OTHER_SCENE
    else:
        scene = domain.random_scene(rng)
        patches, cells = render_cells(scene, rng, vocab)
        caption = scene.caption
    if task == "captions":
        item = make_item(builder, vocab, [0], [patches], np.zeros((0, 640), np.float32), "captions",
                         format_captions([(0, 0, caption)]), [], [cells])
    else:
        item = make_item(builder, vocab, [0], [patches], np.zeros((0, 640), np.float32), task, grammar.scene_answer(scene), [],
                         [cells], grammar.QUESTIONS[task][0])
    item["kind"] = kind
    item["scene"] = scene
    return item


def window_item(rng: np.random.Generator, builder, vocab: Vocab, width_s: int, task: str | None = None) -> dict:
    """A ``width_s`` window of a fresh timeline, frames at 1 fps from its start, the runner's layout."""
    lead_s = float(rng.uniform(0, 8)) if rng.random() < 0.5 else 0.0
    timeline = domain.random_timeline(rng, width_s + lead_s + 4)
    start_ms = int(lead_s * 1000) // 40 * 40
    end_ms = start_ms + width_s * 1000
    patches, cells, stamps, scenes = [], [], [], []
    cache: dict[int, tuple] = {}
    for k in range(width_s):
        t = start_ms + k * 1000
        j = next(i for i, (span, _) in enumerate(timeline.scenes) if span.start_ms <= t < span.end_ms)
        if j not in cache:
            cache[j] = render_cells(timeline.scenes[j][1], rng, vocab)
        patches.append(cache[j][0])
        cells.append(cache[j][1])
        stamps.append(k * 1000)
        scenes.append((k * 1000, timeline.scenes[j][0].caption))
    frames, _ = frame_audio(timeline.audio[start_ms * 16 : end_ms * 16])
    task = task or ("captions" if rng.random() < 0.5 else "transcript")
    if task == "captions":
        runs: list[list] = []
        for t, cap in scenes:
            if runs and runs[-1][2] == cap:
                runs[-1][1] = t
            else:
                runs.append([t, t, cap])
        target = format_captions([tuple(r) for r in runs])
    else:
        utts = []
        for u in timeline.utterances:
            if start_ms <= (u.start_ms + u.end_ms) // 2 < end_ms:  # the runner's rule: an utterance belongs where its middle is
                utts.append((max(u.start_ms, start_ms) - start_ms, min(u.end_ms, end_ms) - start_ms, u.text))
        target = format_transcript(utts)
    straddles = any(u.start_ms < start_ms < u.end_ms or u.start_ms < end_ms < u.end_ms for u in timeline.utterances)
    spoken = [] if straddles else [i for u in timeline.utterances if start_ms <= u.start_ms and u.end_ms <= end_ms for i in vocab.ids(u.text)]
    item = make_item(builder, vocab, stamps, patches, frames, task, target, spoken, cells)
    item["frame_captions"] = dict(scenes)  # stamp (ms from the window start) -> caption
    return item


def collate(items: list[dict], pad_id: int) -> dict:
    """Right-padded tensors of one sub-batch (all items of one layout kind)."""
    b, longest = len(items), max(s["ids"].size for s in items)
    ids = torch.full((b, longest), pad_id, dtype=torch.long)
    types = torch.zeros((b, longest), dtype=torch.long)
    labels = torch.full((b, longest), -100, dtype=torch.long)
    attn = torch.zeros((b, longest), dtype=torch.long)
    for i, s in enumerate(items):
        n = s["ids"].size
        ids[i, :n] = torch.from_numpy(s["ids"])
        types[i, :n] = torch.from_numpy(s["types"])
        labels[i, :n] = torch.from_numpy(s["labels"])
        attn[i, :n] = 1
    out = dict(input_ids=ids, attention_mask=attn, mm_token_type_ids=types, labels=labels)
    if items[0]["pix"] is not None:
        out["pixel_u8"] = torch.from_numpy(np.concatenate([s["pix"] for s in items]))
        out["video_position_ids"] = torch.from_numpy(np.concatenate([s["pos"] for s in items]))
        out["num_frames_per_video"] = torch.tensor([s["pix"].shape[0] for s in items])
        out["cells"] = torch.from_numpy(np.concatenate([s["cells"] for s in items]))
    t_max = max(s["audio"].shape[0] for s in items)
    if t_max:
        feats = torch.zeros((b, t_max, 640), dtype=torch.float32)
        fmask = torch.zeros((b, t_max), dtype=torch.bool)
        for i, s in enumerate(items):
            feats[i, : s["audio"].shape[0]] = torch.from_numpy(s["audio"])
            fmask[i, : s["audio"].shape[0]] = True
        out["input_features"], out["input_features_mask"] = feats, fmask
        out["audio_time"] = torch.from_numpy(np.concatenate([s["audio_time"] for s in items]))
        out["ctc_targets"] = [torch.from_numpy(s["ctc"]) for s in items]
    return out
