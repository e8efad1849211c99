"""Time-series measures on video: aspect-ratio correlation, blink count."""

from __future__ import annotations

import numpy as np

# A blink: the eye aspect ratio under this share of the clip's median (measured on the
# original) for at least MIN_BLINK_FRAMES frames. A relative threshold works for either
# landmark model, whose absolute EAR scales differ.
BLINK_RATIO = 0.75
MIN_BLINK_FRAMES = 2


def pearson(a: list[float | None], b: list[float | None]) -> tuple[float | None, float | None, int]:
    """(Pearson r, mean absolute error, n) over frames present in both series.

    r is None when fewer than 3 frames pair up or either side is constant.
    """
    pairs = [(x, y) for x, y in zip(a, b, strict=True)
             if x is not None and y is not None and np.isfinite(x) and np.isfinite(y)]
    if not pairs:
        return None, None, 0
    x = np.array([p[0] for p in pairs])
    y = np.array([p[1] for p in pairs])
    mae = float(np.mean(np.abs(x - y)))
    if len(pairs) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, mae, len(pairs)
    return float(np.corrcoef(x, y)[0, 1]), mae, len(pairs)


def blink_threshold(reference: list[float | None]) -> float | None:
    values = [v for v in reference if v is not None and np.isfinite(v)]
    return float(np.median(values)) * BLINK_RATIO if values else None


def count_blinks(series: list[float | None], threshold: float | None,
                 min_frames: int = MIN_BLINK_FRAMES) -> int:
    """Runs of at least min_frames frames under threshold (a missing frame ends a run)."""
    if threshold is None:
        return 0
    blinks = run = 0
    for v in series:
        if v is not None and np.isfinite(v) and v < threshold:
            run += 1
            continue
        if run >= min_frames:
            blinks += 1
        run = 0
    if run >= min_frames:
        blinks += 1
    return blinks
