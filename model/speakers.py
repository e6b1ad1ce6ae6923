"""Speakers that stay the same person across all windows of a source.

Design (chosen over per-window "speaker 1/2" labels from the model, which are not comparable
between windows):

1. Speech regions are cut by energy (:func:`onepass.operators.audio.speech_spans`) on the 40 ms
   audio-frame grid; a region is never longer than ``max_region_ms`` (split evenly) so that one
   region rarely holds two voices.
2. Each region's embedding has two blocks, both *statistics pooling* (mean and standard
   deviation over the region's 40 ms frames, as in x-vectors):
   - the log band energies (32 log-spaced bands, level removed) of the same raw 640-sample
     frames the backbone embeds: a long-term spectrum that carries pitch and formants, i.e.
     voice, whatever the checkpoint's weights;
   - the backbone's own hidden states at those audio tokens, from one middle decoder layer,
     captured during the prefill the window (or, asked per unit, each speech region) needs
     anyway (no second model, no second pass).
   Measured on two espeak voices with an untrained 2-layer checkpoint, the hidden-state block
   alone does not separate speakers (all cosine distances 0.05-0.07) while the spectral block
   does (same voice 0.6-1.1, other voice 1.2-1.6). So the hidden-state block is weighted
   ``backbone_weight`` = 0 unless the checkpoint's ``onepass.json`` says otherwise
   (:func:`onepass.model.meta.model_speakers`). The bundled model, once it heard (step 3666,
   hidden states from its speech-region prefills), helps a little: DER on 20 held-out clips
   at weight 0 / stop 0.6 vs weight 0.5 / stop 0.7 (chosen on seed 5): 9.2% -> 7.6% (seed 5),
   16.1% -> 15.5% (seed 2), 10.5% -> 10.0% (seed 11); weight 0.5 at stop 0.6 is worse
   (15.4%, 18.5%, 12.5%): the hidden states spread a voice, so the stop must move with them.
   Re-measured for steps 4328 and 4755 on seed 5 (weight 0: 9.2% at stop 0.6; weight 0.5: 7.6%
   at 0.7, 15.8% / 14.7% at 0.6; weight 1: 12.6-12.8% at best), so they keep the same key.
3. The spectral block is standardised with a FIXED reference population (per-source statistics
   stretch a single voice into several: DER 22.9% -> 7.6% on 20 held-out domain clips), and all
   regions of a source are clustered by average-linkage agglomerative clustering on cosine
   distance, stopping at 0.6 (chosen on other synthetic seeds: 6% of same-voice pairs and 24%
   of other-voice pairs lie across it; linkage averages the rest), or at a given number of
   speakers. Speaker ids are numbered by first appearance: S1, S2, ...
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from onepass.operators.audio import FRAME_MS, speech_spans
from onepass.operators.spans import Span

from .records import Segment, SpeakerTurn

__all__ = ["region_embeddings", "cluster", "assign_speakers", "speaker_names", "label_segments", "OnlineSpeakers", "THRESHOLD"]

THRESHOLD = 0.6  # cosine distance at which clustering stops (see the module docstring)


def _split(span: Span, max_ms: int) -> list[Span]:
    if span.duration_ms <= max_ms:
        return [span]
    parts = -(-span.duration_ms // max_ms)
    step = -(-span.duration_ms // parts // FRAME_MS) * FRAME_MS
    out, t = [], span.start_ms
    while t < span.end_ms:
        out.append(Span(t, min(t + step, span.end_ms)))
        t += step
    return out


def region_embeddings(
    audio_frames: np.ndarray,
    hidden: np.ndarray,
    audio_start_ms: int,
    *,
    max_region_ms: int = 4000,
    min_region_ms: int = 320,
    own: Span | None = None,
) -> list[tuple[Span, np.ndarray]]:
    """Speech regions of one window and their embeddings.

    audio_frames: [n, 640] the window's audio; hidden: [n, D] hidden states at its audio tokens.
    ``own``: the audio frames are the window's with context around it; only regions that start
    inside ``own`` are the window's (whole, also where they run into the context).
    """
    regions = []
    for span in speech_spans(audio_frames, audio_start_ms):
        if own is not None and not own.start_ms <= span.start_ms < own.end_ms:
            continue
        for part in _split(span, max_region_ms):
            if part.duration_ms < min_region_ms:
                continue
            a = (part.start_ms - audio_start_ms) // FRAME_MS
            b = (part.end_ms - audio_start_ms) // FRAME_MS
            h = hidden[a:b].astype(np.float64)
            if h.shape[0] < 2:
                continue
            spec = _band_energies(audio_frames[a:b])
            regions.append((part, np.concatenate([spec.mean(0), spec.std(0), h.mean(0), h.std(0)]).astype(np.float32)))
    return regions


_BAND_EDGES = np.unique(np.round(np.geomspace(2, 320, 33)).astype(int))
N_SPECTRAL = 2 * (len(_BAND_EDGES) - 1)


def _band_energies(frames: np.ndarray) -> np.ndarray:
    """[n, 640] raw frames -> [n, bands] log band energies with the frame's level removed."""
    power = np.abs(np.fft.rfft(frames.astype(np.float64) * np.hanning(frames.shape[1]), axis=1)) ** 2
    bands = np.add.reduceat(power, _BAND_EDGES[:-1], axis=1)[:, : len(_BAND_EDGES) - 1]
    log_bands = np.log(bands + 1e-10)
    return log_bands - log_bands.mean(1, keepdims=True)


MIN_STANDARDISE = 6


def _standardise(x: np.ndarray) -> np.ndarray:
    # With few regions the sample statistics are noise (two points always end up opposite), so
    # below MIN_STANDARDISE regions the raw directions are compared: few regions merge into one
    # speaker rather than split into one speaker each.
    if x.shape[0] >= MIN_STANDARDISE:
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


@functools.lru_cache(maxsize=1)
def _spectral_reference() -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of the spectral block over a reference population (221 utterances of the
    domain's espeak voices, seed 777): a fixed scale, so that one speaker stays one speaker."""
    ref = json.loads((Path(__file__).with_name("speaker_reference.json")).read_text())
    return np.asarray(ref["mean"]), np.asarray(ref["std"])


def cluster(
    embeddings: np.ndarray, *, threshold: float = THRESHOLD, num_speakers: int | None = None, backbone_weight: float = 0.0,
    min_speakers: int | None = None, max_speakers: int | None = None,
) -> np.ndarray:
    """Average-linkage agglomerative clustering on cosine distance. Returns labels [n] (0-based,
    in order of first appearance). ``num_speakers``: merge down to exactly that many; else stop
    at ``threshold``, but merge on past it while there are more than ``max_speakers`` and stop
    before it while there would be fewer than ``min_speakers`` (hints: WhisperX's min/max).

    The spectral block is standardised with the fixed reference population (per-source statistics
    would stretch any single voice into several); the backbone block, when weighted, per source."""
    n = embeddings.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    e = embeddings.astype(np.float64)
    mean, std = _spectral_reference()
    spec = (e[:, :N_SPECTRAL] - mean) / std
    spec /= np.linalg.norm(spec, axis=1, keepdims=True) + 1e-12
    blocks = [spec]
    if backbone_weight and n >= MIN_STANDARDISE:
        blocks.append(backbone_weight * _standardise(e[:, N_SPECTRAL:]))
    x = np.concatenate(blocks, axis=1)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    dist = 1.0 - x @ x.T
    clusters: dict[int, list[int]] = {i: [i] for i in range(n)}
    # pairwise average distances between clusters, updated with the Lance-Williams rule
    d = dist.copy()
    np.fill_diagonal(d, np.inf)
    active = np.ones(n, dtype=bool)
    while len(clusters) > 1:
        if num_speakers is not None and len(clusters) <= num_speakers:
            break
        if num_speakers is None and min_speakers is not None and len(clusters) <= min_speakers:
            break
        masked = np.where(active[:, None] & active[None, :], d, np.inf)
        i, j = np.unravel_index(np.argmin(masked), masked.shape)
        if num_speakers is None and masked[i, j] > threshold and (max_speakers is None or len(clusters) <= max_speakers):
            break
        ni, nj = len(clusters[i]), len(clusters[j])
        d[i, :] = d[:, i] = (ni * d[i, :] + nj * d[j, :]) / (ni + nj)
        d[i, i] = np.inf
        active[j] = False
        d[j, :] = d[:, j] = np.inf
        clusters[i] += clusters.pop(j)
    labels = np.empty(n, dtype=np.int64)
    for members in clusters.values():
        labels[members] = min(members)
    order = {first: k for k, first in enumerate(sorted(set(labels.tolist())))}
    return np.array([order[v] for v in labels], dtype=np.int64)


def speaker_names(labels: np.ndarray, embeddings: np.ndarray, known=None, lengths_ms: np.ndarray | None = None) -> list[str]:
    """Each region's speaker: an enrolled person's name where its voice matches one
    (model/voices.py), else S1, S2 ... by first appearance among the clusters of the rest."""
    named: list = [None] * len(labels)
    if known:
        from .voices import name_regions

        named = name_regions(labels, embeddings, lengths_ms, known)
    numbers: dict[int, str] = {}
    out = []
    for label, name in zip(labels.tolist(), named):
        if name is None and label not in numbers:
            numbers[label] = f"S{len(numbers) + 1}"
        out.append(name or numbers[label])
    return out


def assign_speakers(
    regions: list[tuple[Span, np.ndarray]], *, threshold: float = THRESHOLD, num_speakers: int | None = None,
    backbone_weight: float = 0.0, min_speakers: int | None = None, max_speakers: int | None = None, known=None,
) -> list[SpeakerTurn]:
    """Cluster all regions of one source into speaker turns (adjacent same-speaker regions merged);
    ``known``: enrolled voiceprints (model/voices.py) that name the clusters they match."""
    if not regions:
        return []
    regions = sorted(regions, key=lambda r: r[0])
    embeddings = np.stack([e for _, e in regions])
    spans = [s for s, _ in regions]
    labels = cluster(embeddings, threshold=threshold, num_speakers=num_speakers, backbone_weight=backbone_weight,
                     min_speakers=min_speakers, max_speakers=max_speakers)
    names = speaker_names(labels, embeddings, known, np.array([s.duration_ms for s in spans], np.float64))
    turns: list[SpeakerTurn] = []
    for (span, _), speaker in zip(regions, names):
        if turns and turns[-1].speaker == speaker and span.start_ms - turns[-1].span.end_ms <= 500:
            turns[-1] = SpeakerTurn(Span(turns[-1].span.start_ms, span.end_ms), speaker)
        else:
            turns.append(SpeakerTurn(span, speaker))
    return turns


def label_segments(segments: list[Segment], turns: list[SpeakerTurn]) -> list[Segment]:
    """Give each transcript segment the speaker whose turns overlap it most."""
    from dataclasses import replace

    out = []
    for seg in segments:
        best, best_ms = None, 0
        for turn in turns:
            common = seg.span.intersect(turn.span)
            if common is not None and common.duration_ms > best_ms:
                best, best_ms = turn.speaker, common.duration_ms
        out.append(replace(seg, speaker=best))
    return out


class OnlineSpeakers:
    """Stable speaker ids for a live source: each new window re-clusters every region so far and
    keeps the ids already committed (a cluster takes the id most of its labelled regions had)."""

    def __init__(self, threshold: float = THRESHOLD, backbone_weight: float = 0.0, known=None):
        self.threshold = threshold
        self.backbone_weight = backbone_weight
        self.known = known or []
        self.regions: list[tuple[Span, np.ndarray]] = []
        self.labels: list[str | None] = []
        self.next_id = 1

    def add(self, regions: list[tuple[Span, np.ndarray]]) -> list[SpeakerTurn]:
        if not regions:
            return []
        first_new = len(self.regions)
        self.regions += regions
        self.labels += [None] * len(regions)
        embeddings = np.stack([e for _, e in self.regions])
        clusters = cluster(embeddings, threshold=self.threshold, backbone_weight=self.backbone_weight)
        taken: set[str] = set()
        names: dict[int, str] = {}
        people = {k.name for k in self.known}  # a name is given by the voice, never inherited by vote
        for c in sorted(set(clusters.tolist()), key=lambda c: -int((clusters == c).sum())):
            votes = [self.labels[i] for i in np.flatnonzero(clusters == c)
                     if self.labels[i] and self.labels[i] not in taken and self.labels[i] not in people]
            if votes:
                names[c] = max(set(votes), key=votes.count)
            else:
                names[c] = f"S{self.next_id}"
                self.next_id += 1
            taken.add(names[c])
        if self.known:  # an enrolled person is named as soon as their voice is heard
            from .voices import name_regions

            lengths = np.array([s.duration_ms for s, _ in self.regions], np.float64)
            own = name_regions(clusters, embeddings, lengths, self.known)[first_new:]
        else:
            own = [None] * (len(self.regions) - first_new)
        turns = []
        for i, person in zip(range(first_new, len(self.regions)), own):
            self.labels[i] = person or names[int(clusters[i])]
            turns.append(SpeakerTurn(self.regions[i][0], self.labels[i]))
        return turns
