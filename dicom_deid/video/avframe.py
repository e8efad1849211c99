"""RGB arrays into PyAV frames for the DICOM encoder, with one copy made outside the GIL.

`av.VideoFrame.from_ndarray` copies an rgb24 frame twice while holding the GIL (`tobytes`, then
row by row into the frame): about 0.36 ms at 720p on the 2-core host, and every other Python
thread of the pipeline (tracking and rendering, the decoder's conversion) waits meanwhile. On
a loaded host the copying thread is often descheduled while it holds the GIL: py-spy --gil
over a 100-frame DICOM transcode and swap pass (14.7 s, load 6-7) found the GIL held inside
MpegEncoder.encode in 253 of its 100 Hz samples, about 12 ms a frame. Here NumPy copies the
pixels once, straight into the frame's buffer, and releases the GIL while it copies (0.10 ms).
The frame's bytes are the same.

Only MpegEncoder uses it so far: on the loaded 2-core host the DICOM path's swap/transcode
ratio rose in 7 of 7 alternating rounds with it, while the mp4 path's VideoWriter, tried the
same way, rose in 2 of 8 (noise at load 6-11 there; benchmarks/results/2026-12-08/
i15speed7_experiments.json).
"""

from __future__ import annotations

import av
import numpy as np


def rgb_frame(rgb: np.ndarray) -> av.VideoFrame:
    """A new rgb24 VideoFrame holding a copy of ``rgb`` (H x W x 3 uint8, any strides): the
    caller may reuse or change its array afterwards."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        # from_ndarray raises its own error for what it cannot take.
        return av.VideoFrame.from_ndarray(rgb, format="rgb24")
    height, width = rgb.shape[:2]
    frame = av.VideoFrame(width, height, "rgb24")
    plane = frame.planes[0]
    # Rows may be padded beyond 3 x width bytes (line_size); only the pixels are written.
    rows = np.frombuffer(memoryview(plane), np.uint8).reshape(height, plane.line_size)
    np.copyto(rows[:, : 3 * width].reshape(height, width, 3), rgb)
    return frame
