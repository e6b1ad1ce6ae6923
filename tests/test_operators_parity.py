"""Byte-exact parity of our patchify and audio framing with the reference processor."""

import hashlib
import json

import numpy as np
import pytest

from onepass.operators.audio import frame_audio
from onepass.operators.patchify import BUDGETS, grid_size, patchify


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    """Digests of the reference processor's outputs (tests/fixtures/make_fixtures.py) and the inputs."""
    meta = json.loads((fixtures_dir / "image_golden.json").read_text())
    return meta, fixtures_dir


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_every_image_case_is_byte_exact(golden):
    from PIL import Image

    meta, folder = golden
    cases = [c for c in meta["images"] if c["input"]]
    assert len(cases) >= 8 and {c["budget"] for c in cases} >= {70, 280, 1120}
    for case in cases:
        name, budget = case["name"], case["budget"]
        img = np.asarray(Image.open(folder / "images" / f"{name}.png").convert("RGB"))
        p = patchify(img, budget)
        assert p.num_tokens == case["soft_tokens"], (name, budget)
        levels = np.rint(p.pixel_values[: p.num_tokens].astype(np.float64) * 255)
        assert levels.reshape(-1)[:8].tolist() == case["pix_head"], (name, budget)
        assert _sha(levels.astype(np.uint8)) == case["pix_sha256"], (name, budget)
        # the values themselves are exactly uint8 * float32(1/255), as the reference computes them
        assert np.array_equal(p.pixel_values[: p.num_tokens], p.cells[: p.num_tokens].astype(np.float32) * np.float32(1 / 255))
        assert _sha(p.positions) == case["pos_sha256"], (name, budget)
        assert not p.pixel_values[p.num_tokens :].any()
        # frames of a video are the same cells divided by 255 (the video processor's rule)
        v = patchify(img, budget, video=True)
        assert np.array_equal(v.cells, p.cells)
        assert np.array_equal(v.pixel_values[: v.num_tokens], v.cells[: v.num_tokens] / np.float32(255))


def test_audio_cases_are_exact(golden, fixtures_dir):
    meta, _ = golden
    ref = np.load(fixtures_dir / "audio_golden.npz")
    frames, mask = frame_audio(ref["wave"])
    assert np.array_equal(frames, ref["feat"]) and np.array_equal(mask, ref["mask"])
    rng = np.random.default_rng(0)
    for case in meta["audio"]:  # the reference frames any length this way: zero-padded to whole frames
        wave = rng.normal(0, 0.1, case["samples"]).astype(np.float32)
        frames, mask = frame_audio(wave)
        assert frames.shape == (case["frames"], 640) and mask.all()
        assert np.array_equal(frames.reshape(-1)[: wave.size], wave) and not frames.reshape(-1)[wave.size :].any()


@pytest.mark.parametrize("budget", BUDGETS)
def test_grid_never_exceeds_budget(budget):
    rng = np.random.default_rng(budget)
    sizes = [(1, 1), (1, 4999), (4999, 1), (48, 48), (4999, 4999)] + [tuple(int(x) for x in rng.integers(1, 5000, size=2)) for _ in range(200)]
    for h, w in sizes:  # every image with pixels gets a grid (no draw may be skipped)
        gh, gw = grid_size(h, w, budget)
        assert gh >= 48 and gw >= 48 and gh % 48 == 0 and gw % 48 == 0 and (gh // 48) * (gw // 48) <= budget, (h, w, gh, gw)
    for bad in [(0, 10, budget), (10, 0, budget), (10, 10, budget + 1)]:
        with pytest.raises(ValueError):
            grid_size(*bad)


def test_patchify_rejects_bad_input():
    with pytest.raises(ValueError):
        patchify(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError):
        patchify(np.zeros((10, 10, 3), np.uint8), budget=100)
