"""Byte-exact parity of our patchify and audio framing with the reference processor."""

import json

import numpy as np
import pytest

from onepass.operators.audio import AudioFramer, frame_audio, pad_audio_frames
from onepass.operators.patchify import BUDGETS, grid_size, patchify


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    meta = json.loads((fixtures_dir / "gemma4_unified_golden.json").read_text())
    return meta, np.load(fixtures_dir / "gemma4_unified_golden.npz")


def test_every_image_case_is_byte_exact(golden):
    meta, z = golden
    assert len(meta["images"]) >= 10
    for case in meta["images"]:
        name, budget = case["name"], case["budget"]
        p = patchify(z[f"img/{name}"], budget)
        assert p.num_tokens == case["soft_tokens"], (name, budget)
        ref = z[f"pix/{name}/{budget}"].astype(np.int64)
        levels = np.rint(p.pixel_values[: p.num_tokens].astype(np.float64) * 255).astype(np.int64)
        assert np.abs(levels - ref).max() == 0, (name, budget)
        # the values themselves are exactly uint8 * float32(1/255), as the reference computes them
        assert np.array_equal(p.pixel_values[: p.num_tokens], ref.astype(np.float32) * np.float32(1 / 255))
        assert np.array_equal(p.positions, z[f"pos/{name}/{budget}"]), (name, budget)
        assert not p.pixel_values[p.num_tokens :].any()


def test_audio_cases_are_exact(golden):
    meta, z = golden
    for case in meta["audio"]:
        n = case["samples"]
        frames, mask = frame_audio(z[f"wave/{n}"])
        assert frames.shape == (case["frames"], 640)
        if f"feat/{n}" in z:
            assert np.array_equal(frames, z[f"feat/{n}"])
            assert np.array_equal(mask, z[f"mask/{n}"])


def test_streaming_framer_matches_batch_and_holds_back_the_padded_frame(golden):
    _, z = golden
    wave = z["wave/37920"]
    framer = AudioFramer()
    out, rng, pos = [], np.random.default_rng(0), 0
    while pos < wave.size:
        step = int(rng.integers(1, 2000))
        got = framer.push(wave[pos : pos + step], start_ms=pos // 16)
        assert all(len(f) == 640 for f in got.frames)  # only full frames while live
        out.append(got)
        pos += step
    live_frames = sum(len(o) for o in out)
    assert live_frames == wave.size // 640
    out.append(framer.close())
    frames = np.concatenate([o.frames for o in out])
    starts = np.concatenate([o.start_ms for o in out])
    assert np.array_equal(frames, z["feat/37920"])
    assert np.array_equal(starts, 40 * np.arange(len(frames)))


def test_batch_padding_marks_real_frames():
    a, _ = frame_audio(np.ones(16001, np.float32))
    b, _ = frame_audio(np.ones(640, np.float32))
    batch, mask = pad_audio_frames([a, b])
    assert batch.shape == (2, 26, 640) and mask.sum(1).tolist() == [26, 1]
    assert not batch[1, 1:].any()


@pytest.mark.parametrize("budget", BUDGETS)
def test_grid_never_exceeds_budget(budget):
    rng = np.random.default_rng(budget)
    for _ in range(200):
        h, w = (int(x) for x in rng.integers(1, 5000, size=2))
        try:
            gh, gw = grid_size(h, w, budget)
        except ValueError:
            continue
        assert gh % 48 == 0 and gw % 48 == 0 and (gh // 48) * (gw // 48) <= budget


def test_patchify_rejects_bad_input():
    with pytest.raises(ValueError):
        patchify(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError):
        patchify(np.zeros((10, 10, 3), np.uint8), budget=100)
