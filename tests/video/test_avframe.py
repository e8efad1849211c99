"""rgb_frame: the encoders' frame of an RGB array holds exactly its pixels, as from_ndarray's."""

from __future__ import annotations

import av
import numpy as np
import pytest

from dicom_deid.video.avframe import rgb_frame


@pytest.mark.parametrize("shape", [(720, 1280), (17, 33), (1, 1), (576, 721)])
def test_same_bytes_as_from_ndarray(shape: tuple[int, int]) -> None:
    rgb = np.random.default_rng(7).integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours = rgb_frame(rgb)
    theirs = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    assert ours.format.name == "rgb24"
    assert (ours.width, ours.height) == (shape[1], shape[0])
    assert np.array_equal(ours.to_ndarray(), rgb)
    # Padded rows (odd widths) included: the plane's pixel bytes are the same.
    line = 3 * shape[1]
    ours_rows = np.frombuffer(memoryview(ours.planes[0]), np.uint8).reshape(shape[0], -1)
    theirs_rows = np.frombuffer(memoryview(theirs.planes[0]), np.uint8).reshape(shape[0], -1)
    assert np.array_equal(ours_rows[:, :line], theirs_rows[:, :line])


def test_strided_input_and_independent_copy() -> None:
    rgb = np.random.default_rng(8).integers(0, 256, (40, 64, 3), dtype=np.uint8)
    flipped = rgb[:, ::-1]  # negative strides: not contiguous
    frame = rgb_frame(flipped)
    assert np.array_equal(frame.to_ndarray(), flipped)
    rgb[:] = 0  # the caller reuses its array
    assert frame.to_ndarray().any()


def test_rejects_what_from_ndarray_rejects() -> None:
    with pytest.raises(ValueError):
        rgb_frame(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError):
        rgb_frame(np.zeros((8, 8), np.uint8))
