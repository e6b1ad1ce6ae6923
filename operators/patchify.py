"""RGB frame -> Gemma 4 Unified soft-token inputs (raw 48x48x3 pixel cells + (x, y) positions).

Implements the reference image processor's rule (contract doc sections 1.2, 1.3 and 9) byte for
byte: aspect-preserving resize so that a grid of 48-px cells fits the token budget, bicubic with
antialiasing on uint8 (torch's kernel, the one the reference runs), x/255, row-major cells
flattened in (row, col, channel) order, positions (column, row), padding rows (-1, -1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["BUDGETS", "CELL_PX", "CELL_VALUES", "Patches", "grid_size", "patchify"]

CELL_PX = 48  # 16-px patch x 3x3 pooling
CELL_VALUES = CELL_PX * CELL_PX * 3  # 6912
BUDGETS = (70, 140, 280, 560, 1120)
_RESCALE = np.float32(1 / 255)  # the reference multiplies by float32(1/255)


@dataclass(frozen=True, eq=False)
class Patches:
    """One image's model inputs, kept as the resized uint8 cells (4x smaller to ship between
    processes than float32; the float values are an exact function of them).

    cells:        [budget, 6912] uint8, rows >= num_tokens are zero.
    positions:    [budget, 2] int64 (x = column, y = row), rows >= num_tokens are -1.
    pixel_values: [budget, 6912] float32 in [0, 1], as the reference computes it (see patchify).
    """

    cells: np.ndarray
    positions: np.ndarray
    num_tokens: int
    grid_hw: tuple[int, int]
    video: bool = False

    @property
    def pixel_values(self) -> np.ndarray:
        out = np.zeros(self.cells.shape, dtype=np.float32)
        n = self.num_tokens
        if self.video:
            np.divide(self.cells[:n], np.float32(255), out=out[:n], dtype=np.float32)
        else:
            np.multiply(self.cells[:n], _RESCALE, out=out[:n], dtype=np.float32)
        return out


def grid_size(height: int, width: int, budget: int) -> tuple[int, int]:
    """Target (H', W') in pixels for an image of (height, width) at ``budget`` soft tokens."""
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, got {budget}")
    if height <= 0 or width <= 0:
        raise ValueError(f"image has no pixels: {height}x{width}")
    target_px = budget * 9 * 16 * 16
    factor = math.sqrt(target_px / (height * width))
    out_h = math.floor(factor * height / CELL_PX) * CELL_PX
    out_w = math.floor(factor * width / CELL_PX) * CELL_PX
    if out_h == 0 and out_w == 0:
        raise ValueError(f"image {height}x{width} too small for budget {budget}")
    if out_h == 0:
        out_h, out_w = CELL_PX, min(math.floor(width / height) * CELL_PX, budget * CELL_PX)
    elif out_w == 0:
        out_w, out_h = CELL_PX, min(math.floor(height / width) * CELL_PX, budget * CELL_PX)
    return out_h, out_w


def _resize_uint8(rgb: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    if rgb.shape[:2] == (out_h, out_w):
        return rgb
    import torch  # here, not at the top: BUDGETS and grid_size serve the driver, which does not load torch
    import torch.nn.functional as F

    rgb = np.ascontiguousarray(rgb) if rgb.flags.writeable else rgb.copy()  # torch wants a writable array
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)  # [1,3,H,W]
    resized = F.interpolate(tensor, size=(out_h, out_w), mode="bicubic", align_corners=False, antialias=True)
    return resized[0].permute(1, 2, 0).contiguous().numpy()  # [H',W',3] uint8


def patchify(rgb: np.ndarray, budget: int = 70, *, video: bool = False) -> Patches:
    """Cut an (H, W, 3) uint8 RGB image into the reference processor's cells at ``budget``.

    The reference image processor rescales with ``x * float32(1/255)``; its video processor
    normalises with ``x / 255`` (they differ by up to 6e-8). ``video=True`` follows the latter,
    for frames that go into the prompt as a video.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.dtype} {rgb.shape}")
    out_h, out_w = grid_size(rgb.shape[0], rgb.shape[1], budget)
    resized = _resize_uint8(rgb, out_h, out_w)
    gh, gw = out_h // CELL_PX, out_w // CELL_PX
    n = gh * gw
    cells = resized.reshape(gh, CELL_PX, gw, CELL_PX, 3).transpose(0, 2, 1, 3, 4).reshape(n, CELL_VALUES)
    padded = np.zeros((budget, CELL_VALUES), dtype=np.uint8)
    padded[:n] = cells
    positions = np.full((budget, 2), -1, dtype=np.int64)
    k = np.arange(n)
    positions[:n, 0] = k % gw
    positions[:n, 1] = k // gw
    return Patches(cells=padded, positions=positions, num_tokens=n, grid_hw=(gh, gw), video=video)

