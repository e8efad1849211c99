"""Keypoints as a tidy CSV for researchers who do not use DICOM tools.

One row per frame, set and point: frame (1-based, as in the SR), set, point (index in the set's
point order), name, x, y, z (pixels, see points.py), visibility (pose only, else empty).
Sets not found in a frame have no rows for that frame.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from dicom_deid.header.fileio import write_atomic
from dicom_deid.keypoints.points import SETS, FrameKeypoints, point_names

COLUMNS = ("frame", "set", "point", "name", "x", "y", "z", "visibility")


def _num(value: float) -> str:
    # repr of the float32 value as a Python float: reads back to the same float32.
    return repr(float(value))


def write_keypoints_csv(path: str | Path, keypoints: Sequence[FrameKeypoints], *,
                        durable: bool = True) -> Path:
    """Write the keypoints as CSV atomically (temp file + rename); returns the path."""
    path = Path(path)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    names = {name: point_names(name) for name in SETS}
    for index, kp in enumerate(keypoints):
        for set_name in SETS:
            points = kp.get(set_name)
            if points is None:
                continue
            vis = kp.pose_visibility if set_name == "pose" else None
            for i, (x, y, z) in enumerate(points):
                writer.writerow((index + 1, set_name, i, names[set_name][i], _num(x), _num(y),
                                 _num(z), "" if vis is None else _num(vis[i])))
    write_atomic(buf.getvalue().encode(), path, durable=durable)
    return path
