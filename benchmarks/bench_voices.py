"""Known voices (model/voices.py): the match threshold, chosen on some voices and checked on others.

Each person is an eSpeak NG voice of the domain: one of its 12 variants (m1-m7, f1-f5: the
timbre; the base voice changes the accent more than the voice: en-us+m4 and en-gb-x-rp+m4 lie at
cosine distance ~0.1, as close as one voice to itself) on a random base voice, with its own pitch,
speed and loudness; in a group no two persons share a variant. A person is enrolled from ~30 s of
domain sentences; their "speaker" in a clip is 8-15 s of OTHER sentence forms (what a cluster of
one source holds). Genuine: a speaker against their own voiceprint. Impostor: a speaker against
the nearest voiceprint of the others in the group (an unenrolled voice is named when that is
under the threshold). The threshold is chosen on groups drawn from 6 variants (the largest with
no false accept there, less a margin); the false-accept and false-reject rates are counted on
groups of the OTHER 6 variants, which played no part in the choice.

    python benchmarks/bench_voices.py --groups 8 --json voices.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def person_voices(rng: np.random.Generator, variants) -> list:
    """One person per variant, each on a random base voice with its own pitch, speed and loudness."""
    from onepass.model.training.domain import VOICES, Voice

    return [Voice(f"{VOICES[rng.integers(len(VOICES))]}+{v}", int(rng.integers(30, 81)), int(rng.integers(140, 191)),
                  float(rng.uniform(0.3, 1.0))) for v in variants]


def speech(voice, rng: np.random.Generator, seconds: float, sentences: str = "trained") -> np.ndarray:
    """About ``seconds`` of the voice saying domain sentences, with short pauses."""
    from onepass.model.training.domain import spoken
    from onepass.model.training.grammar import utterance_text

    parts, total = [], 0
    while total < seconds * 16000:
        w = spoken(voice, utterance_text(rng, sentences).text)
        pause = np.zeros(int(rng.uniform(0.3, 1.0) * 16000), np.float32)
        parts += [w, pause]
        total += w.size + pause.size
    return np.concatenate(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=8, help="groups of 6 persons drawn per half")
    ap.add_argument("--speakers", type=int, default=3, help="test speakers (clusters) per person")
    ap.add_argument("--enrol-s", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--margin", type=float, default=0.05, help="subtracted from the dev set's smallest impostor distance")
    ap.add_argument("--threshold", type=float, default=None, help="count the rates at this threshold (default: choose it on the dev half)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    from onepass.model.voices import region_spectra, spectral_unit, voiceprint

    from onepass.model.training.domain import VARIANTS

    t0 = time.time()
    rng = np.random.default_rng(a.seed)
    dev_variants, held_variants = VARIANTS[0::2], VARIANTS[1::2]  # m1 m3 m5 m7 f2 f4 | m2 m4 m6 f1 f3 f5

    def group(variants):
        """(voiceprints [6, D], test speakers: list per person) of a fresh group of persons."""
        prints, tests = [], []
        for v in person_voices(rng, variants):
            s, n = region_spectra(speech(v, rng, a.enrol_s))
            prints.append(voiceprint(spectral_unit(s), n))
            tests.append([])
            for _ in range(a.speakers):
                s, n = region_spectra(speech(v, rng, rng.uniform(8, 15), sentences="heldout"))
                tests[-1].append(voiceprint(spectral_unit(s), n))
        return np.stack(prints), tests

    def distances(groups):
        genuine, impostor, nearest_self = [], [], []
        for P, tests in groups:
            for i, ts in enumerate(tests):
                for t in ts:
                    d = 1.0 - P @ t
                    genuine.append(float(d[i]))
                    impostor.append(float(np.delete(d, i).min()))  # as if i were not enrolled: the nearest enrolled one
                    nearest_self.append(int(np.argmin(d)) == i)
        return np.array(genuine), np.array(impostor), np.array(nearest_self)

    dev_g, dev_i, _ = distances([group(dev_variants) for _ in range(a.groups)])
    chosen = round(float(dev_i.min()) - a.margin, 3)
    threshold = chosen if a.threshold is None else a.threshold
    test_g, test_i, test_self = distances([group(held_variants) for _ in range(a.groups)])
    named_right = (test_g <= threshold) & test_self
    res = {
        "groups_per_half": a.groups, "persons_per_group": 6, "speakers_per_person": a.speakers, "enrol_s": a.enrol_s, "seed": a.seed,
        "threshold": threshold, "chosen_on_dev": chosen,
        "dev_rates": {"false_reject": round(float((dev_g > threshold).mean()), 4), "false_accept": round(float((dev_i <= threshold).mean()), 4),
                      "impostor_p1": round(float(np.percentile(dev_i, 1)), 3), "genuine_p95": round(float(np.percentile(dev_g, 95)), 3)},
        "dev": {"genuine_median": round(float(np.median(dev_g)), 3), "genuine_max": round(float(dev_g.max()), 3),
                "impostor_min": round(float(dev_i.min()), 3), "impostor_median": round(float(np.median(dev_i)), 3)},
        "heldout": {"false_reject": round(float((test_g > threshold).mean()), 4), "false_accept": round(float((test_i <= threshold).mean()), 4),
                    "named_right": round(float(np.mean(named_right)), 4), "trials_genuine": int(test_g.size), "trials_impostor": int(test_i.size),
                    "genuine_median": round(float(np.median(test_g)), 3), "impostor_min": round(float(test_i.min()), 3)},
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(res, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
