"""Utterances for probes/audio_frontend.py: (framed audio [T, 640] float16, words) pairs: python make_utterances.py OUT.pkl"""
import sys
import numpy as np, pickle
from onepass.model.training import domain
from onepass.operators.audio import frame_audio
rng = np.random.default_rng(7); out = []
for _ in range(4000):
    v = domain.random_voice(rng); t = domain.sentence(rng); w = domain.spoken(v, t)
    a = np.concatenate([np.zeros(int(rng.uniform(0.1, 0.8)*16000), np.float32), w, np.zeros(3200, np.float32)])
    out.append((frame_audio(a)[0].astype(np.float16), t.split()))
pickle.dump(out, open(sys.argv[1], 'wb'))
