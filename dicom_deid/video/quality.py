"""Fidelity measures for frames: luma PSNR (BT.601), as used by the tests and benchmarks."""

from __future__ import annotations

import math

import numpy as np

_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma (Y') of RGB uint8 frames, float32 on the 0..255 scale."""
    return rgb.astype(np.float32) @ _WEIGHTS


def luma_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between the luma of two RGB frames of the same size (inf when identical)."""
    if a.shape != b.shape:
        raise ValueError(f"frame sizes differ: {a.shape} and {b.shape}")
    mse = float(np.mean((luma(a) - luma(b)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
