"""mesh.rasterize against a plain per-triangle reference: the same pixels, triangles and
barycentric weights (the vectorised version spreads per-triangle constants with np.repeat and
must not change what it computes)."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_deid.faces import mesh


def _reference(xy: np.ndarray, depth: np.ndarray, tris: np.ndarray,
               shape: tuple[int, int]) -> dict[tuple[int, int], tuple[int, np.ndarray]]:
    """Pixel (row, col) -> (triangle, barycentric weights) of the nearest triangle whose
    closed interior holds the pixel centre; one triangle at a time, in float64."""
    rows, cols = shape
    best: dict[tuple[int, int], tuple[float, int, np.ndarray]] = {}
    for t, (i, j, k) in enumerate(tris):
        p0, p1, p2 = (xy[v].astype(np.float64) for v in (i, j, k))
        e1, e2 = p1 - p0, p2 - p0
        det = e1[0] * e2[1] - e1[1] * e2[0]
        if abs(det) <= 1e-6:
            continue
        lo = np.maximum(np.floor(np.minimum(np.minimum(p0, p1), p2)), 0).astype(int)
        hi = np.ceil(np.maximum(np.maximum(p0, p1), p2)).astype(int)
        for y in range(lo[1], min(hi[1], rows - 1) + 1):
            for x in range(lo[0], min(hi[0], cols - 1) + 1):
                d = np.array([x, y], np.float64) - p0
                b1 = (d[0] * e2[1] - d[1] * e2[0]) / det
                b2 = (d[1] * e1[0] - d[0] * e1[1]) / det
                if b1 < -1e-4 or b2 < -1e-4 or b1 + b2 > 1 + 1e-4:
                    continue
                b = np.clip([1 - b1 - b2, b1, b2], 0, 1)
                far = -(b[0] * depth[i] + b[1] * depth[j] + b[2] * depth[k])
                if (y, x) not in best or far < best[(y, x)][0]:
                    best[(y, x)] = (far, t, b / b.sum())
    return {px: (t, b) for px, (_, t, b) in best.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rasterize_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (37, 45)
    # A jittered grid, triangulated, with random depths; some vertices outside the ROI.
    gy, gx = np.mgrid[-1:6, -1:7]
    xy = (np.stack([gx.ravel() * 7.3, gy.ravel() * 6.1], axis=1)
          + rng.uniform(-2.5, 2.5, (gx.size, 2))).astype(np.float32)
    depth = rng.uniform(-5, 5, len(xy)).astype(np.float32)
    w = gx.shape[1]
    tris = []
    for r in range(gx.shape[0] - 1):
        for c in range(w - 1):
            a, b, d, e = r * w + c, r * w + c + 1, (r + 1) * w + c, (r + 1) * w + c + 1
            tris += [(a, b, d), (b, e, d)]
    # Overlapping triangles too, so that the depth test decides.
    tris += [tuple(rng.choice(len(xy), 3, replace=False)) for _ in range(8)]
    tris_arr = np.array(tris, np.int32)

    raster = mesh.rasterize(xy, depth, tris_arr, shape)
    ref = _reference(xy, depth, tris_arr, shape)

    got = {(int(y), int(x)): i for i, (y, x) in enumerate(zip(raster.ys, raster.xs, strict=True))}
    assert len(got) == len(raster.ys)                    # each pixel once
    # Pixels on a shared edge may go either way in float32; all others must agree.
    assert len(set(got) ^ set(ref)) <= 0.01 * len(ref)
    same_tri = 0
    for px in set(got) & set(ref):
        t_ref, b_ref = ref[px]
        i = got[px]
        if raster.tri[i] == t_ref:
            same_tri += 1
            np.testing.assert_allclose(raster.bary[i], b_ref, atol=2e-4)
    assert same_tri >= 0.98 * len(ref)
    assert raster.bary.dtype == np.float32
    np.testing.assert_allclose(raster.bary.sum(axis=1), 1.0, atol=1e-5)


def test_interpolate_reproduces_an_affine_function() -> None:
    xy = np.array([[2.0, 3.0], [30.0, 5.0], [8.0, 27.0], [33.0, 30.0]], np.float32)
    tris = np.array([[0, 1, 2], [1, 3, 2]], np.int32)
    raster = mesh.rasterize(xy, np.zeros(4, np.float32), tris, (32, 36))
    values = np.stack([2 * xy[:, 0] - xy[:, 1] + 1, 0.5 * xy[:, 1]], axis=1)
    got = raster.interpolate(values, tris)
    want = np.stack([2 * raster.xs - raster.ys + 1, 0.5 * raster.ys], axis=1)
    assert len(raster.ys) > 300
    np.testing.assert_allclose(got, want, atol=2e-3)
