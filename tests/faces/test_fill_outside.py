"""donors.fill_outside (push-pull, in OpenCV) against its NumPy formulation: the same to the
bit, since each step is the same single float32 operation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dicom_deid.faces.donors import fill_outside


def _numpy_fill(image: np.ndarray, mask: np.ndarray, levels: int) -> np.ndarray:
    img = image.astype(np.float32)
    weight = mask.astype(np.float32)
    pyramid = [(img * weight[..., None], weight)]
    for _ in range(levels):
        v, w = pyramid[-1]
        pyramid.append((cv2.pyrDown(v), cv2.pyrDown(w)))
    v, w = pyramid[-1]
    filled = v / np.maximum(w, 1e-6)[..., None]
    for v, w in reversed(pyramid[:-1]):
        up = cv2.resize(filled, (v.shape[1], v.shape[0]), interpolation=cv2.INTER_LINEAR)
        known = v / np.maximum(w, 1e-6)[..., None]
        a = np.clip(w * 4.0, 0.0, 1.0)[..., None]
        filled = a * known + (1 - a) * up
    return np.where(mask[..., None], img, filled)


@pytest.mark.parametrize("shape,levels", [((96, 80), 5), ((45, 91), 4), ((7, 9), 6),
                                          ((1, 1), 2), ((2, 33), 3)])
def test_fill_outside_is_the_numpy_push_pull(shape: tuple[int, int], levels: int) -> None:
    rng = np.random.default_rng(sum(shape))
    image = (rng.random(shape + (3,)) * 255).astype(np.float32)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    mask = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < (min(shape) / 3) ** 2 + 1
    for m in (mask, mask.astype(np.uint8) * 255):
        got = fill_outside(image, m, levels)
        want = _numpy_fill(image, m, levels)
        assert got.dtype == np.float32 and got.shape == image.shape
        assert np.array_equal(got, want)
        assert np.array_equal(got[mask], image[mask])           # known pixels kept as they are
    # A uint8 image comes back as float32 all the same.
    assert np.array_equal(fill_outside(image.astype(np.uint8), mask, levels),
                          _numpy_fill(image.astype(np.uint8), mask, levels))


def test_fill_outside_extends_a_flat_colour() -> None:
    image = np.zeros((40, 50, 3), np.float32)
    mask = np.zeros((40, 50), bool)
    mask[10:30, 15:35] = True
    image[mask] = (200.0, 100.0, 50.0)
    out = fill_outside(image, mask, 5)
    np.testing.assert_allclose(out, np.broadcast_to([200.0, 100.0, 50.0], out.shape), atol=1e-3)
