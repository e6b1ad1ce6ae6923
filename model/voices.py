"""Known voices: people enrolled once by a recording of their voice, named wherever they speak.

``onepass run ... --voices DIR``: ``DIR/<name>.wav`` (or any audio / video file ``DIR/<name>.<ext>``),
or ``DIR/<name>/`` holding several recordings of that person. Each person's speech regions (the
same energy regions and 40 ms frames diarization uses) give a voiceprint: the mean of their
regions' spectral embeddings (the statistics-pooled log band energies of ``speakers.py``),
standardised with the same fixed reference population as clustering, unit length. A speech
region is a person's when its own spectrum lies within :data:`REGION_THRESHOLD` (cosine) of their
voiceprint (the nearest) AND the regions of its diarization speaker that are so named lie
together within :data:`MATCH_THRESHOLD` of it; the regions left keep the speaker ids diarization
gives them, S1, S2 ... in order of first appearance.

Why: diarization stops merging at 0.6, looser than telling similar voices apart needs, so a
speaker (cluster) can hold an enrolled voice and an unenrolled one. On domain clips of 3 enrolled
eSpeak voices and a stranger (benchmarks/bench_known_voices.py, named right / stranger named):
whole clusters within 0.15: 74% / 5.4 s (seed 0), 73.5% / 6.0 s (seed 1); regions within 0.35
alone: 91% / 0, 92% / 0, but 92% / 56 s on seed 2, whose stranger sounds like "ana" (0.29-0.37
apart over a whole clip); regions AND their group (this rule, offline replay of the same clips):
77% / 0, 89% / 0, 89% / 13 s. A single region is mostly what was said; many are the voice. Also
tried: clustering finer first (0.45) and naming the parts (a person found in 99.6% of their speech
fell to 76.7%), clustering in the voice space alone (77.5% at best), smoothing each region with its
neighbours (no better).

Only the spectral block is compared (not the backbone's hidden states): enrolment needs no model
pass, and a voiceprint means the same whatever checkpoint a run uses. The threshold and its
false-accept / false-reject rates on held-out voices are measured by ``benchmarks/bench_voices.py``
(README, "Known voices").

Enrolment is cached in the output folder (``OUT/voices.json``) with each recording's content
fingerprint; a changed, added or removed recording enrols that person again."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onepass.operators.audio import frame_audio

from .speakers import N_SPECTRAL, _spectral_reference, region_embeddings

__all__ = ["Voiceprint", "enrol", "voiceprint", "name_regions", "MATCH_THRESHOLD", "REGION_THRESHOLD", "spectral_unit"]

# cosine distance between a speech region's long-term spectrum and a person's voiceprint under
# which the region may be that person's (benchmarks/bench_known_voices.py, seeds 0 and 1)
REGION_THRESHOLD = 0.35
# the same for the regions of one speaker (cluster) so named together: bench_voices.py, 2.8% / 6.9%
# false rejects and no false accept for whole speakers of held-out voices (two draws)
MATCH_THRESHOLD = 0.15
MIN_NAMED_MS = 1500  # regions holding less speech together are never named: too little to tell
MIN_ENROL_S = 5.0  # a person's recordings must hold at least this much speech



class VoiceError(Exception):
    pass


@dataclass(frozen=True)
class Voiceprint:
    name: str
    vector: np.ndarray  # unit length, standardised spectral statistics
    speech_s: float  # speech in the enrolment recordings
    files: tuple[str, ...]


VOICE_DIMS = N_SPECTRAL // 2  # the band energies' means (the long-term spectrum), not their spread


def spectral_unit(emb: np.ndarray) -> np.ndarray:
    """[n, >= N_SPECTRAL] region embeddings -> their long-term spectrum (mean log band energies),
    standardised with the reference population, unit length. The spread block that clustering
    also uses follows what is said more than who says it: on domain clips a person's speaker lay
    at 0.12-0.13 from their voiceprint with it, 0.05-0.08 without (other voices 0.44-0.50 either way)."""
    mean, std = _spectral_reference()
    x = (np.asarray(emb, np.float64)[:, :VOICE_DIMS] - mean[:VOICE_DIMS]) / std[:VOICE_DIMS]
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


def voiceprint(vectors: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The unit mean of unit spectral vectors (weighted by region length)."""
    v = np.average(vectors, axis=0, weights=weights)
    return v / (np.linalg.norm(v) + 1e-12)


def region_spectra(wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """16 kHz mono samples -> ([n, N_SPECTRAL] spectral embeddings of its speech regions, [n]
    lengths ms): diarization's own regions (speakers.region_embeddings), without hidden states."""
    frames, _ = frame_audio(np.asarray(wave, np.float32))
    regions = region_embeddings(frames, np.zeros((len(frames), 0), np.float32), 0)
    if not regions:
        return np.zeros((0, N_SPECTRAL)), np.zeros(0)
    return np.stack([e for _, e in regions]), np.array([s.duration_ms for s, _ in regions], np.float64)


def _read_16k(path: Path) -> np.ndarray:
    from onepass.operators.decode import DecodeError, MediaReader

    try:
        with MediaReader(path, video=False) as media:
            if not media.info.has_audio:
                raise VoiceError(f"{path}: no audio stream")
            chunks = [item.samples for item in media.items()]
    except DecodeError as exc:
        raise VoiceError(str(exc)) from exc
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def _people(folder: Path) -> dict[str, list[Path]]:
    from onepass.pipeline.config import MEDIA_EXTENSIONS

    if not folder.is_dir():
        raise VoiceError(f"--voices {folder}: not a folder (it holds <name>.wav or <name>/ per person)")
    people: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MEDIA_EXTENSIONS)
            if files:
                people[p.name] = files
        elif p.suffix.lower() in MEDIA_EXTENSIONS:
            people.setdefault(p.stem, []).append(p)
    if not people:
        raise VoiceError(f"--voices {folder}: no recordings (<name>.wav, or <name>/ with audio or video files)")
    return people


def enrol(folder: str | os.PathLike, cache: str | os.PathLike | None = None) -> list[Voiceprint]:
    """Every person of ``folder``, enrolled (from ``cache`` where their recordings are unchanged).
    VoiceError names a recording that cannot be read or a person with too little speech."""
    from onepass.pipeline.sources import content_fingerprint

    people = _people(Path(folder))
    cached = {}
    if cache is not None and Path(cache).is_file():
        try:
            cached = json.loads(Path(cache).read_text())
        except (OSError, ValueError):
            cached = {}
    prints, store = [], {}
    for name, files in people.items():
        fps = [content_fingerprint(str(f)) for f in files]
        hit = cached.get(name)
        if hit and hit.get("fingerprints") == fps and len(hit.get("vector", [])) == VOICE_DIMS:
            vec, speech_s = np.asarray(hit["vector"]), float(hit["speech_s"])
        else:
            spectra, lengths = [], []
            for f in files:
                s, n = region_spectra(_read_16k(f))
                spectra.append(s)
                lengths.append(n)
            lengths_all = np.concatenate(lengths)
            speech_s = float(lengths_all.sum() / 1000)
            if speech_s < MIN_ENROL_S:
                raise VoiceError(f"--voices: {name} ({', '.join(map(str, files))}) holds {speech_s:.1f} s of speech; "
                                 f"enrolment needs at least {MIN_ENROL_S:.0f} s (20-40 s recommended)")
            vec = voiceprint(spectral_unit(np.concatenate(spectra)), lengths_all)
        store[name] = {"fingerprints": fps, "vector": [float(x) for x in vec], "speech_s": speech_s, "files": [str(f) for f in files]}
        prints.append(Voiceprint(name, vec, speech_s, tuple(str(f) for f in files)))
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(cache).with_suffix(".tmp")
        tmp.write_text(json.dumps(store, indent=1))
        os.replace(tmp, cache)
    return prints


def _match(units: np.ndarray, lengths_ms: np.ndarray, people: np.ndarray, threshold: float) -> int | None:
    """The person whose voiceprint is nearest these regions' own, if within ``threshold`` and
    the regions hold at least MIN_NAMED_MS of speech."""
    if lengths_ms.sum() < MIN_NAMED_MS:
        return None
    dist = 1.0 - people @ voiceprint(units, lengths_ms)
    best = int(np.argmin(dist))
    return best if dist[best] <= threshold else None


def name_regions(labels: np.ndarray, embeddings: np.ndarray, lengths_ms: np.ndarray, known: list[Voiceprint],
                 region_threshold: float = REGION_THRESHOLD, threshold: float = MATCH_THRESHOLD) -> list[str | None]:
    """Each speech region's person, or None: the nearest voiceprint if the region lies within
    ``region_threshold`` of it, AND the regions of its diarization cluster (``labels``) so named
    together lie within ``threshold`` of it (one region is mostly what was said; many are the voice)."""
    out: list[str | None] = [None] * len(labels)
    if not known or len(labels) == 0:
        return out
    units, people = spectral_unit(embeddings), np.stack([k.vector for k in known])
    dist = 1.0 - units @ people.T
    near = dist.argmin(1)
    candidate = np.where(dist[np.arange(len(labels)), near] <= region_threshold, near, -1)
    for label in sorted(set(labels.tolist())):
        for j in sorted(set(candidate[labels == label].tolist()) - {-1}):
            idx = np.flatnonzero((labels == label) & (candidate == j))
            if _match(units[idx], lengths_ms[idx], people[j : j + 1], threshold) is not None:
                for i in idx:
                    out[int(i)] = known[j].name
    return out
