"""Keypoints as a tidy CSV for researchers who do not use DICOM tools.

One row per frame, set and point: frame (1-based, as in the SR), set, point (index in the set's
point order), name, x, y, z (pixels, see points.py), visibility (pose only, else empty).
Sets not found in a frame have no rows for that frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dicom_deid.header.fileio import write_atomic
from dicom_deid.keypoints.points import SETS, FrameKeypoints, point_names

COLUMNS = ("frame", "set", "point", "name", "x", "y", "z", "visibility")


def write_keypoints_csv(path: str | Path, keypoints: Sequence[FrameKeypoints], *,
                        durable: bool = True) -> Path:
    """Write the keypoints as CSV atomically (temp file + rename); returns the path.

    Numbers have 9 significant digits: enough for every float32 to read back exactly.
    """
    path = Path(path)
    lines = [",".join(COLUMNS) + "\n"]
    prefixes = {name: [f"{name},{i},{point}," for i, point in enumerate(point_names(name))]
                for name in SETS}
    for index, kp in enumerate(keypoints):
        frame = index + 1
        for set_name in SETS:
            points = kp.get(set_name)
            if points is None:
                continue
            rows = zip(prefixes[set_name], points.tolist(), strict=True)
            if set_name == "pose" and kp.pose_visibility is not None:
                lines.extend(f"{frame},{p}{x:.9g},{y:.9g},{z:.9g},{v:.9g}\n"
                             for (p, (x, y, z)), v in zip(rows, kp.pose_visibility.tolist(),
                                                         strict=True))
            else:
                lines.extend(f"{frame},{p}{x:.9g},{y:.9g},{z:.9g},\n" for p, (x, y, z) in rows)
    write_atomic("".join(lines).encode(), path, durable=durable)
    return path
